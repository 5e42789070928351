// Entropy-SGD (Chaudhari et al., ICLR 2017, Algorithm 1) as a wrapper around a base
// optimizer (the paper's outer step is SGD with Nesterov momentum). One step:
//   x' = mu = x
//   repeat L times (each on a fresh minibatch: the closure draws it):
//     dx' = grad f(x') - gamma (x - x')
//     x'  = x' - inner_lr dx' + sqrt(inner_lr) noise N(0, I)
//     mu  = (1 - alpha) mu + alpha x'
//   x.grad = gamma (x - mu)     (the gradient of the negative local entropy), base.step()
// with scoping gamma_t = gamma (1 + scoping)^t over the outer steps t = 0, 1, ... The
// Langevin noise of step t comes from Generator(seed) at a fixed offset for t, the same on
// every rank of a data-parallel job (whose closures all-reduce the gradients).
// State dict: the base optimizer's, plus "entropy_sgd.step" (0-d f64).
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <string>

#include <kiln/optim/optimizer.h>

namespace kiln {

struct EntropySGDOptions {
  int64_t inner_steps = 20;  // L
  double gamma = 0.03, scoping = 1e-3;
  double inner_lr = 0.1, noise = 1e-4, alpha = 0.75;
  uint64_t seed = 0;
};

class EntropySGD {
 public:
  // Throws kiln::Error for L < 1, gamma <= 0, scoping < 0, inner_lr <= 0, noise < 0 or alpha
  // outside (0, 1].
  EntropySGD(Optimizer& base, const EntropySGDOptions& options = {});

  // closure(): computes the loss on the next minibatch at the params' current values and
  // calls backward on it; called inner_steps times. Returns the mean of those losses.
  double step(const std::function<Tensor()>& closure);

  double gamma() const;  // gamma_t of the next step
  int64_t steps() const { return steps_; }
  Optimizer& base() { return base_; }
  std::map<std::string, Tensor> state_dict() const;
  void load_state_dict(const std::map<std::string, Tensor>& state);

 private:
  Optimizer& base_;
  EntropySGDOptions o_;
  int64_t steps_ = 0;
};

}  // namespace kiln
