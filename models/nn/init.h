// Parameter initialisation with PyTorch's definitions (torch.nn.init). Each function
// writes into the tensor in place under NoGradGuard (so it works on parameters that
// require grad) and returns the same handle. Random ones draw from kiln's Philox stream
// (`gen`, or the default generator when null), so CPU and CUDA tensors get the same
// values for the same seed; the numbers are drawn in f32 (f64 for f64 tensors) and cast.
#pragma once
#include <cstdint>
#include <optional>
#include <utility>

#include <kiln/core/generator.h>
#include <kiln/core/tensor.h>

namespace kiln::nn::init {

enum class FanMode { FanIn, FanOut };
enum class Nonlinearity {
  Linear, Conv1d, Conv2d, Conv3d, ConvTranspose1d, ConvTranspose2d, ConvTranspose3d,
  Sigmoid, Tanh, ReLU, LeakyReLU, SELU
};

// The recommended gain for a nonlinearity: 1 for linear/conv/sigmoid, 5/3 for tanh,
// sqrt(2) for relu, sqrt(2 / (1 + slope^2)) for leaky_relu (slope = param, default
// 0.01), 3/4 for selu.
double calculate_gain(Nonlinearity nonlinearity, std::optional<double> param = std::nullopt);

// (fan_in, fan_out) of a weight of shape (out, in, *kernel): in * prod(kernel) and
// out * prod(kernel). Throws for fewer than 2 dims.
std::pair<int64_t, int64_t> calculate_fan_in_and_fan_out(const Tensor& tensor);

// U(a, b).
Tensor uniform_(const Tensor& tensor, double a = 0.0, double b = 1.0, Generator* gen = nullptr);
// N(mean, std^2).
Tensor normal_(const Tensor& tensor, double mean = 0.0, double std = 1.0, Generator* gen = nullptr);
Tensor constant_(const Tensor& tensor, double value);
Tensor zeros_(const Tensor& tensor);
Tensor ones_(const Tensor& tensor);

// Glorot: U(-b, b) with b = gain * sqrt(6 / (fan_in + fan_out)); N(0, std^2) with
// std = gain * sqrt(2 / (fan_in + fan_out)).
Tensor xavier_uniform_(const Tensor& tensor, double gain = 1.0, Generator* gen = nullptr);
Tensor xavier_normal_(const Tensor& tensor, double gain = 1.0, Generator* gen = nullptr);

// He: std = calculate_gain(nonlinearity, a) / sqrt(fan) with fan = fan_in or fan_out;
// uniform: U(-sqrt(3) std, sqrt(3) std); normal: N(0, std^2). A zero-element tensor is
// left alone (PyTorch warns; so does kiln, at debug level).
Tensor kaiming_uniform_(const Tensor& tensor, double a = 0.0, FanMode mode = FanMode::FanIn,
                        Nonlinearity nonlinearity = Nonlinearity::LeakyReLU, Generator* gen = nullptr);
Tensor kaiming_normal_(const Tensor& tensor, double a = 0.0, FanMode mode = FanMode::FanIn,
                       Nonlinearity nonlinearity = Nonlinearity::LeakyReLU, Generator* gen = nullptr);

}  // namespace kiln::nn::init
