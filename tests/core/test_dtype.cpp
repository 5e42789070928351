// DType sizes, names and promotion; the host Half/BFloat16 conversions (round to
// nearest even, subnormals, infinities, NaN) checked against hand-derived bit patterns.
#include "test_util.h"

#include <cmath>
#include <limits>

using namespace kiln;

namespace {
float bits_to_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
uint32_t float_to_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
}  // namespace

TEST_CASE("dtype sizes and names", "[core][dtype]") {
  using D = DType;
  CHECK(dtype_size(D::Bool) == 1);
  CHECK(dtype_size(D::U8) == 1);
  CHECK(dtype_size(D::I32) == 4);
  CHECK(dtype_size(D::I64) == 8);
  CHECK(dtype_size(D::F16) == 2);
  CHECK(dtype_size(D::BF16) == 2);
  CHECK(dtype_size(D::F32) == 4);
  CHECK(dtype_size(D::F64) == 8);
  CHECK(std::string(dtype_name(D::Bool)) == "bool");
  CHECK(std::string(dtype_name(D::U8)) == "u8");
  CHECK(std::string(dtype_name(D::I32)) == "i32");
  CHECK(std::string(dtype_name(D::I64)) == "i64");
  CHECK(std::string(dtype_name(D::F16)) == "f16");
  CHECK(std::string(dtype_name(D::BF16)) == "bf16");
  CHECK(std::string(dtype_name(D::F32)) == "f32");
  CHECK(std::string(dtype_name(D::F64)) == "f64");
  CHECK(sizeof(Half) == 2);
  CHECK(sizeof(BFloat16) == 2);

  for (DType t : test::all_dtypes()) CHECK(dtype_from_name(dtype_name(t)) == t);
  CHECK(dtype_from_name("float32") == D::F32);
  CHECK(dtype_from_name("bfloat16") == D::BF16);
  CHECK(dtype_from_name("half") == D::F16);
  CHECK(dtype_from_name("int64") == D::I64);
  CHECK_THROWS_AS(dtype_from_name("f8"), Error);
  CHECK_THROWS_WITH(dtype_from_name("complex64"), Catch::Contains("complex64"));

  CHECK(is_floating(D::F16));
  CHECK(is_floating(D::BF16));
  CHECK(is_floating(D::F64));
  CHECK_FALSE(is_floating(D::I64));
  CHECK_FALSE(is_floating(D::Bool));
  CHECK(is_integral(D::U8));
  CHECK(is_integral(D::I32));
  CHECK_FALSE(is_integral(D::Bool));
  CHECK_FALSE(is_integral(D::F32));
}

TEST_CASE("dtype promotion follows PyTorch", "[core][dtype]") {
  using D = DType;
  // Rows and columns in the order Bool, U8, I32, I64, F16, BF16, F32, F64; written out
  // by hand from PyTorch's promotion table.
  const D kTable[8][8] = {
      /* bool */ {D::Bool, D::U8, D::I32, D::I64, D::F16, D::BF16, D::F32, D::F64},
      /* u8   */ {D::U8, D::U8, D::I32, D::I64, D::F16, D::BF16, D::F32, D::F64},
      /* i32  */ {D::I32, D::I32, D::I32, D::I64, D::F16, D::BF16, D::F32, D::F64},
      /* i64  */ {D::I64, D::I64, D::I64, D::I64, D::F16, D::BF16, D::F32, D::F64},
      /* f16  */ {D::F16, D::F16, D::F16, D::F16, D::F16, D::F32, D::F32, D::F64},
      /* bf16 */ {D::BF16, D::BF16, D::BF16, D::BF16, D::F32, D::BF16, D::F32, D::F64},
      /* f32  */ {D::F32, D::F32, D::F32, D::F32, D::F32, D::F32, D::F32, D::F64},
      /* f64  */ {D::F64, D::F64, D::F64, D::F64, D::F64, D::F64, D::F64, D::F64},
  };
  const D order[8] = {D::Bool, D::U8, D::I32, D::I64, D::F16, D::BF16, D::F32, D::F64};
  for (int i = 0; i < 8; ++i)
    for (int j = 0; j < 8; ++j) {
      INFO(dtype_name(order[i]) << " + " << dtype_name(order[j]));
      CHECK(promote_types(order[i], order[j]) == kTable[i][j]);
    }
}

