// Embedding lookup: rows of a (V, D) weight table picked by integer indices of any shape.
#pragma once
#include <cstdint>
#include <optional>

#include <kiln/core/tensor.h>

namespace kiln {

// out[..., :] = weight[indices[...], :]: weight (V, D), indices i32/i64 of any shape with
// values in [0, V); out has shape indices.shape + (D). The gradient of weight adds the
// output gradient's rows back at their indices (repeated indices accumulate); the row
// padding_idx (in [-V, V), negative counts from the end) gets no gradient.
Tensor embedding(const Tensor& weight, const Tensor& indices, std::optional<int64_t> padding_idx = std::nullopt);

}  // namespace kiln
