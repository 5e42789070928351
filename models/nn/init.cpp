// torch.nn.init's definitions over kiln's Philox generator.
#include <kiln/models/nn/init.h>

#include <cmath>

#include <kiln/core/autograd.h>
#include <kiln/core/log.h>
#include <kiln/ops/binary.h>
#include <kiln/ops/checks.h>

namespace kiln::nn::init {

namespace {

void check_random_target(const char* op, const Tensor& t) {
  kiln::detail::check_defined(op, t, "tensor");
  kiln::detail::check_floating(op, t);
}

// The dtype random numbers are drawn and transformed in before the cast to the target.
DType draw_dtype(const Tensor& t) { return accumulate_dtype(t.dtype()); }

// Writes src (cast) into t without recording, whatever t's requires_grad.
Tensor write(const Tensor& t, const Tensor& src) {
  NoGradGuard no_grad;
  Tensor dst = t;
  dst.copy_(src);
  return t;
}

bool zero_element(const char* op, const Tensor& t) {
  if (t.numel() != 0) return false;
  log_debug(op, ": initialising a zero-element tensor ", shape_str(t.sizes()), " is a no-op");
  return true;
}

int64_t fan_of(const Tensor& t, FanMode mode) {
  auto [fan_in, fan_out] = calculate_fan_in_and_fan_out(t);
  return mode == FanMode::FanIn ? fan_in : fan_out;
}

}  // namespace

double calculate_gain(Nonlinearity nonlinearity, std::optional<double> param) {
  switch (nonlinearity) {
    case Nonlinearity::Linear:
    case Nonlinearity::Conv1d:
    case Nonlinearity::Conv2d:
    case Nonlinearity::Conv3d:
    case Nonlinearity::ConvTranspose1d:
    case Nonlinearity::ConvTranspose2d:
    case Nonlinearity::ConvTranspose3d:
    case Nonlinearity::Sigmoid: return 1.0;
    case Nonlinearity::Tanh: return 5.0 / 3.0;
    case Nonlinearity::ReLU: return std::sqrt(2.0);
    case Nonlinearity::LeakyReLU: {
      double slope = param.value_or(0.01);
      return std::sqrt(2.0 / (1.0 + slope * slope));
    }
    case Nonlinearity::SELU: return 3.0 / 4.0;
  }
  throw Error("calculate_gain: unknown nonlinearity");
}

std::pair<int64_t, int64_t> calculate_fan_in_and_fan_out(const Tensor& tensor) {
  kiln::detail::check_defined("calculate_fan_in_and_fan_out", tensor, "tensor");
  KILN_CHECK(tensor.dim() >= 2, "calculate_fan_in_and_fan_out: fan in and fan out cannot be computed for a tensor "
             "with fewer than 2 dimensions, got ", describe(tensor));
  int64_t receptive = 1;
  for (int64_t d = 2; d < tensor.dim(); ++d) receptive *= tensor.size(d);
  return {tensor.size(1) * receptive, tensor.size(0) * receptive};
}

Tensor uniform_(const Tensor& tensor, double a, double b, Generator* gen) {
  check_random_target("uniform_", tensor);
  KILN_CHECK(a <= b, "uniform_: expects a <= b, got a = ", a, ", b = ", b);
  if (tensor.numel() == 0) return tensor;
  Tensor u = rand(tensor.sizes(), TensorOptions(draw_dtype(tensor), tensor.device()), gen);
  NoGradGuard no_grad;
  return write(tensor, add(mul(u, b - a), a));
}

Tensor normal_(const Tensor& tensor, double mean, double std, Generator* gen) {
  check_random_target("normal_", tensor);
  KILN_CHECK(std >= 0.0, "normal_: expects std >= 0, got ", std);
  if (tensor.numel() == 0) return tensor;
  Tensor z = randn(tensor.sizes(), TensorOptions(draw_dtype(tensor), tensor.device()), gen);
  NoGradGuard no_grad;
  return write(tensor, add(mul(z, std), mean));
}

Tensor constant_(const Tensor& tensor, double value) {
  kiln::detail::check_defined("constant_", tensor, "tensor");
  NoGradGuard no_grad;
  Tensor t = tensor;
  t.fill_(value);
  return tensor;
}

Tensor zeros_(const Tensor& tensor) { return constant_(tensor, 0.0); }
Tensor ones_(const Tensor& tensor) { return constant_(tensor, 1.0); }

Tensor xavier_uniform_(const Tensor& tensor, double gain, Generator* gen) {
  check_random_target("xavier_uniform_", tensor);
  auto [fan_in, fan_out] = calculate_fan_in_and_fan_out(tensor);
  if (zero_element("xavier_uniform_", tensor)) return tensor;
  double std = gain * std::sqrt(2.0 / static_cast<double>(fan_in + fan_out));
  double bound = std::sqrt(3.0) * std;
  return uniform_(tensor, -bound, bound, gen);
}

Tensor xavier_normal_(const Tensor& tensor, double gain, Generator* gen) {
  check_random_target("xavier_normal_", tensor);
  auto [fan_in, fan_out] = calculate_fan_in_and_fan_out(tensor);
  if (zero_element("xavier_normal_", tensor)) return tensor;
  double std = gain * std::sqrt(2.0 / static_cast<double>(fan_in + fan_out));
  return normal_(tensor, 0.0, std, gen);
}

Tensor kaiming_uniform_(const Tensor& tensor, double a, FanMode mode, Nonlinearity nonlinearity, Generator* gen) {
  check_random_target("kaiming_uniform_", tensor);
  if (zero_element("kaiming_uniform_", tensor)) return tensor;
  int64_t fan = fan_of(tensor, mode);
  double std = calculate_gain(nonlinearity, a) / std::sqrt(static_cast<double>(fan));
  double bound = std::sqrt(3.0) * std;
  return uniform_(tensor, -bound, bound, gen);
}

Tensor kaiming_normal_(const Tensor& tensor, double a, FanMode mode, Nonlinearity nonlinearity, Generator* gen) {
  check_random_target("kaiming_normal_", tensor);
  if (zero_element("kaiming_normal_", tensor)) return tensor;
  int64_t fan = fan_of(tensor, mode);
  double std = calculate_gain(nonlinearity, a) / std::sqrt(static_cast<double>(fan));
  return normal_(tensor, 0.0, std, gen);
}

}  // namespace kiln::nn::init
