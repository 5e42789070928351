// Fused multi-tensor optimizer updates: one launch updates many parameters in place
// (PyTorch's multi_tensor_apply / apex design).
//
//   SGD   g = grad (-grad if maximize); g += wd * p;
//         momentum: buf = init ? g : momentum * buf + (1 - dampening) * g;
//                   g = nesterov ? g + momentum * buf : buf
//         p = p - lr * g
//   Adam  g = grad (-grad if maximize); AdamW: p *= 1 - lr * wd, Adam: g += wd * p
//         m = lerp(m, g, 1 - beta1); v = beta2 * v + (1 - beta2) * g * g
//         amsgrad: vmax = max(vmax, v) (NaN propagates), read vmax instead of v
//         p = p - step_size * m / (sqrt(v) / sqrt(1 - beta2^step) + eps),
//         step_size = lr / (1 - beta1^step) (computed on the host, in double: the step
//         count lives on the host, so nothing is read back)
//   LARS  buf = momentum * buf + scale_i * (g + wd * p); p -= buf (scale_i per tensor: one
//         launch each)
//   SRSGD next = p - lr (g + wd p); p = next + mu (next - prev); prev = next
//   AdamS moments as below without decay in g; p = p * decay - step_size * m / denom
//   Apollo (not multi-tensor: three or four grid-stride passes per tensor, the norms and
//         dot products in double atomics read by the next pass on the device; no host sync)
//   LAMB  (not multi-tensor: two grid-stride passes per tensor) m, v as AdamS; |p|^2 and
//         |u|^2 summed per tensor (double atomics), read back once; p -= lr * ratio * u
//   ProxAdam  g += wd * p; m = beta1 m + (1 - beta1) g; v = beta2 v + (1 - beta2) g^2;
//         denom = sqrt(v) / sqrt(1 - beta2^step) + eps;
//         p = prox_lp(p - step_size * m / denom, lr * lambda / denom)   (optim/prox.h)
// Tensors: lists of n contiguous tensors (optim/op_list.h), param i, grad i and state i
// of one numel; params/grads f16, bf16, f32 or f64; state in the accumulation dtype (f32,
// f64 for f64 params). Math in the same type; writes (=) params and state. Same formulas
// and operation order as the CPU references (optim/cpu/sgd.cpp, optim/cpu/adam.cpp,
// optim/cpu/prox_adam.cpp),
// which compute in double.
// Layout: each tensor is cut into chunks of kChunkSize elements; a block of kOptimBlock
// threads handles one chunk, kILP elements per thread per step (one aligned vector load
// per list when every pointer of the chunk is aligned to kILP elements and the chunk
// length is a multiple of kILP, otherwise coalesced scalar loads). Pointers and sizes of
// up to TensorListMeta<Depth>::kMaxTensors tensors and the block -> (tensor, chunk) map
// of up to kMaxBlocksPerLaunch blocks travel by value in the kernel argument (< 4 KiB);
// more tensors or chunks take more launches, a tensor cut between two launches carrying
// over. No host synchronisation.
// Bandwidth on H100/H200: not yet measured on a GPU.
#include <cmath>
#include <cstdint>
#include <type_traits>

#include <vector>

#include <kiln/cuda/kernels/common.cuh>
#include <kiln/cuda/kernels/reduce_utils.cuh>
#include <kiln/cuda/kernels/scratch.h>
#include <kiln/optim/op_list.h>
#include <kiln/optim/prox.h>

