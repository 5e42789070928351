// Numerically stable softmax and log-softmax over one dim.
#pragma once
#include <kiln/core/tensor.h>

namespace kiln {

Tensor softmax(const Tensor& x, int64_t dim = -1);
Tensor log_softmax(const Tensor& x, int64_t dim = -1);

}  // namespace kiln
