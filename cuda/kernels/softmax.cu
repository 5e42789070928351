// Softmax and log-softmax over the middle axis of a contiguous (outer, n, inner) tensor:
// the CUDA kernel of the slot `softmax` (ops/softmax.h, SoftmaxParams); and of the slot
// `softmax_backward` (its first-order gradient: a warp per row when inner == 1, a thread
// per column otherwise; two passes over y and g; compiled, not yet run on a GPU).
//
//   m = max_j x[o, j, i],  s = sum_j exp(x[o, j, i] - m)
//   softmax:     out[o, j, i] = exp(x[o, j, i] - m) / s
//   log_softmax: out[o, j, i] = (x[o, j, i] - m) - log(s)
// x, out contiguous (outer, n, inner), one floating dtype (checked by ops/softmax.cpp);
// writes (=). f16/bf16/f32 accumulate in float, f64 in double; precise expf/logf.
// Special values follow ops/cpu/softmax.cpp: the max ignores NaN, a NaN anywhere in a
// row makes the whole row NaN, -inf entries give 0 (or -inf), a row that is all -inf
// gives NaN.
// Paths:
//   inner == 1, n <= 1024: one warp per row, the row held in registers (ceil(n/32) per
//     lane, rounded up to a power of two: one instance per bucket), Packed128 loads and
//     stores when n is a multiple of the vector width and the bases are aligned; one
//     read and one write of each element.
//   inner == 1, n > 1024: one block (128-512 threads) per row; pass 1 keeps a running
//     (max, sum) per thread, rescaling the sum when the max grows (online softmax,
//     Milakov & Gimelshein 2018), and combines the pairs across the block; pass 2
//     re-reads the row (from L2 for rows in flight) and writes. Packed128 with scalar
//     heads/tails for any row alignment.
//   inner > 1: one thread per (o, i) column (consecutive i: coalesced), online pass then
//     write pass, when columns are short; for long columns 2-D blocks of up to 32
//     columns by `by` rows of n (256 threads, 1024 when outer * inner gives few blocks)
//     combine per-thread (max, sum) pairs through shared memory, then write.
// Bandwidth on H100/H200: not yet measured (tools/bench_kernels fills this in).
#include <kiln/cuda/kernels/common.cuh>
#include <kiln/cuda/kernels/elementwise.cuh>
#include <kiln/cuda/kernels/reduce_utils.cuh>
#include <kiln/ops/op_list.h>

