// Normalisation kernels: layer norm, group norm and batch norm, forward and backward.
//
// Layer norm, x contiguous (M, D) rows:
//   mean = sum_j x / D,  rstd = 1 / sqrt(sum_j (x - mean)^2 / D + eps)         (M)  (=)
//   y = (x - mean) rstd w[j] + b[j]                                         (M, D) (=)
//   backward: xhat = (x - mean) rstd, g = dy w[j],
//   dx = rstd (g - mean_j g - xhat mean_j(g xhat))                          (M, D) (=)
//   dw[j] = sum_r dy xhat, db[j] = sum_r dy                                    (D) (=)
// Group norm, x contiguous (N, C, S), G groups of Cg = C / G channels: the statistics
//   of row (n, g) of the (N G, Cg S) view as in layer norm (mean, rstd (N, G)), then
//   y = (x - mean) rstd w[c] + b[c]; backward as layer norm's per (n, g) with
//   g = dy w[c], dw[c] = sum_{n,s} dy xhat, db[c] = sum_{n,s} dy.
// Batch norm, x contiguous (N, C, S): training: mean and biased var per channel over
//   (N, S) (saved as mean, invstd); running_mean/var (C) updated in place (+= form:
//   r = (1 - momentum) r + momentum stat, unbiased var); eval: mean/invstd from the
//   running stats. y = (x - mean) invstd w[c] + b[c]. Backward: per-channel sum dy and
//   sum dy (x - mean), then dx = w invstd (dy - mean(dy) - xhat mean(dy xhat)) (training)
//   or w invstd dy (eval); dw = sum dy xhat, db = sum dy.
// T: f16, bf16, f32, f64; weight/bias P = T or f32 (half T); running stats R = T or f32;
// statistics and every sum in A = f32 (f64 for f64 x). Undefined weight/bias/outputs
// are null pointers (weight 1, bias 0, output skipped).
//
// Paths (every reduction tree is fixed for a launch configuration: deterministic, no
// floating-point atomics; all lanes of an all-reduce end with bit-identical results):
//   Row statistics (layer norm, group norm): D <= 1024: a warp per row, the row held in
//     registers (ceil(D/32) per lane rounded up to a power of two), exact two-pass mean
//     and variance, Packed128 access when D is a multiple of the vector width (llm.c's
//     layernorm_forward_kernel3 with the row cached); D > 1024: a block per row,
//     per-thread Welford over chunks merged with Chan's formula, then a write pass that
//     re-reads the row (from L2 for rows in flight).
//   Layer norm dx: the same two shapes (warp with registers / block with two passes).
//   Layer norm dw, db: (32 columns x 8 row lanes) tiles over row chunks write f32
//     partials, a second kernel sums the chunks in order (llm.c's layernorm_backward
//     without its atomics).
//   Batch norm per-channel reductions (Welford moments forward; sum dy and
//     sum dy (x - mean) backward): "planar" when a channel's runs of S elements are at
//     least 32 bytes: blocks of 256 threads per (channel, split of (N, S)), Packed128
//     when S is a multiple of the vector width; otherwise "columns": (32 x 8) tiles over
//     the (N, C S) matrix for coalesced loads, one partial per (row chunk, column). A
//     finalize kernel (one thread per channel) combines the partials in order, writes the
//     statistics and updates the running stats (or, backward, writes dw, db and dx's
//     per-channel coefficients); a single-split planar launch finalizes in the block.
//   Elementwise passes (batch/group norm y and dx): one thread per element or Packed128
//     (S a multiple of the vector width), channel from 32-bit fast division.
//   Group norm backward: sum dy and sum dy (x - mean) per (n, c) (sub-warp lanes per
//     row for short rows, a block per row for S > 2048), per-(n, g) coefficients, then
//     the elementwise dx and a per-channel sum over n for dw, db.
// Bandwidth on H100/H200: not yet measured on a GPU (tools/bench_kernels fills this in).
#include <initializer_list>

#include <kiln/cuda/kernels/common.cuh>
#include <kiln/cuda/kernels/elementwise.cuh>
#include <kiln/cuda/kernels/reduce_utils.cuh>
#include <kiln/cuda/kernels/scratch.h>
#include <kiln/ops/op_list.h>

