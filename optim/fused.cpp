// Checks of the fused optimizer updates' list contract, then one kernel call.
#include <kiln/optim/fused.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <utility>

#include <kiln/core/autograd.h>
#include <kiln/ops/checks.h>
#include <kiln/optim/op_list.h>
#include <kiln/optim/optimizer.h>

namespace kiln {
namespace {

using Range = std::pair<uintptr_t, uintptr_t>;  // [begin, end) bytes of a contiguous tensor
Range range_of(const Tensor& t) {
  const auto b = reinterpret_cast<uintptr_t>(t.data_ptr());
  return {b, b + static_cast<uintptr_t>(t.numel()) * t.element_size()};
}
bool overlap(const Tensor& a, const Tensor& b) {
  if (a.numel() == 0 || b.numel() == 0 || a.device() != b.device()) return false;
  Range x = range_of(a), y = range_of(b);
  return x.first < y.second && y.first < x.second;
}

void check_params(const char* op, const std::vector<Tensor>& params) {
  for (size_t i = 0; i < params.size(); ++i) {
    const Tensor& p = params[i];
    KILN_CHECK(p.defined(), op, ": param ", i, " is undefined");
    KILN_CHECK(is_floating(p.dtype()), op, ": params must be floating, param ", i, " is ", describe(p));
    KILN_CHECK(p.dtype() == params[0].dtype(), op, ": params must share one dtype, param 0 is ", describe(params[0]),
               " and param ", i, " is ", describe(p));
    KILN_CHECK(p.device() == params[0].device(), op, ": params must be on one device, param 0 is ",
               describe(params[0]), " and param ", i, " is ", describe(p));
    KILN_CHECK(p.is_contiguous(), op, ": param ", i, " (", describe(p), ") must be contiguous");
  }
  // Params may be views of one flat buffer, but must not overlap: an element would be
  // updated twice (and on CUDA, raced on).
  std::vector<std::pair<Range, size_t>> ranges;
  for (size_t i = 0; i < params.size(); ++i)
    if (params[i].numel() > 0) ranges.emplace_back(range_of(params[i]), i);
  std::sort(ranges.begin(), ranges.end());
  for (size_t k = 1; k < ranges.size(); ++k)
    KILN_CHECK(ranges[k].first.first >= ranges[k - 1].first.second, op, ": params ", ranges[k - 1].second, " and ",
               ranges[k].second, " overlap in memory; the update would apply twice");
}

// list[i] must match params[i]: its shape, device, and dtype (the param's, or its state dtype).
void check_list(const char* op, const char* what, const std::vector<Tensor>& list, const std::vector<Tensor>& params,
                bool param_dtype) {
  KILN_CHECK(list.size() == params.size(), op, ": ", params.size(), " params but ", list.size(), " ", what);
  for (size_t i = 0; i < list.size(); ++i) {
    const Tensor& t = list[i];
    const Tensor& p = params[i];
    KILN_CHECK(t.defined(), op, ": ", what, " ", i, " is undefined");
    const DType want = param_dtype ? p.dtype() : optim_state_dtype(p.dtype());
    KILN_CHECK(t.sizes() == p.sizes() && t.dtype() == want && t.device() == p.device(), op, ": ", what, " ", i,
               " is ", describe(t), ", expected ", dtype_name(want), shape_str(p.sizes()), " on ", p.device().str());
    KILN_CHECK(t.is_contiguous(), op, ": ", what, " ", i, " (", describe(t), ") must be contiguous");
    KILN_CHECK(!overlap(t, p), op, ": ", what, " ", i, " overlaps its param in memory");
  }
}

void check_finite(const char* op, const char* what, double v) {
  KILN_CHECK(std::isfinite(v), op, ": ", what, " must be finite, got ", v);
}

// The step and hyper-parameters Adam's moments share (Adam/AdamW and ProxAdam).
void check_adam_args(const char* op, int64_t step, double beta1, double beta2, double lr, double eps, double wd) {
  KILN_CHECK(step >= 1, op, ": step must be >= 1, got ", step);
  KILN_CHECK(beta1 >= 0 && beta1 < 1 && beta2 >= 0 && beta2 < 1, op, ": betas must lie in [0, 1), got (", beta1,
             ", ", beta2, ")");
  check_finite(op, "lr", lr);
  check_finite(op, "eps", eps);
  check_finite(op, "weight_decay", wd);
}

// The kernel views of a checked list (an empty list stays empty).
std::vector<TensorView> views_of(const std::vector<Tensor>& list) {
  std::vector<TensorView> v;
  v.reserve(list.size());
  for (const Tensor& t : list) v.push_back(kernel_view(t));
  return v;
}

}  // namespace

void fused_sgd_update(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                      const std::vector<Tensor>& momentum_buffers, const SgdUpdateArgs& args) {
  const char* op = "fused_sgd_update";
  check_params(op, params);
  check_list(op, "grads", grads, params, true);
  if (args.momentum != 0.0) check_list(op, "momentum buffers", momentum_buffers, params, false);
  else KILN_CHECK(momentum_buffers.empty(), op, ": momentum buffers given with momentum 0");
  check_finite(op, "lr", args.lr);
  check_finite(op, "momentum", args.momentum);
  check_finite(op, "dampening", args.dampening);
  check_finite(op, "weight_decay", args.weight_decay);
  if (params.empty()) return;
  NoGradGuard no_grad;
  const std::vector<TensorView> p = views_of(params), g = views_of(grads), buf = views_of(momentum_buffers);
  kernel<op::sgd_update>(params[0].device())(p, g, buf, args);
}

void fused_adam_update(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                       const std::vector<Tensor>& exp_avgs, const std::vector<Tensor>& exp_avg_sqs,
                       const std::vector<Tensor>& max_exp_avg_sqs, const AdamUpdateArgs& args) {
  const char* op = "fused_adam_update";
  check_params(op, params);
  check_list(op, "grads", grads, params, true);
  check_list(op, "exp_avgs", exp_avgs, params, false);
  check_list(op, "exp_avg_sqs", exp_avg_sqs, params, false);
  if (args.amsgrad) check_list(op, "max_exp_avg_sqs", max_exp_avg_sqs, params, false);
  else KILN_CHECK(max_exp_avg_sqs.empty(), op, ": max_exp_avg_sqs given without amsgrad");
  check_adam_args(op, args.step, args.beta1, args.beta2, args.lr, args.eps, args.weight_decay);
  if (params.empty()) return;
  NoGradGuard no_grad;
  const std::vector<TensorView> p = views_of(params), g = views_of(grads), m = views_of(exp_avgs),
                                v = views_of(exp_avg_sqs), vmax = views_of(max_exp_avg_sqs);
  kernel<op::adam_update>(params[0].device())(p, g, m, v, vmax, args);
}

void fused_prox_adam_update(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                            const std::vector<Tensor>& exp_avgs, const std::vector<Tensor>& exp_avg_sqs,
                            const ProxAdamUpdateArgs& args) {
  const char* op = "fused_prox_adam_update";
  check_params(op, params);
  check_list(op, "grads", grads, params, true);
  check_list(op, "exp_avgs", exp_avgs, params, false);
  check_list(op, "exp_avg_sqs", exp_avg_sqs, params, false);
  check_adam_args(op, args.step, args.beta1, args.beta2, args.lr, args.eps, args.weight_decay);
  check_finite(op, "lambda", args.lambda);
  KILN_CHECK(args.eps > 0, op, ": eps must be > 0 (it bounds the penalty's step lr * lambda / eps), got ", args.eps);
  KILN_CHECK(args.lambda >= 0, op, ": lambda must be >= 0, got ", args.lambda);
  const int pen = static_cast<int>(args.penalty);
  KILN_CHECK(pen >= 0 && pen <= 3, op, ": unknown penalty ", pen);
  if (params.empty()) return;
  NoGradGuard no_grad;
  const std::vector<TensorView> p = views_of(params), g = views_of(grads), m = views_of(exp_avgs),
                                v = views_of(exp_avg_sqs);
  kernel<op::prox_adam_update>(params[0].device())(p, g, m, v, args);
}

void fused_lars_update(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                       const std::vector<Tensor>& momentum_buffers, const LarsUpdateArgs& args) {
  const char* op = "fused_lars_update";
  check_params(op, params);
  check_list(op, "grads", grads, params, true);
  check_list(op, "momentum buffers", momentum_buffers, params, false);
  KILN_CHECK(args.scales.size() == params.size(), op, ": ", params.size(), " params but ", args.scales.size(),
             " scales");
  check_finite(op, "momentum", args.momentum);
  check_finite(op, "weight_decay", args.weight_decay);
  for (double sc : args.scales) check_finite(op, "a scale", sc);
  if (params.empty()) return;
  NoGradGuard no_grad;
  const std::vector<TensorView> p = views_of(params), g = views_of(grads), b = views_of(momentum_buffers);
  kernel<op::lars_update>(params[0].device())(p, g, b, args);
}

void fused_srsgd_update(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                        const std::vector<Tensor>& prev_iterates, const SrsgdUpdateArgs& args) {
  const char* op = "fused_srsgd_update";
  check_params(op, params);
  check_list(op, "grads", grads, params, true);
  check_list(op, "prev_iterates", prev_iterates, params, false);
  check_finite(op, "lr", args.lr);
  check_finite(op, "weight_decay", args.weight_decay);
  check_finite(op, "mu", args.mu);
  if (params.empty()) return;
  NoGradGuard no_grad;
  const std::vector<TensorView> p = views_of(params), g = views_of(grads), v = views_of(prev_iterates);
  kernel<op::srsgd_update>(params[0].device())(p, g, v, args);
}

void fused_adams_update(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                        const std::vector<Tensor>& exp_avgs, const std::vector<Tensor>& exp_avg_sqs,
                        const AdamSUpdateArgs& args) {
  const char* op = "fused_adams_update";
  check_params(op, params);
  check_list(op, "grads", grads, params, true);
  check_list(op, "exp_avgs", exp_avgs, params, false);
  check_list(op, "exp_avg_sqs", exp_avg_sqs, params, false);
  check_adam_args(op, args.step, args.beta1, args.beta2, args.lr, args.eps, 0.0);
  check_finite(op, "decay", args.decay);
  if (params.empty()) return;
  NoGradGuard no_grad;
  const std::vector<TensorView> p = views_of(params), g = views_of(grads), m = views_of(exp_avgs),
                                v = views_of(exp_avg_sqs);
  kernel<op::adams_update>(params[0].device())(p, g, m, v, args);
}

void fused_lamb_update(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                       const std::vector<Tensor>& exp_avgs, const std::vector<Tensor>& exp_avg_sqs,
                       const LambUpdateArgs& args) {
  const char* op = "fused_lamb_update";
  check_params(op, params);
  check_list(op, "grads", grads, params, true);
  check_list(op, "exp_avgs", exp_avgs, params, false);
  check_list(op, "exp_avg_sqs", exp_avg_sqs, params, false);
  check_adam_args(op, args.step, args.beta1, args.beta2, args.lr, args.eps, args.weight_decay);
  if (params.empty()) return;
  NoGradGuard no_grad;
  const std::vector<TensorView> p = views_of(params), g = views_of(grads), m = views_of(exp_avgs),
                                v = views_of(exp_avg_sqs);
  kernel<op::lamb_update>(params[0].device())(p, g, m, v, args);
}

void fused_apollo_update(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                         const std::vector<Tensor>& exp_avg_grads, const std::vector<Tensor>& approx_hessians,
                         const std::vector<Tensor>& updates, const ApolloUpdateArgs& args) {
  const char* op = "fused_apollo_update";
  check_params(op, params);
  check_list(op, "grads", grads, params, true);
  check_list(op, "exp_avg_grads", exp_avg_grads, params, false);
  check_list(op, "approx_hessians", approx_hessians, params, false);
  check_list(op, "updates", updates, params, false);
  KILN_CHECK(args.step >= 1, op, ": step must be >= 1, got ", args.step);
  KILN_CHECK(args.beta >= 0 && args.beta < 1, op, ": beta must lie in [0, 1), got ", args.beta);
  KILN_CHECK(args.sigma > 0, op, ": sigma must be > 0, got ", args.sigma);
  KILN_CHECK(args.decay_type >= 0 && args.decay_type <= 2, op, ": decay_type must be 0, 1 or 2, got ", args.decay_type);
  check_finite(op, "lr", args.lr);
  check_finite(op, "eps", args.eps);
  check_finite(op, "weight_decay", args.weight_decay);
  if (params.empty()) return;
  NoGradGuard no_grad;
  const std::vector<TensorView> p = views_of(params), g = views_of(grads), m = views_of(exp_avg_grads),
                                b = views_of(approx_hessians), d = views_of(updates);
  kernel<op::apollo_update>(params[0].device())(p, g, m, b, d, args);
}

}  // namespace kiln
