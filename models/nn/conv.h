// Conv2d and ConvTranspose2d over ops/conv.h, with PyTorch's argument order, parameter
// shapes, default initialisation and printout.
#pragma once
#include <cstdint>
#include <functional>
#include <string>

#include <kiln/core/generator.h>
#include <kiln/core/op_kinds.h>
#include <kiln/core/tensor.h>
#include <kiln/models/nn/module.h>
#include <kiln/ops/conv.h>

namespace kiln::nn {

// weight (out_channels, in_channels / groups, kH, kW), bias (out_channels). Default init
// (PyTorch's _ConvNd.reset_parameters): weight kaiming_uniform_(a = sqrt(5)), i.e.
// U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with fan_in = in_channels / groups * kH * kW, and
// bias U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
class Conv2d : public Module {
 public:
  Conv2d(int64_t in_channels, int64_t out_channels, Int2 kernel_size, Int2 stride = 1, Int2 padding = 0,
         Int2 dilation = 1, int64_t groups = 1, bool bias = true, PaddingMode padding_mode = PaddingMode::Zeros,
         TensorOptions options = {});
  void reset_parameters(Generator* gen = nullptr);
  // (N, C, H, W) or (C, H, W) -> (N, O, Ho, Wo) or (O, Ho, Wo).
  Tensor forward(const Tensor& input) override;
  std::string extra_repr() const override;

  // Channel pruning (models/prune) shrinks the weight and updates these three.
  int64_t in_channels, out_channels;
  const Int2 kernel_size, stride, padding, dilation;
  int64_t groups;
  const PaddingMode padding_mode;
  Tensor weight;
  Tensor bias;  // undefined without bias
  // An inference kernel that replaces the dense convolution in eval mode when no gradient
  // is recorded (prune::use_sparse_kernels sets the direct sparse convolution of the
  // pruned weight here). It holds the weight as it was: clear it before training again.
  std::function<Tensor(const Tensor&)> eval_kernel;
};

// weight (in_channels, out_channels / groups, kH, kW), bias (out_channels). The same
// initialisation as Conv2d, with PyTorch's fan_in of this weight shape
// (out_channels / groups * kH * kW). Zero padding only.
class ConvTranspose2d : public Module {
 public:
  ConvTranspose2d(int64_t in_channels, int64_t out_channels, Int2 kernel_size, Int2 stride = 1, Int2 padding = 0,
                  Int2 output_padding = 0, int64_t groups = 1, bool bias = true, Int2 dilation = 1,
                  TensorOptions options = {});
  void reset_parameters(Generator* gen = nullptr);
  Tensor forward(const Tensor& input) override;
  std::string extra_repr() const override;

  const int64_t in_channels, out_channels;
  const Int2 kernel_size, stride, padding, output_padding;
  const int64_t groups;
  const Int2 dilation;
  Tensor weight;
  Tensor bias;  // undefined without bias
};

namespace detail {
// "(3, 3)": an Int2 as PyTorch prints a conv layer's tuples.
std::string int2_tuple(const Int2& v);
// "2" when both are equal, else "(2, 3)": as PyTorch prints a pooling layer's int-or-tuple.
std::string int2_repr(const Int2& v);
}  // namespace detail

}  // namespace kiln::nn
