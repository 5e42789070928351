// Fused cross entropy over the rows of a contiguous (rows, C) logits matrix: one read of
// the logits in the forward, one read and one write in the backward, no softmax stored.
// The CUDA kernels of the slots cross_entropy_forward/backward (ops/loss.h,
// CrossEntropyParams).
//
// Forward, row r with target t = target[r] (eps = label smoothing):
//   m = max_c x[r, c],  s = sum_c exp(x[r, c] - m),  lse[r] = m + log s
//   nll = lse[r] - x[r, t],  smooth = lse[r] - (1/C) sum_c x[r, c]   (= -(1/C) sum_c logp_c)
//   losses[r] = 0 if t == ignore_index, else (1 - eps) nll + eps smooth   (nll when eps == 0)
// Backward, g_r = grad[r * grad_stride] (grad_stride 0: one value for all rows, already
// divided by the count of non-ignored targets for a mean):
//   dlogits[r, c] = 0 if t == ignore_index, else (exp(x[r, c] - lse[r]) - eps/C - (1 - eps)[c == t]) g_r
// Shapes (checked by ops/loss.cpp): logits, dlogits (rows, C) contiguous, one floating
// dtype, C > 0; target i64 (rows); losses, lse, grad in the accumulation dtype A
// (accumulate_dtype: f32 for f16/bf16/f32, f64 for f64); grad_stride 0 when grad has one
// element.
// Writes (=) losses, lse, dlogits. Targets are range-checked here, not by the host (DESIGN:
// no hidden syncs): a target outside [0, C) other than ignore_index is reported through
// the device's kernel error record (cuda/runtime.h; thrown at the next synchronisation
// point) and its row is skipped like an ignored one (loss 0, dlogits 0), never read out of
// range.
// Special values follow ops/cpu/loss.cpp: the max ignores NaN, -inf logits add 0 to s, a
// NaN or +inf logit makes the row's loss NaN.
// Paths (the same for both directions):
//   C <= 1024: one warp per row, 8 rows per 256-thread block.
//   C > 1024: one block per row (128-512 threads, about kInFlight 16-byte loads per thread
//     in flight); the forward keeps a running (max, sum exp, sum x) per thread, rescaling
//     the sum when the max grows (online softmax, Milakov & Gimelshein 2018), and combines
//     the triples across the warp or block.
//   Rows are read as a scalar head up to 16-byte alignment, Packed128 body, scalar tail,
//   so any C and row alignment take the vector path; the backward stores Packed128 when
//   dlogits rows share the logits rows' alignment.
// Bandwidth: not yet measured on a GPU.
#include <kiln/cuda/kernels/common.cuh>
#include <kiln/cuda/kernels/device_errors.cuh>
#include <kiln/cuda/kernels/elementwise.cuh>
#include <kiln/cuda/kernels/reduce_utils.cuh>
#include <kiln/ops/op_list.h>

