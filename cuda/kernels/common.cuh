// Device helpers shared by the kernel files (llm.c style): launch checks, grid sizing,
// 128-bit packed loads/stores, half-type conversions, the saturating float -> integer
// conversion, strided offset arithmetic and a dtype switch. Include only from .cu files.
#pragma once
#include <cstdint>
#include <limits>
#include <type_traits>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <kiln/core/dtype.h>
#include <kiln/core/tensor_view.h>
#include <kiln/cuda/device.h>
#include <kiln/cuda/error.h>

namespace kiln::cuda {

// Kernels of one launch describe their operands as kernel views (core/tensor_view.h).
using TensorArg = TensorView;
inline constexpr int kArgMaxDims = kMaxDims;

inline constexpr int kBlockSize = 256;

inline unsigned grid_for(int64_t n, int block = kBlockSize, int64_t max_blocks = 65535LL * 32) {
  int64_t g = (n + block - 1) / block;
  if (g < 1) g = 1;
  if (g > max_blocks) g = max_blocks;
  return static_cast<unsigned>(g);
}

// ---- 128-bit packed access -------------------------------------------------------
template <class T>
struct alignas(16) Packed128 {
  static constexpr int kSize = 16 / sizeof(T);
  T v[kSize];
  __device__ __forceinline__ T& operator[](int i) { return v[i]; }
  __device__ __forceinline__ const T& operator[](int i) const { return v[i]; }
};
template <class T>
__device__ __forceinline__ Packed128<T> load128(const T* p) {
  return *reinterpret_cast<const Packed128<T>*>(p);
}
template <class T>
__device__ __forceinline__ Packed128<T> load128cs(const T* p) {  // streaming (evict-first)
  Packed128<T> r;
  *reinterpret_cast<int4*>(&r) = __ldcs(reinterpret_cast<const int4*>(p));
  return r;
}
template <class T>
__device__ __forceinline__ void store128(T* p, const Packed128<T>& v) {
  *reinterpret_cast<Packed128<T>*>(p) = v;
}
template <class T>
__device__ __forceinline__ void store128cs(T* p, const Packed128<T>& v) {
  __stcs(reinterpret_cast<int4*>(p), *reinterpret_cast<const int4*>(&v));
}
inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

// ---- types -----------------------------------------------------------------------
// Device-side C++ type of each dtype; f16/bf16 compute in float (AccT).
template <DType D> struct DeviceType;
template <> struct DeviceType<DType::Bool> { using T = bool; using Acc = int64_t; };
template <> struct DeviceType<DType::U8> { using T = uint8_t; using Acc = int64_t; };
template <> struct DeviceType<DType::I32> { using T = int32_t; using Acc = int64_t; };
template <> struct DeviceType<DType::I64> { using T = int64_t; using Acc = int64_t; };
template <> struct DeviceType<DType::F16> { using T = __half; using Acc = float; };
template <> struct DeviceType<DType::BF16> { using T = __nv_bfloat16; using Acc = float; };
template <> struct DeviceType<DType::F32> { using T = float; using Acc = float; };
template <> struct DeviceType<DType::F64> { using T = double; using Acc = double; };

template <class T> struct AccOf { using type = T; };
template <> struct AccOf<__half> { using type = float; };
template <> struct AccOf<__nv_bfloat16> { using type = float; };
template <> struct AccOf<bool> { using type = int64_t; };
template <> struct AccOf<uint8_t> { using type = int64_t; };
template <> struct AccOf<int32_t> { using type = int64_t; };
template <class T> using acc_t = typename AccOf<T>::type;

// Conversions between any two device types, through float for the half types.
template <class To, class From>
__device__ __forceinline__ To convert(From v) {
  if constexpr (std::is_same_v<To, From>) {
    return v;
  } else if constexpr (std::is_same_v<From, __half> || std::is_same_v<From, __nv_bfloat16>) {
    return convert<To>(static_cast<float>(v));
  } else if constexpr (std::is_same_v<To, bool>) {
    return v != From(0);
  } else if constexpr (std::is_same_v<To, __half>) {
    if constexpr (std::is_same_v<From, double>) return __double2half(v);
    else return __float2half_rn(static_cast<float>(v));
  } else if constexpr (std::is_same_v<To, __nv_bfloat16>) {
    if constexpr (std::is_same_v<From, double>) return __double2bfloat16(v);
    else return __float2bfloat16_rn(static_cast<float>(v));
  } else {
    return static_cast<To>(v);
  }
}

// Floating F (float or double) -> integer To, saturating like the CPU reference's
// saturate_to_int (core/cpu_loops.h): NaN gives 0, values at or beyond the type's range
// its min/max (hi rounds up to 2^31 / 2^63 in F for i32 / i64: >= catches it), the rest
// truncate toward zero. Comparing in float gives the reference's answers (computed in
// double) since float -> double is exact and both bounds sit on the same side of every
// float. A plain cast would be undefined there; nvcc's u8 cast goes through u32 and wraps.
// Host and device: kernels convert elements with it, launchers convert scalar operands.
template <class To, class F>
__host__ __device__ __forceinline__ To saturate_to_int(F v) {
  constexpr To kMin = std::numeric_limits<To>::min(), kMax = std::numeric_limits<To>::max();
  if (v != v) return To(0);  // NaN
  if (v <= static_cast<F>(kMin)) return kMin;
  if (v >= static_cast<F>(kMax)) return kMax;
  return static_cast<To>(v);
}

// Calls f(T{}) for the device type of a dtype (host side, picks the template instance).
template <class F>
void visit_device_dtype(DType t, F&& f) {
  switch (t) {
    case DType::Bool: f(bool{}); return;
    case DType::U8: f(uint8_t{}); return;
    case DType::I32: f(int32_t{}); return;
    case DType::I64: f(int64_t{}); return;
    case DType::F16: f(__half{}); return;
    case DType::BF16: f(__nv_bfloat16{}); return;
    case DType::F32: f(float{}); return;
    case DType::F64: f(double{}); return;
  }
}

// ---- strided offsets ---------------------------------------------------------------
// Element offset of linear index i (row-major over `sizes`) for one stride set.
struct OffsetCalc {
  int ndim;
  int64_t sizes[kArgMaxDims];
  int64_t strides[kArgMaxDims];
  __device__ __forceinline__ int64_t operator()(int64_t i) const {
    int64_t off = 0;
#pragma unroll
    for (int d = kArgMaxDims - 1; d >= 0; --d) {
      if (d < ndim) {
        int64_t s = sizes[d];
        int64_t q = i / s;
        off += (i - q * s) * strides[d];
        i = q;
      }
    }
    return off;
  }
};
inline OffsetCalc offset_calc(const TensorArg& shape_from, const TensorArg& strides_from) {
  OffsetCalc c{};
  c.ndim = shape_from.ndim;
  for (int d = 0; d < shape_from.ndim; ++d) {
    c.sizes[d] = shape_from.sizes[d];
    c.strides[d] = strides_from.strides[d];
  }
  return c;
}

}  // namespace kiln::cuda