namespace kiln::cuda {
namespace {

constexpr int kWarpRowsBlock = 256;  // warp-per-row path: 8 rows per block
constexpr int kMaxRowBlock = 512;    // block-per-row path
constexpr int kMaxColBlock = 1024;   // inner > 1, long columns: bx * by threads
constexpr int kInFlight = 4;         // loads per thread issued before use

// ---- device helpers ------------------------------------------------------------------

// Running max and sum of exp(x - max) over part of a row.
template <class A>
struct MaxSum {
  A m;
  A s;
};

template <class A>
__device__ __forceinline__ MaxSum<A> maxsum_identity() {
  return {neg_inf<A>(), A(0)};
}

// exp(v - m) for a row element, 0 for v == -inf (also when m == -inf, so that -inf
// entries seen before any finite one add nothing; a row whose max is -inf ends NaN in
// the write pass anyway, as in the CPU reference).
template <class A>
__device__ __forceinline__ A exp_shifted(A v, A m) {
  return v == neg_inf<A>() ? A(0) : k_exp(v - m);
}

// Raises the running max to mn, rescaling the sum (a NaN sum stays NaN).
template <class A>
__device__ __forceinline__ void maxsum_rebase(MaxSum<A>& st, A mn) {
  if (mn != st.m) {
    st.s *= k_exp(st.m - mn);
    st.m = mn;
  }
}

template <class A, int N>
__device__ __forceinline__ void maxsum_update(MaxSum<A>& st, const A (&v)[N]) {
  A vm = v[0];
#pragma unroll
  for (int k = 1; k < N; ++k) vm = k_fmax(vm, v[k]);
  maxsum_rebase(st, k_fmax(st.m, vm));
#pragma unroll
  for (int k = 0; k < N; ++k) st.s += exp_shifted(v[k], st.m);
}

// Commutative, so every lane of a butterfly ends with the same pair.
template <class A>
__device__ __forceinline__ MaxSum<A> maxsum_combine(const MaxSum<A>& a, const MaxSum<A>& b) {
  const A m = k_fmax(a.m, b.m);
  const A sa = a.m == m ? a.s : a.s * k_exp(a.m - m);
  const A sb = b.m == m ? b.s : b.s * k_exp(b.m - m);
  return {m, sa + sb};
}

// The output element from x, the row max and either 1/log-sum (see finish_params).
template <class A>
__device__ __forceinline__ A softmax_out(A v, A m, A s_or_logs, bool log) {
  return log ? (v - m) - s_or_logs : k_exp(v - m) / s_or_logs;
}

// ---- kernels -------------------------------------------------------------------------

// inner == 1, n <= 32 * kPerLane: one warp per row, element c of a lane at column
// (c * 32 + lane) (scalar) or vector c at columns (c * 32 + lane) * V (vec).
template <class T, int kPerLane>
__global__ void __launch_bounds__(kWarpRowsBlock)
    softmax_warp_kernel(const T* x, T* out, int64_t rows, int n, bool log, bool vec) {
  using A = acc_t<T>;
  constexpr int V = Packed128<T>::kSize;
  const int lane = threadIdx.x % kWarpSize;
  const int64_t warp = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / kWarpSize;
  const int64_t nwarps = static_cast<int64_t>(gridDim.x) * blockDim.x / kWarpSize;
  for (int64_t row = warp; row < rows; row += nwarps) {  // warp-uniform
    const T* xr = x + row * n;
    T* yr = out + row * n;
    A v[kPerLane];
    bool vectorized = false;
    if constexpr (kPerLane % V == 0) {
      if (vec) {
        vectorized = true;
#pragma unroll
        for (int c = 0; c < kPerLane / V; ++c) {
          const int col = (c * kWarpSize + lane) * V;
          if (col < n) {
            const Packed128<T> p = load128cs(xr + col);
#pragma unroll
            for (int k = 0; k < V; ++k) v[c * V + k] = convert<A>(p[k]);
          } else {
#pragma unroll
            for (int k = 0; k < V; ++k) v[c * V + k] = neg_inf<A>();
          }
        }
      }
    }
    if (!vectorized) {
#pragma unroll
      for (int c = 0; c < kPerLane; ++c) {
        const int col = c * kWarpSize + lane;
        v[c] = col < n ? convert<A>(xr[col]) : neg_inf<A>();
      }
    }

    A m = v[0];
#pragma unroll
    for (int c = 1; c < kPerLane; ++c) m = k_fmax(m, v[c]);
    m = warp_all_reduce(m, [](A a, A b) { return k_fmax(a, b); });
    A s = A(0);
#pragma unroll
    for (int c = 0; c < kPerLane; ++c) s += exp_shifted(v[c], m);
    s = warp_all_reduce(s, [](A a, A b) { return a + b; });
    const A t = log ? k_log(s) : s;
#pragma unroll
    for (int c = 0; c < kPerLane; ++c) v[c] = softmax_out(v[c], m, t, log);

    if (vectorized) {
      if constexpr (kPerLane % V == 0) {
#pragma unroll
        for (int c = 0; c < kPerLane / V; ++c) {
          const int col = (c * kWarpSize + lane) * V;
          if (col < n) {
            Packed128<T> p;
#pragma unroll
            for (int k = 0; k < V; ++k) p[k] = convert<T>(v[c * V + k]);
            store128(yr + col, p);
          }
        }
      }
    } else {
#pragma unroll
      for (int c = 0; c < kPerLane; ++c) {
        const int col = c * kWarpSize + lane;
        if (col < n) yr[col] = convert<T>(v[c]);
      }
    }
  }
}

// inner == 1, long rows: one block per row (grid-stride over rows). vec_out: out rows
// have the same 16-byte misalignment as x rows, so pass 2 can store Packed128.
template <class T>
__global__ void __launch_bounds__(kMaxRowBlock)
    softmax_block_kernel(const T* x, T* out, int64_t rows, int64_t n, bool log, bool vec_out) {
  using A = acc_t<T>;
  constexpr int V = Packed128<T>::kSize;
  const int tid = threadIdx.x, nthreads = blockDim.x;
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const T* xr = x + row * n;
    T* yr = out + row * n;
    const int64_t mis = static_cast<int64_t>((reinterpret_cast<uintptr_t>(xr) & 15) / sizeof(T));
    const int64_t head = mis == 0 ? 0 : (V - mis < n ? V - mis : n);
    const int64_t nvec = (n - head) / V;
    const int64_t tail = head + nvec * V;
    const T* xv = xr + head;

    // Pass 1: running (max, sum) per thread, then over the block.
    MaxSum<A> st = maxsum_identity<A>();
    for (int64_t j = tid; j < head; j += nthreads) {
      const A e[1] = {convert<A>(xr[j])};
      maxsum_update(st, e);
    }
    for (int64_t w0 = tid; w0 < nvec; w0 += static_cast<int64_t>(kInFlight) * nthreads) {
      Packed128<T> p[kInFlight];
#pragma unroll
      for (int u = 0; u < kInFlight; ++u) {
        const int64_t w = w0 + static_cast<int64_t>(u) * nthreads;
        if (w < nvec) p[u] = load128(xv + w * V);  // keep in cache for pass 2
      }
#pragma unroll
      for (int u = 0; u < kInFlight; ++u) {
        if (w0 + static_cast<int64_t>(u) * nthreads < nvec) {
          A e[V];
#pragma unroll
          for (int k = 0; k < V; ++k) e[k] = convert<A>(p[u][k]);
          maxsum_update(st, e);
        }
      }
    }
    for (int64_t j = tail + tid; j < n; j += nthreads) {
      const A e[1] = {convert<A>(xr[j])};
      maxsum_update(st, e);
    }
    st = block_all_reduce(st, [](const MaxSum<A>& a, const MaxSum<A>& b) { return maxsum_combine(a, b); },
                          maxsum_identity<A>());
    const A m = st.m, t = log ? k_log(st.s) : st.s;

    // Pass 2: write.
    for (int64_t j = tid; j < head; j += nthreads) yr[j] = convert<T>(softmax_out(convert<A>(xr[j]), m, t, log));
    if (vec_out) {
      T* yv = yr + head;
      for (int64_t w0 = tid; w0 < nvec; w0 += static_cast<int64_t>(kInFlight) * nthreads) {
        Packed128<T> p[kInFlight];
#pragma unroll
        for (int u = 0; u < kInFlight; ++u) {
          const int64_t w = w0 + static_cast<int64_t>(u) * nthreads;
          if (w < nvec) p[u] = load128cs(xv + w * V);
        }
#pragma unroll
        for (int u = 0; u < kInFlight; ++u) {
          const int64_t w = w0 + static_cast<int64_t>(u) * nthreads;
          if (w < nvec) {
#pragma unroll
            for (int k = 0; k < V; ++k) p[u][k] = convert<T>(softmax_out(convert<A>(p[u][k]), m, t, log));
            store128(yv + w * V, p[u]);
          }
        }
      }
    } else {
      for (int64_t j = head + tid; j < tail; j += nthreads)
        yr[j] = convert<T>(softmax_out(convert<A>(xr[j]), m, t, log));
    }
    for (int64_t j = tail + tid; j < n; j += nthreads) yr[j] = convert<T>(softmax_out(convert<A>(xr[j]), m, t, log));
  }
}

// inner > 1: one thread per (o, i) column.
template <class T>
__global__ void softmax_inner_kernel(const T* x, T* out, int64_t outer, int64_t n, int64_t inner, bool log) {
  using A = acc_t<T>;
  const int64_t ncols = outer * inner;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; c < ncols; c += stride) {
    const int64_t o = c / inner, i = c - o * inner;
    const T* xc = x + o * n * inner + i;
    T* yc = out + o * n * inner + i;
    MaxSum<A> st = maxsum_identity<A>();
    int64_t j = 0;
    for (; j + kInFlight <= n; j += kInFlight) {
      A e[kInFlight];
#pragma unroll
      for (int u = 0; u < kInFlight; ++u) e[u] = convert<A>(xc[(j + u) * inner]);
      maxsum_update(st, e);
    }
    for (; j < n; ++j) {
      const A e[1] = {convert<A>(xc[j * inner])};
      maxsum_update(st, e);
    }
    const A m = st.m, t = log ? k_log(st.s) : st.s;
    for (j = 0; j < n; ++j) yc[j * inner] = convert<T>(softmax_out(convert<A>(xc[j * inner]), m, t, log));
  }
}

