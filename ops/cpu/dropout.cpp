// CPU reference of dropout's mask kernel: out[i] = x[i] * (keep ? 1 / (1 - p) : 0) with
// keep from philox_keep (core/philox.h), the code the CUDA kernel runs. The product is
// one multiply in the dtype's compute type (f32; f64 for f64), so the two backends give
// the same bits.
// x and out are contiguous of one floating dtype and 0 <= p < 1 (ops/dropout.cpp).
#include <kiln/core/philox.h>
#include <kiln/core/cpu_loops.h>
#include <kiln/ops/op_list.h>

namespace kiln::cpu {

using namespace kiln::detail;

void dropout(const TensorView& x, const TensorView& out, const DropoutParams& p) {
  const uint32_t threshold = philox_keep_threshold(p.p);
  const uint64_t seed = p.seed, offset = p.offset;
  visit_dtype(x.dtype, [&](auto tag) {
    using T = decltype(tag);
    if constexpr (!std::is_integral_v<T>) {  // integers: rejected by ops/dropout.cpp
      using A = std::conditional_t<std::is_same_v<T, double>, double, float>;
      const A scale = static_cast<A>(1.0 / (1.0 - p.p));
      const T* px = x.ptr<const T>();
      T* po = out.ptr<T>();
      const int64_t n = x.numel;
      parallel_for(n, kElementwiseGrain / 4, [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; ++i) {
          const A m = philox_keep(seed, offset + static_cast<uint64_t>(i), threshold) ? scale : A(0);
          po[i] = convert<T>(static_cast<A>(px[i]) * m);
        }
      });
    }
  });
}

}  // namespace kiln::cpu