namespace kiln::cuda {
namespace {

// ---- device helpers ------------------------------------------------------------------

constexpr int64_t kChunkSize = 65536;
constexpr int kOptimBlock = 512;
constexpr int kILP = 4;
constexpr int kMaxBlocksPerLaunch = 320;
// Tensors per launch by list count (PyTorch's depth_to_max_tensors), so that each
// TensorListMeta stays near 3 KiB.
constexpr int max_tensors_for(int depth) { return depth <= 2 ? 64 : depth == 3 ? 48 : depth == 4 ? 36 : 30; }

template <int Depth>
struct TensorListMeta {
  static constexpr int kMaxTensors = max_tensors_for(Depth);
  void* ptrs[Depth][kMaxTensors];
  int64_t numel[kMaxTensors];
  unsigned char block_to_tensor[kMaxBlocksPerLaunch];
  int block_to_chunk[kMaxBlocksPerLaunch];
};
static_assert(TensorListMeta<5>::kMaxTensors <= 256 && TensorListMeta<2>::kMaxTensors <= 256,
              "block_to_tensor is one byte");
// The classic kernel-parameter limit is 4096 bytes; stay under it with the functor.
static_assert(sizeof(TensorListMeta<2>) + 128 <= 4096 && sizeof(TensorListMeta<3>) + 128 <= 4096 &&
                  sizeof(TensorListMeta<4>) + 128 <= 4096 && sizeof(TensorListMeta<5>) + 128 <= 4096,
              "kernel argument too large");

[[noreturn]] void optim_launch_fail(const char* what) { throw_cuda_error(cudaErrorInvalidValue, what, __FILE__, __LINE__); }

template <class T>
struct alignas(sizeof(T) * kILP) IlpVec {
  T v[kILP];
};

template <class T>
__device__ __forceinline__ bool ilp_aligned(const void* p) {
  return (reinterpret_cast<uintptr_t>(p) % (sizeof(T) * kILP)) == 0;
}

__device__ __forceinline__ float k_sqrt(float x) { return sqrtf(x); }
__device__ __forceinline__ double k_sqrt(double x) { return sqrt(x); }

// max(a, b) that returns NaN when either is NaN (torch.maximum; the CPU reference agrees).
template <class C>
__device__ __forceinline__ C max_nan(C a, C b) {
  return (a > b || isnan(a)) ? a : b;
}

// Per-element updates. C is the compute and state type, T the param type; s holds the
// NS state values of the element (read and written).
template <class T, class C, int NS>
struct SgdFunctor {
  C lr, momentum, one_minus_dampening, weight_decay;
  bool nesterov, maximize, init_momentum;
  __device__ __forceinline__ void operator()(C& p, C g, C* s) const {
    if (maximize) g = -g;
    if (weight_decay != C(0)) g = g + weight_decay * p;
    if constexpr (NS == 1) {
      const C b = init_momentum ? g : momentum * s[0] + one_minus_dampening * g;
      s[0] = b;
      g = nesterov ? g + momentum * b : b;
    }
    p = p - lr * g;
  }
};

template <class T, class C, int NS>
struct AdamFunctor {
  C beta2, one_minus_beta1, one_minus_beta2, eps, weight_decay, step_size, bias_correction2_sqrt, decay;
  bool decoupled, maximize;
  __device__ __forceinline__ void operator()(C& p, C g, C* s) const {
    if (maximize) g = -g;
    if (weight_decay != C(0)) {
      if (decoupled) p = convert<C>(convert<T>(p * decay));  // stored, as PyTorch's p.mul_()
      else g = g + weight_decay * p;
    }
    const C w = one_minus_beta1;  // PyTorch's lerp, exact at both ends
    const C m = w < C(0.5) ? s[0] + w * (g - s[0]) : g - (g - s[0]) * (C(1) - w);
    const C v = s[1] * beta2 + one_minus_beta2 * g * g;
    s[0] = m;
    s[1] = v;
    C vhat = v;
    if constexpr (NS == 3) {
      s[2] = max_nan(s[2], v);
      vhat = s[2];
    }
    const C denom = k_sqrt(vhat) / bias_correction2_sqrt + eps;
    p = p - step_size * (m / denom);
  }
};

// ProxGen's proximal Adam (optim/fused.h): Adam's moments (L2 decay in the gradient),
// then the L_p proximal map (optim/prox.h) of the preconditioned step.
template <class T, class C, int NS>
struct ProxAdamFunctor {
  C beta1, beta2, one_minus_beta1, one_minus_beta2, eps, weight_decay, step_size, bias_correction2_sqrt,
      penalty_step;
  LpPenalty penalty;
  __device__ __forceinline__ void operator()(C& p, C g, C* s) const {
    if (weight_decay != C(0)) g = g + weight_decay * p;
    s[0] = beta1 * s[0] + one_minus_beta1 * g;
    s[1] = beta2 * s[1] + one_minus_beta2 * g * g;
    const C denom = k_sqrt(s[1]) / bias_correction2_sqrt + eps;
    const C z = p - step_size * (s[0] / denom);
    p = kiln::detail::prox_lp<C>(z, penalty_step / denom, penalty);
  }
};

// LARS with the tensor's step size `scale` (lr times its trust ratio), SRSGD, AdamS
// (optim/fused.h).
template <class T, class C, int NS>
struct LarsFunctor {
  C momentum, weight_decay, scale;
  __device__ __forceinline__ void operator()(C& p, C g, C* s) const {
    const C d = g + weight_decay * p;
    s[0] = momentum * s[0] + scale * d;
    p = p - s[0];
  }
};

template <class T, class C, int NS>
struct SrsgdFunctor {
  C lr, weight_decay, mu;
  bool init;
  __device__ __forceinline__ void operator()(C& p, C g, C* s) const {
    if (init) s[0] = p;
    const C next = p - lr * (g + weight_decay * p);
    p = next + mu * (next - s[0]);
    s[0] = next;
  }
};

template <class T, class C, int NS>
struct AdamSFunctor {
  C beta1, beta2, one_minus_beta1, one_minus_beta2, eps, step_size, bias_correction2_sqrt, decay;
  __device__ __forceinline__ void operator()(C& p, C g, C* s) const {
    s[0] = beta1 * s[0] + one_minus_beta1 * g;
    s[1] = beta2 * s[1] + one_minus_beta2 * g * g;
    const C denom = k_sqrt(s[1]) / bias_correction2_sqrt + eps;
    p = p * decay - step_size * (s[0] / denom);
  }
};

// LAMB's two passes over one tensor (grid-stride, kLambBlock threads): the moments, and
// the tensor's |p|^2 and |u|^2 added into sums[0..1] (one double atomic per block); then
// the step with the ratio the host computed from the sums.
constexpr int kLambBlock = 256;
// Grid of the per-tensor grid-stride passes (LAMB, Apollo): one block per kLambBlock
// elements, at most 1024.
unsigned blocks_for(int64_t numel) {
  const int64_t b = (numel + kLambBlock - 1) / kLambBlock;
  return static_cast<unsigned>(b < 1024 ? (b > 0 ? b : 1) : 1024);
}
struct LambConsts {
  double beta1, beta2, bc1, bc2, eps, weight_decay;
};

template <class T, class C>
__device__ __forceinline__ C lamb_u(C m, C v, C p, const LambConsts& k) {
  return m / C(k.bc1) / (k_sqrt(v / C(k.bc2)) + C(k.eps)) + C(k.weight_decay) * p;
}

template <class T, class C>
__global__ void __launch_bounds__(kLambBlock) lamb_moments_kernel(T* p, const T* g, C* m, C* v, int64_t n, LambConsts k,
                                                                  double* sums) {
  double pp = 0, uu = 0;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const C gi = convert<C>(g[i]), pi = convert<C>(p[i]);
    const C mi = C(k.beta1) * m[i] + C(1.0 - k.beta1) * gi;
    const C vi = C(k.beta2) * v[i] + C(1.0 - k.beta2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    const C u = lamb_u<T, C>(mi, vi, pi, k);
    pp += double(pi) * double(pi);
    uu += double(u) * double(u);
  }
  auto plus = [](double a, double b) { return a + b; };
  pp = block_all_reduce(pp, plus, 0.0);
  uu = block_all_reduce(uu, plus, 0.0);
  if (threadIdx.x == 0) {
    atomicAdd(sums, pp);
    atomicAdd(sums + 1, uu);
  }
}

template <class T, class C>
__global__ void __launch_bounds__(kLambBlock) lamb_step_kernel(T* p, const C* m, const C* v, int64_t n, LambConsts k,
                                                               double lr_ratio) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const C pi = convert<C>(p[i]);
    p[i] = convert<T>(pi - C(lr_ratio) * lamb_u<T, C>(m[i], v[i], pi, k));
  }
}