// inner > 1, long columns: block (bx, by) covers columns [blockIdx.x * bx, +bx) of one
// o; thread (tx, ty) folds rows ty, ty + by, ... of its column, the (max, sum) pairs
// are combined over ty through shared memory, then the same threads write.
template <class T>
__global__ void __launch_bounds__(kMaxColBlock)
    softmax_cols_kernel(const T* x, T* out, int64_t outer, int64_t n, int64_t inner, bool log) {
  using A = acc_t<T>;
  __shared__ MaxSum<A> tile[kMaxColBlock];
  const int tx = threadIdx.x, ty = threadIdx.y, bx = blockDim.x, by = blockDim.y;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * bx + tx;
  for (int64_t o = blockIdx.y; o < outer; o += gridDim.y) {
    const T* xc = x + o * n * inner + i;
    T* yc = out + o * n * inner + i;
    MaxSum<A> st = maxsum_identity<A>();
    if (i < inner) {
      int64_t j = ty;
      for (; j + (kInFlight - 1) * by < n; j += kInFlight * by) {
        A e[kInFlight];
#pragma unroll
        for (int u = 0; u < kInFlight; ++u) e[u] = convert<A>(xc[(j + u * by) * inner]);
        maxsum_update(st, e);
      }
      for (; j < n; j += by) {
        const A e[1] = {convert<A>(xc[j * inner])};
        maxsum_update(st, e);
      }
    }
    tile[ty * bx + tx] = st;
    __syncthreads();
    for (int h = by / 2; h > 0; h /= 2) {
      if (ty < h) tile[ty * bx + tx] = maxsum_combine(tile[ty * bx + tx], tile[(ty + h) * bx + tx]);
      __syncthreads();
    }
    st = tile[tx];
    __syncthreads();  // everyone has read the column's pair before the next o overwrites it
    if (i < inner) {
      const A m = st.m, t = log ? k_log(st.s) : st.s;
      for (int64_t j = ty; j < n; j += by) yc[j * inner] = convert<T>(softmax_out(convert<A>(xc[j * inner]), m, t, log));
    }
  }
}

