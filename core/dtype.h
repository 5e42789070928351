// Element types kiln stores, their sizes and names, the promotion rules between them,
// and the host-side 16-bit float types (stored half, computed in float).
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

namespace kiln {

enum class DType : uint8_t { Bool, U8, I32, I64, F16, BF16, F32, F64 };
inline constexpr int kNumDTypes = 8;

size_t dtype_size(DType t);
const char* dtype_name(DType t);  // "f32", "bf16", ...
DType dtype_from_name(const std::string& name);
inline bool is_floating(DType t) {
  return t == DType::F16 || t == DType::BF16 || t == DType::F32 || t == DType::F64;
}
inline bool is_integral(DType t) { return t == DType::U8 || t == DType::I32 || t == DType::I64; }
// The dtype kiln computes a floating dtype's statistics and accumulations in: f64 stays
// f64, everything else (f32, f16, bf16) computes in f32. Optimizer state, norm statistics,
// loss rows and the CUDA kernels' registers all follow this one rule.
constexpr DType accumulate_dtype(DType t) { return t == DType::F64 ? DType::F64 : DType::F32; }
// PyTorch's rules: bool < integers < floating; within a category the wider type wins;
// f16 with bf16 gives f32.
DType promote_types(DType a, DType b);

// IEEE binary16, round-to-nearest-even conversion from float.
struct Half {
  uint16_t bits = 0;
  Half() = default;
  Half(float f) : bits(from_float(f)) {}  // NOLINT: implicit like a float
  operator float() const { return to_float(bits); }
  // Fabian Giesen's float_to_half_fast3_rtne.
  static uint16_t from_float(float f) {
    const uint32_t f32infty = 255u << 23, f16max = (127u + 16u) << 23;
    const uint32_t denorm_magic_u = ((127u - 15u) + (23u - 10u) + 1u) << 23;
    float denorm_magic;
    std::memcpy(&denorm_magic, &denorm_magic_u, 4);
    uint32_t fu;
    std::memcpy(&fu, &f, 4);
    const uint32_t sign = fu & 0x80000000u;
    fu ^= sign;
    uint32_t o;
    if (fu >= f16max) {
      o = fu > f32infty ? 0x7e00u : 0x7c00u;
    } else if (fu < (113u << 23)) {
      float ff;
      std::memcpy(&ff, &fu, 4);
      ff += denorm_magic;
      uint32_t fb;
      std::memcpy(&fb, &ff, 4);
      o = fb - denorm_magic_u;
    } else {
      const uint32_t mant_odd = (fu >> 13) & 1u;
      fu += (static_cast<uint32_t>(15 - 127) << 23) + 0xfffu;
      fu += mant_odd;
      o = fu >> 13;
    }
    return static_cast<uint16_t>(o | (sign >> 16));
  }
  static float to_float(uint16_t h) {
    uint32_t sign = (static_cast<uint32_t>(h) & 0x8000u) << 16;
    uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu, x;
    if (e == 0) {
      if (m == 0) {
        x = sign;
      } else {  // subnormal: normalise
        int sh = 0;
        while (!(m & 0x400u)) { m <<= 1; ++sh; }
        m &= 0x3ffu;
        x = sign | (static_cast<uint32_t>(113 - sh) << 23) | (m << 13);
      }
    } else if (e == 31) {
      x = sign | 0x7f800000u | (m << 13);
    } else {
      x = sign | ((e + 112u) << 23) | (m << 13);
    }
    float f;
    std::memcpy(&f, &x, 4);
    return f;
  }
};

// bfloat16: the upper half of a float, round-to-nearest-even.
struct BFloat16 {
  uint16_t bits = 0;
  BFloat16() = default;
  BFloat16(float f) : bits(from_float(f)) {}  // NOLINT
  operator float() const { return to_float(bits); }
  static uint16_t from_float(float f) {
    uint32_t x;
    std::memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x40u);  // quiet NaN
    x += 0x7fffu + ((x >> 16) & 1u);
    return static_cast<uint16_t>(x >> 16);
  }
  static float to_float(uint16_t b) {
    uint32_t x = static_cast<uint32_t>(b) << 16;
    float f;
    std::memcpy(&f, &x, 4);
    return f;
  }
};

template <class T> struct DTypeOf;
template <> struct DTypeOf<bool> { static constexpr DType value = DType::Bool; };
template <> struct DTypeOf<uint8_t> { static constexpr DType value = DType::U8; };
template <> struct DTypeOf<int32_t> { static constexpr DType value = DType::I32; };
template <> struct DTypeOf<int64_t> { static constexpr DType value = DType::I64; };
template <> struct DTypeOf<Half> { static constexpr DType value = DType::F16; };
template <> struct DTypeOf<BFloat16> { static constexpr DType value = DType::BF16; };
template <> struct DTypeOf<float> { static constexpr DType value = DType::F32; };
template <> struct DTypeOf<double> { static constexpr DType value = DType::F64; };
template <class T> inline constexpr DType dtype_of = DTypeOf<T>::value;

// Calls f(T{}) with the C++ type of a dtype; the CPU reference uses it to stay generic.
template <class F>
decltype(auto) visit_dtype(DType t, F&& f) {
  switch (t) {
    case DType::Bool: return f(bool{});
    case DType::U8: return f(uint8_t{});
    case DType::I32: return f(int32_t{});
    case DType::I64: return f(int64_t{});
    case DType::F16: return f(Half{});
    case DType::BF16: return f(BFloat16{});
    case DType::F32: return f(float{});
    case DType::F64: break;
  }
  return f(double{});
}

}  // namespace kiln
