// Pooling layers over ops/pool.h: MaxPool2d, AvgPool2d, AdaptiveAvgPool2d (PyTorch's
// arguments; stride defaults to the kernel size).
#pragma once
#include <cstdint>
#include <optional>
#include <string>

#include <kiln/models/nn/module.h>
#include <kiln/ops/conv.h>  // Int2

namespace kiln::nn {

class MaxPool2d : public Module {
 public:
  explicit MaxPool2d(Int2 kernel_size, std::optional<Int2> stride = std::nullopt, Int2 padding = 0,
                     Int2 dilation = 1, bool ceil_mode = false);
  Tensor forward(const Tensor& input) override;
  std::string extra_repr() const override;

  const Int2 kernel_size, stride, padding, dilation;
  const bool ceil_mode;
};

class AvgPool2d : public Module {
 public:
  // divisor_override > 0 replaces the window size as the divisor (0: none).
  explicit AvgPool2d(Int2 kernel_size, std::optional<Int2> stride = std::nullopt, Int2 padding = 0,
                     bool ceil_mode = false, bool count_include_pad = true, int64_t divisor_override = 0);
  Tensor forward(const Tensor& input) override;
  std::string extra_repr() const override;

  const Int2 kernel_size, stride, padding;
  const bool ceil_mode, count_include_pad;
  const int64_t divisor_override;
};

class AdaptiveAvgPool2d : public Module {
 public:
  explicit AdaptiveAvgPool2d(Int2 output_size);
  Tensor forward(const Tensor& input) override;
  std::string extra_repr() const override;

  const Int2 output_size;
};

}  // namespace kiln::nn
