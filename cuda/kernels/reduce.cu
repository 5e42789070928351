// Reductions over the middle axis of a contiguous (outer, r, inner) tensor: the CUDA
// kernel of core's slot `reduce` (core/kernel_list.h, ReduceParams).
//
//   out[o, i] = R_{j < r} x[o, j, i]   x contiguous (outer, r, inner); out contiguous
//                                      (outer, inner); writes (=).
//   R: sum; mean = sum / r; max, min (NaN when any element is NaN); argmax, argmin (the
//   first index of the extremum: ties go to the smallest index, a NaN counts as the
//   extremum and the first NaN wins; int64 out), as ops/cpu/reduce.cpp.
// Accumulation: f16/bf16/f32 in float, f64 in double, integers and bool in int64 (sum of
// integers/bool writes int64). Each thread folds a strided subsequence serially, threads
// then combine through fixed trees (warp butterflies, shared memory), and the partial
// states of a split row are combined in a fixed order by a second kernel: results are
// deterministic for a given shape and GPU (no atomics), and the float error grows with
// the per-thread run (a few hundred elements at most), not with r.
// Paths:
//   inner == 1, short rows (r <= 1024, or r <= 4096 with rows enough to fill the GPU):
//     G lanes per row (G a power of two <= 32, about two 16-byte vectors per lane),
//     256-thread blocks, Packed128 loads, butterfly over the G lanes.
//   inner == 1, long rows: 512-thread blocks over (a chunk of) one row, Packed128 loads
//     with four vectors in flight per thread (a row's unaligned head and tail are
//     scalar). With fewer rows than one wave of resident blocks, each row is split over
//     several blocks whose partial states go to scratch memory from kiln's allocator
//     (DeviceScratch: stream-ordered on the current stream) and a second kernel
//     combines them: a reduce-all of 2^26 f32 runs as ~2 waves of blocks over the
//     whole GPU.
//   inner > 1: 2-D blocks of bx columns (consecutive i: coalesced) by `by` rows of r,
//     four loads in flight per thread, a shared-memory tree over the rows; split over r
//     with the same two-pass scheme when outer * inner is too small to fill the GPU.
//     When r < 4 * by (most of a block's rows would idle), one thread per output instead.
// Preconditions (checked by ops/reduce.cpp): r > 0 (empty reductions are filled by
// ops/), out's dtype as above, no mean of integers, no max/min/arg* of bool; x aligned
// to its element size (vector loads only where 16-byte aligned).
// Bandwidth on H100/H200: not yet measured (tools/bench_kernels fills this in).
#include <kiln/core/kernel_list.h>
#include <kiln/cuda/kernels/common.cuh>
#include <kiln/cuda/kernels/elementwise.cuh>
#include <kiln/cuda/kernels/reduce_utils.cuh>

