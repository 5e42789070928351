// Loss functions with PyTorch's semantics: cross_entropy (one fused log-softmax + loss
// kernel per row on CUDA), nll_loss, binary_cross_entropy_with_logits and mse_loss.
#pragma once
#include <cstdint>

#include <kiln/core/tensor.h>

namespace kiln {

// Kernel parameters of the fused cross entropy (slots cross_entropy_forward/backward).
// Forward: logits (rows, C) contiguous floating, C > 0; target I64 (rows); losses and lse
// (rows) in accumulate_dtype(logits): lse[r] = logsumexp_c logits[r, c]; losses[r] = 0
// where target[r] == ignore_index, else (1 - eps)(lse - x[r, t]) + eps (lse - mean_c x[r, c]).
// Backward: dlogits (rows, C), logits' dtype: 0 in ignored rows, else
// (exp(x - lse[r]) - eps/C - (1 - eps)[c == t]) * grad[r]; grad in the accumulation
// dtype with `rows` elements or one (the same value for every row).
struct CrossEntropyParams {
  int64_t ignore_index = -100;
  double label_smoothing = 0;
};

// How per-element losses are combined: None keeps them (the target's shape), Sum adds
// them, Mean averages them (for cross_entropy and nll_loss: over the targets that are
// not ignore_index; NaN when every target is ignored, as in PyTorch).
enum class Reduction { None, Mean, Sum };
const char* reduction_name(Reduction r);

// Cross entropy of class-index targets: logits (N, C), (N, C, d1, ...) or (C); target
// i32/i64 of shape (N), (N, d1, ...) or () with values in [0, C) or equal to ignore_index.
// Per element: nll = logsumexp(x) - x[t]; with label smoothing eps in [0, 1]:
//   loss = (1 - eps) nll + eps / C * sum_c(-log_softmax(x)_c).
// Elements whose target is ignore_index contribute 0 and do not count in the mean.
// Computed in f32 (f64 for f64 logits); the result has the logits' dtype.
Tensor cross_entropy(const Tensor& logits, const Tensor& target, Reduction reduction = Reduction::Mean,
                     int64_t ignore_index = -100, double label_smoothing = 0.0);

// Negative log likelihood of log-probabilities: loss = -logp[t], with cross_entropy's
// shapes, ignore_index and reductions (cross_entropy(x, t) == nll_loss(log_softmax(x, 1), t)).
Tensor nll_loss(const Tensor& logp, const Tensor& target, Reduction reduction = Reduction::Mean,
                int64_t ignore_index = -100);

// Binary cross entropy on logits, in the stable form
//   loss = max(x, 0) - x y + log(1 + exp(-|x|)),
// and with pos_weight (broadcast to x, typically one weight per class in the last dim)
//   loss = (1 - y) x + (1 + (pos_weight - 1) y) (log(1 + exp(-|x|)) + max(-x, 0)).
// x and y have one shape; y and pos_weight are cast to x's floating dtype. Differentiable
// in x, y and pos_weight.
Tensor binary_cross_entropy_with_logits(const Tensor& x, const Tensor& y, Reduction reduction = Reduction::Mean,
                                        const Tensor& pos_weight = Tensor());

// Mean squared error (a - b)^2; a and b must have one shape (PyTorch only warns when
// they broadcast; here it is an error, since it is almost always a bug).
Tensor mse_loss(const Tensor& a, const Tensor& b, Reduction reduction = Reduction::Mean);

}  // namespace kiln