namespace kiln::cuda {
namespace {

constexpr int kWarpRowsBlock = 256;  // warp-per-row kernels: 8 rows per block
constexpr int kMaxRowBlock = 512;    // block-per-row kernels
constexpr int kInFlight = 4;         // loads per thread issued before use
constexpr int kTileX = 32;           // column reductions: 32 columns ...
constexpr int kTileY = 8;            // ... by 8 row lanes
constexpr int kPlanarBlock = 256;    // batch norm planar reductions
constexpr int kMaxWarpRow = 1024;    // longest row of the warp-per-row kernels
constexpr int kMaxSubWarpRow = 2048; // group norm channel sums: longer rows get a block
constexpr int64_t kMax32 = (int64_t{1} << 31) - (int64_t{1} << 16);  // 32-bit index limit (with headroom)

// ---- device helpers ------------------------------------------------------------------

// Count, mean and sum of squared deviations of a set of values (Welford / Chan).
template <class A>
struct Welford {
  A mean, m2, n;
};

// Chan et al.'s pairwise update. The pair is put in a canonical order first (by count,
// then mean, then m2), so combine(a, b) and combine(b, a) are bit-identical: the lanes of
// a butterfly all-reduce agree. Counts are kept in A: exact to 2^24 in f32, and beyond
// that they only weight the merge; the final division uses the exact count from the host.
template <class A>
__device__ __forceinline__ Welford<A> welford_combine(const Welford<A>& a, const Welford<A>& b) {
  if (b.n == A(0)) return a;
  if (a.n == A(0)) return b;
  const bool swap = b.n < a.n || (b.n == a.n && (b.mean < a.mean || (b.mean == a.mean && b.m2 < a.m2)));
  const Welford<A>& p = swap ? b : a;
  const Welford<A>& q = swap ? a : b;
  const A n = p.n + q.n;
  const A delta = q.mean - p.mean;
  const A f = q.n / n;
  return {p.mean + delta * f, (p.m2 + q.m2) + delta * delta * (p.n * f), n};
}

// Exact two-pass moments of the first cnt values of v (cnt may be 0).
template <class A, int K>
__device__ __forceinline__ Welford<A> welford_of(const A (&v)[K], int cnt) {
  if (cnt == 0) return {A(0), A(0), A(0)};
  A s = A(0);
#pragma unroll
  for (int k = 0; k < K; ++k)
    if (k < cnt) s += v[k];
  const A m = s / A(cnt);
  A q = A(0);
#pragma unroll
  for (int k = 0; k < K; ++k) {
    if (k < cnt) {
      const A d = v[k] - m;
      q += d * d;
    }
  }
  return {m, q, A(cnt)};
}

// Sums of a backward pass: sum dy and sum dy (x - mean) (or, for layer norm, sum g and
// sum g xhat).
template <class A>
struct GradSums {
  A dy, dyx;
};
template <class A>
__device__ __forceinline__ GradSums<A> gradsums_combine(const GradSums<A>& a, const GradSums<A>& b) {
  return {a.dy + b.dy, a.dyx + b.dyx};
}

template <class A, class P>
__device__ __forceinline__ A param(const P* p, int64_t i, A dflt) {
  return p != nullptr ? convert<A>(p[i]) : dflt;
}

template <class A>
__device__ __forceinline__ A inv_std(A var, A eps) {
  return A(1) / k_sqrt(var + eps);
}

// Batch-norm reduction policies: what a planar / columns reduction accumulates per
// element (x and, backward, dy and the channel mean) and how states merge.
template <class T>
struct MomentsPolicy {
  using A = acc_t<T>;
  using State = Welford<A>;
  static constexpr bool kNeedsDy = false;
  __device__ static State identity() { return {A(0), A(0), A(0)}; }
  __device__ static State combine(const State& a, const State& b) { return welford_combine(a, b); }
  template <int K>
  __device__ static State chunk(const A (&xv)[K], const A (&)[K], int cnt, A) {
    return welford_of(xv, cnt);
  }
};

template <class T>
struct GradSumsPolicy {
  using A = acc_t<T>;
  using State = GradSums<A>;
  static constexpr bool kNeedsDy = true;
  __device__ static State identity() { return {A(0), A(0)}; }
  __device__ static State combine(const State& a, const State& b) { return gradsums_combine(a, b); }
  template <int K>
  __device__ static State chunk(const A (&xv)[K], const A (&gv)[K], int cnt, A mu) {
    State s{A(0), A(0)};
#pragma unroll
    for (int k = 0; k < K; ++k) {
      if (k < cnt) {
        s.dy += gv[k];
        s.dyx += gv[k] * (xv[k] - mu);
      }
    }
    return s;
  }
};

// Forward finalization of channel c: statistics and the running-stat update.
template <class A, class R>
struct BnStatsOut {
  A* save_mean;
  A* save_invstd;
  R* running_mean;  // null: no update
  R* running_var;
  A count, eps, momentum;
  __device__ void operator()(int64_t c, const Welford<A>& st) const {
    const A var = st.m2 / count;
    save_mean[c] = st.mean;
    save_invstd[c] = inv_std(var, eps);
    if (running_mean != nullptr) {
      const A rm = convert<A>(running_mean[c]), rv = convert<A>(running_var[c]);
      running_mean[c] = convert<R>((A(1) - momentum) * rm + momentum * st.mean);
      running_var[c] = convert<R>((A(1) - momentum) * rv + momentum * (var * count / (count - A(1))));
    }
  }
};

// Backward finalization of channel c: dw, db and the coefficients of
// dx = w invstd dy + coef[2c] (x - mean) + coef[2c + 1].
template <class A, class P>
struct BnGradOut {
  const A* invstd;
  const P* weight;
  P* dweight;  // null: not wanted
  P* dbias;
  A* coef;  // null: dx not wanted (or eval, where both coefficients are 0)
  A count;
  __device__ void operator()(int64_t c, const GradSums<A>& st) const {
    const A is = invstd[c];
    const A sum_dyxhat = st.dyx * is;
    if (dweight != nullptr) dweight[c] = convert<P>(sum_dyxhat);
    if (dbias != nullptr) dbias[c] = convert<P>(st.dy);
    if (coef != nullptr) {
      const A k = param(weight, c, A(1)) * is;
      coef[2 * c] = -k * is * (sum_dyxhat / count);
      coef[2 * c + 1] = -k * (st.dy / count);
    }
  }
};

// Element (or vector) u of a contiguous (N C, S) tensor -> channel c and statistics
// index si: c for batch norm, row / Cg = (n, g) for group norm.
struct RowMap32 {
  FastDivmod units_per_row, channels, group_size;
  __device__ __forceinline__ void get(int64_t u, int64_t& c, int64_t& si, bool group) const {
    const uint32_t row = units_per_row.div(static_cast<uint32_t>(u));
    c = row - channels.div(row) * channels.divisor;
    si = group ? static_cast<int64_t>(group_size.div(row)) : c;
  }
};
struct RowMap64 {
  int64_t units_per_row, channels, group_size;
  __device__ __forceinline__ void get(int64_t u, int64_t& c, int64_t& si, bool group) const {
    const int64_t row = u / units_per_row;
    c = row % channels;
    si = group ? row / group_size : c;
  }
};

// ---- kernels: row statistics (layer norm forward, group norm statistics) --------------

// One warp per row of n <= 32 kPerLane elements, held in registers. Element c of a lane
// is at column c * 32 + lane (scalar) or, vectorized, (c / V * 32 + lane) * V + c % V.
template <class T, class P, int kPerLane, bool kWriteY>
__global__ void __launch_bounds__(kWarpRowsBlock)
    ln_fwd_warp_kernel(const T* __restrict__ x, const P* __restrict__ w, const P* __restrict__ b, T* __restrict__ y,
                       acc_t<T>* __restrict__ mean, acc_t<T>* __restrict__ rstd, int64_t rows, int n, acc_t<T> eps,
                       bool vec) {
  using A = acc_t<T>;
  constexpr int V = Packed128<T>::kSize;
  const int lane = threadIdx.x % kWarpSize;
  const int64_t warp = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / kWarpSize;
  const int64_t nwarps = static_cast<int64_t>(gridDim.x) * blockDim.x / kWarpSize;
  bool vectorized = false;
  if constexpr (kPerLane % V == 0) vectorized = vec;
  auto col_of = [&](int c) { return vectorized ? ((c / V) * kWarpSize + lane) * V + c % V : c * kWarpSize + lane; };
  for (int64_t row = warp; row < rows; row += nwarps) {  // warp-uniform
    const T* xr = x + row * n;
    A v[kPerLane];
    if (vectorized) {
      if constexpr (kPerLane % V == 0) {
#pragma unroll
        for (int c = 0; c < kPerLane / V; ++c) {
          const int col = (c * kWarpSize + lane) * V;
          Packed128<T> p;
          if (col < n) p = load128(xr + col);
#pragma unroll
          for (int k = 0; k < V; ++k) v[c * V + k] = col < n ? convert<A>(p[k]) : A(0);
        }
      }
    } else {
#pragma unroll
      for (int c = 0; c < kPerLane; ++c) {
        const int col = c * kWarpSize + lane;
        v[c] = col < n ? convert<A>(xr[col]) : A(0);
      }
    }
    A s = A(0);
#pragma unroll
    for (int c = 0; c < kPerLane; ++c) s += v[c];
    s = warp_all_reduce(s, [](A a, A bb) { return a + bb; });
    const A mu = s / A(n);
    A q = A(0);
#pragma unroll
    for (int c = 0; c < kPerLane; ++c) {
      const A d = col_of(c) < n ? v[c] - mu : A(0);
      q += d * d;
    }
    q = warp_all_reduce(q, [](A a, A bb) { return a + bb; });
    const A rs = inv_std(q / A(n), eps);
    if (lane == 0) {
      mean[row] = mu;
      rstd[row] = rs;
    }
    if constexpr (kWriteY) {
      T* yr = y + row * n;
      if (vectorized) {
        if constexpr (kPerLane % V == 0) {
#pragma unroll
          for (int c = 0; c < kPerLane / V; ++c) {
            const int col = (c * kWarpSize + lane) * V;
            if (col < n) {
              Packed128<T> p;
#pragma unroll
              for (int k = 0; k < V; ++k)
                p[k] = convert<T>((v[c * V + k] - mu) * rs * param(w, col + k, A(1)) + param(b, col + k, A(0)));
              store128(yr + col, p);
            }
          }
        }
      } else {
#pragma unroll
        for (int c = 0; c < kPerLane; ++c) {
          const int col = c * kWarpSize + lane;
          if (col < n) yr[col] = convert<T>((v[c] - mu) * rs * param(w, col, A(1)) + param(b, col, A(0)));
        }
      }
    }
  }
}

// One block per row (grid-stride over rows), any n: per-thread Welford over chunks of
// kInFlight loads, a block combine, then (kWriteY) a write pass.
template <class T, class P, bool kWriteY>
__global__ void __launch_bounds__(kMaxRowBlock)
    ln_fwd_block_kernel(const T* __restrict__ x, const P* __restrict__ w, const P* __restrict__ b, T* __restrict__ y,
                        acc_t<T>* __restrict__ mean, acc_t<T>* __restrict__ rstd, int64_t rows, int64_t n,
                        acc_t<T> eps, bool vec) {
  using A = acc_t<T>;
  constexpr int V = Packed128<T>::kSize;
  const int tid = threadIdx.x, nthreads = blockDim.x;
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const T* xr = x + row * n;
    Welford<A> st{A(0), A(0), A(0)};
    if (vec) {
      const int64_t nvec = n / V;
      for (int64_t w0 = tid; w0 < nvec; w0 += static_cast<int64_t>(kInFlight) * nthreads) {
        Packed128<T> p[kInFlight];
#pragma unroll
        for (int u = 0; u < kInFlight; ++u) {
          const int64_t wi = w0 + static_cast<int64_t>(u) * nthreads;
          if (wi < nvec) p[u] = load128(xr + wi * V);
        }
#pragma unroll
        for (int u = 0; u < kInFlight; ++u) {
          if (w0 + static_cast<int64_t>(u) * nthreads < nvec) {
            A e[V];
#pragma unroll
            for (int k = 0; k < V; ++k) e[k] = convert<A>(p[u][k]);
            st = welford_combine(st, welford_of(e, V));
          }
        }
      }
    } else {
      for (int64_t j0 = tid; j0 < n; j0 += static_cast<int64_t>(kInFlight) * nthreads) {
        A e[kInFlight];
        int cnt = 0;
#pragma unroll
        for (int u = 0; u < kInFlight; ++u) {
          const int64_t j = j0 + static_cast<int64_t>(u) * nthreads;
          e[u] = j < n ? convert<A>(xr[j]) : A(0);
          cnt += j < n ? 1 : 0;
        }
        st = welford_combine(st, welford_of(e, cnt));
      }
    }
    st = block_all_reduce(st, [](const Welford<A>& a, const Welford<A>& bb) { return welford_combine(a, bb); },
                          Welford<A>{A(0), A(0), A(0)});
    const A mu = st.mean, rs = inv_std(st.m2 / A(n), eps);
    if (tid == 0) {
      mean[row] = mu;
      rstd[row] = rs;
    }
    if constexpr (kWriteY) {
      T* yr = y + row * n;
      if (vec) {
        const int64_t nvec = n / V;
        for (int64_t wi = tid; wi < nvec; wi += nthreads) {
          Packed128<T> p = load128cs(xr + wi * V);
#pragma unroll
          for (int k = 0; k < V; ++k) {
            const int64_t j = wi * V + k;
            p[k] = convert<T>((convert<A>(p[k]) - mu) * rs * param(w, j, A(1)) + param(b, j, A(0)));
          }
          store128(yr + wi * V, p);
        }
      } else {
        for (int64_t j = tid; j < n; j += nthreads)
          yr[j] = convert<T>((convert<A>(xr[j]) - mu) * rs * param(w, j, A(1)) + param(b, j, A(0)));
      }
    }
  }
}

// ---- kernels: layer norm backward ----------------------------------------------------

// dx of one row per warp, x and dy held in registers (same element layout as the
// forward warp kernel).
template <class T, class P, int kPerLane>
__global__ void __launch_bounds__(kWarpRowsBlock)
    ln_bwd_dx_warp_kernel(const T* __restrict__ dy, const T* __restrict__ x, const P* __restrict__ w,
                          const acc_t<T>* __restrict__ mean, const acc_t<T>* __restrict__ rstd, T* __restrict__ dx,
                          int64_t rows, int n, bool vec) {
  using A = acc_t<T>;
  constexpr int V = Packed128<T>::kSize;
  const int lane = threadIdx.x % kWarpSize;
  const int64_t warp = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / kWarpSize;
  const int64_t nwarps = static_cast<int64_t>(gridDim.x) * blockDim.x / kWarpSize;
  bool vectorized = false;
  if constexpr (kPerLane % V == 0) vectorized = vec;
  auto col_of = [&](int c) { return vectorized ? ((c / V) * kWarpSize + lane) * V + c % V : c * kWarpSize + lane; };
  for (int64_t row = warp; row < rows; row += nwarps) {
    const T* xr = x + row * n;
    const T* gr = dy + row * n;
    A xh[kPerLane], g[kPerLane];  // loaded as x and dy, turned into xhat and dy w
    if (vectorized) {
      if constexpr (kPerLane % V == 0) {
#pragma unroll
        for (int c = 0; c < kPerLane / V; ++c) {
          const int col = (c * kWarpSize + lane) * V;
          Packed128<T> px, pg;
          if (col < n) {
            px = load128cs(xr + col);
            pg = load128cs(gr + col);
          }
#pragma unroll
          for (int k = 0; k < V; ++k) {
            xh[c * V + k] = col < n ? convert<A>(px[k]) : A(0);
            g[c * V + k] = col < n ? convert<A>(pg[k]) : A(0);
          }
        }
      }
    } else {
#pragma unroll
      for (int c = 0; c < kPerLane; ++c) {
        const int col = c * kWarpSize + lane;
        xh[c] = col < n ? convert<A>(xr[col]) : A(0);
        g[c] = col < n ? convert<A>(gr[col]) : A(0);
      }
    }
    const A mu = mean[row], rs = rstd[row];
    A sg = A(0), sgx = A(0);
#pragma unroll
    for (int c = 0; c < kPerLane; ++c) {
      const int col = col_of(c);
      xh[c] = (xh[c] - mu) * rs;
      g[c] = col < n ? g[c] * param(w, col, A(1)) : A(0);
      sg += g[c];
      sgx += g[c] * xh[c];
    }
    sg = warp_all_reduce(sg, [](A a, A bb) { return a + bb; });
    sgx = warp_all_reduce(sgx, [](A a, A bb) { return a + bb; });
    const A mg = sg / A(n), mgx = sgx / A(n);
    T* dr = dx + row * n;
    if (vectorized) {
      if constexpr (kPerLane % V == 0) {
#pragma unroll
        for (int c = 0; c < kPerLane / V; ++c) {
          const int col = (c * kWarpSize + lane) * V;
          if (col < n) {
            Packed128<T> p;
#pragma unroll
            for (int k = 0; k < V; ++k) p[k] = convert<T>(rs * (g[c * V + k] - mg - xh[c * V + k] * mgx));
            store128(dr + col, p);
          }
        }
      }
    } else {
#pragma unroll
      for (int c = 0; c < kPerLane; ++c) {
        const int col = c * kWarpSize + lane;
        if (col < n) dr[col] = convert<T>(rs * (g[c] - mg - xh[c] * mgx));
      }
    }
  }
}

// dx of one row per block: pass 1 sums g and g xhat, pass 2 writes.
template <class T, class P>
__global__ void __launch_bounds__(kMaxRowBlock)
    ln_bwd_dx_block_kernel(const T* __restrict__ dy, const T* __restrict__ x, const P* __restrict__ w,
                           const acc_t<T>* __restrict__ mean, const acc_t<T>* __restrict__ rstd, T* __restrict__ dx,
                           int64_t rows, int64_t n, bool vec) {
  using A = acc_t<T>;
  constexpr int V = Packed128<T>::kSize;
  const int tid = threadIdx.x, nthreads = blockDim.x;
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const T* xr = x + row * n;
    const T* gr = dy + row * n;
    const A mu = mean[row], rs = rstd[row];
    GradSums<A> st{A(0), A(0)};
    if (vec) {
      for (int64_t wi = tid; wi < n / V; wi += nthreads) {
        const Packed128<T> px = load128(xr + wi * V), pg = load128(gr + wi * V);
#pragma unroll
        for (int k = 0; k < V; ++k) {
          const A gv = convert<A>(pg[k]) * param(w, wi * V + k, A(1));
          st.dy += gv;
          st.dyx += gv * (convert<A>(px[k]) - mu) * rs;
        }
      }
    } else {
      for (int64_t j = tid; j < n; j += nthreads) {
        const A gv = convert<A>(gr[j]) * param(w, j, A(1));
        st.dy += gv;
        st.dyx += gv * (convert<A>(xr[j]) - mu) * rs;
      }
    }
    st = block_all_reduce(st, [](const GradSums<A>& a, const GradSums<A>& bb) { return gradsums_combine(a, bb); },
                          GradSums<A>{A(0), A(0)});
    const A mg = st.dy / A(n), mgx = st.dyx / A(n);
    T* dr = dx + row * n;
    if (vec) {
      for (int64_t wi = tid; wi < n / V; wi += nthreads) {
        const Packed128<T> px = load128cs(xr + wi * V), pg = load128cs(gr + wi * V);
        Packed128<T> p;
#pragma unroll
        for (int k = 0; k < V; ++k) {
          const A gv = convert<A>(pg[k]) * param(w, wi * V + k, A(1));
          p[k] = convert<T>(rs * (gv - mg - (convert<A>(px[k]) - mu) * rs * mgx));
        }
        store128(dr + wi * V, p);
      }
    } else {
      for (int64_t j = tid; j < n; j += nthreads) {
        const A gv = convert<A>(gr[j]) * param(w, j, A(1));
        dr[j] = convert<T>(rs * (gv - mg - (convert<A>(xr[j]) - mu) * rs * mgx));
      }
    }
  }
}