namespace kiln::cuda {
namespace {

constexpr int kGroupBlock = 256;  // short rows: G lanes per row
constexpr int kRowBlock = 512;    // long rows: one block per row chunk
constexpr int kColBlock = 256;    // inner > 1: bx * by threads
constexpr int kInFlight = 4;      // independent loads per thread per step

// ---- device helpers ------------------------------------------------------------------

template <class A>
__device__ __forceinline__ A lowest_value() {
  if constexpr (std::is_floating_point_v<A>) return neg_inf<A>();
  else return static_cast<A>(INT64_MIN);
}
template <class A>
__device__ __forceinline__ A highest_value() {
  if constexpr (std::is_floating_point_v<A>) return -neg_inf<A>();
  else return static_cast<A>(INT64_MAX);
}

// A reduction op: identity(), update(state, value, index) for one element (indices of
// one thread increase), combine(a, b) for two partial states (commutative where the
// result is used by several lanes), finish<OutT>(state) for the output element.
template <class A>
struct SumOp {
  using Acc = A;
  using State = A;
  int64_t mean_count;  // 0: sum; r: mean (floating only)
  __device__ __forceinline__ State identity() const { return A(0); }
  __device__ __forceinline__ void update(State& s, A v, int64_t) const { s += v; }
  __device__ __forceinline__ State combine(State a, State b) const { return a + b; }
  template <class OutT>
  __device__ __forceinline__ OutT finish(State s) const {
    if constexpr (std::is_floating_point_v<A>) {
      if (mean_count != 0) s = static_cast<A>(static_cast<double>(s) / static_cast<double>(mean_count));
    }
    return convert<OutT>(s);
  }
};

// max / min that propagate NaN.
template <class A>
struct MinMaxOp {
  using Acc = A;
  using State = A;
  bool want_max;
  __device__ __forceinline__ State identity() const { return want_max ? lowest_value<A>() : highest_value<A>(); }
  // b replaces a when b is NaN or strictly better; a NaN a is never replaced by a number.
  __device__ __forceinline__ State pick(State a, State b) const {
    return (k_isnan(b) || (want_max ? b > a : b < a)) ? b : a;
  }
  __device__ __forceinline__ void update(State& s, A v, int64_t) const { s = pick(s, v); }
  __device__ __forceinline__ State combine(State a, State b) const { return pick(a, b); }
  template <class OutT>
  __device__ __forceinline__ OutT finish(State s) const {
    return convert<OutT>(s);
  }
};

template <class A>
struct ValueIndex {
  A v;
  int64_t i;
};

// argmax / argmin: a total order on (value, index) — NaN above every number, then the
// value, then the smaller index — so combine is associative and commutative and the
// result is the first index of the extremum whatever the reduction tree.
template <class A>
struct ArgOp {
  using Acc = A;
  using State = ValueIndex<A>;
  bool want_max;
  __device__ __forceinline__ State identity() const {
    return {want_max ? lowest_value<A>() : highest_value<A>(), INT64_MAX};
  }
  __device__ __forceinline__ bool beats(A bv, int64_t bi, const State& a) const {
    if constexpr (std::is_floating_point_v<A>) {
      const bool an = isnan(a.v), bn = isnan(bv);
      if (an || bn) return bn && (!an || bi < a.i);
    }
    if (want_max ? bv > a.v : bv < a.v) return true;
    return bv == a.v && bi < a.i;
  }
  __device__ __forceinline__ void update(State& s, A v, int64_t j) const {
    if (beats(v, j, s)) s = {v, j};
  }
  __device__ __forceinline__ State combine(State a, State b) const { return beats(b.v, b.i, a) ? b : a; }
  template <class OutT>
  __device__ __forceinline__ OutT finish(State s) const {
    return s.i;
  }
};

// Folds row[begin, end) into s, thread `tid` of `nthreads` taking a strided share:
// scalar loads up to the first 16-byte boundary, then Packed128 loads (kInFlight per
// thread issued before use), then the scalar tail.
template <class T, class Op>
__device__ __forceinline__ void reduce_span(const T* row, int64_t begin, int64_t end, int tid, int nthreads,
                                            const Op& op, typename Op::State& s) {
  using Acc = typename Op::Acc;
  constexpr int V = Packed128<T>::kSize;
  const int64_t mis = static_cast<int64_t>((reinterpret_cast<uintptr_t>(row + begin) & 15) / sizeof(T));
  int64_t head = mis == 0 ? 0 : V - mis;
  if (head > end - begin) head = end - begin;
  for (int64_t j = begin + tid; j < begin + head; j += nthreads) op.update(s, convert<Acc>(row[j]), j);

  const int64_t vbegin = begin + head;
  const int64_t nvec = (end - vbegin) / V;
  const T* vrow = row + vbegin;
  for (int64_t v = tid; v < nvec; v += static_cast<int64_t>(kInFlight) * nthreads) {
    Packed128<T> p[kInFlight];
#pragma unroll
    for (int u = 0; u < kInFlight; ++u) {
      const int64_t w = v + static_cast<int64_t>(u) * nthreads;
      if (w < nvec) p[u] = load128cs(vrow + w * V);
    }
#pragma unroll
    for (int u = 0; u < kInFlight; ++u) {
      const int64_t w = v + static_cast<int64_t>(u) * nthreads;
      if (w < nvec) {
#pragma unroll
        for (int k = 0; k < V; ++k) op.update(s, convert<Acc>(p[u][k]), vbegin + w * V + k);
      }
    }
  }
  for (int64_t j = vbegin + nvec * V + tid; j < end; j += nthreads) op.update(s, convert<Acc>(row[j]), j);
}

// ---- kernels -------------------------------------------------------------------------

// inner == 1, short rows: `group` lanes (a power of two <= 32) per row.
template <class T, class Op, class OutT>
__global__ void __launch_bounds__(kGroupBlock)
    reduce_rows_group_kernel(const T* x, OutT* out, int64_t rows, int64_t r, int group, Op op) {
  using State = typename Op::State;
  const int lane = threadIdx.x % kWarpSize;
  const int sub = lane / group, glane = lane % group;
  const int64_t rows_per_warp = kWarpSize / group;
  const int64_t warp = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / kWarpSize;
  const int64_t nwarps = static_cast<int64_t>(gridDim.x) * blockDim.x / kWarpSize;
  auto combine = [&](const State& a, const State& b) { return op.combine(a, b); };
  for (int64_t base = warp * rows_per_warp; base < rows; base += nwarps * rows_per_warp) {  // warp-uniform
    const int64_t row = base + sub;
    State s = op.identity();
    if (row < rows) reduce_span(x + row * r, 0, r, glane, group, op, s);
    s = warp_all_reduce(s, combine, group);
    if (glane == 0 && row < rows) out[row] = op.template finish<OutT>(s);
  }
}

// inner == 1, long rows: block (split, row-slot) folds x[row, split*chunk : +chunk].
// partial == nullptr: one split, write out[row]; else partial[row * splits + split].
template <class T, class Op, class OutT>
__global__ void __launch_bounds__(kRowBlock)
    reduce_rows_block_kernel(const T* x, OutT* out, typename Op::State* partial, int64_t rows, int64_t r,
                             int64_t chunk, Op op) {
  using State = typename Op::State;
  const int64_t split = blockIdx.x, splits = gridDim.x;
  const int64_t begin = split * chunk;
  const int64_t end = begin + chunk < r ? begin + chunk : r;
  auto combine = [&](const State& a, const State& b) { return op.combine(a, b); };
  for (int64_t row = blockIdx.y; row < rows; row += gridDim.y) {
    State s = op.identity();
    reduce_span(x + row * r, begin, end, threadIdx.x, blockDim.x, op, s);
    s = block_all_reduce(s, combine, op.identity());
    if (threadIdx.x == 0) {
      if (partial != nullptr) partial[row * splits + split] = s;
      else out[row] = op.template finish<OutT>(s);
    }
  }
}

// inner > 1: block (bx, by) covers columns [blockIdx.x * bx, +bx) of one o and rows
// [split * chunk, +chunk) of r, thread (tx, ty) taking rows ty, ty + by, ...
// partial == nullptr: write out[o * inner + i]; else partial[(o * inner + i) * splits + split].
template <class T, class Op, class OutT>
__global__ void __launch_bounds__(kColBlock)
    reduce_cols_kernel(const T* x, OutT* out, typename Op::State* partial, int64_t outer, int64_t r,
                       int64_t inner, int64_t chunk, Op op) {
  using State = typename Op::State;
  using Acc = typename Op::Acc;
  __shared__ State tile[kColBlock];
  const int tx = threadIdx.x, ty = threadIdx.y, bx = blockDim.x, by = blockDim.y;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * bx + tx;
  const int64_t split = blockIdx.z, splits = gridDim.z;
  const int64_t begin = split * chunk;
  const int64_t end = begin + chunk < r ? begin + chunk : r;
  for (int64_t o = blockIdx.y; o < outer; o += gridDim.y) {
    State s = op.identity();
    if (i < inner) {
      const T* col = x + o * r * inner + i;
      int64_t j = begin + ty;
      for (; j + (kInFlight - 1) * by < end; j += kInFlight * by) {
        T v[kInFlight];
#pragma unroll
        for (int u = 0; u < kInFlight; ++u) v[u] = col[(j + u * by) * inner];
#pragma unroll
        for (int u = 0; u < kInFlight; ++u) op.update(s, convert<Acc>(v[u]), j + u * by);
      }
      for (; j < end; j += by) op.update(s, convert<Acc>(col[j * inner]), j);
    }
    tile[ty * bx + tx] = s;
    __syncthreads();
    for (int h = by / 2; h > 0; h /= 2) {
      if (ty < h) tile[ty * bx + tx] = op.combine(tile[ty * bx + tx], tile[(ty + h) * bx + tx]);
      __syncthreads();
    }
    if (ty == 0 && i < inner) {
      if (partial != nullptr) partial[(o * inner + i) * splits + split] = tile[tx];
      else out[o * inner + i] = op.template finish<OutT>(tile[tx]);
    }
    __syncthreads();  // the tile is reused by the next o
  }
}

// inner > 1 and r short: one thread per output q = o * inner + i (consecutive threads on
// consecutive i), each folding its column serially; the 2-D blocks would leave most of
// their rows of r idle.
template <class T, class Op, class OutT>
__global__ void __launch_bounds__(kColBlock)
    reduce_cols_flat_kernel(const T* x, OutT* out, int64_t nout, int64_t r, int64_t inner, Op op) {
  using State = typename Op::State;
  using Acc = typename Op::Acc;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t q = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; q < nout; q += stride) {
    const int64_t o = q / inner, i = q - o * inner;
    const T* col = x + o * r * inner + i;
    State s = op.identity();
    int64_t j = 0;
    for (; j + kInFlight <= r; j += kInFlight) {
      T v[kInFlight];
#pragma unroll
      for (int u = 0; u < kInFlight; ++u) v[u] = col[(j + u) * inner];
#pragma unroll
      for (int u = 0; u < kInFlight; ++u) op.update(s, convert<Acc>(v[u]), j + u);
    }
    for (; j < r; ++j) op.update(s, convert<Acc>(col[j * inner]), j);
    out[q] = op.template finish<OutT>(s);
  }
}

// Second pass of a split reduction: one warp per output combines its `splits` partial
// states (lane-strided, then a butterfly) and writes the output.
template <class Op, class OutT>
__global__ void reduce_partials_kernel(const typename Op::State* partial, OutT* out, int64_t nout, int splits,
                                       Op op) {
  using State = typename Op::State;
  const int lane = threadIdx.x % kWarpSize;
  const int64_t warp = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / kWarpSize;
  const int64_t nwarps = static_cast<int64_t>(gridDim.x) * blockDim.x / kWarpSize;
  auto combine = [&](const State& a, const State& b) { return op.combine(a, b); };
  for (int64_t o = warp; o < nout; o += nwarps) {  // warp-uniform
    State s = op.identity();
    for (int k = lane; k < splits; k += kWarpSize) s = op.combine(s, partial[o * splits + k]);
    s = warp_all_reduce(s, combine);
    if (lane == 0) out[o] = op.template finish<OutT>(s);
  }
}

// ---- launchers -----------------------------------------------------------------------

inline int64_t min_i64(int64_t a, int64_t b) { return a < b ? a : b; }

// Blocks of `threads` resident on the whole GPU at full occupancy (2048 threads per SM).
inline int64_t resident_blocks(int threads) { return static_cast<int64_t>(num_sms()) * (2048 / threads); }

// Splits of r so that `blocks` blocks per split make about two waves, each split keeping
// at least `min_per_split` elements of r; 1 when the blocks already fill a wave.
inline int64_t choose_splits(int64_t blocks, int threads, int64_t r, int64_t min_per_split) {
  const int64_t wave = resident_blocks(threads);
  if (blocks >= wave) return 1;
  int64_t splits = ceil_div(2 * wave, blocks);
  splits = min_i64(splits, ceil_div(r, min_per_split));
  return splits < 1 ? 1 : splits;
}

template <class Op, class OutT>
void launch_partials(const typename Op::State* partial, OutT* out, int64_t nout, int64_t splits, const Op& op,
                     cudaStream_t stream) {
  constexpr int kThreads = 256;
  reduce_partials_kernel<Op, OutT><<<grid_for(nout, kThreads / kWarpSize), kThreads, 0, stream>>>(
      partial, out, nout, static_cast<int>(splits), op);
  KILN_CUDA_CHECK_LAUNCH();
}

// Scratch for the partial states of split reductions comes from kiln's allocator on
// `device` (stream-ordered on its current stream, which is `stream`) and is handed back
// as soon as the second pass is queued.
template <class T, class OutT, class Op>
void run_reduce(const T* x, OutT* out, int64_t outer, int64_t r, int64_t inner, const Op& op, Device device,
                cudaStream_t stream) {
  using State = typename Op::State;
  constexpr int V = Packed128<T>::kSize;
  if (inner == 1) {
    int group = 1;  // lanes per row: about two vectors per lane
    while (group < kWarpSize && static_cast<int64_t>(group) * V * 2 < r) group *= 2;
    const int64_t resident_threads = static_cast<int64_t>(num_sms()) * 2048;
    if (r <= 1024 || (r <= 4096 && outer * group >= resident_threads)) {
      reduce_rows_group_kernel<T, Op, OutT>
          <<<grid_for(outer, kGroupBlock / group), kGroupBlock, 0, stream>>>(x, out, outer, r, group, op);
      KILN_CUDA_CHECK_LAUNCH();
      return;
    }
    int64_t splits = choose_splits(outer, kRowBlock, r, static_cast<int64_t>(kRowBlock) * V * kInFlight);
    // Chunks of a multiple of 16 elements keep every chunk's alignment that of its row.
    const int64_t chunk = (ceil_div(r, splits) + 15) / 16 * 16;
    splits = ceil_div(r, chunk);
    const dim3 grid(static_cast<unsigned>(splits), static_cast<unsigned>(min_i64(outer, 65535)));
    if (splits == 1) {
      reduce_rows_block_kernel<T, Op, OutT><<<grid, kRowBlock, 0, stream>>>(x, out, nullptr, outer, r, chunk, op);
      KILN_CUDA_CHECK_LAUNCH();
      return;
    }
    DeviceScratch scratch(static_cast<size_t>(outer * splits) * sizeof(State), device);
    reduce_rows_block_kernel<T, Op, OutT>
        <<<grid, kRowBlock, 0, stream>>>(x, out, scratch.get<State>(), outer, r, chunk, op);
    KILN_CUDA_CHECK_LAUNCH();
    launch_partials(scratch.get<State>(), out, outer, splits, op, stream);
    return;
  }

  int bx = 1;  // columns per block: up to a warp's worth, the rest of the block over r
  while (bx < kWarpSize && bx < inner) bx *= 2;
  const int by = kColBlock / bx;
  if (r < static_cast<int64_t>(by) * kInFlight) {  // a 2-D block would be mostly idle rows
    reduce_cols_flat_kernel<T, Op, OutT>
        <<<grid_for(outer * inner, kColBlock), kColBlock, 0, stream>>>(x, out, outer * inner, r, inner, op);
    KILN_CUDA_CHECK_LAUNCH();
    return;
  }
  const int64_t gx = ceil_div(inner, bx);
  if (gx > INT32_MAX) launch_fail("reduce: inner dimension too large for the grid");
  int64_t splits = choose_splits(gx * outer, kColBlock, r, static_cast<int64_t>(by) * kInFlight);
  const int64_t chunk = ceil_div(r, splits);
  splits = ceil_div(r, chunk);
  const dim3 grid(static_cast<unsigned>(gx), static_cast<unsigned>(min_i64(outer, 65535)),
                  static_cast<unsigned>(splits));
  const dim3 block(bx, by);
  if (splits == 1) {
    reduce_cols_kernel<T, Op, OutT><<<grid, block, 0, stream>>>(x, out, nullptr, outer, r, inner, chunk, op);
    KILN_CUDA_CHECK_LAUNCH();
    return;
  }
  DeviceScratch scratch(static_cast<size_t>(outer * inner * splits) * sizeof(State), device);
  reduce_cols_kernel<T, Op, OutT>
      <<<grid, block, 0, stream>>>(x, out, scratch.get<State>(), outer, r, inner, chunk, op);
  KILN_CUDA_CHECK_LAUNCH();
  launch_partials(scratch.get<State>(), out, outer * inner, splits, op, stream);
}

}  // namespace

