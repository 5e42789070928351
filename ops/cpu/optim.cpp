// CPU reference for the fused optimizer updates (Backend::sgd_update / adam_update):
// one plain loop per tensor, every element computed in double in the operation order
// of PyTorch's torch.optim.SGD / Adam / AdamW (single-tensor path), then rounded to the
// storage dtypes (params and grads: f16/bf16/f32/f64; state: f32 for the half types and
// f32, f64 for f64). cuda/kernels/optim.cu computes the same formulas in f32 (f64 for
// f64 params).
#include <algorithm>
#include <cmath>

#include <kiln/ops/cpu/cpu_backend.h>
#include <kiln/ops/cpu/loops.h>

namespace kiln::detail {
namespace {

// The contract that optim/fused.cpp has already checked, re-checked cheaply here because
// a broken one would write out of bounds.
void check_lists(const char* op, const std::vector<Tensor>& params, const std::vector<const std::vector<Tensor>*>& lists) {
  for (const auto* l : lists)
    KILN_CHECK(l->size() == params.size(), op, ": tensor lists of different lengths (", params.size(), " params, ",
               l->size(), " in another list)");
  for (size_t i = 0; i < params.size(); ++i) {
    KILN_CHECK(params[i].is_contiguous(), op, ": param ", i, " is not contiguous");
    for (const auto* l : lists)
      KILN_CHECK((*l)[i].is_contiguous() && (*l)[i].numel() == params[i].numel(), op, ": tensor ", i,
                 " of a list does not match its param (", shape_str((*l)[i].sizes()), " vs ",
                 shape_str(params[i].sizes()), ") or is not contiguous");
  }
}

// PyTorch's lerp: self + w * (end - self) for w < 0.5, else end - (end - self) * (1 - w).
inline double lerp(double self, double end, double w) {
  return w < 0.5 ? self + w * (end - self) : end - (end - self) * (1.0 - w);
}

// Calls f(T{}, S{}) with the param type T and the state type S of a param dtype.
template <class F>
void visit_param_dtype(const char* op, DType dtype, F&& f) {
  switch (dtype) {
    case DType::F16: f(Half{}, float{}); return;
    case DType::BF16: f(BFloat16{}, float{}); return;
    case DType::F32: f(float{}, float{}); return;
    case DType::F64: f(double{}, double{}); return;
    default: throw Error(str(op, ": params must be floating, got ", dtype_name(dtype)));
  }
}

}  // namespace

void CpuBackend::sgd_update(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                            const std::vector<Tensor>& momentum_buffers, const SgdArgs& a) {
  const bool use_momentum = a.momentum != 0.0;
  check_lists("sgd_update", params, {&grads});
  if (use_momentum) check_lists("sgd_update", params, {&momentum_buffers});
  for (size_t t = 0; t < params.size(); ++t) {
    visit_param_dtype("sgd_update", params[t].dtype(), [&](auto ptag, auto stag) {
      using T = decltype(ptag);
      using S = decltype(stag);
      T* p = static_cast<T*>(params[t].data_ptr());
      const T* gp = static_cast<const T*>(grads[t].data_ptr());
      S* buf = use_momentum ? static_cast<S*>(momentum_buffers[t].data_ptr()) : nullptr;
      const int64_t n = params[t].numel();
      for (int64_t i = 0; i < n; ++i) {
        double g = to_f64(gp[i]);
        if (a.maximize) g = -g;
        const double pv = to_f64(p[i]);
        if (a.weight_decay != 0.0) g = g + a.weight_decay * pv;
        if (use_momentum) {
          double b = a.init_momentum ? g : a.momentum * to_f64(buf[i]) + (1.0 - a.dampening) * g;
          buf[i] = convert<S>(b);
          b = to_f64(buf[i]);  // the stored buffer is what PyTorch reads back
          g = a.nesterov ? g + a.momentum * b : b;
        }
        p[i] = convert<T>(pv + (-a.lr) * g);
      }
    });
  }
}

void CpuBackend::adam_update(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                             const std::vector<Tensor>& exp_avgs, const std::vector<Tensor>& exp_avg_sqs,
                             const std::vector<Tensor>& max_exp_avg_sqs, const AdamArgs& a) {
  check_lists("adam_update", params, {&grads, &exp_avgs, &exp_avg_sqs});
  if (a.amsgrad) check_lists("adam_update", params, {&max_exp_avg_sqs});
  KILN_CHECK(a.step >= 1, "adam_update: step must be >= 1, got ", a.step);
  const double step = static_cast<double>(a.step);
  const double bias_correction1 = 1.0 - std::pow(a.beta1, step);
  const double bias_correction2 = 1.0 - std::pow(a.beta2, step);
  const double step_size = a.lr / bias_correction1;
  const double bias_correction2_sqrt = std::sqrt(bias_correction2);
  const double decay = 1.0 - a.lr * a.weight_decay;  // AdamW's decoupled decay factor
  for (size_t t = 0; t < params.size(); ++t) {
    visit_param_dtype("adam_update", params[t].dtype(), [&](auto ptag, auto stag) {
      using T = decltype(ptag);
      using S = decltype(stag);
      T* p = static_cast<T*>(params[t].data_ptr());
      const T* gp = static_cast<const T*>(grads[t].data_ptr());
      S* m = static_cast<S*>(exp_avgs[t].data_ptr());
      S* v = static_cast<S*>(exp_avg_sqs[t].data_ptr());
      S* vmax = a.amsgrad ? static_cast<S*>(max_exp_avg_sqs[t].data_ptr()) : nullptr;
      const int64_t n = params[t].numel();
      for (int64_t i = 0; i < n; ++i) {
        double g = to_f64(gp[i]);
        if (a.maximize) g = -g;
        double pv = to_f64(p[i]);
        if (a.weight_decay != 0.0) {
          if (a.decoupled_weight_decay) pv = to_f64(convert<T>(pv * decay));  // PyTorch stores p *= decay
          else g = g + a.weight_decay * pv;
        }
        const double mv = lerp(to_f64(m[i]), g, 1.0 - a.beta1);
        const double vv = to_f64(v[i]) * a.beta2 + (1.0 - a.beta2) * g * g;
        m[i] = convert<S>(mv);
        v[i] = convert<S>(vv);
        double vhat = to_f64(v[i]);
        if (a.amsgrad) {
          vmax[i] = convert<S>(std::max(to_f64(vmax[i]), vhat));
          vhat = to_f64(vmax[i]);
        }
        const double denom = std::sqrt(vhat) / bias_correction2_sqrt + a.eps;
        p[i] = convert<T>(pv + (-step_size) * (to_f64(m[i]) / denom));
      }
    });
  }
}

}  // namespace kiln::detail
