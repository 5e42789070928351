// index_select, gather and scatter_add over (outer, n, inner) layouts: the CUDA kernels
// of the slots of ops/index.h (IndexParams).
//
//   index_select: out[o, j, :] = x[o, index[j], :]          x (outer, n, inner), index (k),
//                                                           out (outer, k, inner); writes (=).
//   gather:       out[o, j, i] = x[o, index[o, j, i], i]    index, out (outer, k, inner); (=).
//   scatter_add:  out[o, index[o, j, i], i] += src[o, j, i] index, src (outer, k, inner),
//                                                           out (outer, n, inner); (+=).
// All contiguous; index int64; out and src of one dtype, not bool (ops/index.cpp).
// Index values are range-checked here, not by the host (DESIGN: no hidden syncs): a value
// outside [0, n) is reported through the device's kernel error record (cuda/runtime.h;
// thrown at the next synchronisation point) and skipped: index_select and gather write 0
// for it, scatter_add adds nothing. One unsigned comparison per index.
// index_select and gather move bits (one instance per copy-unit size, not per dtype):
// index_select copies each (o, j) row in the widest unit (16..1 bytes) that divides the
// row and the base alignments. scatter_add uses atomicAdd (f32, f64, i32; i64 as
// unsigned long long, which wraps like two's complement) and, for u8, a CAS loop on the
// aligned 32-bit word holding the byte (as PyTorch does). f16/bf16 accumulate in f32:
// out is widened into an f32 scratch buffer (kiln's allocator, out's numel * 4 bytes),
// src is added there with f32 atomics, and each sum is rounded back into out once, so
// many small contributions to a frequent index (embedding gradients) are not lost to
// half-precision rounding at every step. The order of concurrent additions to one
// element is unspecified, so floating scatter_add is not bit-reproducible when indices
// repeat; integer results are exact.
// Layout: 2-D blocks, y over the rows (o, j) (one division per row), x over the row's
// elements (coalesced); grid-stride in both.
// Bandwidth on H100/H200: not yet measured (tools/bench_kernels fills this in).
#include <kiln/cuda/kernels/common.cuh>
#include <kiln/cuda/kernels/device_errors.cuh>
#include <kiln/cuda/kernels/elementwise.cuh>
#include <kiln/cuda/kernels/reduce_utils.cuh>
#include <kiln/ops/op_list.h>

namespace kiln::cuda {
namespace {

constexpr int kIndexBlock = 256;

constexpr uint32_t kIndexSelectError = kernel_error_code(KernelErrorOp::IndexSelect, KernelErrorKind::IndexOutOfRange);
constexpr uint32_t kGatherError = kernel_error_code(KernelErrorOp::Gather, KernelErrorKind::IndexOutOfRange);
constexpr uint32_t kScatterAddError = kernel_error_code(KernelErrorOp::ScatterAdd, KernelErrorKind::IndexOutOfRange);

// ---- device helpers ------------------------------------------------------------------

__device__ __forceinline__ void atomic_add(float* p, float v) { atomicAdd(p, v); }
__device__ __forceinline__ void atomic_add(double* p, double v) { atomicAdd(p, v); }
__device__ __forceinline__ void atomic_add(int32_t* p, int32_t v) { atomicAdd(reinterpret_cast<int*>(p), v); }
__device__ __forceinline__ void atomic_add(int64_t* p, int64_t v) {
  atomicAdd(reinterpret_cast<unsigned long long*>(p), static_cast<unsigned long long>(v));
}
// Byte add by compare-and-swap on the 4-byte-aligned word containing it; the other
// three bytes are written back unchanged. Allocations start 256-byte aligned and are
// whole 16-byte units (cuda/allocator.cpp), so that word lies inside the byte's own
// allocation, never past its end or in another one.
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
                                    int64_t cols, KernelErrorRecord* err) {
  const int64_t row_stride = static_cast<int64_t>(gridDim.y) * blockDim.y;
  const int64_t col_stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t row = static_cast<int64_t>(blockIdx.y) * blockDim.y + threadIdx.y; row < rows; row += row_stride) {
    const int64_t o = row / k, j = row - o * k;
    const int64_t i = __ldg(index + j);
    U* dst = out + row * cols;
    if (index_in_range(err, kIndexSelectError, i, n)) {
      const U* src = x + (o * n + i) * cols;
      for (int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; c < cols; c += col_stride)
        dst[c] = src[c];
    } else {
      for (int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; c < cols; c += col_stride)
        dst[c] = U{};
    }
  }
}

