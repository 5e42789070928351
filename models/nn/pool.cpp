// MaxPool2d, AvgPool2d, AdaptiveAvgPool2d.
#include <kiln/models/nn/pool.h>

#include <kiln/models/nn/conv.h>  // detail::int2_repr
#include <kiln/ops/pool.h>

namespace kiln::nn {

namespace {
const char* bool_str(bool b) { return b ? "true" : "false"; }
}  // namespace

MaxPool2d::MaxPool2d(Int2 k, std::optional<Int2> s, Int2 p, Int2 d, bool ceil)
    : Module("MaxPool2d"), kernel_size(k), stride(s.value_or(k)), padding(p), dilation(d), ceil_mode(ceil) {}

Tensor MaxPool2d::forward(const Tensor& input) {
  return max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode);
}

std::string MaxPool2d::extra_repr() const {
  return kiln::detail::str("kernel_size=", detail::int2_repr(kernel_size), ", stride=", detail::int2_repr(stride),
                           ", padding=", detail::int2_repr(padding), ", dilation=", detail::int2_repr(dilation),
                           ", ceil_mode=", bool_str(ceil_mode));
}

AvgPool2d::AvgPool2d(Int2 k, std::optional<Int2> s, Int2 p, bool ceil, bool include_pad, int64_t divisor)
    : Module("AvgPool2d"),
      kernel_size(k),
      stride(s.value_or(k)),
      padding(p),
      ceil_mode(ceil),
      count_include_pad(include_pad),
      divisor_override(divisor) {}

Tensor AvgPool2d::forward(const Tensor& input) {
  return avg_pool2d(input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override);
}

std::string AvgPool2d::extra_repr() const {
  return kiln::detail::str("kernel_size=", detail::int2_repr(kernel_size), ", stride=", detail::int2_repr(stride),
                           ", padding=", detail::int2_repr(padding));
}

AdaptiveAvgPool2d::AdaptiveAvgPool2d(Int2 out) : Module("AdaptiveAvgPool2d"), output_size(out) {
  KILN_CHECK(out.h >= 1 && out.w >= 1, "AdaptiveAvgPool2d: output_size must be >= 1, got ", detail::int2_tuple(out));
}

Tensor AdaptiveAvgPool2d::forward(const Tensor& input) { return adaptive_avg_pool2d(input, output_size); }

std::string AdaptiveAvgPool2d::extra_repr() const { return "output_size=" + detail::int2_repr(output_size); }

}  // namespace kiln::nn
