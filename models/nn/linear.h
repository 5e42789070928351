// Linear, Identity and Flatten, and the functional form linear(x, W, b).
#pragma once
#include <cstdint>
#include <functional>
#include <string>

#include <kiln/core/generator.h>
#include <kiln/core/tensor.h>
#include <kiln/models/nn/module.h>
#include <kiln/ops/matmul.h>

namespace kiln::nn {

// y = act(x W^T + b) for x of shape (*, in_features), W (out_features, in_features), b
// (out_features) or undefined; y has shape (*, out_features). Differentiable. One fused
// op (kiln::fused_linear, ops/matmul.h: cuBLASLt's bias and GELU epilogues on CUDA).
Tensor linear(const Tensor& input, const Tensor& weight, const Tensor& bias = Tensor(),
              LinearActivation activation = LinearActivation::None);

class Linear : public Module {
 public:
  // PyTorch's default init: W ~ kaiming_uniform_(a = sqrt(5)), i.e. U(-1/sqrt(in), 1/sqrt(in)),
  // and b ~ U(-1/sqrt(in), 1/sqrt(in)) (0 when in_features is 0). Drawn from the default
  // generator; reset_parameters(gen) draws again from another.
  Linear(int64_t in_features, int64_t out_features, bool bias = true, TensorOptions options = {});
  void reset_parameters(Generator* gen = nullptr);
  Tensor forward(const Tensor& input) override;
  std::string extra_repr() const override;

  int64_t in_features;   // channel pruning (models/prune) shrinks the weight and updates both
  int64_t out_features;
  Tensor weight;  // (out_features, in_features)
  Tensor bias;    // (out_features), undefined without bias
  // Applied to the output in the same op (GPT's MLP: GeluTanh, fused into the product's
  // epilogue on CUDA). Not a parameter: the state dict is the same either way.
  LinearActivation activation = LinearActivation::None;
  // An inference kernel used instead of the dense product in eval mode when no gradient is
  // recorded (prune::use_sparse_kernels: the pruned weight in CSR form); clear it before
  // training again.
  std::function<Tensor(const Tensor&)> eval_kernel;
};

// Returns its input.
class Identity : public Module {
 public:
  Identity() : Module("Identity") {}
  Tensor forward(const Tensor& input) override { return input; }
};

// Flattens dims start_dim..end_dim into one (a view when the strides allow).
class Flatten : public Module {
 public:
  explicit Flatten(int64_t start_dim = 1, int64_t end_dim = -1)
      : Module("Flatten"), start_dim(start_dim), end_dim(end_dim) {}
  Tensor forward(const Tensor& input) override;
  std::string extra_repr() const override;

  const int64_t start_dim;
  const int64_t end_dim;
};

}  // namespace kiln::nn
