// pad2d: pads the last two dims of a tensor (F.pad with four pads), filling the border
// with zeros, a mirror image without the edge (reflect), copies of the edge (replicate)
// or the opposite side (circular). conv2d's non-zero padding modes are built on it.
#pragma once
#include <cstdint>

#include <kiln/core/op_kinds.h>
#include <kiln/core/tensor.h>

namespace kiln {

// Kernel parameters (slots pad2d_forward/backward): x (B, H, W) -> y (B, top + H + bottom,
// left + W + right), the border filled by `mode` (pads >= 0; reflect needs pad < size,
// circular pad <= size). The backward is the adjoint: gx = sum of gy over every output
// position read from that input. Contiguous.
struct Pad2dParams {
  int64_t left = 0, right = 0, top = 0, bottom = 0;
  PaddingMode mode = PaddingMode::Zeros;
};

struct Pad2d {
  int64_t left = 0, right = 0, top = 0, bottom = 0;
};

// x (..., H, W) with at least 2 dims -> (..., top + H + bottom, left + W + right).
// Pads are >= 0; reflect needs each pad < its dim's size, circular <= its size,
// replicate a non-empty dim. Differentiable: the gradient sums every output position
// into the input position it was read from.
Tensor pad2d(const Tensor& x, Pad2d pads, PaddingMode mode = PaddingMode::Zeros);

}  // namespace kiln
