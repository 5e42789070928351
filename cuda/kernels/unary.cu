// Unary elementwise kernels (slot `unary`, ops/unary.h): y = op(x; alpha) for every op
// of KILN_UNARY_OPS; and slot `unary_backward`: gx = g * op'(s) for relu, leaky_relu,
// sigmoid, tanh, gelu, gelu_tanh and silu (contiguous operands, a grid-stride loop; the
// formulas of ops/cpu/unary.cpp's unary_grad_f64; not yet run on a GPU).
//
//   y[i] = f(x[i])   x, y: one shape (any rank <= 8), one dtype, any strides; writes (=).
//   neg -x | abs |x| | exp | log | sqrt | rsqrt 1/sqrt(x) | sin | cos
//   relu x>0 ? x : 0 (NaN stays NaN) | leaky_relu x>0 ? x : alpha*x | sigmoid 1/(1+exp(-x))
//   tanh | gelu 0.5x(1+erf(x/sqrt2)) | gelu_tanh 0.5x(1+tanh(sqrt(2/pi)(x+0.044715x^3)))
//   silu x/(1+exp(-x)) | erf
// dtypes: f16/bf16 (computed in f32), f32, f64; neg/abs/relu also u8/i32/i64 (computed in
// int64 and wrapped to the dtype, like ops/cpu/unary.cpp). Same formulas as the CPU
// reference, with precise math (expf, erff, tanhf, 1/sqrtf; no fast-math intrinsics),
// so f32 results are within a few ulp of it.
// Paths (launch_map, elementwise.cuh): (1) x and y contiguous with 16-byte aligned
// bases: one Packed128 per thread per grid-stride step, the numel % (16/sizeof(T)) tail
// done by the first threads; (2) otherwise 32-bit strided indexing with precomputed
// divisors (launches split into < 2^31-element pieces). x and y arrive coalesced. y may alias x: each element is read
// before the same thread writes it. The op is a runtime switch taken once per thread,
// outside the loop. ops/unary.cpp has checked the op against the dtype (no bool; of the
// integers only neg, abs and relu).
// Bandwidth on H100/H200: not yet measured (tools/bench_kernels fills this in).
#include <kiln/cuda/kernels/common.cuh>
#include <kiln/cuda/kernels/elementwise.cuh>
#include <kiln/ops/op_list.h>

