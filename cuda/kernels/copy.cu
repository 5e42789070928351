// Fill, copy-with-cast and Philox random numbers (core's slots fill, copy and random,
// core/kernel_list.h): the memory-bound kernels every tensor factory and every
// .contiguous()/.to(dtype) goes through.
//
//   fill:   out[i] = value                          out: any shape and strides
//   copy:   out[i] = cast<Out>(src[i])              src, out: one shape, any strides, any two dtypes
//   random: out[i] = sample(seed, offset + i)       out contiguous; Uniform [a, b),
//                                                   Normal(mean a, std b), Int [a, b)
//
// All three write (=). The slot functions coalesce the shapes first, so a contiguous
// tensor is 1-D and a transpose is 2-D. core guarantees the rest: src and out are on one
// device; for random, out is contiguous and b > a for Int. The kernels assume src and out
// do not overlap in memory: copy() stages overlapping copies through a temporary.
// Floating -> integer casts saturate as the CPU reference's (core/cpu_loops.h): NaN gives
// 0, values beyond the integer type's range its min/max; -> bool is v != 0.
// Paths, fastest first: same-dtype contiguous copies and contiguous fills with 16-byte
// aligned pointers move Packed128 vectors (scalar tail); contiguous casts walk both
// arrays linearly; anything else
// computes per-element offsets, with 32-bit index division when numel fits (the common
// case, several times cheaper than 64-bit) and common.cuh's 64-bit OffsetCalc otherwise.
// Casts and random samples reproduce the CPU reference (ops/cpu/) bit for bit, except
// Normal samples, whose logf/cosf may differ from the host's by an ulp or two. The file is
// compiled with --fmad=false (cuda/CMakeLists.txt) so a + (b - a) * u rounds as on the host.
// Bandwidth: measured by tools/bench_kernels (not yet on a GPU).
#include <cstdint>
#include <type_traits>

#include <kiln/core/kernel_list.h>
#include <kiln/core/philox.h>
#include <kiln/cuda/kernels/common.cuh>
#include <kiln/cuda/kernels/scratch.h>

