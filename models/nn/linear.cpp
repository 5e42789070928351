// Linear, Identity, Flatten.
#include <kiln/models/nn/linear.h>

#include <kiln/core/autograd.h>

#include <cmath>

#include <kiln/models/nn/init.h>
#include <kiln/ops/autocast.h>
#include <kiln/ops/binary.h>
#include <kiln/ops/checks.h>
#include <kiln/ops/matmul.h>
#include <kiln/ops/unary.h>

namespace kiln::nn {

Tensor linear(const Tensor& input, const Tensor& weight, const Tensor& bias, LinearActivation activation) {
  return fused_linear(input, weight, bias, activation);
}

Linear::Linear(int64_t in_f, int64_t out_f, bool with_bias, TensorOptions options)
    : Module("Linear"), in_features(in_f), out_features(out_f) {
  KILN_CHECK(in_f >= 0 && out_f >= 0, "Linear: in_features and out_features must be >= 0, got ", in_f, " and ",
             out_f);
  KILN_CHECK(is_floating(options.dtype), "Linear: parameters need a floating dtype, got ", dtype_name(options.dtype));
  weight = register_parameter("weight", empty({out_f, in_f}, options));
  if (with_bias) bias = register_parameter("bias", empty({out_f}, options));
  reset_parameters();
}

void Linear::reset_parameters(Generator* gen) {
  init::kaiming_uniform_(weight, std::sqrt(5.0), init::FanMode::FanIn, init::Nonlinearity::LeakyReLU, gen);
  if (bias.defined()) {
    double bound = in_features > 0 ? 1.0 / std::sqrt(static_cast<double>(in_features)) : 0.0;
    init::uniform_(bias, -bound, bound, gen);
  }
}

Tensor Linear::forward(const Tensor& input) {
  if (eval_kernel && !is_training() && !grad_enabled())
    return activation == LinearActivation::GeluTanh ? gelu_tanh(eval_kernel(input)) : eval_kernel(input);
  return linear(input, weight, bias, activation);
}

std::string Linear::extra_repr() const {
  return kiln::detail::str("in_features=", in_features, ", out_features=", out_features,
                           ", bias=", bias.defined() ? "true" : "false",
                           activation == LinearActivation::GeluTanh ? ", activation=gelu_tanh" : "");
}

Tensor Flatten::forward(const Tensor& input) { return input.flatten(start_dim, end_dim); }

std::string Flatten::extra_repr() const {
  return kiln::detail::str("start_dim=", start_dim, ", end_dim=", end_dim);
}

}  // namespace kiln::nn