// dw, db partials: block (kTileX, kTileY) covers columns [blockIdx.x * 32, +32) over
// rows [blockIdx.y * rows_per_chunk, +rows_per_chunk); part_*[chunk * n + col].
template <class T>
__global__ void __launch_bounds__(kTileX* kTileY)
    ln_param_partial_kernel(const T* __restrict__ dy, const T* __restrict__ x, const acc_t<T>* __restrict__ mean,
                            const acc_t<T>* __restrict__ rstd, acc_t<T>* __restrict__ part_dw,
                            acc_t<T>* __restrict__ part_db, int64_t rows, int64_t n, int64_t rows_per_chunk) {
  using A = acc_t<T>;
  __shared__ A sdw[kTileY][kTileX + 1];
  __shared__ A sdb[kTileY][kTileX + 1];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t col = static_cast<int64_t>(blockIdx.x) * kTileX + tx;
  const int64_t r0 = static_cast<int64_t>(blockIdx.y) * rows_per_chunk;
  const int64_t r1 = r0 + rows_per_chunk < rows ? r0 + rows_per_chunk : rows;
  A adw = A(0), adb = A(0);
  if (col < n) {
#pragma unroll 4
    for (int64_t r = r0 + ty; r < r1; r += kTileY) {
      const A g = convert<A>(dy[r * n + col]);
      adw += g * ((convert<A>(x[r * n + col]) - mean[r]) * rstd[r]);
      adb += g;
    }
  }
  sdw[ty][tx] = adw;
  sdb[ty][tx] = adb;
  __syncthreads();
  if (ty == 0 && col < n) {
    A s = sdw[0][tx], t = sdb[0][tx];
#pragma unroll
    for (int k = 1; k < kTileY; ++k) {
      s += sdw[k][tx];
      t += sdb[k][tx];
    }
    part_dw[blockIdx.y * n + col] = s;
    part_db[blockIdx.y * n + col] = t;
  }
}