namespace kiln::cuda {
namespace {

constexpr int kRowsBlock = 256;       // warp-per-row path: 8 rows per block
constexpr int kWarpMaxClasses = 1024;  // above this, a block per row
constexpr int kMaxRowThreads = 512;   // block-per-row path
constexpr int kInFlight = 4;          // 16-byte loads per thread issued before use

constexpr uint32_t kTargetError = kernel_error_code(KernelErrorOp::CrossEntropy, KernelErrorKind::TargetOutOfRange);

// ---- device helpers ------------------------------------------------------------------

// Whether row's target is used (not ignore_index and in [0, n)); an out-of-range one is
// reported (only when `report`: one thread per row) and the row is then treated as ignored.
__device__ __forceinline__ bool target_used(int64_t t, int64_t n, int64_t ignore_index, KernelErrorRecord* err,
                                            bool report) {
  if (t == ignore_index) return false;
  if (static_cast<uint64_t>(t) < static_cast<uint64_t>(n)) return true;
  if (report) report_kernel_error(err, kTargetError, n, t);
  return false;
}

// Running max, sum of exp(x - max) and plain sum of x over part of a row.
template <class A>
struct RowStats {
  A m;
  A s;
  A sx;
};

template <class A>
__device__ __forceinline__ RowStats<A> stats_identity() {
  return {neg_inf<A>(), A(0), A(0)};
}

// exp(v - m), 0 for v == -inf (also while m is still -inf).
template <class A>
__device__ __forceinline__ A exp_shifted(A v, A m) {
  return v == neg_inf<A>() ? A(0) : k_exp(v - m);
}

template <class A, int N>
__device__ __forceinline__ void stats_update(RowStats<A>& st, const A (&v)[N]) {
  A vm = v[0];
#pragma unroll
  for (int k = 1; k < N; ++k) vm = k_fmax(vm, v[k]);
  const A mn = k_fmax(st.m, vm);
  if (mn != st.m) {  // rebase the sum on the larger max
    st.s *= k_exp(st.m - mn);
    st.m = mn;
  }
#pragma unroll
  for (int k = 0; k < N; ++k) {
    st.s += exp_shifted(v[k], st.m);
    st.sx += v[k];
  }
}

// Commutative, so every lane of a butterfly ends with the same triple.
template <class A>
__device__ __forceinline__ RowStats<A> stats_combine(const RowStats<A>& a, const RowStats<A>& b) {
  const A m = k_fmax(a.m, b.m);
  const A sa = a.m == m ? a.s : a.s * k_exp(a.m - m);
  const A sb = b.m == m ? b.s : b.s * k_exp(b.m - m);
  return {m, sa + sb, a.sx + b.sx};
}

// A row [0, n) split into a scalar head (up to the first 16-byte boundary), whole
// Packed128 vectors, and a scalar tail.
struct RowSplit {
  int64_t head, nvec, tail;
};
template <class T>
__device__ __forceinline__ RowSplit split_row(const T* xr, int64_t n) {
  constexpr int V = Packed128<T>::kSize;
  const int64_t mis = static_cast<int64_t>((reinterpret_cast<uintptr_t>(xr) & 15) / sizeof(T));
  const int64_t head = mis == 0 ? 0 : (V - mis < n ? V - mis : n);
  const int64_t nvec = (n - head) / V;
  return {head, nvec, head + nvec * V};
}

// This thread's share (tid of nthreads) of a row's statistics.
template <class T>
__device__ __forceinline__ RowStats<acc_t<T>> row_stats(const T* xr, int64_t n, int tid, int nthreads) {
  using A = acc_t<T>;
  constexpr int V = Packed128<T>::kSize;
  const RowSplit sp = split_row(xr, n);
  RowStats<A> st = stats_identity<A>();
  for (int64_t j = tid; j < sp.head; j += nthreads) {
    const A e[1] = {convert<A>(xr[j])};
    stats_update(st, e);
  }
  const T* xv = xr + sp.head;
  for (int64_t w0 = tid; w0 < sp.nvec; w0 += static_cast<int64_t>(kInFlight) * nthreads) {
    Packed128<T> p[kInFlight];
#pragma unroll
    for (int u = 0; u < kInFlight; ++u) {
      const int64_t w = w0 + static_cast<int64_t>(u) * nthreads;
      if (w < sp.nvec) p[u] = load128cs(xv + w * V);  // read once: evict first
    }
#pragma unroll
    for (int u = 0; u < kInFlight; ++u) {
      if (w0 + static_cast<int64_t>(u) * nthreads < sp.nvec) {
        A e[V];
#pragma unroll
        for (int k = 0; k < V; ++k) e[k] = convert<A>(p[u][k]);
        stats_update(st, e);
      }
    }
  }
  for (int64_t j = sp.tail + tid; j < n; j += nthreads) {
    const A e[1] = {convert<A>(xr[j])};
    stats_update(st, e);
  }
  return st;
}

// The row's loss and log-sum-exp from its combined statistics (one thread per row).
template <class T, class A>
__device__ __forceinline__ void finish_row(const T* xr, int64_t t, const RowStats<A>& st, int64_t n,
                                           int64_t ignore_index, A eps, A* loss, A* lse, KernelErrorRecord* err) {
  const A l = st.m + k_log(st.s);
  *lse = l;
  A out = A(0);
  if (target_used(t, n, ignore_index, err, /*report=*/true)) {
    const A nll = l - convert<A>(xr[t]);
    out = eps > A(0) ? (A(1) - eps) * nll + eps * (l - st.sx / static_cast<A>(n)) : nll;
  }
  *loss = out;
}

// This thread's share of one row's gradient.
template <class T, class A>
__device__ __forceinline__ void row_backward(const T* xr, T* dr, int64_t n, int tid, int nthreads, int64_t t,
                                             int64_t ignore_index, A l, A g, A eps_c, A hot, bool vec_out,
                                             KernelErrorRecord* err) {
  constexpr int V = Packed128<T>::kSize;
  const bool ignored = !target_used(t, n, ignore_index, err, /*report=*/tid == 0);
  auto grad_at = [&](A v, int64_t c) -> A {
    if (ignored) return A(0);
    return (k_exp(v - l) - eps_c - (c == t ? hot : A(0))) * g;
  };
  const RowSplit sp = split_row(xr, n);
  for (int64_t j = tid; j < sp.head; j += nthreads) dr[j] = convert<T>(grad_at(ignored ? A(0) : convert<A>(xr[j]), j));
  const T* xv = xr + sp.head;
  T* dv = dr + sp.head;
  for (int64_t w0 = tid; w0 < sp.nvec; w0 += static_cast<int64_t>(kInFlight) * nthreads) {
    Packed128<T> p[kInFlight];
    if (!ignored) {
#pragma unroll
      for (int u = 0; u < kInFlight; ++u) {
        const int64_t w = w0 + static_cast<int64_t>(u) * nthreads;
        if (w < sp.nvec) p[u] = load128cs(xv + w * V);  // last use of the logits
      }
    }
#pragma unroll
    for (int u = 0; u < kInFlight; ++u) {
      const int64_t w = w0 + static_cast<int64_t>(u) * nthreads;
      if (w < sp.nvec) {
        Packed128<T> o;
#pragma unroll
        for (int k = 0; k < V; ++k) {
          const int64_t c = sp.head + w * V + k;
          o[k] = convert<T>(grad_at(ignored ? A(0) : convert<A>(p[u][k]), c));
        }
        if (vec_out) {
          store128(dv + w * V, o);
        } else {
#pragma unroll
          for (int k = 0; k < V; ++k) dv[w * V + k] = o[k];
        }
      }
    }
  }
  for (int64_t j = sp.tail + tid; j < n; j += nthreads)
    dr[j] = convert<T>(grad_at(ignored ? A(0) : convert<A>(xr[j]), j));
}

// ---- kernels -------------------------------------------------------------------------

template <class T>
__global__ void __launch_bounds__(kRowsBlock)
    cross_entropy_forward_warp_kernel(const T* x, const int64_t* target, acc_t<T>* losses, acc_t<T>* lse,
                                      int64_t rows, int64_t n, int64_t ignore_index, acc_t<T> eps,
                                      KernelErrorRecord* err) {
  using A = acc_t<T>;
  const int lane = threadIdx.x % kWarpSize;
  const int64_t warp = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / kWarpSize;
  const int64_t nwarps = static_cast<int64_t>(gridDim.x) * blockDim.x / kWarpSize;
  for (int64_t row = warp; row < rows; row += nwarps) {  // warp-uniform
    const T* xr = x + row * n;
    RowStats<A> st = row_stats(xr, n, lane, kWarpSize);
    st = warp_all_reduce(st, [](const RowStats<A>& a, const RowStats<A>& b) { return stats_combine(a, b); });
    if (lane == 0) finish_row(xr, target[row], st, n, ignore_index, eps, losses + row, lse + row, err);
  }
}

template <class T>
__global__ void __launch_bounds__(kMaxRowThreads)
    cross_entropy_forward_block_kernel(const T* x, const int64_t* target, acc_t<T>* losses, acc_t<T>* lse,
                                       int64_t rows, int64_t n, int64_t ignore_index, acc_t<T> eps,
                                       KernelErrorRecord* err) {
  using A = acc_t<T>;
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const T* xr = x + row * n;
    RowStats<A> st = row_stats(xr, n, threadIdx.x, blockDim.x);
    st = block_all_reduce(st, [](const RowStats<A>& a, const RowStats<A>& b) { return stats_combine(a, b); },
                          stats_identity<A>());
    if (threadIdx.x == 0) finish_row(xr, target[row], st, n, ignore_index, eps, losses + row, lse + row, err);
  }
}

template <class T>
__global__ void __launch_bounds__(kRowsBlock)
    cross_entropy_backward_warp_kernel(const T* x, const int64_t* target, const acc_t<T>* lse, const acc_t<T>* grad,
                                       int64_t grad_stride, T* dx, int64_t rows, int64_t n, int64_t ignore_index,
                                       acc_t<T> eps_c, acc_t<T> hot, bool vec_out, KernelErrorRecord* err) {
  const int lane = threadIdx.x % kWarpSize;
  const int64_t warp = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / kWarpSize;
  const int64_t nwarps = static_cast<int64_t>(gridDim.x) * blockDim.x / kWarpSize;
  for (int64_t row = warp; row < rows; row += nwarps)
    row_backward(x + row * n, dx + row * n, n, lane, kWarpSize, target[row], ignore_index, lse[row],
                 grad[row * grad_stride], eps_c, hot, vec_out, err);
}

template <class T>
__global__ void __launch_bounds__(kMaxRowThreads)
    cross_entropy_backward_block_kernel(const T* x, const int64_t* target, const acc_t<T>* lse, const acc_t<T>* grad,
                                        int64_t grad_stride, T* dx, int64_t rows, int64_t n, int64_t ignore_index,
                                        acc_t<T> eps_c, acc_t<T> hot, bool vec_out, KernelErrorRecord* err) {
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x)
    row_backward(x + row * n, dx + row * n, n, static_cast<int>(threadIdx.x), static_cast<int>(blockDim.x),
                 target[row], ignore_index, lse[row], grad[row * grad_stride], eps_c, hot, vec_out, err);
}

