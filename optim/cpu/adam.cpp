// CPU reference for the fused Adam / AdamW update (slot adam_update, optim/op_list.h): one
// plain loop per tensor in the operation order of PyTorch's torch.optim.Adam / AdamW
// (single-tensor path). f32 parameters with f32 state (the common case) compute in f32 as
// PyTorch does, each operation rounded to f32, in a loop the compiler vectorises (this
// file is built with -fno-math-errno, so that sqrt vectorises); other dtypes compute every
// element in double and round to the storage dtypes (params and grads: f16/bf16/f32/f64;
// state: accumulate_dtype of the params'). cuda/kernels/optim.cu computes the same
// formulas in f32 (f64 for f64 params).
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

// The f32 update of elements [0, n): PyTorch's order and roundings (lerp for m; v * beta2,
// then + (1 - beta2) * g * g; sqrt(v) / sqrt(bc2) + eps; p + (-step_size) * (m / denom)),
// branch-free inside so that it vectorises. kDecay: 0 none, 1 decoupled (p *= 1 - lr wd
// first), 2 L2 (g += wd p).
struct AdamF32 {
  float sign, w1, one_minus_w1, beta2, one_minus_beta2, bc2_sqrt, eps, neg_step, decay, wd;
};
template <bool kLowWeight, int kDecay>
void adam_f32(float* __restrict p, const float* __restrict gp, float* __restrict m, float* __restrict v, int64_t n,
              const AdamF32& c) {
  for (int64_t i = 0; i < n; ++i) {
    float g = gp[i] * c.sign;
    float pv = p[i];
    if constexpr (kDecay == 1) pv = pv * c.decay;
    if constexpr (kDecay == 2) g = g + c.wd * pv;
    const float m0 = m[i];
    const float mv = kLowWeight ? m0 + c.w1 * (g - m0) : g - (g - m0) * c.one_minus_w1;
    const float vv = v[i] * c.beta2 + c.one_minus_beta2 * g * g;
    m[i] = mv;
    v[i] = vv;
    const float denom = std::sqrt(vv) / c.bc2_sqrt + c.eps;
    p[i] = pv + c.neg_step * (mv / denom);
  }
}

template <bool kLowWeight>
void adam_f32_any_decay(int decay, float* p, const float* g, float* m, float* v, int64_t n, const AdamF32& c) {
  if (decay == 0) return adam_f32<kLowWeight, 0>(p, g, m, v, n, c);
  if (decay == 1) return adam_f32<kLowWeight, 1>(p, g, m, v, n, c);
  adam_f32<kLowWeight, 2>(p, g, m, v, n, c);
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
      if constexpr (std::is_same_v<T, float> && std::is_same_v<S, float>) {
        if (!a.amsgrad) {
          const float w1 = static_cast<float>(1.0 - a.beta1);
          const AdamF32 c{a.maximize ? -1.0f : 1.0f, w1, static_cast<float>(1.0 - static_cast<double>(w1)),
                          static_cast<float>(a.beta2), static_cast<float>(1.0 - a.beta2),
                          static_cast<float>(bias_correction2_sqrt), static_cast<float>(a.eps),
                          static_cast<float>(-step_size), static_cast<float>(decay), static_cast<float>(a.weight_decay)};
          const int kind = a.weight_decay == 0.0 ? 0 : (a.decoupled_weight_decay ? 1 : 2);
          parallel_for(n, kElementwiseGrain / 4, [&](int64_t i0, int64_t i1) {
            if (w1 < 0.5f) adam_f32_any_decay<true>(kind, p + i0, gp + i0, m + i0, v + i0, i1 - i0, c);
            else adam_f32_any_decay<false>(kind, p + i0, gp + i0, m + i0, v + i0, i1 - i0, c);
          });
          return;
        }
      }
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
