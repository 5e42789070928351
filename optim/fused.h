// Fused multi-tensor optimizer updates: the checked entry points of Backend::sgd_update
// and Backend::adam_update. One call updates every tensor of the lists in place (on
// CUDA in one kernel launch per few dozen tensors / 20M elements, not one per tensor).
// SGD, Adam and AdamW (optim/sgd.h, optim/adam.h) step through these; they are public
// so that other training loops can use the kernels without an Optimizer object.
#pragma once
#include <vector>

#include <kiln/core/backend.h>
#include <kiln/core/tensor.h>

namespace kiln {

using SgdUpdateArgs = Backend::SgdArgs;
using AdamUpdateArgs = Backend::AdamArgs;

// In place, under NoGradGuard: params[i] (and momentum_buffers[i]) from grads[i]. All
// tensors contiguous and on one device; params f16/bf16/f32/f64 of one dtype; grads of
// the params' shapes and dtype; buffers of the params' shapes in optim_state_dtype.
// momentum_buffers is empty when args.momentum == 0. Throws kiln::Error otherwise.
void fused_sgd_update(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                      const std::vector<Tensor>& momentum_buffers, const SgdUpdateArgs& args);
// The same contract for Adam/AdamW; max_exp_avg_sqs is empty unless args.amsgrad.
void fused_adam_update(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                       const std::vector<Tensor>& exp_avgs, const std::vector<Tensor>& exp_avg_sqs,
                       const std::vector<Tensor>& max_exp_avg_sqs, const AdamUpdateArgs& args);

}  // namespace kiln
