// Normalisation: batch norm (with running statistics), layer norm and group norm, each
// one fused forward kernel and one fused backward kernel per device (PyTorch's
// torch.nn.functional semantics). Statistics are computed in f32 for f16/bf16/f32 input
// and in f64 for f64 input. Weight and bias are optional (undefined: 1 and 0) and have
// x's dtype, or f32 for f16/bf16 x (mixed precision keeps the parameters in f32).
#pragma once
#include <kiln/core/tensor.h>

namespace kiln {

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