TEST_CASE("Half conversion: exact values, rounding to nearest even", "[core][dtype][half]") {
  CHECK(Half::from_float(0.0f) == 0x0000);
  CHECK(Half::from_float(-0.0f) == 0x8000);
  CHECK(Half::from_float(1.0f) == 0x3c00);
  CHECK(Half::from_float(-2.0f) == 0xc000);
  CHECK(Half::from_float(0.5f) == 0x3800);
  CHECK(Half::from_float(65504.0f) == 0x7bff);  // largest finite
  CHECK(Half::from_float(0.1f) == 0x2e66);      // 0.0999755859375
  // 1 + 2^-11 lies halfway between 1 (0x3c00, even) and 1 + 2^-10 (0x3c01): rounds down.
  CHECK(Half::from_float(1.0f + std::ldexp(1.0f, -11)) == 0x3c00);
  // 1 + 3*2^-11 lies halfway between 0x3c01 (odd) and 0x3c02 (even): rounds up.
  CHECK(Half::from_float(1.0f + 3 * std::ldexp(1.0f, -11)) == 0x3c02);
  // Just above halfway rounds up.
  CHECK(Half::from_float(1.0f + std::ldexp(1.0f, -11) + std::ldexp(1.0f, -20)) == 0x3c01);
  // Just below halfway rounds down.
  CHECK(Half::from_float(1.0f + std::ldexp(1.0f, -11) - std::ldexp(1.0f, -22)) == 0x3c00);
  // Overflow: 65519 rounds to 65504; 65520 is halfway to 65536 (odd mantissa) -> inf.
  CHECK(Half::from_float(65519.0f) == 0x7bff);
  CHECK(Half::from_float(65520.0f) == 0x7c00);
  CHECK(Half::from_float(1e10f) == 0x7c00);
  CHECK(Half::from_float(-1e10f) == 0xfc00);
}

TEST_CASE("Half conversion: subnormals, infinities and NaN", "[core][dtype][half]") {
  const float tiny = std::ldexp(1.0f, -24);  // smallest half subnormal
  CHECK(Half::from_float(tiny) == 0x0001);
  CHECK(Half::from_float(-tiny) == 0x8001);
  CHECK(Half::from_float(1023 * tiny) == 0x03ff);          // largest subnormal
  CHECK(Half::from_float(std::ldexp(1.0f, -14)) == 0x0400);  // smallest normal
  CHECK(Half::from_float(0.5f * tiny) == 0x0000);          // halfway to 0x0001: ties to even (0)
  CHECK(Half::from_float(1.5f * tiny) == 0x0002);          // halfway between 1 and 2: even (2)
  CHECK(Half::from_float(2.5f * tiny) == 0x0002);          // halfway between 2 and 3: even (2)
  CHECK(Half::from_float(0.51f * tiny) == 0x0001);
  CHECK(Half::from_float(std::ldexp(1.0f, -30)) == 0x0000);  // underflows to zero
  CHECK(Half::to_float(0x0001) == tiny);
  CHECK(Half::to_float(0x03ff) == 1023 * tiny);
  CHECK(Half::to_float(0x8001) == -tiny);
  CHECK(Half::to_float(0x0400) == std::ldexp(1.0f, -14));

  CHECK(Half::from_float(std::numeric_limits<float>::infinity()) == 0x7c00);
  CHECK(Half::from_float(-std::numeric_limits<float>::infinity()) == 0xfc00);
  CHECK(std::isinf(Half::to_float(0x7c00)));
  CHECK(Half::to_float(0xfc00) < 0);
  uint16_t hn = Half::from_float(std::numeric_limits<float>::quiet_NaN());
  CHECK((hn & 0x7c00) == 0x7c00);
  CHECK((hn & 0x03ff) != 0);
  CHECK(std::isnan(Half::to_float(0x7e00)));
  CHECK(std::isnan(Half::to_float(0x7c01)));
  CHECK(std::isnan(static_cast<float>(Half(std::numeric_limits<float>::quiet_NaN()))));
}

TEST_CASE("Half conversion round-trips every bit pattern", "[core][dtype][half]") {
  int bad = 0;
  for (uint32_t b = 0; b < 65536; ++b) {
    uint16_t h = static_cast<uint16_t>(b);
    float f = Half::to_float(h);
    bool is_nan = (h & 0x7c00) == 0x7c00 && (h & 0x03ff) != 0;
    if (is_nan) {
      if (!std::isnan(f) || !std::isnan(Half::to_float(Half::from_float(f)))) ++bad;
    } else if (Half::from_float(f) != h) {
      ++bad;
    }
  }
  CHECK(bad == 0);
  // Monotonic: positive finite patterns map to increasing floats.
  bool mono = true;
  for (uint16_t h = 1; h < 0x7c00; ++h) mono = mono && Half::to_float(h) > Half::to_float(h - 1);
  CHECK(mono);
}

