// Choosing sparse inference kernels per layer, by measurement: a pruned Conv2d or Linear
// runs the direct sparse convolution / CSR product (ops/sparse.h) instead of its dense
// kernel where that is faster on this machine, for the shape the layer sees.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <kiln/core/tensor.h>
#include <kiln/models/nn/module.h>

namespace kiln::prune {

struct SparseChoice {
  std::string layer;     // module path
  double sparsity = 0;   // zero weights
  int64_t batch = 0;     // the example's batch
  double dense_ms = 0, sparse_ms = 0;  // median time of one call on the layer's input at `batch`
  bool sparse = false;   // the sparse kernel won at `batch`
  double dense_ms_b1 = 0, sparse_ms_b1 = 0;  // the same for one image
  bool sparse_b1 = false;                    // the sparse kernel won for one image
};

// For every Conv2d (one group, dilation 1, zero padding) and Linear whose weight is at
// least `min_sparsity` zeros: times its dense kernel and its sparse kernel on an input of
// the shape it gets when the model runs `example` (the batch to optimise for), and on one
// image of it, and sets the layer's eval_kernel to run the sparse kernel for the batches
// where it was faster: a call with at least sqrt(batch) images (the nearer size on a log
// scale) follows the example batch's result, a smaller one the single image's (the sparse
// kernel's advantage changes with the batch: it is chosen per layer and per batch size,
// and the dense kernel runs otherwise). The layers use it in eval mode without gradients;
// training is unaffected. CPU models only (throws otherwise).
std::vector<SparseChoice> use_sparse_kernels(const std::shared_ptr<nn::Module>& model, const Tensor& example,
                                             double min_sparsity = 0.5, int64_t repeats = 5);
// Removes every eval_kernel (back to the dense kernels, e.g. before training again).
void clear_sparse_kernels(nn::Module& model);
// The choices as a table, for the terminal.
std::string format_sparse_choices(const std::vector<SparseChoice>& choices);

}  // namespace kiln::prune
