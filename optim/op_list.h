// optim/'s kernel slots: the fused multi-tensor optimizer updates (see core/kernel.h for
// the mechanism and ops/README.md for the recipe). CPU kernels: optim/cpu/<stem>.cpp; CUDA:
// cuda/kernels/<stem>.cu. optim/fused.cpp checks the lists once before the call.
//
// Each call updates every tensor of the lists in place (on CUDA in as few launches as the
// kernel-argument limit allows). All views are contiguous and on one device; params[i],
// grads[i] and each state list's [i] have one shape; params and grads share one floating
// dtype; state tensors are in optim_state_dtype(param dtype). An empty state list means
// that state is not used (momentum_buffers when momentum == 0, max_exp_avg_sqs unless
// amsgrad). Formulas: PyTorch's torch.optim.SGD / Adam / AdamW (optim/sgd.h, optim/adam.h); ProxGen's
// proximal Adam (optim/fused.h, optim/prox.h); LARS, SRSGD, LAMB, Apollo and AdamS (optim/fused.h,
// optim/research.h).
#pragma once
#include <span>

#include <kiln/core/kernel.h>
#include <kiln/optim/fused.h>

namespace kiln {

using TensorViews = std::span<const TensorView>;

#define KILN_OPTIM_KERNELS(X)                                                                        \
  X(sgd_update, void(TensorViews params, TensorViews grads, TensorViews momentum_buffers,           \
                     const SgdUpdateArgs& args))                                                     \
  X(adam_update, void(TensorViews params, TensorViews grads, TensorViews exp_avgs,                  \
                      TensorViews exp_avg_sqs, TensorViews max_exp_avg_sqs, const AdamUpdateArgs& args)) \
  X(prox_adam_update, void(TensorViews params, TensorViews grads, TensorViews exp_avgs,             \
                           TensorViews exp_avg_sqs, const ProxAdamUpdateArgs& args)) \
  X(lars_update, void(TensorViews params, TensorViews grads, TensorViews momentum_buffers,          \
                      const LarsUpdateArgs& args))                                                   \
  X(srsgd_update, void(TensorViews params, TensorViews grads, TensorViews prev_iterates,            \
                       const SrsgdUpdateArgs& args))                                                 \
  X(adams_update, void(TensorViews params, TensorViews grads, TensorViews exp_avgs,                 \
                       TensorViews exp_avg_sqs, const AdamSUpdateArgs& args)) \
  X(lamb_update, void(TensorViews params, TensorViews grads, TensorViews exp_avgs,                  \
                      TensorViews exp_avg_sqs, const LambUpdateArgs& args)) \
  X(apollo_update, void(TensorViews params, TensorViews grads, TensorViews exp_avg_grads,           \
                        TensorViews approx_hessians, TensorViews updates, const ApolloUpdateArgs& args))

KILN_DECLARE_KERNELS(KILN_OPTIM_KERNELS)

}  // namespace kiln
