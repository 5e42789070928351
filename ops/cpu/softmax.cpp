// CPU kernel of softmax / log_softmax (slot `softmax`) over (outer, n, inner): subtract
// the max, exponentiate, normalise, in double. ops/softmax.cpp has checked that x is
// floating.
#include <kiln/core/cpu_loops.h>
#include <kiln/ops/cpu/vec_math.h>
#include <kiln/ops/op_list.h>

namespace kiln::cpu {

using namespace kiln::detail;

void softmax(const TensorView& x, const TensorView& out, const SoftmaxParams& p) {
  const int64_t outer = p.outer, n = p.n, inner = p.inner;
  const bool log = p.log;
  visit_dtype(x.dtype, [&](auto tag) {
    using T = decltype(tag);
    if constexpr (!std::is_integral_v<T>) {  // integers: rejected by ops/softmax.cpp
      const T* px = x.ptr<const T>();
      T* po = out.ptr<T>();
      if constexpr (std::is_same_v<T, float>) {
        // Contiguous f32 rows: Highway's vector exp (ops/cpu/vec_math.h), rows over the threads.
        if (inner == 1 && !x.shares_storage(out)) {
          parallel_for(outer, std::max<int64_t>(1, kElementwiseGrain / 4 / std::max<int64_t>(1, n)),
                       [&](int64_t r0, int64_t r1) { vec::softmax_rows_f32(px, po, r0, r1, n, log); });
          return;
        }
      }
      // Each (o, i) row on its own: the rows split over the thread pool.
      parallel_for(outer * inner, std::max<int64_t>(1, kElementwiseGrain / 8 / std::max<int64_t>(1, n)),
                   [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
          const int64_t o = r / inner, i = r % inner;
          const T* xb = px + o * n * inner + i;
          T* ob = po + o * n * inner + i;
          double m = -INFINITY;
          for (int64_t j = 0; j < n; ++j) m = std::max(m, to_f64(xb[j * inner]));
          double s = 0;
          for (int64_t j = 0; j < n; ++j) s += std::exp(to_f64(xb[j * inner]) - m);
          for (int64_t j = 0; j < n; ++j) {
            double v = to_f64(xb[j * inner]) - m;
            ob[j * inner] = convert<T>(log ? v - std::log(s) : std::exp(v) / s);
          }
        }
      });
    }
  });
}

// gx = y (g - sum_j g y) (softmax) or g - exp(y) sum_j g (log_softmax) over each (o, i)
// row of (outer, n, inner); the sums in double (as the forward), rows over the threads.
void softmax_backward(const TensorView& y, const TensorView& g, const TensorView& gx, const SoftmaxParams& p) {
  const int64_t outer = p.outer, n = p.n, inner = p.inner;
  const bool log = p.log;
  visit_dtype(y.dtype, [&](auto tag) {
    using T = decltype(tag);
    if constexpr (!std::is_integral_v<T>) {
      const T* py = y.ptr<const T>();
      const T* pg = g.ptr<const T>();
      T* po = gx.ptr<T>();
      parallel_for(outer * inner, std::max<int64_t>(1, kElementwiseGrain / 8 / std::max<int64_t>(1, n)),
                   [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
          const int64_t o = r / inner, i = r % inner, base = o * n * inner + i;
          const T* yb = py + base;
          const T* gb = pg + base;
          T* ob = po + base;
          // Four partial sums: independent chains the CPU overlaps.
          double s[4] = {0, 0, 0, 0};
          int64_t j = 0;
          for (; j + 4 <= n; j += 4)
            for (int k = 0; k < 4; ++k) {
              const double gv = to_f64(gb[(j + k) * inner]);
              s[k] += log ? gv : gv * to_f64(yb[(j + k) * inner]);
            }
          for (; j < n; ++j) s[0] += log ? to_f64(gb[j * inner]) : to_f64(gb[j * inner]) * to_f64(yb[j * inner]);
          const double dot = (s[0] + s[1]) + (s[2] + s[3]);
          for (j = 0; j < n; ++j) {
            const double yv = to_f64(yb[j * inner]), gv = to_f64(gb[j * inner]);
            ob[j * inner] = convert<T>(log ? gv - std::exp(yv) * dot : yv * (gv - dot));
          }
        }
      });
    }
  });
}

}  // namespace kiln::cpu
