// Normalisation: batch norm (with running statistics), layer norm and group norm, each
// one fused forward kernel and one fused backward kernel per device (PyTorch's
// torch.nn.functional semantics). Statistics are computed in f32 for f16/bf16/f32 input
// and in f64 for f64 input. Weight and bias are optional (undefined: 1 and 0) and have
// x's dtype, or f32 for f16/bf16 x (mixed precision keeps the parameters in f32).
#pragma once
#include <kiln/core/tensor.h>

namespace kiln {

// Kernel parameters of the normalisation slots. x, y, dy, dx: contiguous, one floating
// dtype; x seen as (N, C, S) (S: the product of the spatial dims) for batch and group norm
// and as (M, D) rows for layer norm. Params (weight, bias, running stats; dweight, dbias):
// contiguous, x's dtype or F32 for F16/BF16 x; an undefined weight is 1, an undefined bias
// 0, an undefined output is not computed. Statistics (mean, invstd/rstd) are contiguous in
// accumulate_dtype(x). ops/norm.cpp hands over non-empty tensors.
//
// Batch norm. training: mean and biased var per channel over (N, S), saved as mean and
// invstd = 1/sqrt(var + eps); defined running stats are updated in place,
// r = (1 - momentum) r + momentum * stat, with the unbiased var (N * S > 1). Eval: mean =
// running_mean, invstd = 1/sqrt(running_var + eps). y = (x - mean) * invstd * weight + bias.
// Backward: xhat = (x - mean) * invstd; dweight = sum dy xhat, dbias = sum dy over (N, S);
// dx = weight invstd (dy - mean(dy) - xhat mean(dy xhat)) in training, weight invstd dy in eval.
struct BatchNormParams {
  int64_t N = 1, C = 1, S = 1;
  bool training = true;
  double momentum = 0.1, eps = 1e-5;
};
// Layer norm over each row of x (M, D): mean, rstd = 1/sqrt(biased var + eps) (M), y =
// (x - mean) * rstd * weight + bias (D). Backward: dx = rstd (g - mean(g) - xhat mean(g xhat))
// per row with g = dy weight; dweight = sum over rows of dy xhat, dbias = sum of dy.
struct LayerNormParams {
  int64_t M = 1, D = 1;
  double eps = 1e-5;
};
// Group norm: x (N, C, S), G groups of C / G consecutive channels; mean and rstd (N, G);
// y = (x - mean) * rstd * weight[c] + bias[c]; the backward as layer norm's per (sample,
// group) with g = dy weight[c]; dweight, dbias (C) summed over (N, S).
struct GroupNormParams {
  int64_t N = 1, C = 1, S = 1, G = 1;
  double eps = 1e-5;
};

// x (N, C, *). training: normalises each channel with the batch mean and biased
// variance over (N, *), and updates the defined running_mean / running_var (C) in place
// with r = (1 - momentum) r + momentum * batch_stat, using the unbiased variance (no
// gradient flows through them). Eval: normalises with running_mean / running_var, which
// must then be defined. weight, bias (C). Training needs more than one value per channel.
Tensor batch_norm(const Tensor& x, const Tensor& running_mean, const Tensor& running_var, const Tensor& weight,
                  const Tensor& bias, bool training, double momentum = 0.1, double eps = 1e-5);

// Normalises over the last normalized_shape.size() dims of x, which must equal
// normalized_shape; weight and bias have normalized_shape.
Tensor layer_norm(const Tensor& x, const Shape& normalized_shape, const Tensor& weight = Tensor(),
                  const Tensor& bias = Tensor(), double eps = 1e-5);

// x (N, C, *): the C channels form num_groups groups of C / num_groups consecutive
// channels; each (sample, group) is normalised over its channels and spatial positions,
// then weight and bias (C) apply per channel.
Tensor group_norm(const Tensor& x, int64_t num_groups, const Tensor& weight = Tensor(), const Tensor& bias = Tensor(),
                  double eps = 1e-5);

}  // namespace kiln
