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

Tensor softmax(const Tensor& x, int64_t dim = -1);
Tensor log_softmax(const Tensor& x, int64_t dim = -1);

}  // namespace kiln