// out[col] = sum over chunks of part[chunk * n + col], in chunk order (null out: skip).
template <class A, class P>
__global__ void column_sum_kernel(const A* __restrict__ part_a, const A* __restrict__ part_b, P* __restrict__ out_a,
                                  P* __restrict__ out_b, int64_t chunks, int64_t n) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t col = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; col < n; col += stride) {
    A sa = A(0), sb = A(0);
    for (int64_t k = 0; k < chunks; ++k) {
      sa += part_a[k * n + col];
      sb += part_b[k * n + col];
    }
    if (out_a != nullptr) out_a[col] = convert<P>(sa);
    if (out_b != nullptr) out_b[col] = convert<P>(sb);
  }
}

// ---- kernels: batch norm per-channel reductions --------------------------------------

// Block (channel blockIdx.x, split blockIdx.y) over units [split * per_split, +per_split)
// of the channel's (N, S) plane; a unit is one element or (kVec) one Packed128 of a row
// of S. One split: finalizes here; several: writes partial[c * splits + split].
template <class T, class Policy, class Fin, bool kVec>
__global__ void __launch_bounds__(kPlanarBlock)
    bn_reduce_planar_kernel(const T* __restrict__ x, const T* __restrict__ dy, const acc_t<T>* __restrict__ mean,
                            int64_t C, int64_t S, FastDivmod units_per_n, uint32_t units, uint32_t per_split,
                            typename Policy::State* __restrict__ partial, Fin fin) {
  using A = acc_t<T>;
  using State = typename Policy::State;
  constexpr int V = kVec ? Packed128<T>::kSize : 1;
  const int64_t c = blockIdx.x;
  const uint32_t e0 = blockIdx.y * per_split;
  const uint32_t e1 = units - e0 < per_split ? units : e0 + per_split;
  const A mu = mean != nullptr ? mean[c] : A(0);
  const int64_t nstride = C * S;
  const T* xc = x + c * S;
  const T* gc = Policy::kNeedsDy ? dy + c * S : nullptr;
  State st = Policy::identity();
  for (uint32_t e = e0 + threadIdx.x; e < e1; e += kInFlight * blockDim.x) {
    A xv[kInFlight * V], gv[kInFlight * V];
    int cnt = 0;
#pragma unroll
    for (int u = 0; u < kInFlight; ++u) {
      const uint32_t eu = e + u * blockDim.x;
      const bool ok = eu < e1;
      int64_t off = 0;
      if (ok) {
        const uint32_t n = units_per_n.div(eu);
        off = static_cast<int64_t>(n) * nstride + static_cast<int64_t>(eu - n * units_per_n.divisor) * V;
      }
      if constexpr (kVec) {
        Packed128<T> px, pg;
        if (ok) {
          px = load128(xc + off);
          if constexpr (Policy::kNeedsDy) pg = load128(gc + off);
        }
#pragma unroll
        for (int k = 0; k < V; ++k) {
          xv[u * V + k] = ok ? convert<A>(px[k]) : A(0);
          if constexpr (Policy::kNeedsDy) gv[u * V + k] = ok ? convert<A>(pg[k]) : A(0);
          else gv[u * V + k] = A(0);
        }
      } else {
        xv[u] = ok ? convert<A>(xc[off]) : A(0);
        if constexpr (Policy::kNeedsDy) gv[u] = ok ? convert<A>(gc[off]) : A(0);
        else gv[u] = A(0);
      }
      cnt += ok ? V : 0;
    }
    st = Policy::combine(st, Policy::chunk(xv, gv, cnt, mu));
  }
  st = block_all_reduce(st, [](const State& a, const State& b) { return Policy::combine(a, b); },
                        Policy::identity());
  if (threadIdx.x == 0) {
    if (gridDim.y == 1) fin(c, st);
    else partial[c * gridDim.y + blockIdx.y] = st;
  }
}

// Columns of the (N, K = C S) matrix: block (kTileX, kTileY) covers columns
// [blockIdx.x * 32, +32) over rows [blockIdx.y * rows_per_chunk, +rows_per_chunk) and
// writes partial[chunk * K + col].
template <class T, class Policy>
__global__ void __launch_bounds__(kTileX* kTileY)
    bn_reduce_cols_kernel(const T* __restrict__ x, const T* __restrict__ dy, const acc_t<T>* __restrict__ mean,
                          int64_t N, int64_t K, int64_t S, int64_t rows_per_chunk,
                          typename Policy::State* __restrict__ partial) {
  using A = acc_t<T>;
  using State = typename Policy::State;
  __shared__ State tile[kTileY][kTileX];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t col = static_cast<int64_t>(blockIdx.x) * kTileX + tx;
  const int64_t n0 = static_cast<int64_t>(blockIdx.y) * rows_per_chunk;
  const int64_t n1 = n0 + rows_per_chunk < N ? n0 + rows_per_chunk : N;
  State st = Policy::identity();
  if (col < K) {
    const A mu = mean != nullptr ? mean[col / S] : A(0);
    for (int64_t n = n0 + ty; n < n1; n += static_cast<int64_t>(kTileY) * kInFlight) {
      A xv[kInFlight], gv[kInFlight];
      int cnt = 0;
#pragma unroll
      for (int u = 0; u < kInFlight; ++u) {
        const int64_t r = n + static_cast<int64_t>(u) * kTileY;
        const bool ok = r < n1;
        xv[u] = ok ? convert<A>(x[r * K + col]) : A(0);
        if constexpr (Policy::kNeedsDy) gv[u] = ok ? convert<A>(dy[r * K + col]) : A(0);
        else gv[u] = A(0);
        cnt += ok ? 1 : 0;
      }
      st = Policy::combine(st, Policy::chunk(xv, gv, cnt, mu));
    }
  }
  tile[ty][tx] = st;
  __syncthreads();
  if (ty == 0 && col < K) {
    State s = tile[0][tx];
#pragma unroll
    for (int k = 1; k < kTileY; ++k) s = Policy::combine(s, tile[k][tx]);
    partial[blockIdx.y * K + col] = s;
  }
}

