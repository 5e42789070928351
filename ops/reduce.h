// Reductions over any set of dims (an empty list means all dims), with keepdim.
#pragma once
#include <optional>
#include <vector>

#include <kiln/core/kernel_list.h>
#include <kiln/core/tensor.h>

namespace kiln {

// The reduction kernel slot `reduce` and its ReduceParams are core's (core/kernel_list.h):
// autograd's sum_to_shape needs them.

using Dims = std::vector<int64_t>;

// Sum of integers or bool gives i64; mean needs a floating input.
Tensor sum(const Tensor& x, const Dims& dims = {}, bool keepdim = false);
Tensor mean(const Tensor& x, const Dims& dims = {}, bool keepdim = false);
// max/min over dims return the values only: they are PyTorch's amax/amin (not torch.max(x,
// dim), which also returns indices). Where several elements tie for the max (min), the
// gradient is split evenly between them, as amax's is. NaN wins. Empty dims throw.
Tensor max(const Tensor& x, const Dims& dims = {}, bool keepdim = false);
Tensor min(const Tensor& x, const Dims& dims = {}, bool keepdim = false);
inline Tensor amax(const Tensor& x, const Dims& dims = {}, bool keepdim = false) { return max(x, dims, keepdim); }
inline Tensor amin(const Tensor& x, const Dims& dims = {}, bool keepdim = false) { return min(x, dims, keepdim); }
// Index (i64) of the first max/min along dim, or in the flattened tensor without a dim.
Tensor argmax(const Tensor& x, std::optional<int64_t> dim = std::nullopt, bool keepdim = false);
Tensor argmin(const Tensor& x, std::optional<int64_t> dim = std::nullopt, bool keepdim = false);
// Variance and standard deviation with Bessel's correction by default (two-pass): the sum
// of squared deviations over n elements divided by max(0, n - correction), as PyTorch
// does (so n <= correction gives inf or NaN, and an empty reduction NaN).
Tensor var(const Tensor& x, const Dims& dims = {}, int64_t correction = 1, bool keepdim = false);
Tensor std(const Tensor& x, const Dims& dims = {}, int64_t correction = 1, bool keepdim = false);

}  // namespace kiln
