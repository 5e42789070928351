// pad2d: checks, output allocation, the pad2d_forward/backward kernel slots (the loops
// are ops/cpu/pad.cpp and cuda/kernels/pad.cu) and the backward, the adjoint kernel.
#include <kiln/ops/pad.h>

#include <kiln/core/autograd.h>
#include <kiln/ops/checks.h>
#include <kiln/ops/op_list.h>

namespace kiln {
namespace {

void check_dim_pad(const Tensor& x, int64_t size, int64_t before, int64_t after, const char* dim, PaddingMode mode) {
  const char* m = padding_mode_name(mode);
  switch (mode) {
    case PaddingMode::Zeros: return;
    case PaddingMode::Reflect:
      KILN_CHECK(before < size && after < size, "pad2d: reflect padding (", before, ", ", after, ") of ", dim,
                 " must be smaller than its size ", size, " for input ", describe(x));
      return;
    case PaddingMode::Circular:
      KILN_CHECK(before <= size && after <= size, "pad2d: circular padding (", before, ", ", after, ") of ", dim,
                 " must be at most its size ", size, " for input ", describe(x));
      return;
    case PaddingMode::Replicate:
      KILN_CHECK(size > 0 || (before == 0 && after == 0), "pad2d: ", m, " padding of an empty ", dim,
                 " is undefined, input ", describe(x));
      return;
  }
}

// gx (B, H, W) from gy (B, Ho, Wo): the adjoint of the padding.
Tensor pad2d_backward(const Tensor& gy, const Shape& x_shape, Pad2d p, PaddingMode mode) {
  NoGradGuard no_grad;
  Tensor g = gy.contiguous();
  Tensor gx = empty(x_shape, TensorOptions(g.dtype(), g.device()));
  if (gx.numel() == 0) return gx;
  const int64_t H = x_shape[x_shape.size() - 2], W = x_shape.back();
  const int64_t B = gx.numel() / (H * W);
  kernel<op::pad2d_backward>(g.device())(kernel_view(g.view({B, g.size(-2), g.size(-1)})),
                                         kernel_view(gx.view({B, H, W})),
                                         Pad2dParams{p.left, p.right, p.top, p.bottom, mode});
  return gx;
}

}  // namespace

Tensor pad2d(const Tensor& x, Pad2d p, PaddingMode mode) {
  detail::check_defined("pad2d", x);
  detail::check_floating("pad2d", x);
  KILN_CHECK(x.dim() >= 2, "pad2d: expects at least 2 dims (..., H, W), got ", describe(x));
  KILN_CHECK(p.left >= 0 && p.right >= 0 && p.top >= 0 && p.bottom >= 0, "pad2d: pads must be >= 0, got (left ",
             p.left, ", right ", p.right, ", top ", p.top, ", bottom ", p.bottom, ") for input ", describe(x));
  const int64_t H = x.size(-2), W = x.size(-1);
  check_dim_pad(x, H, p.top, p.bottom, "height", mode);
  check_dim_pad(x, W, p.left, p.right, "width", mode);
  Shape out_shape = x.sizes();
  out_shape[out_shape.size() - 2] = H + p.top + p.bottom;
  out_shape.back() = W + p.left + p.right;
  Tensor y = empty(out_shape, TensorOptions(x.dtype(), x.device()));
  if (y.numel() > 0) {
    NoGradGuard no_grad;
    if (x.numel() == 0) {
      y.fill_(0);  // zero padding of an empty plane (other modes were rejected above)
    } else {
      Tensor xc = x.contiguous();
      const int64_t B = x.numel() / (H * W);
      kernel<op::pad2d_forward>(x.device())(kernel_view(xc.view({B, H, W})),
                                            kernel_view(y.view({B, y.size(-2), y.size(-1)})),
                                            Pad2dParams{p.left, p.right, p.top, p.bottom, mode});
    }
  }
  if (!any_requires_grad({x})) return y;
  return record("pad2d", {x}, y, [shape = x.sizes(), p, mode](const Tensor& g) {
    return std::vector<Tensor>{pad2d_backward(g, shape, p, mode)};
  });
}

}  // namespace kiln