// One thread per channel: combines partial[c * stride_c + o * stride_o + i] for
// o < n_outer, i < n_inner in that order, then finalizes.
template <class Policy, class Fin>
__global__ void bn_reduce_finalize_kernel(const typename Policy::State* __restrict__ partial, int64_t C,
                                          int64_t stride_c, int64_t n_outer, int64_t stride_o, int64_t n_inner,
                                          Fin fin) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; c < C; c += stride) {
    typename Policy::State st = Policy::identity();
    for (int64_t o = 0; o < n_outer; ++o)
      for (int64_t i = 0; i < n_inner; ++i) st = Policy::combine(st, partial[c * stride_c + o * stride_o + i]);
    fin(c, st);
  }
}

// Eval mode: save_mean = running_mean, save_invstd = 1 / sqrt(running_var + eps).
template <class A, class R>
__global__ void bn_eval_stats_kernel(const R* __restrict__ running_mean, const R* __restrict__ running_var,
                                     A* __restrict__ save_mean, A* __restrict__ save_invstd, int64_t C, A eps) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; c < C; c += stride) {
    save_mean[c] = convert<A>(running_mean[c]);
    save_invstd[c] = inv_std(convert<A>(running_var[c]), eps);
  }
}

// ---- kernels: elementwise passes of batch and group norm -----------------------------

// y = (x - mean[si]) rstd[si] w[c] + b[c] over units u (elements, or kVec Packed128s).
template <class T, class P, class Map, bool kGroup, bool kVec>
__global__ void norm_apply_kernel(const T* __restrict__ x, const P* __restrict__ w, const P* __restrict__ b,
                                  const acc_t<T>* __restrict__ mean, const acc_t<T>* __restrict__ rstd,
                                  T* __restrict__ y, int64_t units, Map map) {
  using A = acc_t<T>;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t u = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; u < units; u += stride) {
    int64_t c, si;
    map.get(u, c, si, kGroup);
    const A mu = mean[si], scale = rstd[si] * param(w, c, A(1)), shift = param(b, c, A(0));
    if constexpr (kVec) {
      constexpr int V = Packed128<T>::kSize;
      Packed128<T> p = load128cs(x + u * V);
#pragma unroll
      for (int k = 0; k < V; ++k) p[k] = convert<T>((convert<A>(p[k]) - mu) * scale + shift);
      store128(y + u * V, p);
    } else {
      y[u] = convert<T>((convert<A>(x[u]) - mu) * scale + shift);
    }
  }
}

// dx = rstd[si] w[c] dy + coef[2 si] (x - mean[si]) + coef[2 si + 1] (coef null: 0).
template <class T, class P, class Map, bool kGroup, bool kVec>
__global__ void norm_dx_kernel(const T* __restrict__ dy, const T* __restrict__ x, const P* __restrict__ w,
                               const acc_t<T>* __restrict__ mean, const acc_t<T>* __restrict__ rstd,
                               const acc_t<T>* __restrict__ coef, T* __restrict__ dx, int64_t units, Map map) {
  using A = acc_t<T>;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t u = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; u < units; u += stride) {
    int64_t c, si;
    map.get(u, c, si, kGroup);
    const A k = rstd[si] * param(w, c, A(1)), mu = mean[si];
    const A ca = coef != nullptr ? coef[2 * si] : A(0), cb = coef != nullptr ? coef[2 * si + 1] : A(0);
    if constexpr (kVec) {
      constexpr int V = Packed128<T>::kSize;
      const Packed128<T> pg = load128cs(dy + u * V);
      Packed128<T> px = load128cs(x + u * V);
#pragma unroll
      for (int j = 0; j < V; ++j) px[j] = convert<T>(k * convert<A>(pg[j]) + ca * (convert<A>(px[j]) - mu) + cb);
      store128(dx + u * V, px);
    } else {
      dx[u] = convert<T>(k * convert<A>(dy[u]) + ca * (convert<A>(x[u]) - mu) + cb);
    }
  }
}

// ---- kernels: group norm backward ----------------------------------------------------

// Per row (n, c) of S elements: sums[2 row] = sum dy (x - mean[row / Cg]),
// sums[2 row + 1] = sum dy. `group` lanes (a power of two <= 32) per row; the row loop
// is warp-uniform so every lane reaches the shuffles.
template <class T>
__global__ void __launch_bounds__(kBlockSize)
    gn_channel_sums_kernel(const T* __restrict__ dy, const T* __restrict__ x, const acc_t<T>* __restrict__ mean,
                           acc_t<T>* __restrict__ sums, int64_t rows, int64_t S, int64_t Cg, int group) {
  using A = acc_t<T>;
  const int lane = threadIdx.x % kWarpSize;
  const int per_warp = kWarpSize / group;
  const int64_t warp = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / kWarpSize;
  const int64_t nwarps = static_cast<int64_t>(gridDim.x) * blockDim.x / kWarpSize;
  for (int64_t base = warp * per_warp; base < rows; base += nwarps * per_warp) {
    const int64_t row = base + lane / group;
    const int sub = lane % group;
    A sd = A(0), sdx = A(0);
    if (row < rows) {
      const A mu = mean[row / Cg];
      const T* xr = x + row * S;
      const T* gr = dy + row * S;
      for (int64_t s = sub; s < S; s += group) {
        const A g = convert<A>(gr[s]);
        sd += g;
        sdx += g * (convert<A>(xr[s]) - mu);
      }
    }
    sd = warp_all_reduce(sd, [](A a, A b) { return a + b; }, group);
    sdx = warp_all_reduce(sdx, [](A a, A b) { return a + b; }, group);
    if (row < rows && sub == 0) {
      sums[2 * row] = sdx;
      sums[2 * row + 1] = sd;
    }
  }
}

// The same, one block per row (long rows).
template <class T>
__global__ void __launch_bounds__(kMaxRowBlock)
    gn_channel_sums_block_kernel(const T* __restrict__ dy, const T* __restrict__ x, const acc_t<T>* __restrict__ mean,
                                 acc_t<T>* __restrict__ sums, int64_t rows, int64_t S, int64_t Cg) {
  using A = acc_t<T>;
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const A mu = mean[row / Cg];
    const T* xr = x + row * S;
    const T* gr = dy + row * S;
    GradSums<A> st{A(0), A(0)};
    for (int64_t s = threadIdx.x; s < S; s += blockDim.x) {
      const A g = convert<A>(gr[s]);
      st.dy += g;
      st.dyx += g * (convert<A>(xr[s]) - mu);
    }
    st = block_all_reduce(st, [](const GradSums<A>& a, const GradSums<A>& b) { return gradsums_combine(a, b); },
                          GradSums<A>{A(0), A(0)});
    if (threadIdx.x == 0) {
      sums[2 * row] = st.dyx;
      sums[2 * row + 1] = st.dy;
    }
  }
}

// Per (n, g), with the group's D = Cg S elements and its channels c:
//   sw = sum_c w[c] sum_s dy, swx = sum_c w[c] sum_s dy (x - mean),
//   coef[2 ng] = -rstd^3 swx / D, coef[2 ng + 1] = -rstd sw / D,
// so that dx = rstd w dy + coef[2 ng] (x - mean) + coef[2 ng + 1].
template <class A, class P>
__global__ void gn_coef_kernel(const A* __restrict__ sums, const P* __restrict__ w, const A* __restrict__ rstd,
                               A* __restrict__ coef, int64_t NG, int64_t G, int64_t Cg, A D) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t ng = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; ng < NG; ng += stride) {
    const int64_t g = ng % G;
    A sw = A(0), swx = A(0);
    for (int64_t cl = 0; cl < Cg; ++cl) {
      const A wc = param(w, g * Cg + cl, A(1));
      const int64_t row = ng * Cg + cl;  // (n, c) with c = g Cg + cl
      swx += wc * sums[2 * row];
      sw += wc * sums[2 * row + 1];
    }
    const A rs = rstd[ng];
    coef[2 * ng] = -rs * rs * rs * (swx / D);
    coef[2 * ng + 1] = -rs * (sw / D);
  }
}

