// Conv2d and ConvTranspose2d.
#include <kiln/models/nn/conv.h>

#include <cmath>

#include <kiln/core/autograd.h>
#include <kiln/models/nn/init.h>

namespace kiln::nn {

namespace detail {
std::string int2_tuple(const Int2& v) { return kiln::detail::str("(", v.h, ", ", v.w, ")"); }
std::string int2_repr(const Int2& v) { return v.h == v.w ? std::to_string(v.h) : int2_tuple(v); }
}  // namespace detail

namespace {

// PyTorch's _ConvNd.reset_parameters.
void reset_conv(const Tensor& weight, const Tensor& bias, Generator* gen) {
  init::kaiming_uniform_(weight, std::sqrt(5.0), init::FanMode::FanIn, init::Nonlinearity::LeakyReLU, gen);
  if (bias.defined()) {
    int64_t fan_in = init::calculate_fan_in_and_fan_out(weight).first;
    double bound = fan_in > 0 ? 1.0 / std::sqrt(static_cast<double>(fan_in)) : 0.0;
    init::uniform_(bias, -bound, bound, gen);
  }
}

void check_conv_args(const char* layer, int64_t in, int64_t out, Int2 k, Int2 s, Int2 p, Int2 d, int64_t groups,
                     const TensorOptions& options) {
  KILN_CHECK(in > 0 && out > 0, layer, ": in_channels and out_channels must be positive, got ", in, " and ", out);
  KILN_CHECK(groups > 0, layer, ": groups must be positive, got ", groups);
  KILN_CHECK(in % groups == 0, layer, ": in_channels (", in, ") must be divisible by groups (", groups, ")");
  KILN_CHECK(out % groups == 0, layer, ": out_channels (", out, ") must be divisible by groups (", groups, ")");
  KILN_CHECK(k.h > 0 && k.w > 0, layer, ": kernel_size must be positive, got ", detail::int2_tuple(k));
  KILN_CHECK(s.h > 0 && s.w > 0, layer, ": stride must be positive, got ", detail::int2_tuple(s));
  KILN_CHECK(p.h >= 0 && p.w >= 0, layer, ": padding must be >= 0, got ", detail::int2_tuple(p));
  KILN_CHECK(d.h > 0 && d.w > 0, layer, ": dilation must be positive, got ", detail::int2_tuple(d));
  KILN_CHECK(is_floating(options.dtype), layer, ": parameters need a floating dtype, got ", dtype_name(options.dtype));
}

}  // namespace

Conv2d::Conv2d(int64_t in, int64_t out, Int2 k, Int2 s, Int2 p, Int2 d, int64_t g, bool with_bias, PaddingMode mode,
               TensorOptions options)
    : Module("Conv2d"),
      in_channels(in),
      out_channels(out),
      kernel_size(k),
      stride(s),
      padding(p),
      dilation(d),
      groups(g),
      padding_mode(mode) {
  check_conv_args("Conv2d", in, out, k, s, p, d, g, options);
  weight = register_parameter("weight", empty({out, in / g, k.h, k.w}, options));
  if (with_bias) bias = register_parameter("bias", empty({out}, options));
  reset_parameters();
}

void Conv2d::reset_parameters(Generator* gen) { reset_conv(weight, bias, gen); }

Tensor Conv2d::forward(const Tensor& input) {
  if (eval_kernel && !is_training() && !grad_enabled())
    return eval_kernel(input);
  return conv2d(input, weight, bias, stride, padding, dilation, groups, padding_mode);
}

std::string Conv2d::extra_repr() const {
  std::string s = kiln::detail::str(in_channels, ", ", out_channels, ", kernel_size=", detail::int2_tuple(kernel_size),
                                    ", stride=", detail::int2_tuple(stride));
  if (!(padding == Int2(0))) s += ", padding=" + detail::int2_tuple(padding);
  if (!(dilation == Int2(1))) s += ", dilation=" + detail::int2_tuple(dilation);
  if (groups != 1) s += ", groups=" + std::to_string(groups);
  if (!bias.defined()) s += ", bias=false";
  if (padding_mode != PaddingMode::Zeros) s += std::string(", padding_mode=") + padding_mode_name(padding_mode);
  return s;
}

ConvTranspose2d::ConvTranspose2d(int64_t in, int64_t out, Int2 k, Int2 s, Int2 p, Int2 op, int64_t g, bool with_bias,
                                 Int2 d, TensorOptions options)
    : Module("ConvTranspose2d"),
      in_channels(in),
      out_channels(out),
      kernel_size(k),
      stride(s),
      padding(p),
      output_padding(op),
      groups(g),
      dilation(d) {
  check_conv_args("ConvTranspose2d", in, out, k, s, p, d, g, options);
  KILN_CHECK(op.h >= 0 && op.w >= 0 && (op.h < s.h || op.h < d.h) && (op.w < s.w || op.w < d.w),
             "ConvTranspose2d: output_padding ", detail::int2_tuple(op), " must be smaller than stride ",
             detail::int2_tuple(s), " or dilation ", detail::int2_tuple(d));
  weight = register_parameter("weight", empty({in, out / g, k.h, k.w}, options));
  if (with_bias) bias = register_parameter("bias", empty({out}, options));
  reset_parameters();
}

void ConvTranspose2d::reset_parameters(Generator* gen) { reset_conv(weight, bias, gen); }

Tensor ConvTranspose2d::forward(const Tensor& input) {
  return conv_transpose2d(input, weight, bias, stride, padding, output_padding, groups, dilation);
}

std::string ConvTranspose2d::extra_repr() const {
  std::string s = kiln::detail::str(in_channels, ", ", out_channels, ", kernel_size=", detail::int2_tuple(kernel_size),
                                    ", stride=", detail::int2_tuple(stride));
  if (!(padding == Int2(0))) s += ", padding=" + detail::int2_tuple(padding);
  if (!(dilation == Int2(1))) s += ", dilation=" + detail::int2_tuple(dilation);
  if (!(output_padding == Int2(0))) s += ", output_padding=" + detail::int2_tuple(output_padding);
  if (groups != 1) s += ", groups=" + std::to_string(groups);
  if (!bias.defined()) s += ", bias=false";
  return s;
}

}  // namespace kiln::nn
