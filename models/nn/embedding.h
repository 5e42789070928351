// The Embedding layer over ops/embedding.h.
#pragma once
#include <cstdint>
#include <optional>
#include <string>

#include <kiln/core/generator.h>
#include <kiln/core/tensor.h>
#include <kiln/models/nn/module.h>

namespace kiln::nn {

// weight (num_embeddings, embedding_dim) ~ N(0, 1), with the row padding_idx (negative
// counts from the end) zeroed and left without gradient. forward(indices) (i32/i64 of
// any shape) -> indices.shape + (embedding_dim).
class Embedding : public Module {
 public:
  Embedding(int64_t num_embeddings, int64_t embedding_dim, std::optional<int64_t> padding_idx = std::nullopt,
            TensorOptions options = {});
  void reset_parameters(Generator* gen = nullptr);
  Tensor forward(const Tensor& indices) override;
  std::string extra_repr() const override;

  const int64_t num_embeddings, embedding_dim;
  const std::optional<int64_t> padding_idx;  // in [0, num_embeddings) once constructed
  Tensor weight;
};

}  // namespace kiln::nn