namespace kiln::cuda {
namespace {

// ---- device helpers ----------------------------------------------------------------

template <class T>
inline constexpr bool kIsHalf = std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>;

template <class T>
__host__ __device__ __forceinline__ float half_to_float(T v) {
  if constexpr (std::is_same_v<T, __half>) return __half2float(v);
  else return __bfloat162float(v);
}

template <class T>
__host__ __device__ __forceinline__ T half_from_float(float f) {
  if constexpr (std::is_same_v<T, __half>) return __float2half_rn(f);
  else return __float2bfloat16_rn(f);
}

// The CPU reference's conversion (core/cpu_loops.h convert), step for step: values reach a
// half type through double and then float, so doubles and large integers round twice
// exactly as on the host. common.cuh's convert rounds double -> half once, which is more
// accurate but would not match. Floating -> integer saturates (common.cuh's saturate_to_int).
template <class To, class From>
__host__ __device__ __forceinline__ To cast(From v) {
  if constexpr (std::is_same_v<To, From>) {
    return v;
  } else if constexpr (std::is_same_v<To, bool>) {
    if constexpr (kIsHalf<From>) return half_to_float(v) != 0.0f;
    else return v != From(0);
  } else if constexpr (kIsHalf<To>) {
    if constexpr (kIsHalf<From>) return half_from_float<To>(half_to_float(v));
    else if constexpr (std::is_same_v<From, float>) return half_from_float<To>(v);
    else return half_from_float<To>(static_cast<float>(static_cast<double>(v)));
  } else if constexpr (kIsHalf<From>) {
    if constexpr (std::is_integral_v<To>) return saturate_to_int<To>(half_to_float(v));
    else return static_cast<To>(half_to_float(v));
  } else if constexpr (std::is_integral_v<To> && std::is_floating_point_v<From>) {
    return saturate_to_int<To>(v);
  } else {
    return static_cast<To>(v);
  }
}

// Offsets of linear element i in two operands that share sizes: one chain of divisions
// serves both, in 32 bits (numel < 2^32), where the hardware divides far faster.
struct Offsets2 {
  int64_t src, out;
};
struct OffsetCalc2x32 {
  int ndim;
  uint32_t sizes[kArgMaxDims];
  int64_t src_strides[kArgMaxDims];
  int64_t out_strides[kArgMaxDims];
  __device__ __forceinline__ Offsets2 operator()(int64_t linear) const {
    uint32_t i = static_cast<uint32_t>(linear);
    Offsets2 o{0, 0};
#pragma unroll
    for (int d = kArgMaxDims - 1; d >= 0; --d) {
      if (d < ndim) {
        uint32_t q = i / sizes[d];
        uint32_t r = i - q * sizes[d];
        o.src += static_cast<int64_t>(r) * src_strides[d];
        o.out += static_cast<int64_t>(r) * out_strides[d];
        i = q;
      }
    }
    return o;
  }
};
struct OffsetCalc2x64 {
  OffsetCalc src, out;
  __device__ __forceinline__ Offsets2 operator()(int64_t i) const { return {src(i), out(i)}; }
};

__device__ __forceinline__ int64_t thread_index() {
  return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ int64_t grid_stride() { return static_cast<int64_t>(gridDim.x) * blockDim.x; }

// ---- kernels -----------------------------------------------------------------------

// out[0, n) = value. kVec: out is 16-byte aligned; whole vectors first, then the tail.
template <class T, bool kVec>
__global__ void fill_contiguous_kernel(T* __restrict__ out, T value, int64_t n) {
  int64_t done = 0;
  if constexpr (kVec) {
    using P = Packed128<T>;
    P packed;
#pragma unroll
    for (int k = 0; k < P::kSize; ++k) packed[k] = value;
    int64_t nvec = n / P::kSize;
    for (int64_t v = thread_index(); v < nvec; v += grid_stride()) store128(out + v * P::kSize, packed);
    done = nvec * P::kSize;
  }
  for (int64_t i = done + thread_index(); i < n; i += grid_stride()) out[i] = value;
}

template <class T>
__global__ void fill_strided_kernel(T* __restrict__ out, T value, OffsetCalc calc, int64_t n) {
  for (int64_t i = thread_index(); i < n; i += grid_stride()) out[calc(i)] = value;
}

// Same-dtype contiguous copy as raw bits of the element size (U is uint8..uint64). kVec:
// both pointers are 16-byte aligned. The source is read once, so it streams (evict-first).
template <class U, bool kVec>
__global__ void copy_contiguous_kernel(const U* __restrict__ src, U* __restrict__ out, int64_t n) {
  int64_t done = 0;
  if constexpr (kVec) {
    using P = Packed128<U>;
    int64_t nvec = n / P::kSize;
    for (int64_t v = thread_index(); v < nvec; v += grid_stride())
      store128(out + v * P::kSize, load128cs(src + v * P::kSize));
    done = nvec * P::kSize;
  }
  for (int64_t i = done + thread_index(); i < n; i += grid_stride()) out[i] = src[i];
}

template <class S, class O>
__global__ void cast_contiguous_kernel(const S* __restrict__ src, O* __restrict__ out, int64_t n) {
  for (int64_t i = thread_index(); i < n; i += grid_stride()) out[i] = cast<O>(src[i]);
}

template <class S, class O, class Calc>
__global__ void copy_strided_kernel(const S* __restrict__ src, O* __restrict__ out, Calc calc, int64_t n) {
  for (int64_t i = thread_index(); i < n; i += grid_stride()) {
    Offsets2 off = calc(i);
    out[off.out] = cast<O>(src[off.src]);
  }
}

// Element i from Philox counter offset + i, the CPU reference's random() line for line.
template <class T>
__global__ void random_kernel(T* __restrict__ out, int64_t n, RandomKind kind, uint64_t seed, uint64_t offset,
                              double a, double b) {
  for (int64_t i = thread_index(); i < n; i += grid_stride()) {
    uint64_t c = offset + static_cast<uint64_t>(i);
    if (kind == RandomKind::Int) {
      out[i] = cast<T>(philox_int_sample(seed, c, static_cast<int64_t>(a), static_cast<int64_t>(b)));
    } else if constexpr (std::is_same_v<T, double>) {
      out[i] = kind == RandomKind::Uniform ? philox_uniform_sample_f64(seed, c, a, b)
                                           : philox_normal_sample_f64(seed, c, a, b);
    } else {
      float fa = static_cast<float>(a), fb = static_cast<float>(b);
      // f16/bf16 draw only as many bits as they hold, so rounding never reaches b.
      constexpr int bits = std::is_same_v<T, __half> ? 11 : std::is_same_v<T, __nv_bfloat16> ? 8 : 24;
      float v = kind == RandomKind::Uniform ? philox_uniform_sample_f32(seed, c, fa, fb, bits)
                                            : philox_normal_sample_f32(seed, c, fa, fb);
      out[i] = cast<T>(v);
    }
  }
}

// ---- launchers ---------------------------------------------------------------------

// The fill value as the CPU reference narrows it: floating types from `value` (already
// narrowed to float by fill() for f16/bf16/f32), integers from `ivalue`.
template <class T>
T fill_value(double value, int64_t ivalue) {
  if constexpr (kIsHalf<T>) return half_from_float<T>(static_cast<float>(value));
  else if constexpr (std::is_floating_point_v<T>) return static_cast<T>(value);
  else if constexpr (std::is_same_v<T, bool>) return ivalue != 0;
  else return static_cast<T>(ivalue);
}

// Calls f(U{}) with the unsigned integer type of a dtype's size: same-dtype copies move
// bits, so four instantiations serve all eight dtypes.
template <class F>
void visit_bits(DType t, F&& f) {
  switch (dtype_size(t)) {
    case 1: f(uint8_t{}); return;
    case 2: f(uint16_t{}); return;
    case 4: f(uint32_t{}); return;
    default: f(uint64_t{}); return;
  }
}

template <class S, class O>
void launch_copy_strided(const TensorView& src, const TensorView& out, cudaStream_t stream) {
  const S* s = static_cast<const S*>(src.data);
  O* o = static_cast<O*>(out.data);
  int64_t n = out.numel;
  if (n <= static_cast<int64_t>(UINT32_MAX)) {
    OffsetCalc2x32 calc{};
    calc.ndim = out.ndim;
    for (int d = 0; d < out.ndim; ++d) {
      calc.sizes[d] = static_cast<uint32_t>(out.sizes[d]);
      calc.src_strides[d] = src.strides[d];
      calc.out_strides[d] = out.strides[d];
    }
    copy_strided_kernel<<<grid_for(n), kBlockSize, 0, stream>>>(s, o, calc, n);
  } else {
    OffsetCalc2x64 calc{offset_calc(out, src), offset_calc(out, out)};
    copy_strided_kernel<<<grid_for(n), kBlockSize, 0, stream>>>(s, o, calc, n);
  }
  KILN_CUDA_CHECK_LAUNCH();
}

void launch_fill(const TensorView& out, double value, int64_t ivalue, cudaStream_t stream) {
  const int64_t n = out.numel;
  visit_device_dtype(out.dtype, [&](auto tag) {
    using T = decltype(tag);
    T v = fill_value<T>(value, ivalue);
    T* p = static_cast<T*>(out.data);
    if (!out.contiguous) {
      fill_strided_kernel<<<grid_for(n), kBlockSize, 0, stream>>>(p, v, offset_calc(out, out), n);
    } else if (aligned16(p)) {
      fill_contiguous_kernel<T, true><<<grid_for(n / Packed128<T>::kSize), kBlockSize, 0, stream>>>(p, v, n);
    } else {
      fill_contiguous_kernel<T, false><<<grid_for(n), kBlockSize, 0, stream>>>(p, v, n);
    }
    KILN_CUDA_CHECK_LAUNCH();
  });
}

// src and out coalesced, in disjoint memory.
void launch_copy(const TensorView& src, const TensorView& out, cudaStream_t stream) {
  const int64_t n = out.numel;
  if (src.dtype == out.dtype) {
    visit_bits(out.dtype, [&](auto tag) {
      using U = decltype(tag);
      if (!src.contiguous || !out.contiguous) {
        launch_copy_strided<U, U>(src, out, stream);
        return;
      }
      const U* s = static_cast<const U*>(src.data);
      U* o = static_cast<U*>(out.data);
      if (aligned16(s) && aligned16(o)) {
        copy_contiguous_kernel<U, true><<<grid_for(n / Packed128<U>::kSize), kBlockSize, 0, stream>>>(s, o, n);
      } else {
        copy_contiguous_kernel<U, false><<<grid_for(n), kBlockSize, 0, stream>>>(s, o, n);
      }
      KILN_CUDA_CHECK_LAUNCH();
    });
    return;
  }
  visit_device_dtype(src.dtype, [&](auto stag) {
    using S = decltype(stag);
    visit_device_dtype(out.dtype, [&](auto otag) {
      using O = decltype(otag);
      // Same-dtype pairs took the bit-copy path above; not instantiating them here keeps
      // the file's compile time down.
      if constexpr (!std::is_same_v<S, O>) {
        if (src.contiguous && out.contiguous) {
          cast_contiguous_kernel<<<grid_for(n), kBlockSize, 0, stream>>>(static_cast<const S*>(src.data),
                                                                          static_cast<O*>(out.data), n);
          KILN_CUDA_CHECK_LAUNCH();
        } else {
          launch_copy_strided<S, O>(src, out, stream);
        }
      }
    });
  });
}

// Byte range [lo, hi) that a view's elements can touch.
struct ByteSpan {
  uintptr_t lo, hi;
};
ByteSpan byte_span(const TensorView& t) {
  const auto base = reinterpret_cast<uintptr_t>(t.data);
  int64_t last = 0;
  for (int d = 0; d < t.ndim; ++d) last += (t.sizes[d] - 1) * t.strides[d];
  return {base, base + static_cast<uintptr_t>((last + 1) * static_cast<int64_t>(dtype_size(t.dtype)))};
}

// A contiguous view of like's shape, dtype and device over `data` (a scratch block of
// like.numel elements; no storage identity).
TensorView contiguous_view(const TensorView& like, void* data) {
  TensorView v;
  v.data = data;
  v.dtype = like.dtype;
  v.device = like.device;
  v.ndim = like.ndim;
  v.numel = like.numel;
  int64_t stride = 1;
  for (int d = like.ndim - 1; d >= 0; --d) {
    v.sizes[d] = like.sizes[d];
    v.strides[d] = stride;
    stride *= like.sizes[d];
  }
  v.contiguous = true;
  v.defined = true;
  return v;
}

}  // namespace

void fill(const TensorView& out, const FillParams& p) {
  if (out.numel == 0) return;
  DeviceGuard guard(out.device);
  TensorView o = out;
  coalesce(&o, 1);
  // The CPU reference narrows the value per dtype (Scalar::to<T>, and float first for
  // the half types); passing both forms lets the kernel mirror that exactly.
  double fvalue = p.value.to_double();
  if (out.dtype == DType::F16 || out.dtype == DType::BF16 || out.dtype == DType::F32)
    fvalue = static_cast<double>(static_cast<float>(fvalue));
  const int64_t ivalue = out.dtype == DType::Bool ? static_cast<int64_t>(p.value.to_bool()) : p.value.to_int();
  launch_fill(o, fvalue, ivalue, current_stream(out.device));
}

void copy(const TensorView& src, const TensorView& out) {
  if (out.numel == 0) return;
  if (src.data == out.data && src.same_geometry(out) && src.dtype == out.dtype) return;  // x.copy_(x)
  if (src.shares_storage(out)) {
    // Element i may read what an earlier element wrote: stage through a temporary unless
    // the two byte ranges are disjoint (slices of one buffer usually are).
    const ByteSpan s = byte_span(src), o = byte_span(out);
    if (s.lo < o.hi && o.lo < s.hi) {
      // Scratch from kiln's allocator, handed back (stream-ordered, after the two copies
      // queued on the device's current stream) at the end of the scope.
      const DeviceScratch buf(static_cast<size_t>(src.numel) * dtype_size(src.dtype), src.device);
      const TensorView tmp = contiguous_view(src, buf.get());
      cuda::copy(src, tmp);
      cuda::copy(tmp, out);
      return;
    }
  }
  DeviceGuard guard(out.device);
  TensorView v[2] = {src, out};
  coalesce(v, 2);
  launch_copy(v[0], v[1], current_stream(out.device));
}

void random(const TensorView& out, const RandomParams& p) {
  const int64_t n = out.numel;
  if (n == 0) return;
  DeviceGuard guard(out.device);
  const cudaStream_t stream = current_stream(out.device);
  visit_device_dtype(out.dtype, [&](auto tag) {
    using T = decltype(tag);
    random_kernel<<<grid_for(n), kBlockSize, 0, stream>>>(out.ptr<T>(), n, p.kind, p.seed, p.offset, p.a, p.b);
    KILN_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace kiln::cuda