// Apollo's passes over one tensor (grid-stride, kLambBlock threads). sums[0..3] of the
// tensor: sum d^4, sum dg / denom * d, sum B * d^2, sum D; each pass reads the sums of the
// passes before it from device memory, so nothing goes back to the host.
struct ApolloConsts {
  double alpha, eps, sigma, weight_decay, lr;
  int decay_type;
};

template <class C>
__device__ __forceinline__ double apollo_denom(const double* sums, const ApolloConsts& k) {
  return sqrt(sqrt(sums[0])) + k.eps;
}

template <class T, class C>
__global__ void __launch_bounds__(kLambBlock) apollo_norm4_kernel(const C* d, int64_t n, double* sums) {
  double s = 0;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const double di = double(d[i]);
    s += di * di * di * di;
  }
  s = block_all_reduce(s, [](double a, double b) { return a + b; }, 0.0);
  if (threadIdx.x == 0) atomicAdd(sums, s);
}

template <class T, class C>
__global__ void __launch_bounds__(kLambBlock) apollo_secant_kernel(const T* p, const T* g, C* m, const C* B, C* d,
                                                                   int64_t n, ApolloConsts k, double* sums) {
  const double denom = apollo_denom<C>(sums, k);
  double dot = 0, bdd = 0;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    C gi = convert<C>(g[i]);
    if (k.decay_type == 0) gi = gi + C(k.weight_decay) * convert<C>(p[i]);
    const C dg = gi - m[i];
    m[i] = m[i] + C(k.alpha) * dg;
    const C dn = C(double(d[i]) / denom);
    d[i] = dn;
    dot += double(dg) / denom * double(dn);
    bdd += double(B[i]) * double(dn) * double(dn);
  }
  auto plus = [](double a, double b) { return a + b; };
  dot = block_all_reduce(dot, plus, 0.0);
  bdd = block_all_reduce(bdd, plus, 0.0);
  if (threadIdx.x == 0) {
    atomicAdd(sums + 1, dot);
    atomicAdd(sums + 2, bdd);
  }
}

