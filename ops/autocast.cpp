// The autocast state and its two casts (ops/autocast.h).
#include <kiln/ops/autocast.h>

#include <kiln/core/error.h>
#include <kiln/ops/binary.h>

namespace kiln {
namespace {
thread_local bool t_enabled = false;
thread_local DType t_dtype = DType::BF16;
}  // namespace

AutocastGuard::AutocastGuard(DType dtype, bool enabled) : prev_enabled_(t_enabled), prev_dtype_(t_dtype) {
  KILN_CHECK(dtype == DType::BF16 || dtype == DType::F16, "AutocastGuard: the autocast dtype must be bf16 or f16, got ",
             dtype_name(dtype));
  t_enabled = enabled;
  t_dtype = dtype;
}

AutocastGuard::~AutocastGuard() {
  t_enabled = prev_enabled_;
  t_dtype = prev_dtype_;
}

bool autocast_enabled() { return t_enabled; }
DType autocast_dtype() { return t_dtype; }

namespace detail {

Tensor autocast_half(const Tensor& t) {
  if (!t_enabled || !t.defined() || t.dtype() != DType::F32) return t;
  return cast(t, t_dtype);
}

Tensor autocast_f32(const Tensor& t) {
  if (!t_enabled || !t.defined() || (t.dtype() != DType::F16 && t.dtype() != DType::BF16)) return t;
  return cast(t, DType::F32);
}

}  // namespace detail
}  // namespace kiln
