// CPU reference for ProxGen's proximal Adam (slot prox_adam_update, optim/op_list.h;
// formulas in optim/fused.h and optim/prox.h): one plain loop per tensor, every element
// computed in double, then rounded to the storage dtypes (params and grads: f16/bf16/f32/
// f64; state: accumulate_dtype of the params'). cuda/kernels/optim.cu computes the same
// formulas in f32 (f64 for f64 params).
#include <cmath>

#include <kiln/core/cpu_loops.h>
#include <kiln/optim/cpu/dispatch.h>
#include <kiln/optim/op_list.h>
#include <kiln/optim/prox.h>

namespace kiln::cpu {

void prox_adam_update(TensorViews params, TensorViews grads, TensorViews exp_avgs, TensorViews exp_avg_sqs,
                      const ProxAdamUpdateArgs& a) {
  using namespace kiln::detail;
  const double step = static_cast<double>(a.step);
  const double step_size = a.lr / (1.0 - std::pow(a.beta1, step));
  const double bias_correction2_sqrt = std::sqrt(1.0 - std::pow(a.beta2, step));
  const double penalty_step = a.lr * a.lambda;
  for (size_t t = 0; t < params.size(); ++t) {
    visit_param_dtype("prox_adam_update", params[t].dtype, [&](auto ptag, auto stag) {
      using T = decltype(ptag);
      using S = decltype(stag);
      T* p = params[t].ptr<T>();
      const T* gp = grads[t].ptr<const T>();
      S* m = exp_avgs[t].ptr<S>();
      S* v = exp_avg_sqs[t].ptr<S>();
      parallel_for(params[t].numel, kElementwiseGrain / 4, [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; ++i) {
          const double pv = to_f64(p[i]);
          double g = to_f64(gp[i]);
          if (a.weight_decay != 0.0) g = g + a.weight_decay * pv;
          m[i] = convert<S>(a.beta1 * to_f64(m[i]) + (1.0 - a.beta1) * g);
          v[i] = convert<S>(a.beta2 * to_f64(v[i]) + (1.0 - a.beta2) * g * g);
          const double denom = std::sqrt(to_f64(v[i])) / bias_correction2_sqrt + a.eps;
          const double z = pv - step_size * (to_f64(m[i]) / denom);
          p[i] = convert<T>(prox_lp(z, penalty_step / denom, a.penalty));
        }
      });
    });
  }
}

}  // namespace kiln::cpu
