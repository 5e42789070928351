// CPU reference for the fused Adam / AdamW update (slot adam_update, optim/op_list.h): one
// plain loop per tensor, every element computed in double in the operation order of
// PyTorch's torch.optim.Adam / AdamW (single-tensor path), then rounded to the storage
// dtypes (params and grads: f16/bf16/f32/f64; state: accumulate_dtype of the params').
// cuda/kernels/optim.cu computes the same formulas in f32 (f64 for f64 params).
#include <algorithm>
#include <cmath>

#include <kiln/core/cpu_loops.h>
#include <kiln/optim/cpu/dispatch.h>
#include <kiln/optim/op_list.h>

namespace kiln::cpu {
namespace {

using namespace kiln::detail;

// PyTorch's lerp: self + w * (end - self) for w < 0.5, else end - (end - self) * (1 - w).
inline double lerp(double self, double end, double w) {
  return w < 0.5 ? self + w * (end - self) : end - (end - self) * (1.0 - w);
}

}  // namespace

void adam_update(TensorViews params, TensorViews grads, TensorViews exp_avgs, TensorViews exp_avg_sqs,
                 TensorViews max_exp_avg_sqs, const AdamUpdateArgs& a) {
  const double step = static_cast<double>(a.step);
  const double bias_correction1 = 1.0 - std::pow(a.beta1, step);
  const double bias_correction2 = 1.0 - std::pow(a.beta2, step);
  const double step_size = a.lr / bias_correction1;
  const double bias_correction2_sqrt = std::sqrt(bias_correction2);
  const double decay = 1.0 - a.lr * a.weight_decay;  // AdamW's decoupled decay factor
  for (size_t t = 0; t < params.size(); ++t) {
    visit_param_dtype("adam_update", params[t].dtype, [&](auto ptag, auto stag) {
      using T = decltype(ptag);
      using S = decltype(stag);
      T* p = params[t].ptr<T>();
      const T* gp = grads[t].ptr<const T>();
      S* m = exp_avgs[t].ptr<S>();
      S* v = exp_avg_sqs[t].ptr<S>();
      S* vmax = a.amsgrad ? max_exp_avg_sqs[t].ptr<S>() : nullptr;
      const int64_t n = params[t].numel;
      parallel_for(n, kElementwiseGrain / 4, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
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
    });
  }
}

}  // namespace kiln::cpu
