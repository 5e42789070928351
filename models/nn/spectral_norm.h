// Spectral normalisation (Miyato et al., "Spectral Normalization for Generative
// Adversarial Networks", ICLR 2018): a layer runs with its weight divided by an estimate
// of the weight's largest singular value, so the layer is (about) 1-Lipschitz. Power
// iteration on the weight as a matrix W (out, in * kH * kW; a ConvTranspose2d's weight is
// (in, out, kH, kW), so its dims 0 and 1 are swapped first, as PyTorch's dim = 1):
//
//   v = normalize(W^T u),  u = normalize(W v)     (n_power_iterations times, no gradient)
//   sigma = u^T W v,       the layer's weight: W / sigma
//
// with normalize(x) = x / max(||x||, eps). u and v are constants for the gradient, as in
// PyTorch's torch.nn.utils.spectral_norm (the gradient reaches W through sigma too).
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include <kiln/core/generator.h>
#include <kiln/core/tensor.h>
#include <kiln/models/nn/module.h>

namespace kiln::nn {

// W / sigma(W) for `weight` viewed as (weight.size(dim), rest) with dim 0 or 1. u (rows) and
// v (columns) are the power iteration's vectors: `iterations` steps from u are taken first
// (without gradient; when write_back, the new u and v are copied into the given tensors).
// Differentiable (twice) in weight.
Tensor spectral_normalize(const Tensor& weight, const Tensor& u, const Tensor& v, int64_t dim = 0,
                          int64_t iterations = 1, double eps = 1e-12, bool write_back = false);

// Wraps a Linear, Conv2d or ConvTranspose2d (child "module"; its parameters stay its own, so
// optimizers, checkpoints and initialisation see the layer's weight W). Buffers u (rows) and
// v (columns), drawn N(0, 1) and normalised, then `warm_up` power iterations on the weight.
// In training mode every forward takes n_power_iterations steps and keeps u and v; in eval
// mode the kept u and v give sigma. functional_call (models/nn/functional.h) runs it at other
// weights with one step from the kept u, v (not kept).
class SpectralNorm : public Module {
 public:
  SpectralNorm(std::shared_ptr<Module> layer, int64_t n_power_iterations = 1, double eps = 1e-12,
               Generator* gen = nullptr, int64_t warm_up = 15);
  Tensor forward(const Tensor& input) override;
  std::string extra_repr() const override;
  // Power iterations on the current weight, kept in u and v (after re-initialising the
  // layer's weight, so that sigma starts close).
  void power_iterate(int64_t steps);
  // The layer's weight over its largest singular value (as estimated by u and v, after
  // `steps` more power iterations, kept when `keep`) for the weight `w` (the layer's own or
  // a replacement of its shape).
  Tensor normalized(const Tensor& w, int64_t steps, bool keep);
  // The weight's position in module->parameters().
  size_t weight_index() const { return weight_index_; }

  std::shared_ptr<Module> module;
  const int64_t n_power_iterations;
  const double eps;
  const int64_t dim;  // 1 for ConvTranspose2d, else 0
  Tensor u, v;

 private:
  size_t weight_index_ = 0;
};

}  // namespace kiln::nn