// B += delta d^2 and, for the stable decay, sum D into sums[3]; otherwise the step too.
template <class T, class C>
__global__ void __launch_bounds__(kLambBlock) apollo_hessian_kernel(T* p, const C* m, C* B, C* d, int64_t n,
                                                                    ApolloConsts k, double* sums, bool step) {
  const double delta = -k.alpha * sums[1] - sums[2];
  double dsum = 0;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const C dn = d[i];
    B[i] = B[i] + dn * dn * C(delta);
    const C D = fmax(fabs(B[i]), C(k.sigma));
    if (step) {
      const C pv = convert<C>(p[i]);
      const C dir = m[i] / D + (k.decay_type == 1 ? C(k.weight_decay) * pv : C(0));
      d[i] = dir;
      p[i] = convert<T>(pv - C(k.lr) * dir);
    } else {
      dsum += double(D);
    }
  }
  if (step) return;
  dsum = block_all_reduce(dsum, [](double a, double b) { return a + b; }, 0.0);
  if (threadIdx.x == 0) atomicAdd(sums + 3, dsum);
}

// The stable decay's step, with wd / mean(D).
template <class T, class C>
__global__ void __launch_bounds__(kLambBlock) apollo_stable_step_kernel(T* p, const C* m, const C* B, C* d, int64_t n,
                                                                        ApolloConsts k, const double* sums) {
  const C wd = C(k.weight_decay / (sums[3] / double(n)));
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const C D = fmax(fabs(B[i]), C(k.sigma));
    const C pv = convert<C>(p[i]);
    const C dir = m[i] / D + wd * pv;
    d[i] = dir;
    p[i] = convert<T>(pv - C(k.lr) * dir);
  }
}

// ---- kernels -------------------------------------------------------------------------