void reduce(const TensorView& x, const TensorView& out, const ReduceParams& p) {
  const int64_t outer = p.outer, r = p.r, inner = p.inner;
  if (outer == 0 || inner == 0) return;  // empty output
  DeviceGuard guard(x.device);
  const cudaStream_t stream = current_stream(x.device);
  const ReduceOp op = p.op;
  visit_device_dtype(x.dtype, [&](auto tag) {
    using T = decltype(tag);
    using Acc = acc_t<T>;
    const T* px = x.ptr<const T>();
    constexpr bool kBool = std::is_same_v<T, bool>;
    switch (op) {
      case ReduceOp::Sum:
      case ReduceOp::Mean:
        if constexpr (std::is_integral_v<T>) {  // integers and bool sum into int64 (ops/ rejects their mean)
          run_reduce(px, out.ptr<int64_t>(), outer, r, inner, SumOp<Acc>{0}, x.device, stream);
        } else {
          run_reduce(px, out.ptr<T>(), outer, r, inner, SumOp<Acc>{op == ReduceOp::Mean ? r : 0}, x.device, stream);
        }
        break;
      case ReduceOp::Max:
      case ReduceOp::Min:
        if constexpr (!kBool)  // bool: rejected by ops/reduce.cpp
          run_reduce(px, out.ptr<T>(), outer, r, inner, MinMaxOp<Acc>{op == ReduceOp::Max}, x.device, stream);
        break;
      case ReduceOp::ArgMax:
      case ReduceOp::ArgMin:
        if constexpr (!kBool)  // bool: rejected by ops/reduce.cpp
          run_reduce(px, out.ptr<int64_t>(), outer, r, inner, ArgOp<Acc>{op == ReduceOp::ArgMax}, x.device, stream);
        break;
    }
  });
}

}  // namespace kiln::cuda