TEST_CASE("BFloat16 conversion", "[core][dtype][bf16]") {
  CHECK(BFloat16::from_float(1.0f) == 0x3f80);
  CHECK(BFloat16::from_float(-2.0f) == 0xc000);
  CHECK(BFloat16::from_float(0.0f) == 0x0000);
  CHECK(BFloat16::from_float(-0.0f) == 0x8000);
  // 1 + 2^-8 is halfway between 0x3f80 (even) and 0x3f81: rounds down; 1 + 3*2^-8 is
  // halfway between 0x3f81 (odd) and 0x3f82: rounds up.
  CHECK(BFloat16::from_float(1.0f + std::ldexp(1.0f, -8)) == 0x3f80);
  CHECK(BFloat16::from_float(1.0f + 3 * std::ldexp(1.0f, -8)) == 0x3f82);
  CHECK(BFloat16::from_float(1.0f + std::ldexp(1.0f, -8) + std::ldexp(1.0f, -20)) == 0x3f81);
  CHECK(BFloat16::from_float(std::numeric_limits<float>::infinity()) == 0x7f80);
  CHECK(BFloat16::from_float(-std::numeric_limits<float>::infinity()) == 0xff80);
  // FLT_MAX lies above the halfway point between bf16's max (0x7f7f) and 2^128.
  CHECK(BFloat16::from_float(std::numeric_limits<float>::max()) == 0x7f80);
  // Subnormal floats: 2^-133 is bf16's smallest subnormal.
  CHECK(BFloat16::from_float(std::ldexp(1.0f, -133)) == 0x0001);
  CHECK(BFloat16::to_float(0x0001) == std::ldexp(1.0f, -133));
  CHECK(BFloat16::to_float(0x3f80) == 1.0f);
  uint16_t bn = BFloat16::from_float(std::numeric_limits<float>::quiet_NaN());
  CHECK((bn & 0x7f80) == 0x7f80);
  CHECK((bn & 0x007f) != 0);
  // A signalling NaN whose payload sits only in the low 16 bits must stay a NaN.
  CHECK(std::isnan(BFloat16::to_float(BFloat16::from_float(bits_to_float(0x7f800001u)))));

  int bad = 0;
  for (uint32_t b = 0; b < 65536; ++b) {
    uint16_t h = static_cast<uint16_t>(b);
    float f = BFloat16::to_float(h);
    if (float_to_bits(f) != (b << 16)) ++bad;
    bool is_nan = (h & 0x7f80) == 0x7f80 && (h & 0x007f) != 0;
    if (is_nan) {
      if (!std::isnan(BFloat16::to_float(BFloat16::from_float(f)))) ++bad;
    } else if (BFloat16::from_float(f) != h) {
      ++bad;
    }
  }
  CHECK(bad == 0);
}

TEST_CASE("float -> integer casts saturate, NaN -> 0 (the same rule as the CUDA copy kernel)", "[core][dtype]") {
  const double inf = std::numeric_limits<double>::infinity(), nan = std::numeric_limits<double>::quiet_NaN();
  Tensor f = from_vector<double>({nan, inf, -inf, 3e9, -3e9, 1e19, -1e19, 300.7, -5.9, 255.9, -0.5});
  CHECK(f.to(DType::I32).to_vector<int64_t>() ==
        std::vector<int64_t>{0, INT32_MAX, INT32_MIN, INT32_MAX, INT32_MIN, INT32_MAX, INT32_MIN, 300, -5, 255, 0});
  CHECK(f.to(DType::I64).to_vector<int64_t>() ==
        std::vector<int64_t>{0, INT64_MAX, INT64_MIN, 3000000000LL, -3000000000LL, INT64_MAX, INT64_MIN, 300, -5, 255, 0});
  CHECK(f.to(DType::U8).to_vector<int64_t>() == std::vector<int64_t>{0, 255, 0, 255, 0, 255, 0, 255, 0, 255, 0});
  // From the half types too.
  CHECK(from_vector<float>({nan, 70000.0f, -1.5f}).to(DType::F16).to(DType::U8).to_vector<int64_t>() ==
        std::vector<int64_t>{0, 255, 0});
  CHECK(from_vector<float>({1e30f, -1e30f}).to(DType::BF16).to(DType::I32).to_vector<int64_t>() ==
        std::vector<int64_t>{INT32_MAX, INT32_MIN});
}
