// ProxGen's proximal Adam (Yun, Lozano & Yang, "Adaptive proximal gradient methods for
// structured neural networks", NeurIPS 2021, Algorithm 1 with Adam's preconditioner):
// minimises loss(w) + lambda * sum_i |w_i|^p for p = 0, 1/2, 2/3 or 1 by a proximal step
// in the metric of Adam's preconditioner C_t = diag(sqrt(v_hat_t)) + eps. For each param
// with its step count t incremented first:
//   g = grad + weight_decay * w                    (optional L2 in the gradient, as Adam)
//   m = beta1 m + (1 - beta1) g;  v = beta2 v + (1 - beta2) g^2
//   denom = sqrt(v) / sqrt(1 - beta2^t) + eps      (C_t, with Adam's bias correction)
//   w = prox(w - lr / (1 - beta1^t) * m / denom,  lr * lambda / denom)
// where prox(z, eta) = argmin_x 1/2 (x - z)^2 + eta |x|^p, element by element
// (optim/prox.h: soft/hard thresholding and the closed forms for p = 1/2 and 2/3), which
// is the paper's argmin <m, w> + lambda r(w) + 1/(2 lr) (w - w_t)^T C_t (w - w_t) for a
// diagonal C_t. Unlike an L1 penalty in the gradient, the proximal step puts weights at
// exactly 0 (sparsity without a separate pruning step).
// One fused kernel per step (optim/fused.h: CPU reference optim/cpu/prox_adam.cpp, CUDA
// cuda/kernels/optim.cu).
#pragma once
#include <vector>

#include <kiln/optim/optimizer.h>
#include <kiln/optim/prox.h>

namespace kiln {

struct ProxAdamOptions {
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.0;
  double lambda = 1e-4;  // the penalty's weight
  double p = 1.0;        // the penalty's exponent: 0, 0.5, 2/3 or 1
};

// Group options: "lr", "beta1", "beta2", "eps", "weight_decay", "lambda", "p" (a group
// with lambda 0, e.g. biases and norm scales, is plain Adam). State: state.<i>.step,
// .exp_avg, .exp_avg_sq (Adam's names).
class ProxAdam final : public Optimizer {
 public:
  explicit ProxAdam(const std::vector<Tensor>& params, const ProxAdamOptions& options = {});
  explicit ProxAdam(const std::vector<ParamGroup>& groups, const ProxAdamOptions& defaults = {});
  const char* name() const override { return "ProxAdam"; }

 protected:
  void check_options(const std::map<std::string, double>& options, size_t group) const override;
  std::vector<std::string> state_names() const override { return {"exp_avg", "exp_avg_sq"}; }
  std::vector<std::string> required_state_names() const override { return {"exp_avg", "exp_avg_sq"}; }
  bool counts_steps() const override { return true; }
  void update(size_t group, const std::vector<size_t>& indices, const std::vector<Tensor>& grads) override;
};

// The penalty of exponent p (0, 0.5, 2/3 within 1e-9, or 1); throws kiln::Error otherwise.
LpPenalty lp_penalty(double p);
// sum_i |w_i|^p over the params (the count of non-zeros for p = 0), for logging the
// regulariser: lambda times this is the penalty ProxAdam minimises.
double lp_penalty_value(const std::vector<Tensor>& params, double p);

}  // namespace kiln
