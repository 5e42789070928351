// index_select, gather and scatter_add over (outer, n, inner) layouts.
//
//   index_select: out[o, j, :] = x[o, index[j], :]          x (outer, n, inner), index (k),
//                                                           out (outer, k, inner); writes (=).
//   gather:       out[o, j, i] = x[o, index[o, j, i], i]    index, out (outer, k, inner); (=).
//   scatter_add:  out[o, index[o, j, i], i] += src[o, j, i] index, src (outer, k, inner),
//                                                           out (outer, n, inner); (+=).
// All contiguous; index int64 with values already checked in [0, n) by ops/.
// index_select and gather move bits (one instance per copy-unit size, not per dtype):
// index_select copies each (o, j) row in the widest unit (16..1 bytes) that divides the
// row and the base alignments. scatter_add uses atomicAdd (f32, f64, f16, bf16, i32;
// i64 as unsigned long long, which wraps like two's complement) and, for u8, a CAS loop
// on the aligned 32-bit word holding the byte (as PyTorch does). The order of
// concurrent additions to one element is unspecified, so floating scatter_add is not
// bit-reproducible when indices repeat; integer results are exact.
// Layout: 2-D blocks, y over the rows (o, j) (one division per row), x over the row's
// elements (coalesced); grid-stride in both.
// Bandwidth on H100/H200: not yet measured (tools/bench_kernels fills this in).
#include <kiln/core/op_kinds.h>
#include <kiln/cuda/kernels/common.cuh>
#include <kiln/cuda/kernels/elementwise.cuh>
#include <kiln/cuda/kernels/launch.h>

namespace kiln::cuda {
namespace {

constexpr int kIndexBlock = 256;

// ---- device helpers ------------------------------------------------------------------

__device__ __forceinline__ void atomic_add(float* p, float v) { atomicAdd(p, v); }
__device__ __forceinline__ void atomic_add(double* p, double v) { atomicAdd(p, v); }
__device__ __forceinline__ void atomic_add(__half* p, __half v) { atomicAdd(p, v); }
__device__ __forceinline__ void atomic_add(__nv_bfloat16* p, __nv_bfloat16 v) { atomicAdd(p, v); }
__device__ __forceinline__ void atomic_add(int32_t* p, int32_t v) { atomicAdd(reinterpret_cast<int*>(p), v); }
__device__ __forceinline__ void atomic_add(int64_t* p, int64_t v) {
  atomicAdd(reinterpret_cast<unsigned long long*>(p), static_cast<unsigned long long>(v));
}
// Byte add by compare-and-swap on the 4-byte-aligned word containing it; the other
// three bytes are written back unchanged. Allocations start 256-byte aligned, so that
// word lies inside the byte's own allocation (or its padding), never in another one.
__device__ __forceinline__ void atomic_add(uint8_t* p, uint8_t v) {
  const uintptr_t addr = reinterpret_cast<uintptr_t>(p);
  unsigned* word = reinterpret_cast<unsigned*>(addr & ~uintptr_t{3});
  const unsigned shift = static_cast<unsigned>(addr & 3u) * 8u;
  unsigned old = *word, assumed;
  do {
    assumed = old;
    const unsigned byte = ((assumed >> shift) + v) & 0xffu;
    old = atomicCAS(word, assumed, (assumed & ~(0xffu << shift)) | (byte << shift));
  } while (old != assumed);
}

// ---- kernels -------------------------------------------------------------------------

// rows = outer * k rows of `cols` units U each.
template <class U>
__global__ void index_select_kernel(const U* x, const int64_t* index, U* out, int64_t rows, int64_t k, int64_t n,
                                    int64_t cols) {
  const int64_t row_stride = static_cast<int64_t>(gridDim.y) * blockDim.y;
  const int64_t col_stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t row = static_cast<int64_t>(blockIdx.y) * blockDim.y + threadIdx.y; row < rows; row += row_stride) {
    const int64_t o = row / k, j = row - o * k;
    const U* src = x + (o * n + __ldg(index + j)) * cols;
    U* dst = out + row * cols;
    for (int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; c < cols; c += col_stride)
      dst[c] = src[c];
  }
}

// rows = outer * k rows of `inner` elements (carried as U of the element's size).
template <class U>
__global__ void gather_kernel(const U* x, const int64_t* index, U* out, int64_t rows, int64_t k, int64_t n,
                              int64_t inner) {
  const int64_t row_stride = static_cast<int64_t>(gridDim.y) * blockDim.y;
  const int64_t col_stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t row = static_cast<int64_t>(blockIdx.y) * blockDim.y + threadIdx.y; row < rows; row += row_stride) {
    const int64_t o = row / k;
    const U* xo = x + o * n * inner;
    const int64_t* idx = index + row * inner;
    U* dst = out + row * inner;
    for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < inner; i += col_stride)
      dst[i] = xo[idx[i] * inner + i];
  }
}

