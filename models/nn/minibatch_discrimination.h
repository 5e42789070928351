// Minibatch discrimination (Salimans et al., "Improved Techniques for Training GANs",
// 2016, section 3.2): lets the discriminator look at a whole batch, so a generator that
// collapses onto a few outputs is easy to tell from data.
//
//   M_i = x_i T                     (N, B, C), T of shape (A, B * C)
//   c_b(i, j) = exp(-||M_i,b - M_j,b||_1)
//   o(x_i)_b = sum_{j != i} c_b(i, j)        (the j = i term, always 1, is left out)
//   out = [x, o(x)]                 (N, A + B)
#pragma once
#include <cstdint>
#include <string>

#include <kiln/core/generator.h>
#include <kiln/core/tensor.h>
#include <kiln/models/nn/module.h>

namespace kiln::nn {

// x (N, A), T (A, B * C) -> (N, A + B). Differentiable (twice) in x and T.
Tensor minibatch_discrimination(const Tensor& x, const Tensor& T, int64_t num_kernels, int64_t kernel_dim);

class MinibatchDiscrimination : public Module {
 public:
  // T ~ N(0, init_std^2); init_std 0 means 1/sqrt(in_features), so the L1 distances
  // stay O(1) whatever the feature width.
  MinibatchDiscrimination(int64_t in_features, int64_t num_kernels = 50, int64_t kernel_dim = 5,
                          double init_std = 0, Generator* gen = nullptr);
  Tensor forward(const Tensor& input) override;
  std::string extra_repr() const override;

  const int64_t in_features, num_kernels, kernel_dim;
  Tensor T;  // (in_features, num_kernels * kernel_dim)
};

}  // namespace kiln::nn
