// CPU references for the fused LARS, SRSGD, LAMB, Apollo and AdamS updates (slots
// lars_update, srsgd_update, lamb_update, apollo_update, adams_update; formulas in optim/fused.h and optim/research.h): one plain
// loop per tensor, every element computed in double in the operation order of the
// formulas, then rounded to the storage dtypes (params and grads: f16/bf16/f32/f64; state:
// accumulate_dtype of the params'). cuda/kernels/optim.cu computes the same in f32 (f64 for
// f64 params).
#include <algorithm>
#include <cmath>

#include <kiln/core/cpu_loops.h>
#include <kiln/optim/cpu/dispatch.h>
#include <kiln/optim/op_list.h>

namespace kiln::cpu {

void lars_update(TensorViews params, TensorViews grads, TensorViews momentum_buffers, const LarsUpdateArgs& a) {
  using namespace kiln::detail;
  for (size_t t = 0; t < params.size(); ++t) {
    const double scale = a.scales[t];
    visit_param_dtype("lars_update", params[t].dtype, [&](auto ptag, auto stag) {
      using T = decltype(ptag);
      using S = decltype(stag);
      T* p = params[t].ptr<T>();
      const T* gp = grads[t].ptr<const T>();
      S* buf = momentum_buffers[t].ptr<S>();
      parallel_for(params[t].numel, kElementwiseGrain / 4, [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; ++i) {
          const double pv = to_f64(p[i]);
          const double d = to_f64(gp[i]) + a.weight_decay * pv;
          buf[i] = convert<S>(a.momentum * to_f64(buf[i]) + scale * d);
          p[i] = convert<T>(pv - to_f64(buf[i]));
        }
      });
    });
  }
}

void srsgd_update(TensorViews params, TensorViews grads, TensorViews prev_iterates, const SrsgdUpdateArgs& a) {
  using namespace kiln::detail;
  for (size_t t = 0; t < params.size(); ++t) {
    visit_param_dtype("srsgd_update", params[t].dtype, [&](auto ptag, auto stag) {
      using T = decltype(ptag);
      using S = decltype(stag);
      T* p = params[t].ptr<T>();
      const T* gp = grads[t].ptr<const T>();
      S* prev = prev_iterates[t].ptr<S>();
      parallel_for(params[t].numel, kElementwiseGrain / 4, [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; ++i) {
          const double pv = to_f64(p[i]);
          if (a.init) prev[i] = convert<S>(pv);
          const double next = pv - a.lr * (to_f64(gp[i]) + a.weight_decay * pv);
          p[i] = convert<T>(next + a.mu * (next - to_f64(prev[i])));
          prev[i] = convert<S>(next);
        }
      });
    });
  }
}

void adams_update(TensorViews params, TensorViews grads, TensorViews exp_avgs, TensorViews exp_avg_sqs,
                  const AdamSUpdateArgs& a) {
  using namespace kiln::detail;
  const double step = static_cast<double>(a.step);
  const double step_size = a.lr / (1.0 - std::pow(a.beta1, step));
  const double bias_correction2_sqrt = std::sqrt(1.0 - std::pow(a.beta2, step));
  for (size_t t = 0; t < params.size(); ++t) {
    visit_param_dtype("adams_update", params[t].dtype, [&](auto ptag, auto stag) {
      using T = decltype(ptag);
      using S = decltype(stag);
      T* p = params[t].ptr<T>();
      const T* gp = grads[t].ptr<const T>();
      S* m = exp_avgs[t].ptr<S>();
      S* v = exp_avg_sqs[t].ptr<S>();
      parallel_for(params[t].numel, kElementwiseGrain / 4, [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; ++i) {
          const double g = to_f64(gp[i]);
          m[i] = convert<S>(a.beta1 * to_f64(m[i]) + (1.0 - a.beta1) * g);
          v[i] = convert<S>(a.beta2 * to_f64(v[i]) + (1.0 - a.beta2) * g * g);
          const double denom = std::sqrt(to_f64(v[i])) / bias_correction2_sqrt + a.eps;
          p[i] = convert<T>(to_f64(p[i]) * a.decay - step_size * (to_f64(m[i]) / denom));
        }
      });
    });
  }
}

