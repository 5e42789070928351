// conv2d, conv_transpose2d and conv2d's two gradients: checks, output sizes, dispatch
// and backward formulas.
//
// Three raw products do all the work, each a kernel slot (im2col + BLAS on the CPU in
// ops/cpu/conv.cpp, cuDNN on CUDA in cuda/kernels/conv_cudnn.cpp), each an op that
// records its own backward in terms of the other two:
//   forward        y  = conv(x, w)              (+ bias)
//   backward_data  gx = conv^T(gy, w)           linear in gy and in w
//   backward_wt    gw = d<conv(x, w), gy>/dw    linear in x and in gy
// conv2d is `forward`, conv_transpose2d is `backward_data` (as in PyTorch), so every
// gradient is one of the three; the formulas capture their operands undetached, so in
// a create_graph pass they record again and second derivatives follow.
#include <kiln/ops/conv.h>
#include <kiln/ops/autocast.h>

#include <kiln/core/autograd.h>
#include <kiln/ops/binary.h>
#include <kiln/ops/checks.h>
#include <kiln/ops/op_list.h>
#include <kiln/ops/pad.h>
#include <kiln/ops/reduce.h>

namespace kiln {
namespace {

using Geom = Conv2dGeometry;
using V = std::vector<Tensor>;

std::string geom_str(const Geom& g) {
  return detail::str("stride (", g.stride_h, ", ", g.stride_w, "), padding (", g.pad_h, ", ", g.pad_w,
                     "), dilation (", g.dilation_h, ", ", g.dilation_w, "), groups ", g.groups);
}

// Shape of conv(x) for an x of shape xs (4-D) and a weight of shape ws; may hold sizes < 1.
Shape forward_shape(const Shape& xs, const Shape& ws, const Geom& g) {
  return {xs[0], ws[0], conv_output_size(xs[2], ws[2], g.stride_h, g.pad_h, g.dilation_h),
          conv_output_size(xs[3], ws[3], g.stride_w, g.pad_w, g.dilation_w)};
}

// gy zero-padded at the bottom and right to the (Hc, Wc) that conv of the input shape
// produces. Only a transposed convolution whose output_padding reaches past the stride
// (allowed while it stays below the dilation) has gy smaller than that: the extra rows
// and columns of the convolution get no gradient. Raw (called under NoGradGuard).
Tensor pad_to(const Tensor& gy, int64_t Hc, int64_t Wc) {
  if (gy.size(2) == Hc && gy.size(3) == Wc) return gy;
  Tensor out = zeros({gy.size(0), gy.size(1), Hc, Wc}, TensorOptions(gy.dtype(), gy.device()));
  out.narrow(2, 0, gy.size(2)).narrow(3, 0, gy.size(3)).copy_(gy);
  return out;
}

// conv(x, w) cut back to gy's spatial size (the adjoint of pad_to).
Tensor crop_to(const Tensor& y, const Shape& gy_shape) {
  if (y.size(2) == gy_shape[2] && y.size(3) == gy_shape[3]) return y;
  return y.narrow(2, 0, gy_shape[2]).narrow(3, 0, gy_shape[3]);
}

Tensor conv_backward_data_op(const Tensor& gy, const Tensor& w, const Shape& x_shape, const Geom& g,
                             const char* name);
Tensor conv_backward_weight_op(const Tensor& x, const Tensor& gy, const Shape& w_shape, const Geom& g);

// y = conv(x, w) + bias. x, w 4-D and checked; bias (O) or undefined.
Tensor conv_forward_op(const Tensor& x, const Tensor& w, const Tensor& bias, const Geom& g) {
  Tensor y = empty(forward_shape(x.sizes(), w.sizes(), g), TensorOptions(x.dtype(), x.device()));
  if (y.numel() > 0) {
    NoGradGuard no_grad;
    const Tensor xc = x.contiguous(), wc = w.contiguous(), bc = bias.defined() ? bias.contiguous() : Tensor();
    kernel<op::conv2d_forward>(x.device())(kernel_view(xc), kernel_view(wc), kernel_view(bc), kernel_view(y), g);
  }
  if (!any_requires_grad({x, w, bias})) return y;
  const bool need_x = x.requires_grad(), need_w = w.requires_grad(), need_b = bias.defined() && bias.requires_grad();
  return record("conv2d", {x, w, bias}, y,
                [xs = x.sizes(), ws = w.sizes(), xd = need_w ? x : Tensor(), wd = need_x ? w : Tensor(), need_x, need_w,
                 need_b, g](const Tensor& gy) {
                  return V{need_x ? conv_backward_data_op(gy, wd, xs, g, "conv2d_input_grad") : Tensor(),
                           need_w ? conv_backward_weight_op(xd, gy, ws, g) : Tensor(),
                           need_b ? sum(gy, {0, 2, 3}) : Tensor()};
                },
                {need_w ? x : Tensor(), need_x ? w : Tensor()}, true);
}

// gx (x_shape) = conv^T(gy, w).
Tensor conv_backward_data_op(const Tensor& gy, const Tensor& w, const Shape& x_shape, const Geom& g,
                             const char* name) {
  Tensor gx = empty(x_shape, TensorOptions(gy.dtype(), gy.device()));
  if (gx.numel() > 0) {
    NoGradGuard no_grad;
    const Shape full = forward_shape(x_shape, w.sizes(), g);
    const Tensor gyc = pad_to(gy, full[2], full[3]).contiguous(), wc = w.contiguous();
    kernel<op::conv2d_backward_data>(gy.device())(kernel_view(gyc), kernel_view(wc), kernel_view(gx), g);
  }
  if (!any_requires_grad({gy, w})) return gx;
  const bool need_gy = gy.requires_grad(), need_w = w.requires_grad();
  return record(name, {gy, w}, gx,
                [gyd = need_w ? gy : Tensor(), gys = gy.sizes(), wd = need_gy ? w : Tensor(),
                 ws = w.sizes(), need_gy, need_w, g](const Tensor& gg) {
                  return V{need_gy ? crop_to(conv_forward_op(gg, wd, Tensor(), g), gys) : Tensor(),
                           need_w ? conv_backward_weight_op(gg, gyd, ws, g) : Tensor()};
                },
                {need_w ? gy : Tensor(), need_gy ? w : Tensor()}, true);
}

// gw (w_shape) = d<conv(x, w), gy>/dw.
Tensor conv_backward_weight_op(const Tensor& x, const Tensor& gy, const Shape& w_shape, const Geom& g) {
  Tensor gw = empty(w_shape, TensorOptions(x.dtype(), x.device()));
  if (gw.numel() > 0) {
    NoGradGuard no_grad;
    if (x.size(0) == 0) {
      gw.fill_(0);
    } else {
      const Shape full = forward_shape(x.sizes(), w_shape, g);
      const Tensor xc = x.contiguous(), gyc = pad_to(gy, full[2], full[3]).contiguous();
      kernel<op::conv2d_backward_weight>(x.device())(kernel_view(xc), kernel_view(gyc), kernel_view(gw), g);
    }
  }
  if (!any_requires_grad({x, gy})) return gw;
  const bool need_x = x.requires_grad(), need_gy = gy.requires_grad();
  return record("conv2d_weight_grad", {x, gy}, gw,
                [xd = need_gy ? x : Tensor(), xs = x.sizes(), gyd = need_x ? gy : Tensor(),
                 gys = gy.sizes(), need_x, need_gy, g](const Tensor& gg) {
                  return V{need_x ? conv_backward_data_op(gyd, gg, xs, g, "conv2d_input_grad") : Tensor(),
                           need_gy ? crop_to(conv_forward_op(xd, gg, Tensor(), g), gys) : Tensor()};
                },
                {need_gy ? x : Tensor(), need_x ? gy : Tensor()}, true);
}

Geom make_geom(Int2 stride, Int2 padding, Int2 dilation, int64_t groups) {
  Geom g;
  g.stride_h = stride.h;
  g.stride_w = stride.w;
  g.pad_h = padding.h;
  g.pad_w = padding.w;
  g.dilation_h = dilation.h;
  g.dilation_w = dilation.w;
  g.groups = groups;
  return g;
}

// Dtype, device and parameter checks shared by the entry points. `ctx` describes the
// operands for messages.
void check_common(const char* op, const Tensor& x, const Tensor& w, const Tensor& bias, const Geom& g,
                  const std::string& ctx) {
  detail::check_defined(op, x, "input");
  detail::check_defined(op, w, "weight");
  detail::check_same_device(op, x, w);
  detail::check_floating(op, x);
  KILN_CHECK(x.dtype() == w.dtype(), op, ": input and weight must have the same dtype, got ", ctx);
  if (bias.defined()) {
    detail::check_same_device(op, x, bias);
    KILN_CHECK(bias.dtype() == x.dtype(), op, ": bias must have the input's dtype, got bias ", describe(bias), " for ",
               ctx);
  }
  KILN_CHECK(g.stride_h >= 1 && g.stride_w >= 1, op, ": stride must be >= 1, got ", geom_str(g), " for ", ctx);
  KILN_CHECK(g.pad_h >= 0 && g.pad_w >= 0, op, ": padding must be >= 0, got ", geom_str(g), " for ", ctx);
  KILN_CHECK(g.dilation_h >= 1 && g.dilation_w >= 1, op, ": dilation must be >= 1, got ", geom_str(g), " for ", ctx);
  KILN_CHECK(g.groups >= 1, op, ": groups must be >= 1, got ", g.groups, " for ", ctx);
  KILN_CHECK(w.dim() == 4, op, ": weight must be 4-D (out, in / groups, kH, kW), got ", ctx);
  KILN_CHECK(w.numel() > 0, op, ": weight must not be empty, got ", ctx);
}

// A 4-D view of a 3-D (unbatched) or 4-D input; throws for other ranks and empty C, H, W.
Tensor batched(const char* op, const Tensor& x, const std::string& ctx) {
  KILN_CHECK(x.dim() == 3 || x.dim() == 4, op, ": input must be 3-D (C, H, W) or 4-D (N, C, H, W), got ", ctx);
  Tensor x4 = x.dim() == 3 ? x.unsqueeze(0) : x;
  KILN_CHECK(x4.size(1) > 0 && x4.size(2) > 0 && x4.size(3) > 0, op,
             ": input channels and spatial dims must be non-empty, got ", ctx);
  return x4;
}

void check_output(const char* op, const Shape& out, const std::string& ctx) {
  KILN_CHECK(out[2] >= 1 && out[3] >= 1, op, ": the output size (", out[2], ", ", out[3],
             ") is too small (< 1) for ", ctx);
}

}  // namespace

namespace {
// a * b + c without int64 overflow, or a kiln::Error naming the size computation.
int64_t checked_mad(int64_t a, int64_t b, int64_t c, const char* what) {
  int64_t p = 0, r = 0;
  KILN_CHECK(!__builtin_mul_overflow(a, b, &p) && !__builtin_add_overflow(p, c, &r), what, ": ", a, " * ", b, " + ",
             c, " overflows int64 (sizes, strides, padding or dilation are too large)");
  return r;
}
}  // namespace

int64_t conv_output_size(int64_t in, int64_t kernel, int64_t stride, int64_t pad, int64_t dilation) {
  const int64_t reach = checked_mad(dilation, kernel - 1, 1, "conv output size");
  const int64_t padded = checked_mad(2, pad, in, "conv output size");
  const int64_t span = padded - reach;
  if (span < 0) return 0;
  return span / stride + 1;
}

int64_t conv_transpose_output_size(int64_t in, int64_t kernel, int64_t stride, int64_t pad, int64_t dilation,
                                   int64_t output_padding) {
  const int64_t grown = checked_mad(in - 1, stride, output_padding + 1, "conv_transpose output size");
  const int64_t reach = checked_mad(dilation, kernel - 1, grown, "conv_transpose output size");
  return checked_mad(-2, pad, reach, "conv_transpose output size");
}

Tensor conv2d(const Tensor& x_in, const Tensor& w_in, const Tensor& bias_in, Int2 stride, Int2 padding, Int2 dilation,
              int64_t groups, PaddingMode padding_mode) {
  const Tensor x = detail::autocast_half(x_in), w = detail::autocast_half(w_in), bias = detail::autocast_half(bias_in);
  const char* op = "conv2d";
  const Geom g = make_geom(stride, padding, dilation, groups);
  auto ctx = [&] {
    return detail::str("input ", x.defined() ? describe(x) : "undefined", ", weight ",
                       w.defined() ? describe(w) : "undefined", ", ", geom_str(g), ", padding_mode ",
                       padding_mode_name(padding_mode));
  };
  check_common(op, x, w, bias, g, x.defined() && w.defined() ? ctx() : "");
  const std::string c = ctx();
  Tensor x4 = batched(op, x, c);
  const int64_t C = x4.size(1), O = w.size(0);
  KILN_CHECK(C % groups == 0 && O % groups == 0, op, ": input channels ", C, " and output channels ", O,
             " must both be divisible by groups ", groups, "; ", c);
  KILN_CHECK(w.size(1) * groups == C, op, ": weight expects ", w.size(1) * groups, " input channels (",
             w.size(1), " per group x ", groups, " groups), the input has ", C, "; ", c);
  if (bias.defined())
    KILN_CHECK(bias.dim() == 1 && bias.size(0) == O, op, ": bias must have shape [", O, "], got ", describe(bias),
               "; ", c);
  const int64_t H = x4.size(2), W = x4.size(3);
  if (padding_mode == PaddingMode::Reflect)
    KILN_CHECK(g.pad_h < H && g.pad_w < W, op, ": reflect padding must be smaller than the input's spatial size; ",
               c);
  if (padding_mode == PaddingMode::Circular)
    KILN_CHECK(g.pad_h <= H && g.pad_w <= W, op,
               ": circular padding must be at most the input's spatial size; ", c);
  check_output(op, forward_shape(x4.sizes(), w.sizes(), g), c);

  Tensor in = x4;
  Geom gc = g;
  if (padding_mode != PaddingMode::Zeros && (g.pad_h > 0 || g.pad_w > 0)) {
    in = pad2d(x4, {g.pad_w, g.pad_w, g.pad_h, g.pad_h}, padding_mode);
    gc.pad_h = gc.pad_w = 0;
  }
  Tensor y = conv_forward_op(in, w, bias, gc);
  return x.dim() == 3 ? y.squeeze(0) : y;
}

Tensor conv_transpose2d(const Tensor& x_in, const Tensor& w_in, const Tensor& bias_in, Int2 stride, Int2 padding,
                        Int2 output_padding, int64_t groups, Int2 dilation) {
  const Tensor x = detail::autocast_half(x_in), w = detail::autocast_half(w_in), bias = detail::autocast_half(bias_in);
  const char* op = "conv_transpose2d";
  const Geom g = make_geom(stride, padding, dilation, groups);
  auto ctx = [&] {
    return detail::str("input ", describe(x), ", weight ", describe(w), ", ", geom_str(g), ", output_padding (",
                       output_padding.h, ", ", output_padding.w, ")");
  };
  check_common(op, x, w, bias, g, x.defined() && w.defined() ? ctx() : "");
  const std::string c = ctx();
  Tensor x4 = batched(op, x, c);
  const int64_t C = x4.size(1);
  KILN_CHECK(w.size(0) == C, op, ": weight must have shape (in = ", C, ", out / groups, kH, kW), got ", c);
  KILN_CHECK(C % groups == 0, op, ": input channels ", C, " must be divisible by groups ", groups, "; ", c);
  const int64_t O = w.size(1) * groups;
  if (bias.defined())
    KILN_CHECK(bias.dim() == 1 && bias.size(0) == O, op, ": bias must have shape [", O, "], got ", describe(bias),
               "; ", c);
  KILN_CHECK(output_padding.h >= 0 && output_padding.w >= 0, op, ": output_padding must be >= 0; ", c);
  KILN_CHECK((output_padding.h < g.stride_h || output_padding.h < g.dilation_h) &&
                 (output_padding.w < g.stride_w || output_padding.w < g.dilation_w),
             op, ": output_padding must be smaller than either stride or dilation; ", c);
  const Shape out{x4.size(0), O,
                  conv_transpose_output_size(x4.size(2), w.size(2), g.stride_h, g.pad_h, g.dilation_h,
                                             output_padding.h),
                  conv_transpose_output_size(x4.size(3), w.size(3), g.stride_w, g.pad_w, g.dilation_w,
                                             output_padding.w)};
  check_output(op, out, c);
  // The forward convolution of `out` must reach every input position (it always does
  // when output_padding is in range, as checked; this guards the formulas).
  const Shape back = forward_shape(out, {C, w.size(1), w.size(2), w.size(3)}, g);
  KILN_CHECK(back[2] >= x4.size(2) && back[3] >= x4.size(3), op, ": inconsistent geometry; ", c);

  Tensor y = conv_backward_data_op(x4, w, out, g, op);
  if (bias.defined()) y = add(y, bias.view({1, O, 1, 1}));
  return x.dim() == 3 ? y.squeeze(0) : y;
}

Tensor conv2d_input_grad(const Shape& x_shape, const Tensor& w, const Tensor& gy, Int2 stride, Int2 padding,
                         Int2 dilation, int64_t groups) {
  const char* op = "conv2d_input_grad";
  const Geom g = make_geom(stride, padding, dilation, groups);
  detail::check_defined(op, gy, "grad_output");
  detail::check_defined(op, w, "weight");
  const std::string c = detail::str("input shape ", shape_str(x_shape), ", weight ", describe(w), ", grad_output ",
                                    describe(gy), ", ", geom_str(g));
  check_common(op, gy, w, Tensor(), g, c);
  KILN_CHECK(x_shape.size() == 4 && gy.dim() == 4, op, ": expects 4-D input shape and grad_output; ", c);
  KILN_CHECK(x_shape[1] > 0 && x_shape[1] == w.size(1) * groups && w.size(0) % groups == 0, op,
             ": weight does not match the input channels and groups; ", c);
  const Shape ys = forward_shape(x_shape, w.sizes(), g);
  check_output(op, ys, c);
  KILN_CHECK(gy.sizes() == ys, op, ": grad_output must have the conv2d output's shape ", shape_str(ys), "; ", c);
  return conv_backward_data_op(gy, w, x_shape, g, op);
}

Tensor conv2d_weight_grad(const Tensor& x, const Shape& w_shape, const Tensor& gy, Int2 stride, Int2 padding,
                          Int2 dilation, int64_t groups) {
  const char* op = "conv2d_weight_grad";
  const Geom g = make_geom(stride, padding, dilation, groups);
  detail::check_defined(op, x, "input");
  detail::check_defined(op, gy, "grad_output");
  const std::string c = detail::str("input ", describe(x), ", weight shape ", shape_str(w_shape), ", grad_output ",
                                    describe(gy), ", ", geom_str(g));
  detail::check_same_device(op, x, gy);
  detail::check_floating(op, x);
  KILN_CHECK(x.dtype() == gy.dtype(), op, ": input and grad_output must have the same dtype; ", c);
  KILN_CHECK(x.dim() == 4 && gy.dim() == 4 && w_shape.size() == 4, op, ": expects 4-D operands; ", c);
  KILN_CHECK(g.stride_h >= 1 && g.stride_w >= 1 && g.pad_h >= 0 && g.pad_w >= 0 && g.dilation_h >= 1 &&
                 g.dilation_w >= 1 && g.groups >= 1,
             op, ": bad stride, padding, dilation or groups; ", c);
  KILN_CHECK(shape_numel(w_shape) > 0 && x.size(1) == w_shape[1] * groups && w_shape[0] % groups == 0, op,
             ": weight shape does not match the input channels and groups; ", c);
  const Shape ys = forward_shape(x.sizes(), w_shape, g);
  check_output(op, ys, c);
  KILN_CHECK(gy.sizes() == ys, op, ": grad_output must have the conv2d output's shape ", shape_str(ys), "; ", c);
  return conv_backward_weight_op(x, gy, w_shape, g);
}

}  // namespace kiln