// ---- launchers -----------------------------------------------------------------------

struct RowLaunch {
  bool warp;
  unsigned blocks, threads;
};

// Warp per row for short rows; otherwise a block per row sized so that each thread has
// about kInFlight vectors of the row.
template <class T>
RowLaunch row_launch(int64_t rows, int64_t n) {
  constexpr int V = Packed128<T>::kSize;
  if (n <= kWarpMaxClasses) return {true, grid_for(rows, kRowsBlock / kWarpSize), kRowsBlock};
  int threads = 128;
  while (threads < kMaxRowThreads && static_cast<int64_t>(threads) * V * kInFlight < n) threads *= 2;
  const unsigned blocks = static_cast<unsigned>(rows < 65535LL * 32 ? rows : 65535LL * 32);
  return {false, blocks, static_cast<unsigned>(threads)};
}

template <class T>
void run_forward(const T* x, const int64_t* target, acc_t<T>* losses, acc_t<T>* lse, int64_t rows, int64_t n,
                 int64_t ignore_index, double eps, KernelErrorRecord* err, cudaStream_t stream) {
  using A = acc_t<T>;
  const RowLaunch L = row_launch<T>(rows, n);
  if (L.warp)
    cross_entropy_forward_warp_kernel<T><<<L.blocks, L.threads, 0, stream>>>(x, target, losses, lse, rows, n,
                                                                             ignore_index, static_cast<A>(eps), err);
  else
    cross_entropy_forward_block_kernel<T><<<L.blocks, L.threads, 0, stream>>>(x, target, losses, lse, rows, n,
                                                                              ignore_index, static_cast<A>(eps), err);
  KILN_CUDA_CHECK_LAUNCH();
}

