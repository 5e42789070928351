// Numerically stable softmax and log-softmax over one dim.
#pragma once
#include <kiln/core/tensor.h>

namespace kiln {

// Kernel parameters (slot `softmax`): x and out contiguous (outer, n, inner), (log-)softmax
// over n.
struct SoftmaxParams {
  int64_t outer = 1, n = 1, inner = 1;
  bool log = false;
};

// Kernel slot softmax_backward (first-order gradients in one pass over each row): y the
// forward's output, g its gradient, gx the input's; contiguous (outer, n, inner), one
// floating dtype; sums over n in f32 (f64 for f64):
//   softmax:     gx = y (g - sum_j g y)        log_softmax: gx = g - exp(y) sum_j g

Tensor softmax(const Tensor& x, int64_t dim = -1);
Tensor log_softmax(const Tensor& x, int64_t dim = -1);

}  // namespace kiln
