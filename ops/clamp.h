// clamp: limits every element to [min, max], as torch.clamp with optional scalar bounds.
// Used e.g. for WGAN weight clipping: `{ NoGradGuard g; clamp_(w, -0.01, 0.01); }`.
#pragma once
#include <optional>

#include <kiln/core/tensor.h>

namespace kiln {

// Kernel parameters of slot `clamp` (ops/op_list.h). The kernel contract:
//   y = min(max(x, lo), hi), computed as  y = x < lo ? lo : (x > hi ? hi : x)
// where lo = min if has_min (else no lower limit) and hi = max if has_max (else no upper
// limit). So NaN propagates (a NaN x gives NaN, as in PyTorch) and x = -0.0 with lo = 0
// stays -0.0. An element within the bounds is copied bits unchanged, a clamped one becomes
// the bound converted to the dtype, so every backend gives the same bits.
// x and y share shape and dtype, any strides; y is either x itself (clamp_) or memory that
// x does not overlap; writes (=).
// dtypes: f16/bf16 and f32 compute in float (bounds rounded to float), f64 in double;
// u8/i32/i64 compare in the dtype, the bounds converted to it first (truncated toward
// zero and saturated at the dtype's range, so clamp(u8, -5, 300) leaves x unchanged).
// Bool never reaches a kernel. ops/clamp.cpp has checked: at least one bound, no NaN
// bound, min <= max.
struct ClampParams {
  bool has_min = false, has_max = false;
  double min = 0, max = 0;
};

// y = clamp(x, min, max) with at least one bound given; min <= max. Same dtype as x
// (integer tensors stay integer, the bounds cast to their dtype); bool is refused. The
// gradient passes where min <= x <= max (bounds included, as in PyTorch), else 0.
Tensor clamp(const Tensor& x, std::optional<double> min, std::optional<double> max);
Tensor clamp_min(const Tensor& x, double min);
Tensor clamp_max(const Tensor& x, double max);
// In place: x = clamp(x, min, max). Refuses tensors that require grad while grad mode is
// on, and views whose elements share memory (expand()ed).
Tensor& clamp_(Tensor& x, std::optional<double> min, std::optional<double> max);

}  // namespace kiln