// Per channel: dw[c] = sum_n rstd[n, g] sum dy (x - mean), db[c] = sum_n sum dy.
template <class A, class P>
__global__ void gn_param_grad_kernel(const A* __restrict__ sums, const A* __restrict__ rstd, P* __restrict__ dw,
                                     P* __restrict__ db, int64_t N, int64_t C, int64_t G, int64_t Cg) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; c < C; c += stride) {
    const int64_t g = c / Cg;
    A sw = A(0), sb = A(0);
    for (int64_t n = 0; n < N; ++n) {
      const int64_t row = n * C + c;
      sw += rstd[n * G + g] * sums[2 * row];
      sb += sums[2 * row + 1];
    }
    if (dw != nullptr) dw[c] = convert<P>(sw);
    if (db != nullptr) db[c] = convert<P>(sb);
  }
}

// ---- launchers -----------------------------------------------------------------------

// The dtype of the defined ones of some parameter-like views (ops/norm.cpp checked that
// they share one), or x's when none is defined.
DType param_dtype(const TensorView& x, std::initializer_list<TensorView> params) {
  for (const TensorView& p : params)
    if (p.defined) return p.dtype;
  return x.dtype;
}

// Calls f(T{}, P{}) for x's dtype and the parameter dtype (x's, or f32 for half x).
template <class F>
void visit_norm_types(DType dtype, DType pdtype, const char* what, F&& f) {
  visit_device_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    if constexpr (std::is_integral_v<T> || std::is_same_v<T, bool>) {
      launch_fail(what);
    } else {
      if (pdtype == dtype) {
        f(T{}, T{});
      } else if constexpr (std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>) {
        if (pdtype == DType::F32) f(T{}, float{});
        else launch_fail(what);
      } else {
        launch_fail(what);
      }
    }
  });
}

// Calls f(R{}) for the running-stat dtype of x of type T (T's, or f32 for half T).
template <class T, class F>
void visit_running_type(DType rdtype, const char* what, F&& f) {
  visit_device_dtype(rdtype, [&](auto tag) {
    using R = decltype(tag);
    if constexpr (std::is_same_v<R, T> ||
                  (std::is_same_v<R, float> && (std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>))) {
      f(R{});
    } else {
      launch_fail(what);
    }
  });
}

unsigned small_grid(int64_t n) { return grid_for(n, kBlockSize, 4096); }

// Threads of a block-per-row kernel: about kInFlight vectors per thread, 128..512.
int row_block_threads(int64_t n, int vec_width) {
  int threads = 128;
  while (threads < kMaxRowBlock && static_cast<int64_t>(threads) * vec_width * kInFlight < n) threads *= 2;
  return threads;
}

template <class T, class P, bool kWriteY, int kPerLane>
void launch_ln_fwd_warp(const T* x, const P* w, const P* b, T* y, acc_t<T>* mean, acc_t<T>* rstd, int64_t rows, int n,
                        double eps, cudaStream_t stream) {
  constexpr int V = Packed128<T>::kSize;
  const bool vec = n % V == 0 && aligned16(x) && (!kWriteY || aligned16(y));
  ln_fwd_warp_kernel<T, P, kPerLane, kWriteY><<<grid_for(rows, kWarpRowsBlock / kWarpSize), kWarpRowsBlock, 0,
                                                 stream>>>(x, w, b, y, mean, rstd, rows, n,
                                                           static_cast<acc_t<T>>(eps), vec);
  KILN_CUDA_CHECK_LAUNCH();
}

// Row statistics (and, kWriteY, the layer-norm output) of x (rows, n).
template <class T, class P, bool kWriteY>
void run_row_norm(const T* x, const P* w, const P* b, T* y, acc_t<T>* mean, acc_t<T>* rstd, int64_t rows, int64_t n,
                  double eps, cudaStream_t stream) {
  constexpr int V = Packed128<T>::kSize;
  if (n <= kMaxWarpRow) {
    const int ni = static_cast<int>(n);
    if (n <= 32) launch_ln_fwd_warp<T, P, kWriteY, 1>(x, w, b, y, mean, rstd, rows, ni, eps, stream);
    else if (n <= 64) launch_ln_fwd_warp<T, P, kWriteY, 2>(x, w, b, y, mean, rstd, rows, ni, eps, stream);
    else if (n <= 128) launch_ln_fwd_warp<T, P, kWriteY, 4>(x, w, b, y, mean, rstd, rows, ni, eps, stream);
    else if (n <= 256) launch_ln_fwd_warp<T, P, kWriteY, 8>(x, w, b, y, mean, rstd, rows, ni, eps, stream);
    else if (n <= 512) launch_ln_fwd_warp<T, P, kWriteY, 16>(x, w, b, y, mean, rstd, rows, ni, eps, stream);
    else launch_ln_fwd_warp<T, P, kWriteY, 32>(x, w, b, y, mean, rstd, rows, ni, eps, stream);
    return;
  }
  const bool vec = n % V == 0 && aligned16(x) && (!kWriteY || aligned16(y));
  const int threads = row_block_threads(n, vec ? V : 1);
  const unsigned blocks = static_cast<unsigned>(rows < 65535LL * 32 ? rows : 65535LL * 32);
  ln_fwd_block_kernel<T, P, kWriteY><<<blocks, threads, 0, stream>>>(x, w, b, y, mean, rstd, rows, n,
                                                                     static_cast<acc_t<T>>(eps), vec);
  KILN_CUDA_CHECK_LAUNCH();
}

template <class T, class P, int kPerLane>
void launch_ln_dx_warp(const T* dy, const T* x, const P* w, const acc_t<T>* mean, const acc_t<T>* rstd, T* dx,
                       int64_t rows, int n, cudaStream_t stream) {
  constexpr int V = Packed128<T>::kSize;
  const bool vec = n % V == 0 && aligned16(x) && aligned16(dy) && aligned16(dx);
  ln_bwd_dx_warp_kernel<T, P, kPerLane><<<grid_for(rows, kWarpRowsBlock / kWarpSize), kWarpRowsBlock, 0, stream>>>(
      dy, x, w, mean, rstd, dx, rows, n, vec);
  KILN_CUDA_CHECK_LAUNCH();
}

template <class T, class P>
void run_layer_norm_backward(const T* dy, const T* x, const P* w, const acc_t<T>* mean, const acc_t<T>* rstd, T* dx,
                             P* dw, P* db, int64_t rows, int64_t n, Device device, cudaStream_t stream) {
  using A = acc_t<T>;
  constexpr int V = Packed128<T>::kSize;
  if (dx != nullptr) {
    if (n <= kMaxWarpRow) {
      const int ni = static_cast<int>(n);
      if (n <= 32) launch_ln_dx_warp<T, P, 1>(dy, x, w, mean, rstd, dx, rows, ni, stream);
      else if (n <= 64) launch_ln_dx_warp<T, P, 2>(dy, x, w, mean, rstd, dx, rows, ni, stream);
      else if (n <= 128) launch_ln_dx_warp<T, P, 4>(dy, x, w, mean, rstd, dx, rows, ni, stream);
      else if (n <= 256) launch_ln_dx_warp<T, P, 8>(dy, x, w, mean, rstd, dx, rows, ni, stream);
      else if (n <= 512) launch_ln_dx_warp<T, P, 16>(dy, x, w, mean, rstd, dx, rows, ni, stream);
      else launch_ln_dx_warp<T, P, 32>(dy, x, w, mean, rstd, dx, rows, ni, stream);
    } else {
      const bool vec = n % V == 0 && aligned16(x) && aligned16(dy) && aligned16(dx);
      const int threads = row_block_threads(n, vec ? V : 1);
      const unsigned blocks = static_cast<unsigned>(rows < 65535LL * 32 ? rows : 65535LL * 32);
      ln_bwd_dx_block_kernel<T, P><<<blocks, threads, 0, stream>>>(dy, x, w, mean, rstd, dx, rows, n, vec);
      KILN_CUDA_CHECK_LAUNCH();
    }
  }
  if (dw == nullptr && db == nullptr) return;
  // Enough (column tile, row chunk) blocks for a few waves; at least 2 rows per row lane.
  const int64_t gx = ceil_div(n, kTileX);
  int64_t chunks = ceil_div(4LL * num_sms(), gx);
  const int64_t max_chunks = ceil_div(rows, 2 * kTileY);
  if (chunks > max_chunks) chunks = max_chunks;
  if (chunks > 65535) chunks = 65535;
  if (chunks < 1) chunks = 1;
  const int64_t rows_per_chunk = ceil_div(rows, chunks);
  chunks = ceil_div(rows, rows_per_chunk);
  if (gx > INT32_MAX) launch_fail("layer_norm backward: normalized size too large for the parameter-gradient grid");
  DeviceScratch scratch(static_cast<size_t>(2 * chunks * n) * sizeof(A), device);
  A* part_dw = scratch.get<A>();
  A* part_db = part_dw + chunks * n;
  ln_param_partial_kernel<T><<<dim3(static_cast<unsigned>(gx), static_cast<unsigned>(chunks)), dim3(kTileX, kTileY),
                               0, stream>>>(dy, x, mean, rstd, part_dw, part_db, rows, n, rows_per_chunk);
  KILN_CUDA_CHECK_LAUNCH();
  column_sum_kernel<A, P><<<grid_for(n), kBlockSize, 0, stream>>>(part_dw, part_db, dw, db, chunks, n);
  KILN_CUDA_CHECK_LAUNCH();
}

