// Reductions over any set of dims (an empty list means all dims), with keepdim.
#pragma once
#include <optional>
#include <vector>

#include <kiln/core/backend.h>
#include <kiln/core/tensor.h>

namespace kiln {

using Dims = std::vector<int64_t>;

// Sum of integers or bool gives i64; mean needs a floating input.
Tensor sum(const Tensor& x, const Dims& dims = {}, bool keepdim = false);
Tensor mean(const Tensor& x, const Dims& dims = {}, bool keepdim = false);
Tensor max(const Tensor& x, const Dims& dims = {}, bool keepdim = false);
Tensor min(const Tensor& x, const Dims& dims = {}, bool keepdim = false);
// Index (i64) of the first max/min along dim, or in the flattened tensor without a dim.
Tensor argmax(const Tensor& x, std::optional<int64_t> dim = std::nullopt, bool keepdim = false);
Tensor argmin(const Tensor& x, std::optional<int64_t> dim = std::nullopt, bool keepdim = false);
// Variance and standard deviation with Bessel's correction by default (two-pass).
Tensor var(const Tensor& x, const Dims& dims = {}, int64_t correction = 1, bool keepdim = false);
Tensor std(const Tensor& x, const Dims& dims = {}, int64_t correction = 1, bool keepdim = false);

}  // namespace kiln
