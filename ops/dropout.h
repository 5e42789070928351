// Inverted dropout with a counter-based mask: element i of a call that reserved counters
// [o, o + numel) from its generator is kept iff the Philox uniform sample of counter o + i
// (the one rand() would draw there) is >= p, so CPU and CUDA drop the same elements for
// the same generator state. The backward regenerates the mask from (seed, o) instead of
// saving it.
#pragma once
#include <kiln/core/generator.h>
#include <kiln/core/tensor.h>

namespace kiln {

// Kernel parameters (slot `dropout`): x, out contiguous, one shape and floating dtype;
// out[i] = x[i] * (philox_keep(seed, offset + i, philox_keep_threshold(p)) ? 1 / (1 - p) : 0)
// (core/philox.h), the product in accumulate_dtype. 0 <= p < 1.
struct DropoutParams {
  double p = 0;
  uint64_t seed = 0, offset = 0;
};

// out = x * keep / (1 - p) in training mode; x itself when !training or p == 0; zeros
// (x * 0) when p == 1. p must lie in [0, 1]; x must be floating. Draws from `gen` (the
// default generator when null), reserving x.numel() counters.
Tensor dropout(const Tensor& x, double p = 0.5, bool training = true, Generator* gen = nullptr);

// x * keep / (1 - p) with the mask of element i drawn from Philox counter offset + i of
// `seed` (row-major over x's shape): dropout with its counters given, as fused kernels
// that draw the same mask (attention) are checked against. Differentiable (twice).
Tensor dropout_with_mask(const Tensor& x, double p, uint64_t seed, uint64_t offset);
namespace detail {
Tensor apply_dropout_mask(const Tensor& x, double p, uint64_t seed, uint64_t offset);
}

}  // namespace kiln
