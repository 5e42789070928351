// max_pool2d, avg_pool2d, adaptive_avg_pool2d: checks, output sizes, the kernel slots on
// the (N * C, H, W) planes (ops/cpu/pool.cpp, cuda/kernels/pool.cu), and backward formulas
// (the adjoint kernels).
#include <kiln/ops/pool.h>

#include <kiln/core/autograd.h>
#include <kiln/ops/checks.h>
#include <kiln/ops/op_list.h>

namespace kiln {
namespace {

using Geom = Pool2dGeometry;

int64_t floor_div(int64_t a, int64_t b) {
  const int64_t q = a / b;
  return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

// The input as (N, C, H, W): 3-D inputs get a batch dim of 1.
Tensor batched(const char* op, const Tensor& x) {
  detail::check_defined(op, x);
  detail::check_floating(op, x);
  KILN_CHECK(x.dim() == 3 || x.dim() == 4, op, ": input must be 3-D (C, H, W) or 4-D (N, C, H, W), got ",
             describe(x));
  Tensor x4 = x.dim() == 3 ? x.unsqueeze(0) : x;
  KILN_CHECK(x4.size(1) > 0 && x4.size(2) > 0 && x4.size(3) > 0, op,
             ": channels and spatial dims must be non-empty, got ", describe(x));
  return x4;
}

Tensor unbatched_like(const Tensor& y, const Tensor& x) { return x.dim() == 3 ? y.squeeze(0) : y; }

// The kernel view of a contiguous (N, C, H, W) tensor as (N * C, H, W) planes.
TensorView planes(const Tensor& t) {
  return kernel_view(t.view({t.size(0) * t.size(1), t.size(2), t.size(3)}));
}

std::string params_str(Int2 kernel, Int2 stride, Int2 padding, Int2 dilation, bool ceil_mode) {
  return detail::str("kernel (", kernel.h, ", ", kernel.w, "), stride (", stride.h, ", ", stride.w, "), padding (",
                     padding.h, ", ", padding.w, "), dilation (", dilation.h, ", ", dilation.w, "), ceil_mode ",
                     ceil_mode ? "true" : "false");
}

// Checks the window parameters and returns the output shape. max_pad_h/w: the largest
// padding allowed.
Shape pool_shape(const char* op, const Tensor& x, const Tensor& x4, Int2 kernel, Int2 stride, Int2 padding,
                 Int2 dilation, bool ceil_mode, int64_t max_pad_h, int64_t max_pad_w) {
  const std::string p = params_str(kernel, stride, padding, dilation, ceil_mode);
  KILN_CHECK(kernel.h >= 1 && kernel.w >= 1, op, ": kernel size must be >= 1, got ", p, " for input ", describe(x));
  KILN_CHECK(stride.h >= 1 && stride.w >= 1, op, ": stride must be >= 1, got ", p, " for input ", describe(x));
  KILN_CHECK(dilation.h >= 1 && dilation.w >= 1, op, ": dilation must be >= 1, got ", p, " for input ",
             describe(x));
  KILN_CHECK(padding.h >= 0 && padding.w >= 0, op, ": padding must be >= 0, got ", p, " for input ", describe(x));
  const int64_t mh = (max_pad_h < 0) ? 0 : max_pad_h, mw = (max_pad_w < 0) ? 0 : max_pad_w;
  KILN_CHECK(padding.h <= mh && padding.w <= mw, op, ": padding must be at most half of the (effective) kernel size, got ",
             p, " for input ", describe(x));
  const int64_t Ho = pool_output_size(x4.size(2), kernel.h, stride.h, padding.h, dilation.h, ceil_mode);
  const int64_t Wo = pool_output_size(x4.size(3), kernel.w, stride.w, padding.w, dilation.w, ceil_mode);
  KILN_CHECK(Ho >= 1 && Wo >= 1, op, ": the output size (", Ho, ", ", Wo, ") is too small (< 1) for input ",
             describe(x), " with ", p);
  return {x4.size(0), x4.size(1), Ho, Wo};
}

Geom make_geom(Int2 kernel, Int2 stride, Int2 padding, Int2 dilation) {
  Geom g;
  g.kernel_h = kernel.h;
  g.kernel_w = kernel.w;
  g.stride_h = stride.h;
  g.stride_w = stride.w;
  g.pad_h = padding.h;
  g.pad_w = padding.w;
  g.dilation_h = dilation.h;
  g.dilation_w = dilation.w;
  return g;
}

Tensor max_pool2d_backward(const Tensor& gy, const Tensor& indices, const Shape& x_shape, const Geom& g) {
  NoGradGuard no_grad;
  Tensor gyc = gy.contiguous();
  Tensor gx = empty(x_shape, TensorOptions(gy.dtype(), gy.device()));
  if (gx.numel() > 0) kernel<op::max_pool2d_backward>(gy.device())(planes(gyc), planes(indices), planes(gx), g);
  return gx;
}

Tensor avg_pool2d_backward(const Tensor& gy, const Shape& x_shape, const Geom& g) {
  NoGradGuard no_grad;
  Tensor gyc = gy.contiguous();
  Tensor gx = empty(x_shape, TensorOptions(gy.dtype(), gy.device()));
  if (gx.numel() > 0) kernel<op::avg_pool2d_backward>(gy.device())(planes(gyc), planes(gx), g);
  return gx;
}

// Linear in gy: in a create_graph pass it is recorded, with the forward pool as its
// adjoint (so adaptive_avg_pool2d is differentiable to any order).
Tensor adaptive_avg_pool2d_backward(const Tensor& gy, const Shape& x_shape) {
  Tensor gx = empty(x_shape, TensorOptions(gy.dtype(), gy.device()));
  {
    NoGradGuard no_grad;
    Tensor gyc = gy.contiguous();
    if (gx.numel() > 0) kernel<op::adaptive_avg_pool2d_backward>(gy.device())(planes(gyc), planes(gx));
  }
  if (any_requires_grad({gy})) {
    gx = record("adaptive_avg_pool2d_backward", {gy}, gx,
                [os = Int2{gy.size(2), gy.size(3)}](const Tensor& ggx) {
                  return std::vector<Tensor>{adaptive_avg_pool2d(ggx, os)};
                },
                {}, /*double_backward=*/true);
  }
  return gx;
}

}  // namespace

int64_t pool_output_size(int64_t in, int64_t kernel, int64_t stride, int64_t pad, int64_t dilation, bool ceil_mode) {
  int64_t out = floor_div(in + 2 * pad - dilation * (kernel - 1) - 1 + (ceil_mode ? stride - 1 : 0), stride) + 1;
  // The last window must start inside the input or its left padding.
  if (ceil_mode && (out - 1) * stride >= in + pad) --out;
  return out;
}

std::pair<Tensor, Tensor> max_pool2d_with_indices(const Tensor& x, Int2 kernel, std::optional<Int2> stride,
                                                  Int2 padding, Int2 dilation, bool ceil_mode) {
  const char* name = "max_pool2d";
  Tensor x4 = batched(name, x);
  const Int2 s = stride.value_or(kernel);
  const Shape ys = pool_shape(name, x, x4, kernel, s, padding, dilation, ceil_mode,
                              ((kernel.h - 1) * dilation.h + 1) / 2, ((kernel.w - 1) * dilation.w + 1) / 2);
  const Geom g = make_geom(kernel, s, padding, dilation);
  Tensor y = empty(ys, TensorOptions(x.dtype(), x.device()));
  Tensor idx = empty(ys, TensorOptions(DType::I64, x.device()));
  if (y.numel() > 0) {
    NoGradGuard no_grad;
    const Tensor xc = x4.contiguous();
    kiln::kernel<op::max_pool2d_forward>(x.device())(planes(xc), planes(y), planes(idx), g);
  }
  if (any_requires_grad({x4})) {
    y = record(name, {x4}, y, [idx, xs = x4.sizes(), g](const Tensor& gy) {
      return std::vector<Tensor>{max_pool2d_backward(gy, idx, xs, g)};
    }, {idx});
  }
  return {unbatched_like(y, x), unbatched_like(idx, x)};
}

Tensor max_pool2d(const Tensor& x, Int2 kernel, std::optional<Int2> stride, Int2 padding, Int2 dilation,
                  bool ceil_mode) {
  return max_pool2d_with_indices(x, kernel, stride, padding, dilation, ceil_mode).first;
}

Tensor avg_pool2d(const Tensor& x, Int2 kernel, std::optional<Int2> stride, Int2 padding, bool ceil_mode,
                  bool count_include_pad, int64_t divisor_override) {
  const char* name = "avg_pool2d";
  Tensor x4 = batched(name, x);
  const Int2 s = stride.value_or(kernel);
  KILN_CHECK(divisor_override >= 0, name, ": divisor_override must be > 0 (or 0 for none), got ", divisor_override);
  const Shape ys = pool_shape(name, x, x4, kernel, s, padding, 1, ceil_mode, kernel.h / 2, kernel.w / 2);
  Geom g = make_geom(kernel, s, padding, 1);
  g.count_include_pad = count_include_pad;
  g.divisor_override = divisor_override;
  Tensor y = empty(ys, TensorOptions(x.dtype(), x.device()));
  if (y.numel() > 0) {
    NoGradGuard no_grad;
    const Tensor xc = x4.contiguous();
    kiln::kernel<op::avg_pool2d_forward>(x.device())(planes(xc), planes(y), g);
  }
  if (any_requires_grad({x4})) {
    y = record(name, {x4}, y, [xs = x4.sizes(), g](const Tensor& gy) {
      return std::vector<Tensor>{avg_pool2d_backward(gy, xs, g)};
    });
  }
  return unbatched_like(y, x);
}

Tensor adaptive_avg_pool2d(const Tensor& x, Int2 output_size) {
  const char* name = "adaptive_avg_pool2d";
  Tensor x4 = batched(name, x);
  KILN_CHECK(output_size.h >= 1 && output_size.w >= 1, name, ": output size must be >= 1, got (", output_size.h, ", ",
             output_size.w, ") for input ", describe(x));
  const Shape ys{x4.size(0), x4.size(1), output_size.h, output_size.w};
  Tensor y = empty(ys, TensorOptions(x.dtype(), x.device()));
  if (y.numel() > 0) {
    NoGradGuard no_grad;
    const Tensor xc = x4.contiguous();
    kernel<op::adaptive_avg_pool2d_forward>(x.device())(planes(xc), planes(y));
  }
  if (any_requires_grad({x4})) {
    y = record(
        name, {x4}, y,
        [xs = x4.sizes()](const Tensor& gy) { return std::vector<Tensor>{adaptive_avg_pool2d_backward(gy, xs)}; }, {},
        /*double_backward=*/true);
  }
  return unbatched_like(y, x);
}

}  // namespace kiln
