// CPU reference softmax over (outer, n, inner): subtract the max, exponentiate, normalise.
#include <kiln/ops/cpu/cpu_backend.h>
#include <kiln/ops/cpu/loops.h>

namespace kiln::detail {

void CpuBackend::softmax(const Tensor& x, int64_t outer, int64_t n, int64_t inner, bool log, const Tensor& out) {
  visit_dtype(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    if constexpr (std::is_integral_v<T>) {
      throw Error("softmax: integer input reached the CPU kernel");
    } else {
      const T* px = static_cast<const T*>(x.data_ptr());
      T* po = static_cast<T*>(out.data_ptr());
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

}  // namespace kiln::detail