// One block per (tensor, chunk) of meta: lists [0] params (T), [1] grads (T), [2..]
// state (C).
template <class T, class C, int Depth, class Op>
__global__ void __launch_bounds__(kOptimBlock) multi_tensor_kernel(TensorListMeta<Depth> meta, Op op) {
  constexpr int NS = Depth - 2;
  constexpr int NSA = NS > 0 ? NS : 1;
  const int t = meta.block_to_tensor[blockIdx.x];
  const int64_t start = static_cast<int64_t>(meta.block_to_chunk[blockIdx.x]) * kChunkSize;
  const int64_t left = meta.numel[t] - start;
  const int64_t n = left < kChunkSize ? left : kChunkSize;
  T* p = static_cast<T*>(meta.ptrs[0][t]) + start;
  const T* g = static_cast<const T*>(meta.ptrs[1][t]) + start;
  C* s[NSA];
#pragma unroll
  for (int k = 0; k < NS; ++k) s[k] = static_cast<C*>(meta.ptrs[2 + k][t]) + start;

  bool aligned = n % kILP == 0 && ilp_aligned<T>(p) && ilp_aligned<T>(g);
#pragma unroll
  for (int k = 0; k < NS; ++k) aligned = aligned && ilp_aligned<C>(s[k]);

  if (aligned) {
    for (int64_t i = threadIdx.x; i * kILP < n; i += blockDim.x) {
      IlpVec<T> pv = reinterpret_cast<const IlpVec<T>*>(p)[i];
      const IlpVec<T> gv = reinterpret_cast<const IlpVec<T>*>(g)[i];
      IlpVec<C> sv[NSA];
#pragma unroll
      for (int k = 0; k < NS; ++k) sv[k] = reinterpret_cast<const IlpVec<C>*>(s[k])[i];
#pragma unroll
      for (int j = 0; j < kILP; ++j) {
        C pc = convert<C>(pv.v[j]);
        C sc[NSA];
#pragma unroll
        for (int k = 0; k < NS; ++k) sc[k] = sv[k].v[j];
        op(pc, convert<C>(gv.v[j]), sc);
        pv.v[j] = convert<T>(pc);
#pragma unroll
        for (int k = 0; k < NS; ++k) sv[k].v[j] = sc[k];
      }
      reinterpret_cast<IlpVec<T>*>(p)[i] = pv;
#pragma unroll
      for (int k = 0; k < NS; ++k) reinterpret_cast<IlpVec<C>*>(s[k])[i] = sv[k];
    }
  } else {
    // Loads of all kILP elements first, then math, then stores: more loads in flight.
    for (int64_t base = 0; base < n; base += static_cast<int64_t>(blockDim.x) * kILP) {
      C pc[kILP], gc[kILP], sc[kILP][NSA];
#pragma unroll
      for (int j = 0; j < kILP; ++j) {
        const int64_t i = base + threadIdx.x + static_cast<int64_t>(j) * blockDim.x;
        pc[j] = C(0);
        gc[j] = C(0);
#pragma unroll
        for (int k = 0; k < NSA; ++k) sc[j][k] = C(0);
        if (i < n) {
          pc[j] = convert<C>(p[i]);
          gc[j] = convert<C>(g[i]);
#pragma unroll
          for (int k = 0; k < NS; ++k) sc[j][k] = s[k][i];
        }
      }
#pragma unroll
      for (int j = 0; j < kILP; ++j) op(pc[j], gc[j], sc[j]);
#pragma unroll
      for (int j = 0; j < kILP; ++j) {
        const int64_t i = base + threadIdx.x + static_cast<int64_t>(j) * blockDim.x;
        if (i < n) {
          p[i] = convert<T>(pc[j]);
#pragma unroll
          for (int k = 0; k < NS; ++k) s[k][i] = sc[j][k];
        }
      }
    }
  }
}

// ---- launchers -----------------------------------------------------------------------

// Packs the tensors of `lists` (Depth lists of views, lists[0] the params) into
// TensorListMetas and calls launch(meta, blocks) for each full one and for the rest.
// Empty tensors are skipped; a tensor whose chunks do not all fit continues in the next
// launch.
template <int Depth, class Launch>
void multi_tensor_apply(const TensorViews (&lists)[Depth], Launch&& launch) {
  constexpr int kMaxTensors = TensorListMeta<Depth>::kMaxTensors;
  TensorListMeta<Depth> meta{};
  int nt = 0, nb = 0;
  for (size_t t = 0; t < lists[0].size(); ++t) {
    const int64_t numel = lists[0][t].numel;
    if (numel <= 0) continue;
    const int64_t chunks = (numel + kChunkSize - 1) / kChunkSize;
    if (chunks > INT32_MAX) optim_launch_fail("multi_tensor_apply: tensor too large for the chunk map");
    for (int d = 0; d < Depth; ++d) meta.ptrs[d][nt] = lists[d][t].data;
    meta.numel[nt] = numel;
    ++nt;
    for (int64_t c = 0; c < chunks; ++c) {
      meta.block_to_tensor[nb] = static_cast<unsigned char>(nt - 1);
      meta.block_to_chunk[nb] = static_cast<int>(c);
      ++nb;
      const bool last_chunk = c == chunks - 1;
      if (nb == kMaxBlocksPerLaunch || (last_chunk && nt == kMaxTensors)) {
        launch(meta, nb);
        nb = 0;
        if (last_chunk) {
          nt = 0;
        } else {  // the current tensor continues as entry 0 of the next launch
          for (int d = 0; d < Depth; ++d) meta.ptrs[d][0] = meta.ptrs[d][nt - 1];
          meta.numel[0] = meta.numel[nt - 1];
          nt = 1;
        }
      }
    }
  }
  if (nb > 0) launch(meta, nb);
}

