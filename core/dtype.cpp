// DType tables and promotion.
#include <kiln/core/dtype.h>
#include <kiln/core/error.h>

namespace kiln {

size_t dtype_size(DType t) {
  switch (t) {
    case DType::Bool: case DType::U8: return 1;
    case DType::F16: case DType::BF16: return 2;
    case DType::I32: case DType::F32: return 4;
    case DType::I64: case DType::F64: return 8;
  }
  throw Error("dtype_size: invalid dtype");
}

const char* dtype_name(DType t) {
  switch (t) {
    case DType::Bool: return "bool";
    case DType::U8: return "u8";
    case DType::I32: return "i32";
    case DType::I64: return "i64";
    case DType::F16: return "f16";
    case DType::BF16: return "bf16";
    case DType::F32: return "f32";
    case DType::F64: return "f64";
  }
  return "?";
}

DType dtype_from_name(const std::string& n) {
  for (int i = 0; i < kNumDTypes; ++i)
    if (n == dtype_name(static_cast<DType>(i))) return static_cast<DType>(i);
  if (n == "float32" || n == "float") return DType::F32;
  if (n == "float64" || n == "double") return DType::F64;
  if (n == "float16" || n == "half") return DType::F16;
  if (n == "bfloat16") return DType::BF16;
  if (n == "int32") return DType::I32;
  if (n == "int64" || n == "long") return DType::I64;
  if (n == "uint8") return DType::U8;
  throw Error("unknown dtype '" + n + "' (expected one of bool, u8, i32, i64, f16, bf16, f32, f64)");
}

DType promote_types(DType a, DType b) {
  if (a == b) return a;
  bool fa = is_floating(a), fb = is_floating(b);
  if (fa && !fb) return a;
  if (fb && !fa) return b;
  if (fa && fb) {
    if ((a == DType::F16 && b == DType::BF16) || (a == DType::BF16 && b == DType::F16)) return DType::F32;
  }
  // Within a category the enum order is the width order.
  return static_cast<int>(a) > static_cast<int>(b) ? a : b;
}

}  // namespace kiln
