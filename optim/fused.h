// Fused multi-tensor optimizer updates: the checked entry points of the sgd_update,
// adam_update, prox_adam_update, lars_update, srsgd_update, lamb_update, apollo_update and
// adams_update kernel slots (optim/op_list.h). One call updates every
// tensor of the lists in place (on CUDA in one kernel launch per few dozen tensors / 20M
// elements, not one per tensor). SGD, Adam, AdamW (optim/sgd.h, optim/adam.h), ProxAdam
// (optim/proximal.h), LARS, SRSGD, LAMB, Apollo and AdamS (optim/research.h) step through these; they are public
// so that other training loops can use the kernels without an Optimizer object.
#pragma once
#include <vector>

#include <kiln/core/tensor.h>
#include <kiln/optim/prox.h>

namespace kiln {

// Formulas: optim/sgd.h and optim/adam.h (PyTorch's torch.optim.SGD / Adam / AdamW).
struct SgdUpdateArgs {
  double lr = 0, momentum = 0, dampening = 0, weight_decay = 0;
  bool nesterov = false, maximize = false;
  // The momentum buffers are new: buf = g (PyTorch's clone) instead of
  // buf = momentum * buf + (1 - dampening) * g. Their old contents are not read.
  bool init_momentum = false;
};
struct AdamUpdateArgs {
  double lr = 0, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0;
  int64_t step = 1;  // the step being taken (>= 1), for the bias corrections
  bool decoupled_weight_decay = false;  // AdamW: p *= 1 - lr * wd instead of g += wd * p
  bool amsgrad = false, maximize = false;
};

// ProxGen's proximal Adam (optim/proximal.h): Adam's moments with the L2 decay folded
// into the gradient, then the preconditioned proximal step of an L_p penalty
// (optim/prox.h): with denom = sqrt(v) / sqrt(1 - beta2^t) + eps,
//   p = prox_lp(p - lr / (1 - beta1^t) * m / denom,  lr * lambda / denom).
struct ProxAdamUpdateArgs {
  double lr = 0, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0;
  int64_t step = 1;  // the step being taken (>= 1)
  double lambda = 0;  // the penalty's weight (>= 0)
  LpPenalty penalty = LpPenalty::L1;
};

// LARS (optim/research.h) with each tensor's step size computed by the caller (lr times
// its trust ratio): d = g + weight_decay * p; buf = momentum * buf + scales[i] * d; p -= buf.
struct LarsUpdateArgs {
  double momentum = 0, weight_decay = 0;
  std::vector<double> scales;  // one per tensor
};
// SRSGD (optim/research.h): next = p - lr * (g + weight_decay * p); p = next + mu * (next -
// prev); prev = next. With init, prev is set to p first (a param's first step).
struct SrsgdUpdateArgs {
  double lr = 0, weight_decay = 0, mu = 0;
  bool init = false;
};
// AdamS (optim/research.h): m = beta1 m + (1 - beta1) g; v = beta2 v + (1 - beta2) g^2;
// p = p * decay - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps), with the
// group's decay factor 1 - lr * wd / sqrt(v_bar) computed by the caller.
struct AdamSUpdateArgs {
  double lr = 0, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, decay = 1;
  int64_t step = 1;
};

// LAMB (optim/research.h), two passes in one call: m = beta1 m + (1 - beta1) g, v = beta2 v
// + (1 - beta2) g^2, u = m / (1 - beta1^t) / (sqrt(v / (1 - beta2^t)) + eps) + wd * p, with
// |p| and |u| of each tensor summed on the way (one read back for all tensors); then p -=
// lr * ratio * u, ratio = |p| / |u| when adapt and both > 0, else 1.
struct LambUpdateArgs {
  double lr = 0, beta1 = 0.9, beta2 = 0.999, eps = 1e-6, weight_decay = 0;
  int64_t step = 1;
  bool adapt = true;
};

// Apollo (optim/research.h) for params at one step t, in passes over each tensor (the norms
// and dot products stay on the device): g' = g (+ wd * p for decay_type 0); alpha = (1 -
// beta) / (1 - beta^t); dg = g' - m; m += alpha * dg; d = d / (|d|_4 + eps); delta = -alpha *
// sum(dg / (|d|_4 + eps) * d) - sum(B * d^2); B += delta * d^2; D = max(|B|, sigma);
// d = m / D (+ wd * p for decay_type 1, + wd / mean(D) * p for 2); p -= lr * d. `lr` is the
// step's (after Apollo's warmup).
struct ApolloUpdateArgs {
  double lr = 0, beta = 0.9, eps = 1e-4, sigma = 1, weight_decay = 0;
  int decay_type = 0;  // 0 L2, 1 decoupled, 2 stable
  int64_t step = 1;
};

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
// The same contract for LARS (args.scales: one per param), SRSGD (prev_iterates: the state
// v), LAMB, Apollo (its three state lists) and AdamS.
void fused_lars_update(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                       const std::vector<Tensor>& momentum_buffers, const LarsUpdateArgs& args);
void fused_srsgd_update(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                        const std::vector<Tensor>& prev_iterates, const SrsgdUpdateArgs& args);
void fused_lamb_update(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                       const std::vector<Tensor>& exp_avgs, const std::vector<Tensor>& exp_avg_sqs,
                       const LambUpdateArgs& args);
void fused_apollo_update(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                         const std::vector<Tensor>& exp_avg_grads, const std::vector<Tensor>& approx_hessians,
                         const std::vector<Tensor>& updates, const ApolloUpdateArgs& args);
void fused_adams_update(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                        const std::vector<Tensor>& exp_avgs, const std::vector<Tensor>& exp_avg_sqs,
                        const AdamSUpdateArgs& args);
// The same contract for ProxGen's proximal Adam; eps must be > 0 (it bounds lambda's step).
void fused_prox_adam_update(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                            const std::vector<Tensor>& exp_avgs, const std::vector<Tensor>& exp_avg_sqs,
                            const ProxAdamUpdateArgs& args);

}  // namespace kiln
