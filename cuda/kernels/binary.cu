// Binary elementwise kernels (slot `binary`, every op of KILN_BINARY_OPS), where (slot
// `where`) and core's `accumulate` slot (out += g, the Add kernel in place).
//
//   out[i] = a[i] op b[i]        a, b: out's shape (broadcast by stride 0), one dtype T;
//                                out: T, or bool for eq/ne/lt/le/gt/ge; writes (=).
//   out[i] = cond[i] ? a[i] : b[i]   cond bool; a, b, out one dtype; writes (=).
// Arithmetic as ops/cpu/binary.cpp: integers and bool in int64 (wrapping to the dtype),
// f16/bf16 and f32 in float (add/sub/mul/div of f32 round exactly like the f64 CPU
// path), f64 in double. pow of integers by repeated squaring; a negative exponent gives
// 1 for base 1, +-1 for base -1 and 0 otherwise. maximum/minimum return NaN when either
// operand is NaN. Integer div never reaches the kernel (ops/ divides in f32).
// dtypes: comparisons, maximum, minimum and where: all 8; other arithmetic: u8, i32,
// i64, f16, bf16, f32, f64 (ops/binary.cpp rejects arithmetic on bool).
// Paths: (1) out contiguous and each input contiguous or a broadcast scalar, vector
// bases aligned: one Packed128 of T per thread per grid-stride step (bool outputs and
// conditions as one matching narrower access), tail by the first threads; (2) broadcast
// with a vectorizable innermost dim (each operand's innermost stride 1 with aligned rows,
// or 0; innermost size a multiple of V): 32-bit strided offsets once per Packed128 run;
// (3) otherwise 32-bit strided indexing with precomputed divisors per element (launches
// split into < 2^31-element pieces). Operands arrive coalesced. out may alias a or b
// (in-place ops): each element is read before the same thread writes it.
// where moves bits, so it is instantiated per element size, not per dtype.
// Bandwidth on H100/H200: not yet measured (tools/bench_kernels fills this in).
#include <kiln/core/kernel_list.h>
#include <kiln/cuda/kernels/common.cuh>
#include <kiln/cuda/kernels/elementwise.cuh>
#include <kiln/ops/op_list.h>