// Calls f(T{}) for a floating param dtype.
template <class F>
void visit_param_dtype(DType dtype, F&& f) {
  switch (dtype) {
    case DType::F16: f(__half{}); return;
    case DType::BF16: f(__nv_bfloat16{}); return;
    case DType::F32: f(float{}); return;
    case DType::F64: f(double{}); return;
    default: optim_launch_fail("multi-tensor optimizer update: params must be f16, bf16, f32 or f64");
  }
}

template <class T, class C, int Depth, class Op>
void run(const TensorViews (&lists)[Depth], const Op& op, cudaStream_t stream) {
  multi_tensor_apply<Depth>(lists, [&](const TensorListMeta<Depth>& meta, int blocks) {
    multi_tensor_kernel<T, C, Depth, Op><<<blocks, kOptimBlock, 0, stream>>>(meta, op);
    KILN_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace

void sgd_update(TensorViews params, TensorViews grads, TensorViews momentum_buffers, const SgdUpdateArgs& a) {
  if (params.empty()) return;
  const Device device = params[0].device;
  DeviceGuard guard(device);
  const cudaStream_t stream = current_stream(device);
  visit_param_dtype(params[0].dtype, [&](auto tag) {
    using T = decltype(tag);
    using C = acc_t<T>;
    if (a.momentum != 0.0) {
      SgdFunctor<T, C, 1> op{C(a.lr), C(a.momentum), C(1.0 - a.dampening), C(a.weight_decay),
                             a.nesterov, a.maximize, a.init_momentum};
      const TensorViews lists[3] = {params, grads, momentum_buffers};
      run<T, C, 3>(lists, op, stream);
    } else {
      SgdFunctor<T, C, 0> op{C(a.lr), C(0), C(1), C(a.weight_decay), a.nesterov, a.maximize, false};
      const TensorViews lists[2] = {params, grads};
      run<T, C, 2>(lists, op, stream);
    }
  });
}

void adam_update(TensorViews params, TensorViews grads, TensorViews exp_avgs, TensorViews exp_avg_sqs,
                 TensorViews max_exp_avg_sqs, const AdamUpdateArgs& a) {
  if (params.empty()) return;
  const Device device = params[0].device;
  DeviceGuard guard(device);
  const cudaStream_t stream = current_stream(device);
  // The step-dependent scalars, in double on the host (as the CPU reference).
  const double step = static_cast<double>(a.step);
  const double step_size = a.lr / (1.0 - std::pow(a.beta1, step));
  const double bias_correction2_sqrt = std::sqrt(1.0 - std::pow(a.beta2, step));
  const double decay = 1.0 - a.lr * a.weight_decay;  // AdamW's decoupled decay factor
  visit_param_dtype(params[0].dtype, [&](auto tag) {
    using T = decltype(tag);
    using C = acc_t<T>;
    auto make = [&](auto ns_tag) {
      constexpr int NS = decltype(ns_tag)::value;
      return AdamFunctor<T, C, NS>{C(a.beta2),        C(1.0 - a.beta1), C(1.0 - a.beta2),
                                   C(a.eps),          C(a.weight_decay), C(step_size),
                                   C(bias_correction2_sqrt), C(decay), a.decoupled_weight_decay,
                                   a.maximize};
    };
    if (a.amsgrad) {
      const TensorViews lists[5] = {params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs};
      run<T, C, 5>(lists, make(std::integral_constant<int, 3>{}), stream);
    } else {
      const TensorViews lists[4] = {params, grads, exp_avgs, exp_avg_sqs};
      run<T, C, 4>(lists, make(std::integral_constant<int, 2>{}), stream);
    }
  });
}

void prox_adam_update(TensorViews params, TensorViews grads, TensorViews exp_avgs, TensorViews exp_avg_sqs,
                      const ProxAdamUpdateArgs& a) {
  if (params.empty()) return;
  const Device device = params[0].device;
  DeviceGuard guard(device);
  const cudaStream_t stream = current_stream(device);
  const double step = static_cast<double>(a.step);
  const double step_size = a.lr / (1.0 - std::pow(a.beta1, step));
  const double bias_correction2_sqrt = std::sqrt(1.0 - std::pow(a.beta2, step));
  visit_param_dtype(params[0].dtype, [&](auto tag) {
    using T = decltype(tag);
    using C = acc_t<T>;
    const ProxAdamFunctor<T, C, 2> op{C(a.beta1),   C(a.beta2),        C(1.0 - a.beta1),
                                      C(1.0 - a.beta2), C(a.eps),       C(a.weight_decay),
                                      C(step_size), C(bias_correction2_sqrt), C(a.lr * a.lambda),
                                      a.penalty};
    const TensorViews lists[4] = {params, grads, exp_avgs, exp_avg_sqs};
    run<T, C, 4>(lists, op, stream);
  });
}

void lars_update(TensorViews params, TensorViews grads, TensorViews momentum_buffers, const LarsUpdateArgs& a) {
  if (params.empty()) return;
  const Device device = params[0].device;
  DeviceGuard guard(device);
  const cudaStream_t stream = current_stream(device);
  visit_param_dtype(params[0].dtype, [&](auto tag) {
    using T = decltype(tag);
    using C = acc_t<T>;
    // Each tensor has its own step size: one launch per tensor.
    for (size_t t = 0; t < params.size(); ++t) {
      const LarsFunctor<T, C, 1> op{C(a.momentum), C(a.weight_decay), C(a.scales[t])};
      const TensorViews lists[3] = {params.subspan(t, 1), grads.subspan(t, 1), momentum_buffers.subspan(t, 1)};
      run<T, C, 3>(lists, op, stream);
    }
  });
}

void srsgd_update(TensorViews params, TensorViews grads, TensorViews prev_iterates, const SrsgdUpdateArgs& a) {
  if (params.empty()) return;
  const Device device = params[0].device;
  DeviceGuard guard(device);
  const cudaStream_t stream = current_stream(device);
  visit_param_dtype(params[0].dtype, [&](auto tag) {
    using T = decltype(tag);
    using C = acc_t<T>;
    const SrsgdFunctor<T, C, 1> op{C(a.lr), C(a.weight_decay), C(a.mu), a.init};
    const TensorViews lists[3] = {params, grads, prev_iterates};
    run<T, C, 3>(lists, op, stream);
  });
}

void adams_update(TensorViews params, TensorViews grads, TensorViews exp_avgs, TensorViews exp_avg_sqs,
                  const AdamSUpdateArgs& a) {
  if (params.empty()) return;
  const Device device = params[0].device;
  DeviceGuard guard(device);
  const cudaStream_t stream = current_stream(device);
  const double step = static_cast<double>(a.step);
  const double step_size = a.lr / (1.0 - std::pow(a.beta1, step));
  const double bias_correction2_sqrt = std::sqrt(1.0 - std::pow(a.beta2, step));
  visit_param_dtype(params[0].dtype, [&](auto tag) {
    using T = decltype(tag);
    using C = acc_t<T>;
    const AdamSFunctor<T, C, 2> op{C(a.beta1),   C(a.beta2),      C(1.0 - a.beta1),           C(1.0 - a.beta2),
                                   C(a.eps),     C(step_size),    C(bias_correction2_sqrt), C(a.decay)};
    const TensorViews lists[4] = {params, grads, exp_avgs, exp_avg_sqs};
    run<T, C, 4>(lists, op, stream);
  });
}

void lamb_update(TensorViews params, TensorViews grads, TensorViews exp_avgs, TensorViews exp_avg_sqs,
                 const LambUpdateArgs& a) {
  if (params.empty()) return;
  const Device device = params[0].device;
  DeviceGuard guard(device);
  const cudaStream_t stream = current_stream(device);
  const double step = static_cast<double>(a.step);
  const LambConsts k{a.beta1, a.beta2, 1.0 - std::pow(a.beta1, step), 1.0 - std::pow(a.beta2, step), a.eps,
                     a.weight_decay};
  const size_t n = params.size();
  DeviceScratch sums_dev(sizeof(double) * 2 * n, device);
  double* sums = static_cast<double*>(sums_dev.get());
  KILN_CUDA_CHECK(cudaMemsetAsync(sums, 0, sizeof(double) * 2 * n, stream));
  visit_param_dtype(params[0].dtype, [&](auto tag) {
    using T = decltype(tag);
    using C = acc_t<T>;
    for (size_t t = 0; t < n; ++t) {
      if (params[t].numel == 0) continue;
      lamb_moments_kernel<T, C><<<blocks_for(params[t].numel), kLambBlock, 0, stream>>>(
          params[t].ptr<T>(), grads[t].ptr<const T>(), exp_avgs[t].ptr<C>(), exp_avg_sqs[t].ptr<C>(), params[t].numel,
          k, sums + 2 * t);
      KILN_CUDA_CHECK_LAUNCH();
    }
    // The trust ratios need every tensor's norms: one read back for the whole list.
    std::vector<double> host(2 * n, 0.0);
    if (a.adapt) {
      KILN_CUDA_CHECK(cudaMemcpyAsync(host.data(), sums, sizeof(double) * 2 * n, cudaMemcpyDeviceToHost, stream));
      KILN_CUDA_CHECK(cudaStreamSynchronize(stream));
    }
    for (size_t t = 0; t < n; ++t) {
      if (params[t].numel == 0) continue;
      const double pp = host[2 * t], uu = host[2 * t + 1];
      const double ratio = a.adapt && pp > 0 && uu > 0 ? std::sqrt(pp) / std::sqrt(uu) : 1.0;
      lamb_step_kernel<T, C><<<blocks_for(params[t].numel), kLambBlock, 0, stream>>>(
          params[t].ptr<T>(), exp_avgs[t].ptr<C>(), exp_avg_sqs[t].ptr<C>(), params[t].numel, k, a.lr * ratio);
      KILN_CUDA_CHECK_LAUNCH();
    }
  });
}

void apollo_update(TensorViews params, TensorViews grads, TensorViews exp_avg_grads, TensorViews approx_hessians,
                   TensorViews updates, const ApolloUpdateArgs& a) {
  if (params.empty()) return;
  const Device device = params[0].device;
  DeviceGuard guard(device);
  const cudaStream_t stream = current_stream(device);
  const ApolloConsts k{(1.0 - a.beta) / (1.0 - std::pow(a.beta, static_cast<double>(a.step))), a.eps, a.sigma,
                       a.weight_decay, a.lr, a.decay_type};
  const size_t n = params.size();
  DeviceScratch sums_dev(sizeof(double) * 4 * n, device);
  double* sums = static_cast<double*>(sums_dev.get());
  KILN_CUDA_CHECK(cudaMemsetAsync(sums, 0, sizeof(double) * 4 * n, stream));
  const bool stable = a.decay_type == 2;
  visit_param_dtype(params[0].dtype, [&](auto tag) {
    using T = decltype(tag);
    using C = acc_t<T>;
    for (size_t t = 0; t < n; ++t) {
      const int64_t numel = params[t].numel;
      if (numel == 0) continue;
      const unsigned blocks = blocks_for(numel);
      double* s = sums + 4 * t;
      T* p = params[t].ptr<T>();
      C* m = exp_avg_grads[t].ptr<C>();
      C* B = approx_hessians[t].ptr<C>();
      C* d = updates[t].ptr<C>();
      apollo_norm4_kernel<T, C><<<blocks, kLambBlock, 0, stream>>>(d, numel, s);
      KILN_CUDA_CHECK_LAUNCH();
      apollo_secant_kernel<T, C><<<blocks, kLambBlock, 0, stream>>>(p, grads[t].ptr<const T>(), m, B, d, numel, k, s);
      KILN_CUDA_CHECK_LAUNCH();
      apollo_hessian_kernel<T, C><<<blocks, kLambBlock, 0, stream>>>(p, m, B, d, numel, k, s, !stable);
      KILN_CUDA_CHECK_LAUNCH();
      if (stable) {
        apollo_stable_step_kernel<T, C><<<blocks, kLambBlock, 0, stream>>>(p, m, B, d, numel, k, s);
        KILN_CUDA_CHECK_LAUNCH();
      }
    }
  });
}

}  // namespace kiln::cuda
