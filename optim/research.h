// Optimizers from the research kiln serves, each exactly as its paper's algorithm (the
// formulas below; tests/interop/optim_torch.py checks every one against a step-by-step
// PyTorch transcription of them). They update through fused kernels (optim/fused.h: a CPU
// reference and a CUDA kernel each). The per-param norms of LARS and LAMB, and AdamS's
// v_bar, are read back to the host once per step and group (all params together): one
// synchronisation; Apollo's sums stay on the device. Gradients are
// used as given (no maximize); g below is the gradient.
//
// LARS (You, Gitman & Ginsburg 2017, Algorithm 1), per param w:
//   local = trust_coefficient * |w| / (|g| + weight_decay * |w| + eps)   when "adapt" and
//           |w| > 0 and |g| > 0, else 1        (groups of biases/norm scales: adapt = 0)
//   buf = momentum * buf + lr * local * (g + weight_decay * w);   w = w - buf
// LAMB (You et al., ICLR 2020, Algorithm 2, with Adam's bias correction), t = step:
//   m = beta1 m + (1 - beta1) g;  v = beta2 v + (1 - beta2) g^2
//   u = (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t)) + eps) + weight_decay * w
//   w = w - lr * ratio * u,  ratio = |w| / |u| when "adapt" and both > 0, else 1
// AdamS (Xie et al., "stable weight decay"): Adam without decay in the gradient, and
//   w = w * (1 - lr * weight_decay / sqrt(v_bar)) - lr / (1 - beta1^t) * m / (sqrt(v) /
//   sqrt(1 - beta2^t) + eps), v_bar = the mean of every element of v / (1 - beta2^t) over
//   the group's params (the decay is skipped while v_bar is 0)
// SRSGD (Wang et al. 2020, scheduled-restart Nesterov SGD), per param with its step t:
//   k = (t - 1) mod restart_every + 1;  mu = (k - 1) / (k + 2)
//   v_next = w - lr * (g + weight_decay * w);  w = v_next + mu * (v_next - v);  v = v_next
//   (v starts as w; at k = 1, every restart_every steps, the momentum restarts at 0)
// Apollo (Ma 2020, "Apollo: an adaptive parameter-wise diagonal quasi-Newton method",
//   Algorithm 1, as the author's reference implementation), per param with its step t:
//   g = grad (+ weight_decay * w for decay_type 0, L2);  alpha = (1 - beta) / (1 - beta^t)
//   dg = g - m;  m = m + alpha * dg                     (bias-corrected gradient average)
//   d = d / (|d|_4 + eps)                               (d: the previous update direction)
//   delta = -alpha * sum(dg * d) / (|d|_4 + eps) - sum(B * d^2)   (d already scaled)
//   B = B + delta * d^2                                 (the diagonal Hessian, weak secant)
//   D = max(|B|, sigma)                                 (rectified, sigma = 1 in the paper)
//   d = m / D  (+ weight_decay * w for decay_type 1, decoupled; + weight_decay / mean(D) * w
//              for 2, stable);   w = w - lr_t * d
//   lr_t = init_lr + (lr - init_lr) * (t - 1) / warmup while t - 1 < warmup, else lr
#pragma once
#include <cstdint>
#include <vector>

#include <kiln/optim/optimizer.h>

namespace kiln {

struct LARSOptions {
  double lr = 0.1, momentum = 0.9, weight_decay = 0.0, trust_coefficient = 1e-3, eps = 0.0;
  bool adapt = true;
};
// Group options: "lr", "momentum", "weight_decay", "trust_coefficient", "eps", "adapt".
// State: state.<i>.momentum_buffer.
class LARS final : public Optimizer {
 public:
  explicit LARS(const std::vector<Tensor>& params, const LARSOptions& options = {});
  explicit LARS(const std::vector<ParamGroup>& groups, const LARSOptions& defaults = {});
  const char* name() const override { return "LARS"; }

 protected:
  void check_options(const std::map<std::string, double>& options, size_t group) const override;
  std::vector<std::string> state_names() const override { return {"momentum_buffer"}; }
  std::vector<std::string> required_state_names() const override { return {"momentum_buffer"}; }
  bool counts_steps() const override { return false; }
  void update(size_t group, const std::vector<size_t>& indices, const std::vector<Tensor>& grads) override;
};

struct LAMBOptions {
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-6, weight_decay = 0.01;
  bool adapt = true;
};
// Group options: "lr", "beta1", "beta2", "eps", "weight_decay", "adapt".
// State: state.<i>.step, .exp_avg, .exp_avg_sq.
class LAMB final : public Optimizer {
 public:
  explicit LAMB(const std::vector<Tensor>& params, const LAMBOptions& options = {});
  explicit LAMB(const std::vector<ParamGroup>& groups, const LAMBOptions& defaults = {});
  const char* name() const override { return "LAMB"; }