template <class T>
__global__ void scatter_add_kernel(T* out, const int64_t* index, const T* src, int64_t rows, int64_t k, int64_t n,
                                   int64_t inner) {
  const int64_t row_stride = static_cast<int64_t>(gridDim.y) * blockDim.y;
  const int64_t col_stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t row = static_cast<int64_t>(blockIdx.y) * blockDim.y + threadIdx.y; row < rows; row += row_stride) {
    const int64_t o = row / k;
    T* oo = out + o * n * inner;
    const int64_t* idx = index + row * inner;
    const T* s = src + row * inner;
    for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < inner; i += col_stride)
      atomic_add(oo + idx[i] * inner + i, s[i]);
  }
}

// ---- launchers -----------------------------------------------------------------------

// 2-D launch shape for `rows` rows of `cols` elements: blockDim.x the power of two >= cols
// (at most the block), the rest of the block over rows.
struct RowLaunch {
  dim3 grid, block;
};
inline RowLaunch row_launch(int64_t rows, int64_t cols) {
  unsigned bx = 1;
  while (bx < kIndexBlock && bx < cols) bx *= 2;
  const unsigned by = kIndexBlock / bx;
  const int64_t gx = (cols + bx - 1) / bx, gy = (rows + by - 1) / by;
  RowLaunch l;
  l.block = dim3(bx, by);
  l.grid = dim3(static_cast<unsigned>(gx < 65535LL * 32 ? gx : 65535LL * 32),
                static_cast<unsigned>(gy < 65535 ? gy : 65535));
  return l;
}

template <class U>
void run_index_select(const void* x, const int64_t* index, void* out, int64_t outer, int64_t n, int64_t k,
                      int64_t cols, cudaStream_t stream) {
  const RowLaunch l = row_launch(outer * k, cols);
  index_select_kernel<U><<<l.grid, l.block, 0, stream>>>(static_cast<const U*>(x), index, static_cast<U*>(out),
                                                          outer * k, k, n, cols);
  KILN_CUDA_CHECK_LAUNCH();
}

template <class U>
void run_gather(const void* x, const int64_t* index, void* out, int64_t outer, int64_t n, int64_t k, int64_t inner,
                cudaStream_t stream) {
  const RowLaunch l = row_launch(outer * k, inner);
  gather_kernel<U><<<l.grid, l.block, 0, stream>>>(static_cast<const U*>(x), index, static_cast<U*>(out), outer * k,
                                                    k, n, inner);
  KILN_CUDA_CHECK_LAUNCH();
}

}  // namespace

void launch_index_select(const void* x, const int64_t* index, void* out, size_t elem_size, int64_t outer, int64_t n,
                         int64_t k, int64_t inner, cudaStream_t stream) {
  if (outer == 0 || k == 0 || inner == 0) return;
  const int64_t row_bytes = inner * static_cast<int64_t>(elem_size);
  auto fits = [&](int64_t unit) {
    return row_bytes % unit == 0 && aligned_to(x, static_cast<size_t>(unit)) && aligned_to(out, static_cast<size_t>(unit));
  };
  if (fits(16)) run_index_select<uint4>(x, index, out, outer, n, k, row_bytes / 16, stream);
  else if (fits(8)) run_index_select<uint2>(x, index, out, outer, n, k, row_bytes / 8, stream);
  else if (fits(4)) run_index_select<uint32_t>(x, index, out, outer, n, k, row_bytes / 4, stream);
  else if (fits(2)) run_index_select<uint16_t>(x, index, out, outer, n, k, row_bytes / 2, stream);
  else run_index_select<uint8_t>(x, index, out, outer, n, k, row_bytes, stream);
}

void launch_gather(const void* x, const int64_t* index, void* out, size_t elem_size, int64_t outer, int64_t n,
                   int64_t k, int64_t inner, cudaStream_t stream) {
  if (outer == 0 || k == 0 || inner == 0) return;
  switch (elem_size) {
    case 1: run_gather<uint8_t>(x, index, out, outer, n, k, inner, stream); break;
    case 2: run_gather<uint16_t>(x, index, out, outer, n, k, inner, stream); break;
    case 4: run_gather<uint32_t>(x, index, out, outer, n, k, inner, stream); break;
    case 8: run_gather<uint64_t>(x, index, out, outer, n, k, inner, stream); break;
    default: launch_fail("launch_gather: unsupported element size");
  }
}

void launch_scatter_add(void* out, const int64_t* index, const void* src, DType dtype, int64_t outer, int64_t n,
                        int64_t k, int64_t inner, cudaStream_t stream) {
  if (outer == 0 || k == 0 || inner == 0) return;
  visit_device_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    if constexpr (std::is_same_v<T, bool>) {
      launch_fail("launch_scatter_add: not supported for bool tensors");
    } else {
      const RowLaunch l = row_launch(outer * k, inner);
      scatter_add_kernel<T><<<l.grid, l.block, 0, stream>>>(static_cast<T*>(out), index, static_cast<const T*>(src),
                                                             outer * k, k, n, inner);
      KILN_CUDA_CHECK_LAUNCH();
    }
  });
}

}  // namespace kiln::cuda