template <class T>
void run_backward(const T* x, const int64_t* target, const acc_t<T>* lse, const acc_t<T>* grad, int64_t grad_stride,
                  T* dx, int64_t rows, int64_t n, int64_t ignore_index, double eps, KernelErrorRecord* err,
                  cudaStream_t stream) {
  using A = acc_t<T>;
  const RowLaunch L = row_launch<T>(rows, n);
  const bool vec_out = (reinterpret_cast<uintptr_t>(x) & 15) == (reinterpret_cast<uintptr_t>(dx) & 15);
  const A eps_c = static_cast<A>(eps / static_cast<double>(n)), hot = static_cast<A>(1.0 - eps);
  if (L.warp)
    cross_entropy_backward_warp_kernel<T><<<L.blocks, L.threads, 0, stream>>>(
        x, target, lse, grad, grad_stride, dx, rows, n, ignore_index, eps_c, hot, vec_out, err);
  else
    cross_entropy_backward_block_kernel<T><<<L.blocks, L.threads, 0, stream>>>(
        x, target, lse, grad, grad_stride, dx, rows, n, ignore_index, eps_c, hot, vec_out, err);
  KILN_CUDA_CHECK_LAUNCH();
}

}  // namespace

// A of the device type T is the C++ type of accumulate_dtype(T's dtype).
static_assert(std::is_same_v<acc_t<__half>, float> && std::is_same_v<acc_t<__nv_bfloat16>, float> &&
              std::is_same_v<acc_t<float>, float> && std::is_same_v<acc_t<double>, double>);