// ---- backward (slot softmax_backward) --------------------------------------------------
// gx = y (g - sum_j g y) or, for log_softmax, g - exp(y) sum_j g, the sum in the
// accumulate type.

// inner == 1: a warp per row, 8 rows per block, rows grid-strided: a strided pass sums
// the row (then a warp reduction), a second pass writes it.
template <class T>
__global__ void __launch_bounds__(kWarpRowsBlock)
    softmax_backward_rows_kernel(const T* y, const T* g, T* gx, int64_t rows, int64_t n, bool log) {
  using A = acc_t<T>;
  constexpr int kRows = kWarpRowsBlock / 32;
  const int lane = threadIdx.x % 32;
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * kRows + threadIdx.x / 32; row < rows;
       row += static_cast<int64_t>(gridDim.x) * kRows) {  // warp-uniform
    const T* yr = y + row * n;
    const T* gr = g + row * n;
    T* o = gx + row * n;
    A s = 0;
    for (int64_t j = lane; j < n; j += 32) {
      const A gv = convert<A>(gr[j]);
      s += log ? gv : gv * convert<A>(yr[j]);
    }
    s = warp_all_reduce(s, [](A a, A b) { return a + b; });
    for (int64_t j = lane; j < n; j += 32) {
      const A yv = convert<A>(yr[j]), gv = convert<A>(gr[j]);
      o[j] = convert<T>(log ? gv - k_exp(yv) * s : yv * (gv - s));
    }
  }
}

// inner > 1: a thread per (o, i) column, consecutive threads on consecutive i (coalesced).
template <class T>
__global__ void softmax_backward_cols_kernel(const T* y, const T* g, T* gx, int64_t outer, int64_t n, int64_t inner,
                                             bool log) {
  using A = acc_t<T>;
  const int64_t cols = outer * inner, stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; c < cols; c += stride) {
    const int64_t base = (c / inner) * n * inner + c % inner;
    A s = 0;
    for (int64_t j = 0; j < n; ++j) {
      const A gv = convert<A>(g[base + j * inner]);
      s += log ? gv : gv * convert<A>(y[base + j * inner]);
    }
    for (int64_t j = 0; j < n; ++j) {
      const A yv = convert<A>(y[base + j * inner]), gv = convert<A>(g[base + j * inner]);
      gx[base + j * inner] = convert<T>(log ? gv - k_exp(yv) * s : yv * (gv - s));
    }
  }
}

// ---- launchers -----------------------------------------------------------------------

template <class T, int kPerLane>
void launch_warp_rows(const T* x, T* out, int64_t rows, int n, bool log, cudaStream_t stream) {
  constexpr int V = Packed128<T>::kSize;
  const bool vec = n % V == 0 && aligned16(x) && aligned16(out);
  softmax_warp_kernel<T, kPerLane><<<grid_for(rows, kWarpRowsBlock / kWarpSize), kWarpRowsBlock, 0, stream>>>(
      x, out, rows, n, log, vec);
  KILN_CUDA_CHECK_LAUNCH();
}