namespace kiln::cuda {
namespace {

// ---- device helpers ------------------------------------------------------------------

// What a dtype computes in: float for the half types and f32, double for f64, int64 for
// the integer types.
template <class T>
using unary_compute_t = std::conditional_t<std::is_integral_v<T>, int64_t, acc_t<T>>;

template <UnaryOp O>
using UnaryTag = std::integral_constant<UnaryOp, O>;

template <UnaryOp O, class C>
__device__ __forceinline__ C unary_float(C x, C alpha) {
  constexpr C kHalf = C(0.5), kOne = C(1);
  if constexpr (O == UnaryOp::Neg) return -x;
  else if constexpr (O == UnaryOp::Abs) return k_abs(x);
  else if constexpr (O == UnaryOp::Exp) return k_exp(x);
  else if constexpr (O == UnaryOp::Log) return k_log(x);
  else if constexpr (O == UnaryOp::Sqrt) return k_sqrt(x);
  else if constexpr (O == UnaryOp::Rsqrt) return kOne / k_sqrt(x);
  else if constexpr (O == UnaryOp::Sin) return k_sin(x);
  else if constexpr (O == UnaryOp::Cos) return k_cos(x);
  else if constexpr (O == UnaryOp::Relu) return x > C(0) || isnan(x) ? x : C(0);  // NaN propagates
  else if constexpr (O == UnaryOp::LeakyRelu) return x > C(0) ? x : alpha * x;
  else if constexpr (O == UnaryOp::Sigmoid) return kOne / (kOne + k_exp(-x));
  else if constexpr (O == UnaryOp::Tanh) return k_tanh(x);
  else if constexpr (O == UnaryOp::Gelu) return kHalf * x * (kOne + k_erf(x * C(0.7071067811865476)));
  else if constexpr (O == UnaryOp::GeluTanh)
    return kHalf * x * (kOne + k_tanh(C(0.7978845608028654) * (x + C(0.044715) * x * x * x)));
  else if constexpr (O == UnaryOp::Silu) return x / (kOne + k_exp(-x));
  else if constexpr (O == UnaryOp::Erf) return k_erf(x);
  else static_assert(O == UnaryOp::Neg, "unary_float: op without a formula");
}

template <UnaryOp O>
__device__ __forceinline__ int64_t unary_int(int64_t x) {
  // Negation through unsigned arithmetic wraps INT64_MIN instead of overflowing.
  const int64_t neg = static_cast<int64_t>(0ull - static_cast<uint64_t>(x));
  if constexpr (O == UnaryOp::Neg) return neg;
  else if constexpr (O == UnaryOp::Abs) return x < 0 ? neg : x;
  else if constexpr (O == UnaryOp::Relu) return x > 0 ? x : 0;
  else static_assert(O == UnaryOp::Neg, "unary_int: op not defined for integers");
}

// y = f(x) for one element of device type T, through its compute type.
template <UnaryOp O, class T, class C>
__device__ __forceinline__ T unary_apply(T x, C alpha) {
  if constexpr (std::is_integral_v<T>) return static_cast<T>(unary_int<O>(static_cast<int64_t>(x)));
  else return convert<T>(unary_float<O>(convert<C>(x), alpha));
}

// Calls f(UnaryTag<op>{}) for a runtime op: all ops for floating T, neg/abs/relu for
// integers (ops/ computes the rest of them in f32).
template <class T, class F>
__device__ __forceinline__ void dispatch_unary(UnaryOp op, F&& f) {
  if constexpr (std::is_integral_v<T>) {
    switch (op) {
      case UnaryOp::Neg: f(UnaryTag<UnaryOp::Neg>{}); break;
      case UnaryOp::Abs: f(UnaryTag<UnaryOp::Abs>{}); break;
      default: f(UnaryTag<UnaryOp::Relu>{}); break;
    }
  } else {
    switch (op) {
#define KILN_UNARY_CASE(E, name) \
  case UnaryOp::E: f(UnaryTag<UnaryOp::E>{}); break;
      KILN_UNARY_OPS(KILN_UNARY_CASE)
#undef KILN_UNARY_CASE
    }
  }
}

// The element function of one launch for launch_map (elementwise.cuh): the op is a
// runtime switch taken once per thread, outside the kernels' loops.
template <class T>
struct UnaryMap {
  using C = unary_compute_t<T>;
  UnaryOp op;
  C alpha;
  template <class Body>
  __device__ __forceinline__ void visit(Body&& body) const {
    dispatch_unary<T>(op, [&](auto tag) {
      constexpr UnaryOp O = decltype(tag)::value;
      body([&](T x) { return unary_apply<O, T, C>(x, alpha); });
    });
  }
};

// g * op'(s) (slot unary_backward; ops/unary.h says which s), the CPU's
// unary_grad_f64 in the compute type.
template <UnaryOp O, class C>
__device__ __forceinline__ C unary_grad(C s, C g, C alpha) {
  constexpr C kHalf = C(0.5), kOne = C(1), k = C(0.7978845608028654), c = C(0.044715);
  if constexpr (O == UnaryOp::Relu) return s > C(0) ? g : C(0);
  else if constexpr (O == UnaryOp::LeakyRelu) return s > C(0) ? g : alpha * g;
  else if constexpr (O == UnaryOp::Sigmoid) return g * (s * (kOne - s));
  else if constexpr (O == UnaryOp::Tanh) return g * (kOne - s * s);
  else if constexpr (O == UnaryOp::Gelu)
    return g * (kHalf * (kOne + k_erf(s * C(0.7071067811865476))) + s * C(0.3989422804014327) * k_exp(-kHalf * s * s));
  else if constexpr (O == UnaryOp::GeluTanh) {
    const C t = k_tanh(k * (s + c * s * s * s));
    return g * (kHalf * (kOne + t) + kHalf * k * s * (kOne - t * t) * (kOne + C(3) * c * s * s));
  } else if constexpr (O == UnaryOp::Silu) {
    const C sg = kOne / (kOne + k_exp(-s));
    return g * (sg * (kOne + s * (kOne - sg)));
  } else {
    static_assert(O == UnaryOp::Relu, "unary_grad: op without a fused gradient");
  }
}

// Contiguous s, g, gx of n elements; a grid-stride loop, one element per step.
template <UnaryOp O, class T>
__global__ void unary_grad_kernel(const T* s, const T* g, T* gx, int64_t n, acc_t<T> alpha) {
  using C = acc_t<T>;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    gx[i] = convert<T>(unary_grad<O, C>(convert<C>(s[i]), convert<C>(g[i]), alpha));
}

}  // namespace

void unary(const TensorView& x, const TensorView& y, const UnaryParams& p) {
  if (y.numel == 0) return;
  DeviceGuard guard(y.device);
  TensorView v[2] = {x, y};
  coalesce(v, 2);
  const cudaStream_t stream = current_stream(y.device);
  visit_device_dtype(y.dtype, [&](auto tag) {
    using T = decltype(tag);
    if constexpr (!std::is_same_v<T, bool>) {  // bool: rejected by ops/
      launch_map<T>(v[0], v[1], UnaryMap<T>{p.op, static_cast<unary_compute_t<T>>(p.alpha)}, stream);
    }
  });
}


void unary_backward(const TensorView& s, const TensorView& g, const TensorView& gx, const UnaryParams& p) {
  if (gx.numel == 0) return;
  DeviceGuard guard(gx.device);
  const cudaStream_t stream = current_stream(gx.device);
  visit_device_dtype(gx.dtype, [&](auto tag) {
    using T = decltype(tag);
    if constexpr (!std::is_integral_v<T>) {  // floating only (ops/ checks)
      using C = acc_t<T>;
      const T* ps = static_cast<const T*>(s.data);
      const T* pg = static_cast<const T*>(g.data);
      T* po = static_cast<T*>(gx.data);
      const C alpha = static_cast<C>(p.alpha);
      auto launch = [&](auto op_tag) {
        constexpr UnaryOp O = decltype(op_tag)::value;
        unary_grad_kernel<O, T><<<grid_for(gx.numel), kBlockSize, 0, stream>>>(ps, pg, po, gx.numel, alpha);
        KILN_CUDA_CHECK_LAUNCH();
      };
      switch (p.op) {
        case UnaryOp::Relu: launch(UnaryTag<UnaryOp::Relu>{}); break;
        case UnaryOp::LeakyRelu: launch(UnaryTag<UnaryOp::LeakyRelu>{}); break;
        case UnaryOp::Sigmoid: launch(UnaryTag<UnaryOp::Sigmoid>{}); break;
        case UnaryOp::Tanh: launch(UnaryTag<UnaryOp::Tanh>{}); break;
        case UnaryOp::Gelu: launch(UnaryTag<UnaryOp::Gelu>{}); break;
        case UnaryOp::GeluTanh: launch(UnaryTag<UnaryOp::GeluTanh>{}); break;
        case UnaryOp::Silu: launch(UnaryTag<UnaryOp::Silu>{}); break;
        default: launch_fail("unary_backward: no fused gradient for this op");
      }
    }
  });
}

}  // namespace kiln::cuda