void cross_entropy_forward(const TensorView& logits, const TensorView& target, const TensorView& losses,
                           const TensorView& lse, const CrossEntropyParams& p) {
  const int64_t rows = logits.size(0), classes = logits.size(1);
  if (rows == 0) return;
  DeviceGuard guard(logits.device);
  const cudaStream_t stream = current_stream(logits.device);
  visit_device_dtype(logits.dtype, [&](auto tag) {
    using T = decltype(tag);
    if constexpr (!std::is_integral_v<T>) {  // integer logits: rejected by ops/loss.cpp
      using A = acc_t<T>;
      run_forward(logits.ptr<const T>(), target.ptr<const int64_t>(), losses.ptr<A>(), lse.ptr<A>(), rows, classes,
                  p.ignore_index, p.label_smoothing, kernel_error_record(logits.device.index), stream);
    }
  });
}

void cross_entropy_backward(const TensorView& logits, const TensorView& target, const TensorView& lse,
                            const TensorView& grad, const TensorView& dlogits, const CrossEntropyParams& p) {
  const int64_t rows = logits.size(0), classes = logits.size(1);
  if (rows == 0 || classes == 0) return;
  const int64_t grad_stride = grad.numel == 1 ? 0 : 1;
  DeviceGuard guard(logits.device);
  const cudaStream_t stream = current_stream(logits.device);
  visit_device_dtype(logits.dtype, [&](auto tag) {
    using T = decltype(tag);
    if constexpr (!std::is_integral_v<T>) {  // integer logits: rejected by ops/loss.cpp
      using A = acc_t<T>;
      run_backward(logits.ptr<const T>(), target.ptr<const int64_t>(), lse.ptr<const A>(), grad.ptr<const A>(),
                   grad_stride, dlogits.ptr<T>(), rows, classes, p.ignore_index, p.label_smoothing,
                   kernel_error_record(logits.device.index), stream);
    }
  });
}

}  // namespace kiln::cuda
