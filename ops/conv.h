// 2-D convolution and transposed convolution (PyTorch's conv2d / conv_transpose2d),
// NCHW. Cross-correlation, as every deep-learning framework computes it. The CPU path is
// im2col + OpenBLAS (ops/cpu/conv.cpp), the CUDA path cuDNN (cuda/kernels/conv_cudnn.cpp).
// Non-zero padding modes pad the input explicitly with pad2d (ops/pad.h) and convolve
// with no padding, as PyTorch does; Alsallakh et al., "Mind the Pad" (ICLR 2021), show
// why the choice of border matters.
//
// Output sizes (PyTorch's formulas, floor division):
//   conv2d:           Ho = (H + 2 ph - dh (kH - 1) - 1) / sh + 1
//   conv_transpose2d: Ho = (H - 1) sh - 2 ph + dh (kH - 1) + oph + 1
// Both are differentiable in x, w and bias; gradients are written with these same ops
// (conv2d's input gradient is a transposed convolution and vice versa).
#pragma once
#include <cstdint>

#include <kiln/core/op_kinds.h>
#include <kiln/core/tensor.h>

namespace kiln {

// Kernel parameters of the convolution slots (conv2d_forward, conv2d_backward_data,
// conv2d_backward_weight). Tensors are 4-D contiguous NCHW of one floating dtype: x (N, C,
// H, W), w (O, C/groups, kH, kW), y (N, O, Ho, Wo) with Ho = (H + 2 pad_h - dilation_h (kH - 1)
// - 1) / stride_h + 1 (likewise Wo), zero padding. Outputs are written (=), not
// accumulated. forward: y = cross-correlation of x with w, plus bias (O) when defined.
// backward_data: gx = d<y, gy>/dx (also conv_transpose2d's forward). backward_weight:
// gw = d<y, gy>/dw.
struct Conv2dGeometry {
  int64_t stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0, dilation_h = 1, dilation_w = 1, groups = 1;
};

// A (height, width) pair of an op parameter; one number means both.
struct Int2 {
  int64_t h = 0, w = 0;
  Int2() = default;
  Int2(int64_t v) : h(v), w(v) {}  // NOLINT: implicit, like PyTorch's int-or-tuple
  Int2(int64_t h_, int64_t w_) : h(h_), w(w_) {}
  bool operator==(const Int2& o) const { return h == o.h && w == o.w; }
};

// x (N, C, H, W) or unbatched (C, H, W); w (O, C / groups, kH, kW); bias (O) or undefined.
// -> (N, O, Ho, Wo) (or (O, Ho, Wo)). One floating dtype, one device.
Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& bias = Tensor(), Int2 stride = 1, Int2 padding = 0,
              Int2 dilation = 1, int64_t groups = 1, PaddingMode padding_mode = PaddingMode::Zeros);

// x (N, C, H, W) or (C, H, W); w (C, O / groups, kH, kW); bias (O) or undefined. Zero
// padding only (as in PyTorch); output_padding < stride or < dilation in each dim. The
// arguments are in torch.nn.functional.conv_transpose2d's order: groups before dilation
// (unlike conv2d). An Int2 passed where groups goes does not compile.
Tensor conv_transpose2d(const Tensor& x, const Tensor& w, const Tensor& bias = Tensor(), Int2 stride = 1,
                        Int2 padding = 0, Int2 output_padding = 0, int64_t groups = 1, Int2 dilation = 1);

// The two gradients of conv2d as ops of their own (torch.nn.grad.conv2d_input /
// conv2d_weight): for y = conv2d(x, w, stride, padding, dilation, groups) with zero
// padding, the gradient of <y, gy> with respect to x (of shape x_shape) and to w (of
// shape w_shape). Differentiable.
Tensor conv2d_input_grad(const Shape& x_shape, const Tensor& w, const Tensor& gy, Int2 stride = 1, Int2 padding = 0,
                         Int2 dilation = 1, int64_t groups = 1);
Tensor conv2d_weight_grad(const Tensor& x, const Shape& w_shape, const Tensor& gy, Int2 stride = 1, Int2 padding = 0,
                          Int2 dilation = 1, int64_t groups = 1);

// Output size of one spatial dim by the formulas above (< 1 when the input is too small;
// the ops reject that).
int64_t conv_output_size(int64_t in, int64_t kernel, int64_t stride, int64_t pad, int64_t dilation);
int64_t conv_transpose_output_size(int64_t in, int64_t kernel, int64_t stride, int64_t pad, int64_t dilation,
                                   int64_t output_padding);

}  // namespace kiln
