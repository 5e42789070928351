// Gradient clipping by global norm (torch.nn.utils.clip_grad_norm_), without a host
// synchronisation: the total norm and the clip coefficient stay device tensors, and the
// gradients are scaled by the coefficient in place.
#pragma once
#include <limits>
#include <vector>

#include <kiln/core/tensor.h>

namespace kiln {

inline constexpr double kInfNorm = std::numeric_limits<double>::infinity();

// The norm of all params' gradients taken together (params without a gradient are
// skipped): (sum_i sum |g_i|^p)^(1/p) for p > 0, max |g| for p = kInfNorm. A 0-d tensor
// on the first gradient's device, f64 when any gradient is f64 and f32 otherwise (half
// gradients are summed in f32); 0 (f32, CPU) when no param has a gradient.
Tensor total_grad_norm(const std::vector<Tensor>& params, double norm_type = 2.0);

// Scales every gradient by min(1, max_norm / (total_norm + 1e-6)) in place and returns
// total_norm (as total_grad_norm). Only error_if_nonfinite reads a value back: it then
// throws kiln::Error when the norm is NaN or infinite (leaving the gradients as they were).
Tensor clip_grad_norm_(const std::vector<Tensor>& params, double max_norm, double norm_type = 2.0,
                       bool error_if_nonfinite = false);

}  // namespace kiln
