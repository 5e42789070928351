// Scaled dot-product attention on CUDA (slots attention_forward / attention_backward;
// ops/attention.h has the contract, ops/cpu/attention.cpp the reference): FlashAttention's
// online softmax, one warp per query row (forward, dq) or key row (dk, dv).
//
// Forward: a warp holds its query row and its output accumulator in registers, lane l
// owning elements l, l + 32, ... of the head dims (up to 32 * kMaxPerLane), and walks
// the keys j it may see: s = scale q . k_j (a butterfly sum), the running max, sum and
// output rescaled when the max grows, the dropout factor from Philox counter
// offset + ((b H + h) Tq + i) Tk + j (the CPU's). Writes out = acc / l and lse.
// Backward (FlashAttention-2's formulas, deterministic: no atomics):
//   1. d_i = dout_i . out_i per query row (scratch);
//   2. dq_i = scale sum_j p_ij (z~_ij dout_i . v_j - d_i) k_j, a warp per query row;
//   3. dk_j = scale sum_i ds_ij q_i and dv_j = sum_i p~_ij dout_i, a warp per key row,
//      over the queries that see key j.
// Each probability is recomputed as exp(s_ij - lse_i). f16/bf16/f32 accumulate in float,
// f64 in double. Loads go through the read-only cache; the key and value rows of a
// (batch, head) are shared by the warps of a block through L1/L2, not shared memory:
// simple and exact, not yet tuned — tensor-core tiles (and cuDNN's fused attention
// beside it) are the next step once a GPU can measure them.
// Status: passes the CUDA-vs-CPU tests on an H200 (2026-12-04); slow (2-7x PyTorch SDPA).
#include <kiln/core/philox.h>
#include <kiln/cuda/kernels/common.cuh>
#include <kiln/cuda/kernels/elementwise.cuh>
#include <kiln/cuda/kernels/reduce_utils.cuh>
#include <kiln/cuda/kernels/scratch.h>
#include <kiln/ops/op_list.h>

