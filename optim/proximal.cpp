// ProxAdam (formulas: optim/proximal.h): options, their checks, and the bucketing of one
// group's update into fused prox_adam_update calls.
#include <kiln/optim/proximal.h>

#include <cmath>
#include <tuple>

#include <kiln/core/autograd.h>
#include <kiln/optim/fused.h>
#include <kiln/ops/binary.h>
#include <kiln/ops/reduce.h>
#include <kiln/ops/unary.h>

namespace kiln {

LpPenalty lp_penalty(double p) {
  if (p == 0) return LpPenalty::L0;
  if (p == 0.5) return LpPenalty::LHalf;
  if (std::abs(p - 2.0 / 3.0) < 1e-9) return LpPenalty::LTwoThirds;
  if (p == 1) return LpPenalty::L1;
  throw Error(detail::str("ProxAdam: the penalty exponent p must be 0, 0.5, 2/3 or 1, got ", p));
}

double lp_penalty_value(const std::vector<Tensor>& params, double p) {
  const LpPenalty pen = lp_penalty(p);
  NoGradGuard no_grad;
  double total = 0;
  for (const Tensor& w : params) {
    if (w.numel() == 0) continue;
    Tensor a = abs(w.to(DType::F64));
    Tensor r = pen == LpPenalty::L0 ? binary(BinaryOp::Ne, a, 0.0).to(DType::F64)
               : pen == LpPenalty::L1 ? a
               : pen == LpPenalty::LHalf ? sqrt(a)
                                         : binary(BinaryOp::Pow, a, 2.0 / 3.0);
    total += sum(r).item<double>();
  }
  return total;
}

ProxAdam::ProxAdam(const std::vector<Tensor>& params, const ProxAdamOptions& o)
    : ProxAdam(std::vector<ParamGroup>{ParamGroup{params, {}}}, o) {}
ProxAdam::ProxAdam(const std::vector<ParamGroup>& groups, const ProxAdamOptions& o)
    : Optimizer({{"lr", o.lr},
                 {"beta1", o.beta1},
                 {"beta2", o.beta2},
                 {"eps", o.eps},
                 {"weight_decay", o.weight_decay},
                 {"lambda", o.lambda},
                 {"p", o.p}}) {
  add_param_groups(groups);
}

void ProxAdam::check_options(const std::map<std::string, double>& o, size_t group) const {
  for (const auto& [k, v] : o)
    KILN_CHECK(std::isfinite(v), "ProxAdam: ", k, " of param group ", group, " must be finite, got ", v);
  for (const char* k : {"lr", "weight_decay", "lambda"})
    KILN_CHECK(o.at(k) >= 0, "ProxAdam: invalid ", k, " ", o.at(k), " in param group ", group, " (must be >= 0)");
  KILN_CHECK(o.at("eps") > 0, "ProxAdam: invalid eps ", o.at("eps"), " in param group ", group,
             " (must be > 0: it bounds the penalty's step lr * lambda / eps)");
  for (const char* k : {"beta1", "beta2"})
    KILN_CHECK(o.at(k) >= 0 && o.at(k) < 1, "ProxAdam: invalid ", k, " ", o.at(k), " in param group ", group,
               " (must lie in [0, 1))");
  try {
    (void)lp_penalty(o.at("p"));
  } catch (const Error& e) {
    throw Error(detail::str(e.what(), " (param group ", group, ")"));
  }
}

void ProxAdam::update(size_t group, const std::vector<size_t>& indices, const std::vector<Tensor>& grads) {
  const ParamGroup& G = param_groups()[group];
  ProxAdamUpdateArgs a;
  a.lr = G.get("lr");
  a.beta1 = G.get("beta1");
  a.beta2 = G.get("beta2");
  a.eps = G.get("eps");
  a.weight_decay = G.get("weight_decay");
  a.lambda = G.get("lambda");
  a.penalty = lp_penalty(G.get("p"));
  // One fused call per (device, dtype, step): normally one, since params step together.
  struct Bucket {
    std::vector<Tensor> params, grads, m, v;
    std::vector<size_t> indices;
  };
  std::map<std::tuple<int, int, int, int64_t>, Bucket> buckets;
  for (size_t k = 0; k < indices.size(); ++k) {
    const size_t i = indices[k];
    const Tensor& p = param(i);
    Bucket& b = buckets[{static_cast<int>(p.device().type), p.device().index, static_cast<int>(p.dtype()),
                         state(i).step + 1}];
    b.indices.push_back(i);
    b.params.push_back(p);
    b.grads.push_back(grads[k]);
    b.m.push_back(buffer_or_zeros(i, "exp_avg"));
    b.v.push_back(buffer_or_zeros(i, "exp_avg_sq"));
  }
  for (auto& [key, b] : buckets) {
    ProxAdamUpdateArgs args = a;
    args.step = std::get<3>(key);
    fused_prox_adam_update(b.params, b.grads, b.m, b.v, args);
    for (size_t i : b.indices) mutable_state(i).step = args.step;
  }
}

}  // namespace kiln