// rows = outer * k rows of `inner` elements (carried as U of the element's size).
template <class U>
__global__ void gather_kernel(const U* x, const int64_t* index, U* out, int64_t rows, int64_t k, int64_t n,
                              int64_t inner, KernelErrorRecord* err) {
  const int64_t row_stride = static_cast<int64_t>(gridDim.y) * blockDim.y;
  const int64_t col_stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t row = static_cast<int64_t>(blockIdx.y) * blockDim.y + threadIdx.y; row < rows; row += row_stride) {
    const int64_t o = row / k;
    const U* xo = x + o * n * inner;
    const int64_t* idx = index + row * inner;
    U* dst = out + row * inner;
    for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < inner; i += col_stride) {
      const int64_t v = idx[i];
      dst[i] = index_in_range(err, kGatherError, v, n) ? xo[v * inner + i] : U{};
    }
  }
}

// out (of the accumulation type A: T itself, or f32 scratch for f16/bf16 T) += src.
template <class A, class T>
__global__ void scatter_add_kernel(A* out, const int64_t* index, const T* src, int64_t rows, int64_t k, int64_t n,
                                   int64_t inner, KernelErrorRecord* err) {
  const int64_t row_stride = static_cast<int64_t>(gridDim.y) * blockDim.y;
  const int64_t col_stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t row = static_cast<int64_t>(blockIdx.y) * blockDim.y + threadIdx.y; row < rows; row += row_stride) {
    const int64_t o = row / k;
    A* oo = out + o * n * inner;
    const int64_t* idx = index + row * inner;
    const T* s = src + row * inner;
    for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < inner; i += col_stride) {
      const int64_t v = idx[i];
      if (index_in_range(err, kScatterAddError, v, n)) atomic_add(oo + v * inner + i, convert<A>(s[i]));
    }
  }
}

// to[i] = convert(from[i]) over n contiguous elements (the f32 scratch of a half-type
// scatter_add: widened from out before, rounded back into out after).
template <class To, class From>
__global__ void convert_kernel(const From* from, To* to, int64_t n) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    to[i] = convert<To>(from[i]);
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
                      int64_t cols, KernelErrorRecord* err, cudaStream_t stream) {
  const RowLaunch l = row_launch(outer * k, cols);
  index_select_kernel<U><<<l.grid, l.block, 0, stream>>>(static_cast<const U*>(x), index, static_cast<U*>(out),
                                                          outer * k, k, n, cols, err);
  KILN_CUDA_CHECK_LAUNCH();
}

template <class U>
void run_gather(const void* x, const int64_t* index, void* out, int64_t outer, int64_t n, int64_t k, int64_t inner,
                KernelErrorRecord* err, cudaStream_t stream) {
  const RowLaunch l = row_launch(outer * k, inner);
  gather_kernel<U><<<l.grid, l.block, 0, stream>>>(static_cast<const U*>(x), index, static_cast<U*>(out), outer * k,
                                                    k, n, inner, err);
  KILN_CUDA_CHECK_LAUNCH();
}

template <class A, class T>
void run_scatter_add(A* out, const int64_t* index, const T* src, const IndexParams& p, KernelErrorRecord* err,
                     cudaStream_t stream) {
  const RowLaunch l = row_launch(p.outer * p.k, p.inner);
  scatter_add_kernel<A, T><<<l.grid, l.block, 0, stream>>>(out, index, src, p.outer * p.k, p.k, p.n, p.inner, err);
  KILN_CUDA_CHECK_LAUNCH();
}