namespace kiln::cuda {
namespace {

constexpr int kWarps = 4;         // warps (rows) per block
constexpr int kMaxPerLane = 8;    // head dims up to 256

template <class A>
__device__ __forceinline__ A warp_sum(A v) {
  return warp_all_reduce(v, [](A a, A b) { return a + b; });
}

__device__ __forceinline__ int64_t key_end(const AttentionParams& p, int64_t i) {
  const int64_t end = i + p.Tk - p.Tq + 1;  // kiln::min is the tensor op: compare by hand
  return p.causal && end < p.Tk ? end : p.Tk;
}

template <class A>
__device__ __forceinline__ A drop_factor(const AttentionParams& p, uint32_t threshold, int64_t bh, int64_t i,
                                         int64_t j, A keep_scale) {
  if (p.dropout_p <= 0) return A(1);
  const uint64_t c = p.offset + static_cast<uint64_t>((bh * p.Tq + i) * p.Tk + j);
  return philox_keep(p.seed, c, threshold) ? keep_scale : A(0);
}

// Lane-owned elements of a row of n: e = lane + 32 c for c < N, e < n.
template <class T, class A, int N>
__device__ __forceinline__ void load_row(const T* row, int64_t n, int lane, A (&r)[N]) {
#pragma unroll
  for (int c = 0; c < N; ++c) {
    const int64_t e = lane + 32 * c;
    r[c] = e < n ? convert<A>(row[e]) : A(0);
  }
}

template <class T, class A, int N>
__device__ __forceinline__ A dot_row(const A (&r)[N], const T* row, int64_t n, int lane) {
  A s = 0;
#pragma unroll
  for (int c = 0; c < N; ++c) {
    const int64_t e = lane + 32 * c;
    if (e < n) s += r[c] * convert<A>(__ldg(row + e));
  }
  return warp_sum(s);
}

template <class T, int N>
__global__ void __launch_bounds__(kWarps * 32)
    attention_forward_kernel(const T* q, const T* k, const T* v, T* out, acc_t<T>* lse, AttentionParams p,
                             uint32_t threshold) {
  using A = acc_t<T>;
  const int lane = threadIdx.x % 32;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32;
  const int64_t bh = blockIdx.y;
  if (i >= p.Tq) return;  // warp-uniform
  const A scale = static_cast<A>(p.scale), keep_scale = static_cast<A>(1.0 / (1.0 - p.dropout_p));
  A qr[N], acc[N];
  load_row<T, A, N>(q + (bh * p.Tq + i) * p.D, p.D, lane, qr);
#pragma unroll
  for (int c = 0; c < N; ++c) acc[c] = 0;
  A m = neg_inf<A>(), l = 0;
  const T* kb = k + bh * p.Tk * p.D;
  const T* vb = v + bh * p.Tk * p.Dv;
  const int64_t jend = key_end(p, i);
  for (int64_t j = 0; j < jend; ++j) {
    const A s = dot_row<T, A, N>(qr, kb + j * p.D, p.D, lane) * scale;
    const A mn = k_fmax(m, s);
    if (mn == neg_inf<A>()) continue;
    const A corr = k_exp(m - mn);  // 0 while m is -inf
    const A pj = k_exp(s - mn);
    l = l * corr + pj;
    const A pz = pj * drop_factor<A>(p, threshold, bh, i, j, keep_scale);
    const T* vr = vb + j * p.Dv;
#pragma unroll
    for (int c = 0; c < N; ++c) {
      const int64_t e = lane + 32 * c;
      acc[c] = acc[c] * corr + (e < p.Dv ? pz * convert<A>(__ldg(vr + e)) : A(0));
    }
    m = mn;
  }
  const A inv = l > 0 ? A(1) / l : A(0);
  T* o = out + (bh * p.Tq + i) * p.Dv;
#pragma unroll
  for (int c = 0; c < N; ++c) {
    const int64_t e = lane + 32 * c;
    if (e < p.Dv) o[e] = convert<T>(acc[c] * inv);
  }
  if (lane == 0) lse[bh * p.Tq + i] = l > 0 ? m + k_log(l) : neg_inf<A>();
}

// d_i = dout_i . out_i.
template <class T, int N>
__global__ void __launch_bounds__(kWarps * 32)
    attention_delta_kernel(const T* out, const T* dout, acc_t<T>* delta, AttentionParams p) {
  using A = acc_t<T>;
  const int lane = threadIdx.x % 32;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32;
  const int64_t bh = blockIdx.y;
  if (i >= p.Tq) return;
  A g[N];
  load_row<T, A, N>(dout + (bh * p.Tq + i) * p.Dv, p.Dv, lane, g);
  const A d = dot_row<T, A, N>(g, out + (bh * p.Tq + i) * p.Dv, p.Dv, lane);
  if (lane == 0) delta[bh * p.Tq + i] = d;
}

template <class T, int N>
__global__ void __launch_bounds__(kWarps * 32)
    attention_dq_kernel(const T* q, const T* k, const T* v, const T* dout, const acc_t<T>* lse,
                        const acc_t<T>* delta, T* dq, AttentionParams p, uint32_t threshold) {
  using A = acc_t<T>;
  const int lane = threadIdx.x % 32;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32;
  const int64_t bh = blockIdx.y;
  if (i >= p.Tq) return;
  const A scale = static_cast<A>(p.scale), keep_scale = static_cast<A>(1.0 / (1.0 - p.dropout_p));
  A qr[N], g[N], acc[N];
  load_row<T, A, N>(q + (bh * p.Tq + i) * p.D, p.D, lane, qr);
  load_row<T, A, N>(dout + (bh * p.Tq + i) * p.Dv, p.Dv, lane, g);
#pragma unroll
  for (int c = 0; c < N; ++c) acc[c] = 0;
  const A li = lse[bh * p.Tq + i], di = delta[bh * p.Tq + i];
  const T* kb = k + bh * p.Tk * p.D;
  const T* vb = v + bh * p.Tk * p.Dv;
  const int64_t jend = li == neg_inf<A>() ? 0 : key_end(p, i);
  for (int64_t j = 0; j < jend; ++j) {
    const A s = dot_row<T, A, N>(qr, kb + j * p.D, p.D, lane) * scale;
    const A pj = k_exp(s - li);
    const A dp = dot_row<T, A, N>(g, vb + j * p.Dv, p.Dv, lane);
    const A z = drop_factor<A>(p, threshold, bh, i, j, keep_scale);
    const A ds = pj * (dp * z - di) * scale;
    const T* kr = kb + j * p.D;
#pragma unroll
    for (int c = 0; c < N; ++c) {
      const int64_t e = lane + 32 * c;
      if (e < p.D) acc[c] += ds * convert<A>(__ldg(kr + e));
    }
  }
  T* o = dq + (bh * p.Tq + i) * p.D;
#pragma unroll
  for (int c = 0; c < N; ++c) {
    const int64_t e = lane + 32 * c;
    if (e < p.D) o[e] = convert<T>(acc[c]);
  }
}

template <class T, int N>
__global__ void __launch_bounds__(kWarps * 32)
    attention_dkdv_kernel(const T* q, const T* k, const T* v, const T* dout, const acc_t<T>* lse,
                          const acc_t<T>* delta, T* dk, T* dv, AttentionParams p, uint32_t threshold) {
  using A = acc_t<T>;
  const int lane = threadIdx.x % 32;
  const int64_t j = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32;
  const int64_t bh = blockIdx.y;
  if (j >= p.Tk) return;
  const A scale = static_cast<A>(p.scale), keep_scale = static_cast<A>(1.0 / (1.0 - p.dropout_p));
  A kr[N], vr[N], ak[N], av[N];
  load_row<T, A, N>(k + (bh * p.Tk + j) * p.D, p.D, lane, kr);
  load_row<T, A, N>(v + (bh * p.Tk + j) * p.Dv, p.Dv, lane, vr);
#pragma unroll
  for (int c = 0; c < N; ++c) ak[c] = av[c] = 0;
  const T* qb = q + bh * p.Tq * p.D;
  const T* gb = dout + bh * p.Tq * p.Dv;
  // Query i sees key j when j < key_end(i): for causal, i >= j - (Tk - Tq).
  const int64_t i0 = p.causal && j > p.Tk - p.Tq ? j - (p.Tk - p.Tq) : 0;
  for (int64_t i = i0; i < p.Tq; ++i) {
    const A li = lse[bh * p.Tq + i];
    if (li == neg_inf<A>()) continue;  // warp-uniform
    const A s = dot_row<T, A, N>(kr, qb + i * p.D, p.D, lane) * scale;
    const A pj = k_exp(s - li);
    const A dp = dot_row<T, A, N>(vr, gb + i * p.Dv, p.Dv, lane);
    const A z = drop_factor<A>(p, threshold, bh, i, j, keep_scale);
    const A ds = pj * (dp * z - delta[bh * p.Tq + i]) * scale;
    const A pz = pj * z;
    const T* qi = qb + i * p.D;
    const T* gi = gb + i * p.Dv;
#pragma unroll
    for (int c = 0; c < N; ++c) {
      const int64_t e = lane + 32 * c;
      if (e < p.D) ak[c] += ds * convert<A>(__ldg(qi + e));
      if (e < p.Dv) av[c] += pz * convert<A>(__ldg(gi + e));
    }
  }
  T* ok = dk + (bh * p.Tk + j) * p.D;
  T* ov = dv + (bh * p.Tk + j) * p.Dv;
#pragma unroll
  for (int c = 0; c < N; ++c) {
    const int64_t e = lane + 32 * c;
    if (e < p.D) ok[e] = convert<T>(ak[c]);
    if (e < p.Dv) ov[e] = convert<T>(av[c]);
  }
}

// Calls f(std::integral_constant<int, N>) with N = the per-lane count for head dims up
// to 32 N.
template <class F>
void with_per_lane(int64_t dims, F&& f) {
  KILN_CHECK(dims <= 32 * kMaxPerLane, "scaled_dot_product_attention on CUDA: head dims up to ", 32 * kMaxPerLane,
             ", got ", dims);
  if (dims <= 32) return f(std::integral_constant<int, 1>{});
  if (dims <= 64) return f(std::integral_constant<int, 2>{});
  if (dims <= 128) return f(std::integral_constant<int, 4>{});
  return f(std::integral_constant<int, 8>{});
}

dim3 rows_grid(int64_t rows, int64_t bh) {
  KILN_CHECK(bh <= 65535, "scaled_dot_product_attention on CUDA: batch x heads up to 65535, got ", bh);
  return dim3(static_cast<unsigned>((rows + kWarps - 1) / kWarps), static_cast<unsigned>(bh));
}

}  // namespace

void attention_forward(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                       const TensorView& lse, const AttentionParams& p) {
  DeviceGuard guard(q.device);
  const cudaStream_t stream = current_stream(q.device);
  const uint32_t threshold = philox_keep_threshold(p.dropout_p);
  visit_device_dtype(q.dtype, [&](auto tag) {
    using T = decltype(tag);
    if constexpr (!std::is_integral_v<T>) {
      with_per_lane(std::max(p.D, p.Dv), [&](auto n) {
        attention_forward_kernel<T, decltype(n)::value><<<rows_grid(p.Tq, p.B * p.H), kWarps * 32, 0, stream>>>(
            q.ptr<const T>(), k.ptr<const T>(), v.ptr<const T>(), out.ptr<T>(), lse.ptr<acc_t<T>>(), p, threshold);
        KILN_CUDA_CHECK_LAUNCH();
      });
    }
  });
}

void attention_backward(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                        const TensorView& dout, const TensorView& lse, const TensorView& dq, const TensorView& dk,
                        const TensorView& dv, const AttentionParams& p) {
  DeviceGuard guard(q.device);
  const cudaStream_t stream = current_stream(q.device);
  const uint32_t threshold = philox_keep_threshold(p.dropout_p);
  visit_device_dtype(q.dtype, [&](auto tag) {
    using T = decltype(tag);
    if constexpr (!std::is_integral_v<T>) {
      using A = acc_t<T>;
      DeviceScratch delta(static_cast<size_t>(p.B * p.H * p.Tq) * sizeof(A), q.device);
      A* d = static_cast<A*>(delta.get());
      with_per_lane(std::max(p.D, p.Dv), [&](auto n) {
        constexpr int N = decltype(n)::value;
        attention_delta_kernel<T, N><<<rows_grid(p.Tq, p.B * p.H), kWarps * 32, 0, stream>>>(
            out.ptr<const T>(), dout.ptr<const T>(), d, p);
        KILN_CUDA_CHECK_LAUNCH();
        attention_dq_kernel<T, N><<<rows_grid(p.Tq, p.B * p.H), kWarps * 32, 0, stream>>>(
            q.ptr<const T>(), k.ptr<const T>(), v.ptr<const T>(), dout.ptr<const T>(), lse.ptr<const A>(), d,
            dq.ptr<T>(), p, threshold);
        KILN_CUDA_CHECK_LAUNCH();
        attention_dkdv_kernel<T, N><<<rows_grid(p.Tk, p.B * p.H), kWarps * 32, 0, stream>>>(
            q.ptr<const T>(), k.ptr<const T>(), v.ptr<const T>(), dout.ptr<const T>(), lse.ptr<const A>(), d,
            dk.ptr<T>(), dv.ptr<T>(), p, threshold);
        KILN_CUDA_CHECK_LAUNCH();
      });
    }
  });
}

}  // namespace kiln::cuda