namespace kiln::cuda {
namespace {

// ---- device helpers ------------------------------------------------------------------

// What a dtype computes in: int64 for bool and the integer types, float for halves and
// f32, double for f64.
template <class T>
using binary_compute_t = std::conditional_t<std::is_integral_v<T>, int64_t, acc_t<T>>;

template <BinaryOp O>
using BinaryTag = std::integral_constant<BinaryOp, O>;

__device__ __forceinline__ int64_t wrap_add(int64_t a, int64_t b) {
  return static_cast<int64_t>(static_cast<uint64_t>(a) + static_cast<uint64_t>(b));
}
__device__ __forceinline__ int64_t wrap_sub(int64_t a, int64_t b) {
  return static_cast<int64_t>(static_cast<uint64_t>(a) - static_cast<uint64_t>(b));
}
__device__ __forceinline__ int64_t wrap_mul(int64_t a, int64_t b) {
  return static_cast<int64_t>(static_cast<uint64_t>(a) * static_cast<uint64_t>(b));
}

// The CPU reference's ipow, with wrapping products.
__device__ __forceinline__ int64_t ipow(int64_t base, int64_t e) {
  if (e < 0) return base == 1 ? 1 : (base == -1 ? (e % 2 ? -1 : 1) : 0);
  int64_t r = 1;
  while (e) {
    if (e & 1) r = wrap_mul(r, base);
    base = wrap_mul(base, base);
    e >>= 1;
  }
  return r;
}

template <BinaryOp O, class C>
__device__ __forceinline__ C binary_arith(C a, C b) {
  constexpr bool kInt = std::is_integral_v<C>;
  if constexpr (O == BinaryOp::Add) {
    if constexpr (kInt) return wrap_add(a, b);
    else return a + b;
  } else if constexpr (O == BinaryOp::Sub) {
    if constexpr (kInt) return wrap_sub(a, b);
    else return a - b;
  } else if constexpr (O == BinaryOp::Mul) {
    if constexpr (kInt) return wrap_mul(a, b);
    else return a * b;
  } else if constexpr (O == BinaryOp::Div) {
    static_assert(!kInt, "binary_arith: integer division is done in f32 by ops/");
    return a / b;
  } else if constexpr (O == BinaryOp::Pow) {
    if constexpr (kInt) return ipow(a, b);
    else return k_pow(a, b);
  } else if constexpr (O == BinaryOp::Maximum) {  // std::max(a, b), NaN-propagating
    if constexpr (!kInt)
      if (isnan(a) || isnan(b)) return a + b;
    return a < b ? b : a;
  } else if constexpr (O == BinaryOp::Minimum) {  // std::min(a, b), NaN-propagating
    if constexpr (!kInt)
      if (isnan(a) || isnan(b)) return a + b;
    return b < a ? b : a;
  } else {
    static_assert(O == BinaryOp::Add, "binary_arith: not an arithmetic op");
  }
}

template <BinaryOp O, class C>
__device__ __forceinline__ bool binary_compare(C a, C b) {
  if constexpr (O == BinaryOp::Eq) return a == b;
  else if constexpr (O == BinaryOp::Ne) return a != b;
  else if constexpr (O == BinaryOp::Lt) return a < b;
  else if constexpr (O == BinaryOp::Le) return a <= b;
  else if constexpr (O == BinaryOp::Gt) return a > b;
  else if constexpr (O == BinaryOp::Ge) return a >= b;
  else static_assert(O == BinaryOp::Eq, "binary_compare: not a comparison");
}

// out element of type OutT (bool when kCompare, else T) from two T operands.
template <BinaryOp O, bool kCompare, class T>
__device__ __forceinline__ auto binary_apply(T a, T b) {
  using C = binary_compute_t<T>;
  if constexpr (kCompare) return binary_compare<O>(convert<C>(a), convert<C>(b));
  else return convert<T>(binary_arith<O>(convert<C>(a), convert<C>(b)));
}

// Calls f(BinaryTag<op>{}) for a runtime op among those the (T, kCompare) instance
// supports; ops/binary.cpp never sends the others.
template <class T, bool kCompare, class F>
__device__ __forceinline__ void dispatch_binary(BinaryOp op, F&& f) {
  if constexpr (kCompare) {
    switch (op) {
      case BinaryOp::Eq: f(BinaryTag<BinaryOp::Eq>{}); break;
      case BinaryOp::Ne: f(BinaryTag<BinaryOp::Ne>{}); break;
      case BinaryOp::Lt: f(BinaryTag<BinaryOp::Lt>{}); break;
      case BinaryOp::Le: f(BinaryTag<BinaryOp::Le>{}); break;
      case BinaryOp::Gt: f(BinaryTag<BinaryOp::Gt>{}); break;
      default: f(BinaryTag<BinaryOp::Ge>{}); break;
    }
  } else if constexpr (std::is_same_v<T, bool>) {
    if (op == BinaryOp::Maximum) f(BinaryTag<BinaryOp::Maximum>{});
    else f(BinaryTag<BinaryOp::Minimum>{});
  } else {
    switch (op) {
      case BinaryOp::Add: f(BinaryTag<BinaryOp::Add>{}); break;
      case BinaryOp::Sub: f(BinaryTag<BinaryOp::Sub>{}); break;
      case BinaryOp::Mul: f(BinaryTag<BinaryOp::Mul>{}); break;
      case BinaryOp::Div:
        if constexpr (!std::is_integral_v<T>) f(BinaryTag<BinaryOp::Div>{});
        break;
      case BinaryOp::Pow: f(BinaryTag<BinaryOp::Pow>{}); break;
      case BinaryOp::Maximum: f(BinaryTag<BinaryOp::Maximum>{}); break;
      default: f(BinaryTag<BinaryOp::Minimum>{}); break;
    }
  }
}

// ---- kernels -------------------------------------------------------------------------

// out contiguous; a and b each contiguous (16-byte aligned) or a broadcast scalar
// (a_scalar / b_scalar: every element is a[0] / b[0]). out aligned to its vector width.
template <class T, bool kCompare>
__global__ void binary_vec_kernel(BinaryOp op, const T* a, const T* b, std::conditional_t<kCompare, bool, T>* out,
                                  int64_t n, bool a_scalar, bool b_scalar, T a_value, T b_value) {
  using OutT = std::conditional_t<kCompare, bool, T>;
  constexpr int V = Packed128<T>::kSize;
  const int64_t nvec = n / V;
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  // A scalar operand is read once, or comes by value (null pointer).
  const T sa = a_scalar ? (a ? a[0] : a_value) : T{}, sb = b_scalar ? (b ? b[0] : b_value) : T{};
  dispatch_binary<T, kCompare>(op, [&](auto tag) {
    constexpr BinaryOp O = decltype(tag)::value;
    for (int64_t v = tid; v < nvec; v += stride) {
      Packed128<T> pa, pb;
      if (a_scalar) {
#pragma unroll
        for (int k = 0; k < V; ++k) pa[k] = sa;
      } else {
        pa = load128(a + v * V);
      }
      if (b_scalar) {
#pragma unroll
        for (int k = 0; k < V; ++k) pb[k] = sb;
      } else {
        pb = load128(b + v * V);
      }
      Vec<OutT, V> r;
#pragma unroll
      for (int k = 0; k < V; ++k) r[k] = binary_apply<O, kCompare>(pa[k], pb[k]);
      store_vec<V>(out + v * V, r);
    }
    const int64_t t = nvec * V + tid;  // fewer than V tail elements
    if (t < n) out[t] = binary_apply<O, kCompare>(a_scalar ? sa : a[t], b_scalar ? sb : b[t]);
  });
}

// Operand order in offsets: a, b, out.
template <class T, bool kCompare>
__global__ void binary_strided_kernel(BinaryOp op, const T* a, const T* b,
                                      std::conditional_t<kCompare, bool, T>* out, uint32_t n,
                                      StridedOffsets<3> offsets, T a_value, T b_value) {
  const uint32_t tid = blockIdx.x * blockDim.x + threadIdx.x;
  const uint32_t stride = gridDim.x * blockDim.x;
  dispatch_binary<T, kCompare>(op, [&](auto tag) {
    constexpr BinaryOp O = decltype(tag)::value;
    for (uint32_t i = tid; i < n; i += stride) {
      int64_t off[3];
      offsets.get(i, off);
      out[off[2]] = binary_apply<O, kCompare>(a ? a[off[0]] : a_value, b ? b[off[1]] : b_value);
    }
  });
}

// Broadcasting with a vectorizable innermost dim: every operand's innermost stride is 1
// (a contiguous run, 16-byte aligned rows) or 0 (one value per run: *_splat). Thread
// step iv covers elements [iv * V, +V) of one innermost row: one offset computation per
// V elements. Typical: bias rows [R,C]+[C] and per-row scales [R,C]*[R,1].
template <class T, bool kCompare>
__global__ void binary_bcast_vec_kernel(BinaryOp op, const T* a, const T* b,
                                        std::conditional_t<kCompare, bool, T>* out, uint32_t nvec,
                                        StridedOffsets<3> offsets, bool a_splat, bool b_splat, T a_value,
                                        T b_value) {
  using OutT = std::conditional_t<kCompare, bool, T>;
  constexpr int V = Packed128<T>::kSize;
  const uint32_t tid = blockIdx.x * blockDim.x + threadIdx.x;
  const uint32_t stride = gridDim.x * blockDim.x;
  dispatch_binary<T, kCompare>(op, [&](auto tag) {
    constexpr BinaryOp O = decltype(tag)::value;
    for (uint32_t iv = tid; iv < nvec; iv += stride) {
      int64_t off[3];
      offsets.get(iv * V, off);
      Packed128<T> pa, pb;
      if (a_splat) {
        const T va = a ? a[off[0]] : a_value;
#pragma unroll
        for (int k = 0; k < V; ++k) pa[k] = va;
      } else {
        pa = load128(a + off[0]);
      }
      if (b_splat) {
        const T vb = b ? b[off[1]] : b_value;
#pragma unroll
        for (int k = 0; k < V; ++k) pb[k] = vb;
      } else {
        pb = load128(b + off[1]);
      }
      Vec<OutT, V> r;
#pragma unroll
      for (int k = 0; k < V; ++k) r[k] = binary_apply<O, kCompare>(pa[k], pb[k]);
      store_vec<V>(out + off[2], r);
    }
  });
}

// where on elements of S bytes (an unsigned carrier type): out contiguous; cond, a and b
// each contiguous or a broadcast scalar. V = 16 / S elements per step.
template <class S>
__global__ void where_vec_kernel(const bool* cond, const S* a, const S* b, S* out, int64_t n, bool c_scalar,
                                 bool a_scalar, bool b_scalar) {
  constexpr int V = Packed128<S>::kSize;
  const int64_t nvec = n / V;
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const bool sc = c_scalar ? cond[0] : false;
  const S sa = a_scalar ? a[0] : S{}, sb = b_scalar ? b[0] : S{};
  for (int64_t v = tid; v < nvec; v += stride) {
    Vec<bool, V> pc;
    Packed128<S> pa, pb, r;
    if (c_scalar) {
#pragma unroll
      for (int k = 0; k < V; ++k) pc[k] = sc;
    } else {
      pc = load_vec<V>(cond + v * V);
    }
    if (a_scalar) {
#pragma unroll
      for (int k = 0; k < V; ++k) pa[k] = sa;
    } else {
      pa = load128(a + v * V);
    }
    if (b_scalar) {
#pragma unroll
      for (int k = 0; k < V; ++k) pb[k] = sb;
    } else {
      pb = load128(b + v * V);
    }
#pragma unroll
    for (int k = 0; k < V; ++k) r[k] = pc[k] ? pa[k] : pb[k];
    store128(out + v * V, r);
  }
  const int64_t t = nvec * V + tid;
  if (t < n) out[t] = (c_scalar ? sc : cond[t]) ? (a_scalar ? sa : a[t]) : (b_scalar ? sb : b[t]);
}

// Operand order in offsets: cond, a, b, out.
template <class S>
__global__ void where_strided_kernel(const bool* cond, const S* a, const S* b, S* out, uint32_t n,
                                     StridedOffsets<4> offsets) {
  const uint32_t tid = blockIdx.x * blockDim.x + threadIdx.x;
  const uint32_t stride = gridDim.x * blockDim.x;
  for (uint32_t i = tid; i < n; i += stride) {
    int64_t off[4];
    offsets.get(i, off);
    out[off[3]] = cond[off[0]] ? a[off[1]] : b[off[2]];
  }
}

// ---- launchers -----------------------------------------------------------------------

// A Scalar as the device type T, with the CPU's narrowing (core/cpu_runtime.cpp's fill):
// through float for the half types, Scalar::to<T> otherwise.
template <class T> T scalar_as(const Scalar& s) {
  if constexpr (std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>) return T(static_cast<float>(s.to_double()));
  else return s.to<T>();
}

// An input can feed the vector path when it is a broadcast scalar or contiguous and
// 16-byte aligned; sets *scalar accordingly.
inline bool vec_input_ok(const TensorArg& t, bool* scalar) {
  *scalar = (t.numel > 1 || t.data == nullptr) && arg_is_scalar(t);
  return *scalar || (arg_is_contiguous(t) && aligned16(t.data));
}

// Whether an operand of a broadcast-vector launch is fine: innermost stride 1 with every
// row start aligned to `align` bytes (base aligned, outer strides multiples of V), or
// innermost stride 0 when `allow_splat` (sets *splat).
inline bool bcast_operand_ok(const TensorArg& t, int V, size_t align, bool allow_splat, bool* splat) {
  const int d = t.ndim - 1;
  *splat = allow_splat && t.strides[d] == 0;
  if (*splat) return true;
  if (t.strides[d] != 1 || !aligned_to(t.data, align)) return false;
  for (int k = 0; k < d; ++k)
    if (t.strides[k] % V != 0) return false;
  return true;
}

template <class T, bool kCompare>
void run_binary(BinaryOp op, const TensorArg& a, const TensorArg& b, const TensorArg& out, T a_value, T b_value,
                cudaStream_t stream) {
  using OutT = std::conditional_t<kCompare, bool, T>;
  constexpr int V = Packed128<T>::kSize;
  bool a_scalar = false, b_scalar = false;
  const bool a_ok = vec_input_ok(a, &a_scalar), b_ok = vec_input_ok(b, &b_scalar);
  if (a_ok && b_ok && arg_is_contiguous(out) && aligned_to(out.data, sizeof(OutT) * V)) {
    const int64_t nvec = out.numel / V;
    binary_vec_kernel<T, kCompare><<<grid_for(nvec > 0 ? nvec : 1), kBlockSize, 0, stream>>>(
        op, static_cast<const T*>(a.data), static_cast<const T*>(b.data), static_cast<OutT*>(out.data), out.numel,
        a_scalar, b_scalar, a_value, b_value);
    KILN_CUDA_CHECK_LAUNCH();
    return;
  }
  for_each_32bit_chunk(ArgPack<3>{{a, b, out}}, [&](const ArgPack<3>& p) {
    const uint32_t n = static_cast<uint32_t>(p.a[2].numel);
    const TensorArg& o = p.a[2];
    bool as = false, bs = false, os = false;
    if (o.ndim >= 1 && o.sizes[o.ndim - 1] % V == 0 && bcast_operand_ok(o, V, sizeof(OutT) * V, false, &os) &&
        bcast_operand_ok(p.a[0], V, 16, true, &as) && bcast_operand_ok(p.a[1], V, 16, true, &bs)) {
      const uint32_t nvec = n / V;
      binary_bcast_vec_kernel<T, kCompare><<<grid_for(nvec), kBlockSize, 0, stream>>>(
          op, static_cast<const T*>(p.a[0].data), static_cast<const T*>(p.a[1].data),
          static_cast<OutT*>(o.data), nvec, make_strided_offsets(p), as, bs, a_value, b_value);
      KILN_CUDA_CHECK_LAUNCH();
      return;
    }
    binary_strided_kernel<T, kCompare><<<grid_for(n), kBlockSize, 0, stream>>>(
        op, static_cast<const T*>(p.a[0].data), static_cast<const T*>(p.a[1].data), static_cast<OutT*>(p.a[2].data),
        n, make_strided_offsets(p), a_value, b_value);
    KILN_CUDA_CHECK_LAUNCH();
  });
}

template <class S>
void run_where(const TensorArg& cond, const TensorArg& a, const TensorArg& b, const TensorArg& out,
               cudaStream_t stream) {
  constexpr int V = Packed128<S>::kSize;
  bool a_scalar = false, b_scalar = false;
  const bool a_ok = vec_input_ok(a, &a_scalar), b_ok = vec_input_ok(b, &b_scalar);
  const bool c_scalar = cond.numel > 1 && arg_is_scalar(cond);
  const bool c_ok = c_scalar || (arg_is_contiguous(cond) && aligned_to(cond.data, V));
  if (a_ok && b_ok && c_ok && arg_is_contiguous(out) && aligned16(out.data)) {
    const int64_t nvec = out.numel / V;
    where_vec_kernel<S><<<grid_for(nvec > 0 ? nvec : 1), kBlockSize, 0, stream>>>(
        static_cast<const bool*>(cond.data), static_cast<const S*>(a.data), static_cast<const S*>(b.data),
        static_cast<S*>(out.data), out.numel, c_scalar, a_scalar, b_scalar);
    KILN_CUDA_CHECK_LAUNCH();
    return;
  }
  for_each_32bit_chunk(ArgPack<4>{{cond, a, b, out}}, [&](const ArgPack<4>& p) {
    const uint32_t n = static_cast<uint32_t>(p.a[3].numel);
    where_strided_kernel<S><<<grid_for(n), kBlockSize, 0, stream>>>(
        static_cast<const bool*>(p.a[0].data), static_cast<const S*>(p.a[1].data),
        static_cast<const S*>(p.a[2].data), static_cast<S*>(p.a[3].data), n, make_strided_offsets(p));
    KILN_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace

void binary(const TensorView& a, const TensorView& b, const TensorView& out, const BinaryParams& p) {
  if (out.numel == 0) return;
  DeviceGuard guard(out.device);
  TensorView v[3] = {a, b, out};
  coalesce(v, 3);
  const cudaStream_t stream = current_stream(out.device);
  const BinaryOp op = p.op;
  visit_device_dtype(a.dtype, [&](auto tag) {
    using T = decltype(tag);
    // A scalar operand by value, narrowed to the dtype as the CPU's scalar_tensor does.
    T value{};
    if (p.scalar_operand >= 0) value = scalar_as<T>(p.scalar);
    const T av = p.scalar_operand == 0 ? value : T{}, bv = p.scalar_operand == 1 ? value : T{};
    if (is_comparison(op)) run_binary<T, true>(op, v[0], v[1], v[2], av, bv, stream);
    else run_binary<T, false>(op, v[0], v[1], v[2], av, bv, stream);
  });
}

void where(const TensorView& cond, const TensorView& a, const TensorView& b, const TensorView& out) {
  if (out.numel == 0) return;
  DeviceGuard guard(out.device);
  TensorView v[4] = {cond, a, b, out};
  coalesce(v, 4);
  const cudaStream_t stream = current_stream(out.device);
  switch (dtype_size(out.dtype)) {  // where moves bits: one instance per element size
    case 1: run_where<uint8_t>(v[0], v[1], v[2], v[3], stream); break;
    case 2: run_where<uint16_t>(v[0], v[1], v[2], v[3], stream); break;
    case 4: run_where<uint32_t>(v[0], v[1], v[2], v[3], stream); break;
    default: run_where<uint64_t>(v[0], v[1], v[2], v[3], stream); break;
  }
}

// Autograd's gradient sums: out = out + g, in place (out is the Add kernel's a and out).
void accumulate(const TensorView& out, const TensorView& g) { binary(out, g, out, BinaryParams{BinaryOp::Add, -1, Scalar()}); }

}  // namespace kiln::cuda