template <class T>
void run_softmax(const T* x, T* out, int64_t outer, int64_t n, int64_t inner, bool log, cudaStream_t stream) {
  constexpr int V = Packed128<T>::kSize;
  if (inner == 1 && n <= 1024) {
    const int ni = static_cast<int>(n);
    if (n <= 32) launch_warp_rows<T, 1>(x, out, outer, ni, log, stream);
    else if (n <= 64) launch_warp_rows<T, 2>(x, out, outer, ni, log, stream);
    else if (n <= 128) launch_warp_rows<T, 4>(x, out, outer, ni, log, stream);
    else if (n <= 256) launch_warp_rows<T, 8>(x, out, outer, ni, log, stream);
    else if (n <= 512) launch_warp_rows<T, 16>(x, out, outer, ni, log, stream);
    else launch_warp_rows<T, 32>(x, out, outer, ni, log, stream);
    return;
  }
  if (inner == 1) {
    int threads = 128;  // about kInFlight vectors per thread, 128..512 threads
    while (threads < kMaxRowBlock && static_cast<int64_t>(threads) * V * kInFlight < n) threads *= 2;
    const bool vec_out = (reinterpret_cast<uintptr_t>(x) & 15) == (reinterpret_cast<uintptr_t>(out) & 15);
    const unsigned blocks = static_cast<unsigned>(outer < 65535LL * 32 ? outer : 65535LL * 32);
    softmax_block_kernel<T><<<blocks, threads, 0, stream>>>(x, out, outer, n, log, vec_out);
    KILN_CUDA_CHECK_LAUNCH();
    return;
  }
  unsigned bx = 1;  // columns per block: up to a warp's worth, the rest over n
  while (bx < kWarpSize && bx < inner) bx *= 2;
  const int64_t gx = ceil_div(inner, bx);
  // Few blocks (small outer * inner): make each one as wide over n as a block allows.
  const bool few = gx * outer < static_cast<int64_t>(num_sms()) * (2048 / kBlockSize);
  const unsigned by = (few ? kMaxColBlock : kBlockSize) / bx;
  if (n < static_cast<int64_t>(by) * kInFlight || gx > INT32_MAX) {  // short columns: one thread per column
    softmax_inner_kernel<T><<<grid_for(outer * inner), kBlockSize, 0, stream>>>(x, out, outer, n, inner, log);
    KILN_CUDA_CHECK_LAUNCH();
    return;
  }
  const dim3 grid(static_cast<unsigned>(gx), static_cast<unsigned>(outer < 65535 ? outer : 65535));
  softmax_cols_kernel<T><<<grid, dim3(bx, by), 0, stream>>>(x, out, outer, n, inner, log);
  KILN_CUDA_CHECK_LAUNCH();
}

}  // namespace

void softmax(const TensorView& x, const TensorView& out, const SoftmaxParams& p) {
  if (p.outer == 0 || p.n == 0 || p.inner == 0) return;
  DeviceGuard guard(x.device);
  const cudaStream_t stream = current_stream(x.device);
  visit_device_dtype(x.dtype, [&](auto tag) {
    using T = decltype(tag);
    if constexpr (!std::is_integral_v<T>)  // integers: rejected by ops/softmax.cpp
      run_softmax(x.ptr<const T>(), out.ptr<T>(), p.outer, p.n, p.inner, p.log, stream);
  });
}

void softmax_backward(const TensorView& y, const TensorView& g, const TensorView& gx, const SoftmaxParams& p) {
  if (p.outer == 0 || p.n == 0 || p.inner == 0) return;
  DeviceGuard guard(y.device);
  const cudaStream_t stream = current_stream(y.device);
  visit_device_dtype(y.dtype, [&](auto tag) {
    using T = decltype(tag);
    if constexpr (!std::is_integral_v<T>) {  // integers: rejected by ops/softmax.cpp
      if (p.inner == 1) {
        const int64_t blocks = (p.outer + kWarpRowsBlock / 32 - 1) / (kWarpRowsBlock / 32);
        softmax_backward_rows_kernel<T><<<static_cast<unsigned>(blocks < 65535LL * 32 ? blocks : 65535LL * 32),
                                          kWarpRowsBlock, 0, stream>>>(y.ptr<const T>(), g.ptr<const T>(),
                                                                       gx.ptr<T>(), p.outer, p.n, p.log);
      } else {
        softmax_backward_cols_kernel<T><<<grid_for(p.outer * p.inner), kBlockSize, 0, stream>>>(
            y.ptr<const T>(), g.ptr<const T>(), gx.ptr<T>(), p.outer, p.n, p.inner, p.log);
      }
      KILN_CUDA_CHECK_LAUNCH();
    }
  });
}

}  // namespace kiln::cuda
