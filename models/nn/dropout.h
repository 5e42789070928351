// The Dropout layer over ops/dropout.h.
#pragma once
#include <string>

#include <kiln/core/generator.h>
#include <kiln/core/tensor.h>
#include <kiln/models/nn/module.h>

namespace kiln::nn {

// Inverted dropout in training mode (keep with probability 1 - p, scale by 1 / (1 - p));
// the identity in eval mode. Draws from `generator` (the default one when null).
class Dropout : public Module {
 public:
  explicit Dropout(double p = 0.5, Generator* generator = nullptr);
  Tensor forward(const Tensor& input) override;
  std::string extra_repr() const override;

  const double p;
  Generator* generator;
};

}  // namespace kiln::nn