 protected:
  void check_options(const std::map<std::string, double>& options, size_t group) const override;
  std::vector<std::string> state_names() const override { return {"exp_avg", "exp_avg_sq"}; }
  std::vector<std::string> required_state_names() const override { return {"exp_avg", "exp_avg_sq"}; }
  bool counts_steps() const override { return true; }
  void update(size_t group, const std::vector<size_t>& indices, const std::vector<Tensor>& grads) override;
};

struct AdamSOptions {
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 5e-4;
};
// Group options: "lr", "beta1", "beta2", "eps", "weight_decay".
// State: state.<i>.step, .exp_avg, .exp_avg_sq.
class AdamS final : public Optimizer {
 public:
  explicit AdamS(const std::vector<Tensor>& params, const AdamSOptions& options = {});
  explicit AdamS(const std::vector<ParamGroup>& groups, const AdamSOptions& defaults = {});
  const char* name() const override { return "AdamS"; }

 protected:
  void check_options(const std::map<std::string, double>& options, size_t group) const override;
  std::vector<std::string> state_names() const override { return {"exp_avg", "exp_avg_sq"}; }
  std::vector<std::string> required_state_names() const override { return {"exp_avg", "exp_avg_sq"}; }
  bool counts_steps() const override { return true; }
  void update(size_t group, const std::vector<size_t>& indices, const std::vector<Tensor>& grads) override;
};

struct SRSGDOptions {
  double lr = 0.1, weight_decay = 0.0;
  int64_t restart_every = 40;  // iterations between restarts (>= 1)
};
// Group options: "lr", "weight_decay", "restart_every". State: state.<i>.step and
// state.<i>.prev_iterate (v above).
class SRSGD final : public Optimizer {
 public:
  explicit SRSGD(const std::vector<Tensor>& params, const SRSGDOptions& options = {});
  explicit SRSGD(const std::vector<ParamGroup>& groups, const SRSGDOptions& defaults = {});
  const char* name() const override { return "SRSGD"; }

 protected:
  void check_options(const std::map<std::string, double>& options, size_t group) const override;
  std::vector<std::string> state_names() const override { return {"prev_iterate"}; }
  std::vector<std::string> required_state_names() const override { return {"prev_iterate"}; }
  bool counts_steps() const override { return true; }
  void update(size_t group, const std::vector<size_t>& indices, const std::vector<Tensor>& grads) override;
};

struct ApolloOptions {
  double lr = 1.0, beta = 0.9, eps = 1e-4, sigma = 1.0, weight_decay = 0.0;
  int64_t warmup = 100;   // steps of linear warmup from init_lr to lr (0: none)
  double init_lr = 0.01;
  int decay_type = 0;     // 0: L2 (in the gradient), 1: decoupled, 2: stable (Apollo's three)
};
// Group options: "lr", "beta", "eps", "sigma", "weight_decay", "warmup", "init_lr",
// "decay_type". State: state.<i>.step, .exp_avg_grad (m), .approx_hessian (B), .update (d).
// One fused update (three or four passes per tensor on CUDA, no host synchronisation).
class Apollo final : public Optimizer {
 public:
  explicit Apollo(const std::vector<Tensor>& params, const ApolloOptions& options = {});
  explicit Apollo(const std::vector<ParamGroup>& groups, const ApolloOptions& defaults = {});
  const char* name() const override { return "Apollo"; }

 protected:
  void check_options(const std::map<std::string, double>& options, size_t group) const override;
  std::vector<std::string> state_names() const override { return {"exp_avg_grad", "approx_hessian", "update"}; }
  std::vector<std::string> required_state_names() const override { return state_names(); }
  bool counts_steps() const override { return true; }
  void update(size_t group, const std::vector<size_t>& indices, const std::vector<Tensor>& grads) override;
};

// Annealed Gaussian gradient noise (Neelakantan et al. 2015): adds N(0, sigma_t^2) with
// sigma_t^2 = eta / (1 + t)^gamma to every defined gradient of `params`, in place. The
// noise of step t comes from Generator(seed) at a fixed offset for t, so every rank of a
// data-parallel job adds the same noise (call it after backward, before the step).
// Returns sigma_t. Throws kiln::Error for eta < 0, gamma <= 0 or t < 0.
double add_gradient_noise_(const std::vector<Tensor>& params, int64_t t, double eta, double gamma = 0.55,
                           uint64_t seed = 0);

}  // namespace kiln