template <class To, class From>
void run_convert(const From* from, To* to, int64_t n, cudaStream_t stream) {
  convert_kernel<To, From><<<grid_for(n), kBlockSize, 0, stream>>>(from, to, n);
  KILN_CUDA_CHECK_LAUNCH();
}

}  // namespace

void index_select(const TensorView& x, const TensorView& index, const TensorView& out, const IndexParams& p) {
  const int64_t outer = p.outer, n = p.n, k = p.k, inner = p.inner;
  if (outer == 0 || k == 0 || inner == 0) return;
  DeviceGuard guard(x.device);
  const cudaStream_t stream = current_stream(x.device);
  const int64_t* idx = index.ptr<const int64_t>();
  KernelErrorRecord* err = kernel_error_record(x.device.index);
  const int64_t row_bytes = inner * static_cast<int64_t>(dtype_size(x.dtype));
  auto fits = [&](int64_t unit) {
    return row_bytes % unit == 0 && aligned_to(x.data, static_cast<size_t>(unit)) &&
           aligned_to(out.data, static_cast<size_t>(unit));
  };
  if (fits(16)) run_index_select<uint4>(x.data, idx, out.data, outer, n, k, row_bytes / 16, err, stream);
  else if (fits(8)) run_index_select<uint2>(x.data, idx, out.data, outer, n, k, row_bytes / 8, err, stream);
  else if (fits(4)) run_index_select<uint32_t>(x.data, idx, out.data, outer, n, k, row_bytes / 4, err, stream);
  else if (fits(2)) run_index_select<uint16_t>(x.data, idx, out.data, outer, n, k, row_bytes / 2, err, stream);
  else run_index_select<uint8_t>(x.data, idx, out.data, outer, n, k, row_bytes, err, stream);
}

void gather(const TensorView& x, const TensorView& index, const TensorView& out, const IndexParams& p) {
  const int64_t outer = p.outer, n = p.n, k = p.k, inner = p.inner;
  if (outer == 0 || k == 0 || inner == 0) return;
  DeviceGuard guard(x.device);
  const cudaStream_t stream = current_stream(x.device);
  const int64_t* idx = index.ptr<const int64_t>();
  KernelErrorRecord* err = kernel_error_record(x.device.index);
  switch (dtype_size(x.dtype)) {
    case 1: run_gather<uint8_t>(x.data, idx, out.data, outer, n, k, inner, err, stream); break;
    case 2: run_gather<uint16_t>(x.data, idx, out.data, outer, n, k, inner, err, stream); break;
    case 4: run_gather<uint32_t>(x.data, idx, out.data, outer, n, k, inner, err, stream); break;
    case 8: run_gather<uint64_t>(x.data, idx, out.data, outer, n, k, inner, err, stream); break;
    default: launch_fail("gather: unsupported element size");
  }
}

void scatter_add(const TensorView& out, const TensorView& index, const TensorView& src, const IndexParams& p) {
  if (p.outer == 0 || p.k == 0 || p.inner == 0) return;
  DeviceGuard guard(out.device);
  const cudaStream_t stream = current_stream(out.device);
  const int64_t* idx = index.ptr<const int64_t>();
  KernelErrorRecord* err = kernel_error_record(out.device.index);
  visit_device_dtype(out.dtype, [&](auto tag) {
    using T = decltype(tag);
    if constexpr (std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>) {
      // Accumulate in f32 scratch (see the file comment); handed back to the allocator in
      // stream order once the kernels that use it are queued.
      using A = acc_t<T>;
      const int64_t numel = out.numel;
      DeviceScratch acc(static_cast<size_t>(numel) * sizeof(A), out.device);
      run_convert(out.ptr<const T>(), acc.get<A>(), numel, stream);
      run_scatter_add(acc.get<A>(), idx, src.ptr<const T>(), p, err, stream);
      run_convert(acc.get<const A>(), out.ptr<T>(), numel, stream);
    } else if constexpr (!std::is_same_v<T, bool>) {  // bool: rejected by ops/index.cpp
      run_scatter_add(out.ptr<T>(), idx, src.ptr<const T>(), p, err, stream);
    }
  });
}

}  // namespace kiln::cuda
