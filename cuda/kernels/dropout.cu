// Inverted dropout with a counter-based mask (slot `dropout`, ops/dropout.h):
//   out[i] = x[i] * (keep_i ? 1 / (1 - p) : 0),  keep_i = philox_keep(seed, offset + i, ceil(p 2^24))
// i.e. element i is kept iff the Philox uniform sample of counter offset + i is >= p
// (core/philox.h; the CPU reference in ops/cpu/dropout.cpp runs the same code). The
// backward of dropout is this kernel applied to the output gradient with the same seed and
// offset, so no mask is stored.
// Shapes: x, out contiguous (n), one floating dtype, 0 <= p < 1 (ops/dropout.cpp checks
// them); writes (=). The product is one
// multiply in f32 (f64 for f64): no rounding the CPU could do differently, so both
// backends give identical bits.
// One thread per Packed128 vector (grid-stride) when x and out are 16-byte aligned, else
// per element. Each element costs one Philox4x32-10 call (10 rounds of two 32-bit
// multiplies), which keeps the counter of element i equal to what rand() would use.
// Bandwidth: not yet measured on a GPU.
#include <kiln/core/philox.h>
#include <kiln/cuda/kernels/common.cuh>
#include <kiln/ops/op_list.h>

namespace kiln::cuda {
namespace {

// ---- device helpers ------------------------------------------------------------------

template <class T>
__device__ __forceinline__ T dropout_one(T v, uint64_t seed, uint64_t counter, uint32_t threshold, acc_t<T> scale) {
  using A = acc_t<T>;
  const A m = philox_keep(seed, counter, threshold) ? scale : A(0);
  return convert<T>(convert<A>(v) * m);
}

// ---- kernels -------------------------------------------------------------------------

template <class T>
__global__ void dropout_vec_kernel(const T* x, T* out, int64_t n, uint64_t seed, uint64_t offset,
                                   uint32_t threshold, acc_t<T> scale) {
  constexpr int V = Packed128<T>::kSize;
  const int64_t nvec = n / V;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  for (int64_t w = tid; w < nvec; w += stride) {
    Packed128<T> p = load128cs(x + w * V);
#pragma unroll
    for (int k = 0; k < V; ++k)
      p[k] = dropout_one(p[k], seed, offset + static_cast<uint64_t>(w * V + k), threshold, scale);
    store128(out + w * V, p);
  }
  for (int64_t i = nvec * V + tid; i < n; i += stride)
    out[i] = dropout_one(x[i], seed, offset + static_cast<uint64_t>(i), threshold, scale);
}

template <class T>
__global__ void dropout_scalar_kernel(const T* x, T* out, int64_t n, uint64_t seed, uint64_t offset,
                                      uint32_t threshold, acc_t<T> scale) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    out[i] = dropout_one(x[i], seed, offset + static_cast<uint64_t>(i), threshold, scale);
}

}  // namespace

void dropout(const TensorView& x, const TensorView& out, const DropoutParams& p) {
  const int64_t n = x.numel;
  if (n == 0) return;
  DeviceGuard guard(x.device);
  const cudaStream_t stream = current_stream(x.device);
  const uint32_t threshold = philox_keep_threshold(p.p);
  visit_device_dtype(x.dtype, [&](auto tag) {
    using T = decltype(tag);
    if constexpr (!std::is_integral_v<T>) {  // integers: rejected by ops/dropout.cpp
      using A = acc_t<T>;
      constexpr int V = Packed128<T>::kSize;
      const A scale = static_cast<A>(1.0 / (1.0 - p.p));
      const T* xp = x.ptr<const T>();
      T* po = out.ptr<T>();
      if (aligned16(xp) && aligned16(po)) {
        dropout_vec_kernel<T><<<grid_for(n / V + 1), kBlockSize, 0, stream>>>(xp, po, n, p.seed, p.offset,
                                                                               threshold, scale);
      } else {
        dropout_scalar_kernel<T><<<grid_for(n), kBlockSize, 0, stream>>>(xp, po, n, p.seed, p.offset, threshold,
                                                                          scale);
      }
      KILN_CUDA_CHECK_LAUNCH();
    }
  });
}

}  // namespace kiln::cuda