void lamb_update(TensorViews params, TensorViews grads, TensorViews exp_avgs, TensorViews exp_avg_sqs,
                 const LambUpdateArgs& a) {
  using namespace kiln::detail;
  const double step = static_cast<double>(a.step);
  const double bc1 = 1.0 - std::pow(a.beta1, step), bc2 = 1.0 - std::pow(a.beta2, step);
  for (size_t t = 0; t < params.size(); ++t) {
    visit_param_dtype("lamb_update", params[t].dtype, [&](auto ptag, auto stag) {
      using T = decltype(ptag);
      using S = decltype(stag);
      T* p = params[t].ptr<T>();
      const T* gp = grads[t].ptr<const T>();
      S* m = exp_avgs[t].ptr<S>();
      S* v = exp_avg_sqs[t].ptr<S>();
      const int64_t n = params[t].numel;
      auto u_at = [&](int64_t i) {
        return to_f64(m[i]) / bc1 / (std::sqrt(to_f64(v[i]) / bc2) + a.eps) + a.weight_decay * to_f64(p[i]);
      };
      // Pass 1: the moments, and |p|^2 and |u|^2 (one thread: the sums are in a fixed order).
      double pp = 0, uu = 0;
      for (int64_t i = 0; i < n; ++i) {
        const double g = to_f64(gp[i]);
        m[i] = convert<S>(a.beta1 * to_f64(m[i]) + (1.0 - a.beta1) * g);
        v[i] = convert<S>(a.beta2 * to_f64(v[i]) + (1.0 - a.beta2) * g * g);
        const double u = u_at(i), pv = to_f64(p[i]);
        pp += pv * pv;
        uu += u * u;
      }
      const double ratio = a.adapt && pp > 0 && uu > 0 ? std::sqrt(pp) / std::sqrt(uu) : 1.0;
      // Pass 2: the step.
      parallel_for(n, kElementwiseGrain / 4, [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; ++i) p[i] = convert<T>(to_f64(p[i]) - a.lr * ratio * u_at(i));
      });
    });
  }
}

void apollo_update(TensorViews params, TensorViews grads, TensorViews exp_avg_grads, TensorViews approx_hessians,
                   TensorViews updates, const ApolloUpdateArgs& a) {
  using namespace kiln::detail;
  const double alpha = (1.0 - a.beta) / (1.0 - std::pow(a.beta, static_cast<double>(a.step)));
  for (size_t t = 0; t < params.size(); ++t) {
    visit_param_dtype("apollo_update", params[t].dtype, [&](auto ptag, auto stag) {
      using T = decltype(ptag);
      using S = decltype(stag);
      T* p = params[t].ptr<T>();
      const T* gp = grads[t].ptr<const T>();
      S* m = exp_avg_grads[t].ptr<S>();
      S* B = approx_hessians[t].ptr<S>();
      S* d = updates[t].ptr<S>();
      const int64_t n = params[t].numel;
      // |d|_4 of the previous direction.
      double s4 = 0;
      for (int64_t i = 0; i < n; ++i) {
        const double di = to_f64(d[i]);
        s4 += di * di * di * di;
      }
      const double denom = std::sqrt(std::sqrt(s4)) + a.eps;
      // The gradient average, the scaled direction and the two sums of the secant update.
      double dot = 0, bdd = 0;
      for (int64_t i = 0; i < n; ++i) {
        double g = to_f64(gp[i]);
        if (a.decay_type == 0) g += a.weight_decay * to_f64(p[i]);
        const double dg = g - to_f64(m[i]);
        m[i] = convert<S>(to_f64(m[i]) + alpha * dg);
        const double dn = to_f64(d[i]) / denom;
        d[i] = convert<S>(dn);
        dot += dg / denom * dn;
        bdd += to_f64(B[i]) * dn * dn;
      }
      const double delta = -alpha * dot - bdd;
      // B, the rectified D, and (stable decay) mean(D).
      double d_sum = 0;
      for (int64_t i = 0; i < n; ++i) {
        const double dn = to_f64(d[i]);
        B[i] = convert<S>(to_f64(B[i]) + dn * dn * delta);
        d_sum += std::max(std::abs(to_f64(B[i])), a.sigma);
      }
      const double wd = a.decay_type == 1 ? a.weight_decay
                        : a.decay_type == 2 && n > 0 ? a.weight_decay / (d_sum / static_cast<double>(n))
                                                     : 0.0;
      parallel_for(n, kElementwiseGrain / 4, [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; ++i) {
          const double D = std::max(std::abs(to_f64(B[i])), a.sigma);
          const double pv = to_f64(p[i]);
          const double dir = to_f64(m[i]) / D + wd * pv;
          d[i] = convert<S>(dir);
          p[i] = convert<T>(pv - a.lr * to_f64(d[i]));
        }
      });
    });
  }
}

}  // namespace kiln::cpu
