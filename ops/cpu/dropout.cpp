// CPU reference of dropout's mask kernel: out[i] = x[i] * (keep ? 1 / (1 - p) : 0) with
// keep from philox_keep (core/philox.h), the code the CUDA kernel runs. The product is
// one multiply in the dtype's compute type (f32; f64 for f64), so the two backends give
// the same bits.
#include <kiln/ops/cpu/cpu_backend.h>
#include <kiln/ops/cpu/loops.h>

#include <kiln/core/philox.h>

namespace kiln::detail {

void CpuBackend::dropout(const Tensor& x, double p, uint64_t seed, uint64_t offset, const Tensor& out) {
  const uint32_t threshold = philox_keep_threshold(p);
  visit_dtype(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    if constexpr (std::is_integral_v<T>) {
      throw Error("dropout: integer input reached the CPU kernel");
    } else {
      using A = std::conditional_t<std::is_same_v<T, double>, double, float>;
      const A scale = static_cast<A>(1.0 / (1.0 - p));
      const T* px = static_cast<const T*>(x.data_ptr());
      T* po = static_cast<T*>(out.data_ptr());
      const int64_t n = x.numel();
      for (int64_t i = 0; i < n; ++i) {
        const A m = philox_keep(seed, offset + static_cast<uint64_t>(i), threshold) ? scale : A(0);
        po[i] = convert<T>(static_cast<A>(px[i]) * m);
      }
    }
  });
}

}  // namespace kiln::detail
