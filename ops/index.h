// Joining, splitting and indexing: cat/stack, split/chunk (views), index_select,
// gather/scatter_add and one_hot.
#pragma once
#include <vector>

#include <kiln/core/tensor.h>

namespace kiln {

// Kernel parameters of the indexing slots. index is I64 and contiguous; ops/ has checked
// its values' range on the CPU, and on CUDA the kernels check it on the device.
// index_select: x (outer, n, inner), index (k) -> out (outer, k, inner).
// gather: x (outer, n, inner), index and out (outer, k, inner): out[o,j,i] = x[o, index[o,j,i], i].
// scatter_add: out (outer, n, inner) += src (outer, k, inner) at index (outer, k, inner).
// All contiguous.
struct IndexParams {
  int64_t outer = 1, n = 1, k = 1, inner = 1;
};

Tensor cat(const std::vector<Tensor>& tensors, int64_t dim = 0);
inline Tensor concat(const std::vector<Tensor>& tensors, int64_t dim = 0) { return cat(tensors, dim); }
Tensor stack(const std::vector<Tensor>& tensors, int64_t dim = 0);
// Views of consecutive pieces of split_size (the last may be smaller).
std::vector<Tensor> split(const Tensor& x, int64_t split_size, int64_t dim = 0);
std::vector<Tensor> split_with_sizes(const Tensor& x, const std::vector<int64_t>& sizes, int64_t dim = 0);
std::vector<Tensor> chunk(const Tensor& x, int64_t chunks, int64_t dim = 0);

// out = x with dim restricted to the rows in index (1-D, i32/i64, values in [0, size)).
Tensor index_select(const Tensor& x, int64_t dim, const Tensor& index);
// out[..., j, ...] = x[..., index[..., j, ...], ...] along dim; index has x's shape except at dim.
Tensor gather(const Tensor& x, int64_t dim, const Tensor& index);
// A copy of x with src added at index along dim (index and src have one shape, equal to
// x's except at dim).
Tensor scatter_add(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& src);
Tensor& scatter_add_(Tensor& x, int64_t dim, const Tensor& index, const Tensor& src);
// i64 one-hot encoding along a new last dim; num_classes < 0 means max(index) + 1.
Tensor one_hot(const Tensor& index, int64_t num_classes = -1);

}  // namespace kiln
