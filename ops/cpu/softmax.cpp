// CPU kernel of softmax / log_softmax (slot `softmax`) over (outer, n, inner): subtract
// the max, exponentiate, normalise, in double. ops/softmax.cpp has checked that x is
// floating.
#include <kiln/core/cpu_loops.h>
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
      for (int64_t o = 0; o < outer; ++o) {
        for (int64_t i = 0; i < inner; ++i) {
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
      }
    }
  });
}

}  // namespace kiln::cpu