// A per-channel reduction of batch norm (see the kernels), finalized by fin.
template <class T, class Policy, class Fin>
void run_bn_reduce(const T* x, const T* dy, const acc_t<T>* mean, int64_t N, int64_t C, int64_t S, const Fin& fin,
                   Device device, cudaStream_t stream) {
  using State = typename Policy::State;
  constexpr int V = Packed128<T>::kSize;
  if (S * static_cast<int64_t>(sizeof(T)) >= 32) {
    const bool vec = S % V == 0 && aligned16(x) && (dy == nullptr || aligned16(dy));
    const int64_t per_n = vec ? S / V : S;
    const int64_t units = N * per_n;
    if (units >= kMax32 || per_n >= kMax32)
      launch_fail("batch_norm: more than 2^31 values per channel are not supported by the CUDA kernels");
    if (C > INT32_MAX) launch_fail("batch_norm: too many channels for the CUDA grid");
    // Enough blocks for a few waves, each thread folding at least ~4 chunks of loads.
    int64_t splits = ceil_div(4LL * num_sms(), C);
    const int64_t max_splits = ceil_div(units, static_cast<int64_t>(kPlanarBlock) * kInFlight * 4);
    if (splits > max_splits) splits = max_splits;
    if (splits > 65535) splits = 65535;
    if (splits < 1) splits = 1;
    const int64_t per_split = ceil_div(units, splits);
    splits = ceil_div(units, per_split);
    const FastDivmod fd(static_cast<uint32_t>(per_n));
    const dim3 grid(static_cast<unsigned>(C), static_cast<unsigned>(splits));
    auto launch = [&](State* partial) {
      if (vec)
        bn_reduce_planar_kernel<T, Policy, Fin, true><<<grid, kPlanarBlock, 0, stream>>>(
            x, dy, mean, C, S, fd, static_cast<uint32_t>(units), static_cast<uint32_t>(per_split), partial, fin);
      else
        bn_reduce_planar_kernel<T, Policy, Fin, false><<<grid, kPlanarBlock, 0, stream>>>(
            x, dy, mean, C, S, fd, static_cast<uint32_t>(units), static_cast<uint32_t>(per_split), partial, fin);
      KILN_CUDA_CHECK_LAUNCH();
    };
    if (splits == 1) {
      launch(nullptr);
      return;
    }
    DeviceScratch scratch(static_cast<size_t>(C * splits) * sizeof(State), device);
    launch(scratch.get<State>());
    bn_reduce_finalize_kernel<Policy, Fin><<<small_grid(C), kBlockSize, 0, stream>>>(scratch.get<State>(), C, splits,
                                                                                     1, 0, splits, fin);
    KILN_CUDA_CHECK_LAUNCH();
      return;
  }
  // Short runs (S * sizeof(T) < 32 bytes): columns of the (N, C S) matrix.
  const int64_t K = C * S;
  const int64_t gx = ceil_div(K, kTileX);
  if (gx > INT32_MAX) launch_fail("batch_norm: too many channels for the CUDA grid");
  int64_t chunks = ceil_div(4LL * num_sms(), gx);
  const int64_t max_chunks = ceil_div(N, static_cast<int64_t>(kTileY) * kInFlight * 2);
  if (chunks > max_chunks) chunks = max_chunks;
  if (chunks > 65535) chunks = 65535;
  if (chunks < 1) chunks = 1;
  const int64_t rows_per_chunk = ceil_div(N, chunks);
  chunks = ceil_div(N, rows_per_chunk);
  DeviceScratch scratch(static_cast<size_t>(chunks * K) * sizeof(State), device);
  bn_reduce_cols_kernel<T, Policy><<<dim3(static_cast<unsigned>(gx), static_cast<unsigned>(chunks)),
                                     dim3(kTileX, kTileY), 0, stream>>>(x, dy, mean, N, K, S, rows_per_chunk,
                                                                        scratch.get<State>());
  KILN_CUDA_CHECK_LAUNCH();
  bn_reduce_finalize_kernel<Policy, Fin><<<small_grid(C), kBlockSize, 0, stream>>>(scratch.get<State>(), C, S,
                                                                                   chunks, K, S, fin);
  KILN_CUDA_CHECK_LAUNCH();
}

// The elementwise pass over x (N C rows of S): y (forward) or dx (backward).
template <class T, class P, bool kGroup>
void run_norm_elementwise(const T* x, const T* dy, const P* w, const P* b, const acc_t<T>* mean,
                          const acc_t<T>* rstd, const acc_t<T>* coef, T* out, int64_t N, int64_t C, int64_t S,
                          int64_t Cg, cudaStream_t stream) {
  constexpr int V = Packed128<T>::kSize;
  const bool backward = dy != nullptr;
  const bool vec = S % V == 0 && aligned16(x) && aligned16(out) && (!backward || aligned16(dy));
  const int64_t per_row = vec ? S / V : S;
  const int64_t units = N * C * per_row;
  auto go = [&](auto map, auto vec_tag) {
    constexpr bool kVec = decltype(vec_tag)::value;
    using Map = decltype(map);
    const unsigned grid = grid_for(units);
    if (backward)
      norm_dx_kernel<T, P, Map, kGroup, kVec><<<grid, kBlockSize, 0, stream>>>(dy, x, w, mean, rstd, coef, out, units,
                                                                               map);
    else
      norm_apply_kernel<T, P, Map, kGroup, kVec><<<grid, kBlockSize, 0, stream>>>(x, w, b, mean, rstd, out, units,
                                                                                  map);
    KILN_CUDA_CHECK_LAUNCH();
  };
  if (units < kMax32 && C < kMax32) {
    RowMap32 m{FastDivmod(static_cast<uint32_t>(per_row)), FastDivmod(static_cast<uint32_t>(C)),
               FastDivmod(static_cast<uint32_t>(Cg))};
    if (vec) go(m, std::true_type{});
    else go(m, std::false_type{});
  } else {
    RowMap64 m{per_row, C, Cg};
    if (vec) go(m, std::true_type{});
    else go(m, std::false_type{});
  }
}

}  // namespace

void layer_norm_forward(TV x, TV weight, TV bias, TV y, TV mean, TV rstd, const LayerNormParams& p) {
  if (x.numel == 0) return;
  DeviceGuard guard(x.device);
  const cudaStream_t stream = current_stream(x.device);
  visit_norm_types(x.dtype, param_dtype(x, {weight, bias}), "layer_norm: unsupported dtypes", [&](auto t, auto pt) {
    using T = decltype(t);
    using P = decltype(pt);
    using A = acc_t<T>;
    run_row_norm<T, P, true>(x.ptr<const T>(), weight.ptr<const P>(), bias.ptr<const P>(), y.ptr<T>(), mean.ptr<A>(),
                             rstd.ptr<A>(), p.M, p.D, p.eps, stream);
  });
}

void layer_norm_backward(TV dy, TV x, TV weight, TV mean, TV rstd, TV dx, TV dweight, TV dbias,
                         const LayerNormParams& p) {
  if (x.numel == 0) return;
  DeviceGuard guard(x.device);
  const cudaStream_t stream = current_stream(x.device);
  const DType pdt = param_dtype(x, {weight, dweight, dbias});
  visit_norm_types(x.dtype, pdt, "layer_norm backward: unsupported dtypes", [&](auto t, auto pt) {
    using T = decltype(t);
    using P = decltype(pt);
    using A = acc_t<T>;
    run_layer_norm_backward<T, P>(dy.ptr<const T>(), x.ptr<const T>(), weight.ptr<const P>(), mean.ptr<const A>(),
                                  rstd.ptr<const A>(), dx.ptr<T>(), dweight.ptr<P>(), dbias.ptr<P>(), p.M, p.D,
                                  x.device, stream);
  });
}

void batch_norm_forward(TV x, TV weight, TV bias, TV running_mean, TV running_var, TV y, TV save_mean,
                        TV save_invstd, const BatchNormParams& p) {
  if (x.numel == 0) return;
  DeviceGuard guard(x.device);
  const cudaStream_t stream = current_stream(x.device);
  const int64_t N = p.N, C = p.C, S = p.S;
  const DType rdt = running_mean.defined ? running_mean.dtype : x.dtype;
  visit_norm_types(x.dtype, param_dtype(x, {weight, bias}), "batch_norm: unsupported dtypes", [&](auto t, auto pt) {
    using T = decltype(t);
    using P = decltype(pt);
    using A = acc_t<T>;
    A* sm = save_mean.ptr<A>();
    A* si = save_invstd.ptr<A>();
    const T* xt = x.ptr<const T>();
    visit_running_type<T>(rdt, "batch_norm: unsupported running-stat dtype", [&](auto r) {
      using R = decltype(r);
      if (p.training) {
        const BnStatsOut<A, R> fin{sm, si, running_mean.ptr<R>(), running_var.ptr<R>(), static_cast<A>(N * S),
                                   static_cast<A>(p.eps), static_cast<A>(p.momentum)};
        run_bn_reduce<T, MomentsPolicy<T>>(xt, static_cast<const T*>(nullptr), static_cast<const A*>(nullptr), N, C, S,
                                           fin, x.device, stream);
      } else {
        bn_eval_stats_kernel<A, R><<<small_grid(C), kBlockSize, 0, stream>>>(
            running_mean.ptr<const R>(), running_var.ptr<const R>(), sm, si, C, static_cast<A>(p.eps));
        KILN_CUDA_CHECK_LAUNCH();
      }
    });
    run_norm_elementwise<T, P, false>(xt, nullptr, weight.ptr<const P>(), bias.ptr<const P>(), sm, si, nullptr,
                                      y.ptr<T>(), N, C, S, 1, stream);
  });
}

void batch_norm_backward(TV dy, TV x, TV weight, TV save_mean, TV save_invstd, TV dx, TV dweight, TV dbias,
                         const BatchNormParams& p) {
  if (x.numel == 0) return;
  DeviceGuard guard(x.device);
  const cudaStream_t stream = current_stream(x.device);
  const int64_t N = p.N, C = p.C, S = p.S;
  const DType pdt = param_dtype(x, {weight, dweight, dbias});
  visit_norm_types(x.dtype, pdt, "batch_norm backward: unsupported dtypes", [&](auto t, auto pt) {
    using T = decltype(t);
    using P = decltype(pt);
    using A = acc_t<T>;
    const T* xt = x.ptr<const T>();
    const T* gt = dy.ptr<const T>();
    const P* w = weight.ptr<const P>();
    const A* sm = save_mean.ptr<const A>();
    const A* si = save_invstd.ptr<const A>();
    const bool coefs = p.training && dx.defined;
    if (!coefs && !dweight.defined && !dbias.defined) {  // eval dx only: no reduction
      run_norm_elementwise<T, P, false>(xt, gt, w, nullptr, sm, si, nullptr, dx.ptr<T>(), N, C, S, 1, stream);
      return;
    }
    DeviceScratch scratch(static_cast<size_t>(coefs ? 2 * C : 1) * sizeof(A), x.device);
    const BnGradOut<A, P> fin{si, w, dweight.ptr<P>(), dbias.ptr<P>(), coefs ? scratch.get<A>() : nullptr,
                              static_cast<A>(N * S)};
    run_bn_reduce<T, GradSumsPolicy<T>>(xt, gt, sm, N, C, S, fin, x.device, stream);
    if (dx.defined)
      run_norm_elementwise<T, P, false>(xt, gt, w, nullptr, sm, si, coefs ? scratch.get<A>() : nullptr, dx.ptr<T>(),
                                        N, C, S, 1, stream);
  });
}

void group_norm_forward(TV x, TV weight, TV bias, TV y, TV mean, TV rstd, const GroupNormParams& p) {
  if (x.numel == 0) return;
  DeviceGuard guard(x.device);
  const cudaStream_t stream = current_stream(x.device);
  const int64_t N = p.N, C = p.C, S = p.S, G = p.G;
  visit_norm_types(x.dtype, param_dtype(x, {weight, bias}), "group_norm: unsupported dtypes", [&](auto t, auto pt) {
    using T = decltype(t);
    using P = decltype(pt);
    using A = acc_t<T>;
    const T* xt = x.ptr<const T>();
    A* mu = mean.ptr<A>();
    A* rs = rstd.ptr<A>();
    const int64_t Cg = C / G;
    run_row_norm<T, T, false>(xt, nullptr, nullptr, nullptr, mu, rs, N * G, Cg * S, p.eps, stream);
    run_norm_elementwise<T, P, true>(xt, nullptr, weight.ptr<const P>(), bias.ptr<const P>(), mu, rs, nullptr,
                                     y.ptr<T>(), N, C, S, Cg, stream);
  });
}

void group_norm_backward(TV dy, TV x, TV weight, TV mean, TV rstd, TV dx, TV dweight, TV dbias,
                         const GroupNormParams& p) {
  if (x.numel == 0) return;
  DeviceGuard guard(x.device);
  const cudaStream_t stream = current_stream(x.device);
  const int64_t N = p.N, C = p.C, S = p.S, G = p.G;
  const DType pdt = param_dtype(x, {weight, dweight, dbias});
  visit_norm_types(x.dtype, pdt, "group_norm backward: unsupported dtypes", [&](auto t, auto pt) {
    using T = decltype(t);
    using P = decltype(pt);
    using A = acc_t<T>;
    const T* xt = x.ptr<const T>();
    const T* gt = dy.ptr<const T>();
    const P* w = weight.ptr<const P>();
    const A* mu = mean.ptr<const A>();
    const A* rs = rstd.ptr<const A>();
    const int64_t Cg = C / G, rows = N * C;
    DeviceScratch scratch(static_cast<size_t>(2 * rows + 2 * N * G) * sizeof(A), x.device);
    A* sums = scratch.get<A>();
    A* coef = sums + 2 * rows;
    if (S > kMaxSubWarpRow) {
      const unsigned blocks = static_cast<unsigned>(rows < 65535LL * 32 ? rows : 65535LL * 32);
      gn_channel_sums_block_kernel<T><<<blocks, row_block_threads(S, 1), 0, stream>>>(gt, xt, mu, sums, rows, S, Cg);
    } else {
      int group = 1;
      while (group < kWarpSize && group < S) group *= 2;
      const int64_t warps = ceil_div(rows, kWarpSize / group);
      gn_channel_sums_kernel<T><<<grid_for(warps, kBlockSize / kWarpSize), kBlockSize, 0, stream>>>(gt, xt, mu, sums,
                                                                                                   rows, S, Cg, group);
    }
    KILN_CUDA_CHECK_LAUNCH();
    if (dx.defined) {
      gn_coef_kernel<A, P><<<small_grid(N * G), kBlockSize, 0, stream>>>(sums, w, rs, coef, N * G, G, Cg,
                                                                        static_cast<A>(Cg * S));
      KILN_CUDA_CHECK_LAUNCH();
      run_norm_elementwise<T, P, true>(xt, gt, w, nullptr, mu, rs, coef, dx.ptr<T>(), N, C, S, Cg, stream);
    }
    if (dweight.defined || dbias.defined) {
      gn_param_grad_kernel<A, P><<<small_grid(C), kBlockSize, 0, stream>>>(sums, rs, dweight.ptr<P>(), dbias.ptr<P>(),
                                                                          N, C, G, Cg);
      KILN_CUDA_CHECK_LAUNCH();
    }
  });
}

}  // namespace kiln::cuda
