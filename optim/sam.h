// Sharpness-aware minimisation (Foret et al., ICLR 2021) and its adaptive variant ASAM
// (Kwon et al., ICML 2021), as a wrapper around any base optimizer. One SAM step is two
// forward/backward passes:
//   g      = grad L(w)                                   (the caller's first backward)
//   e(w)   = rho * T^2 g / ||T g||_2                    (over all params together; T = 1
//                                                          for SAM; for ASAM T = |w| + eta
//                                                          on weights of >= 2 dims and 1 on
//                                                          biases and norm scales)
//   w     <- w + e(w)                                    first_step()
//   g_sam  = grad L(w + e(w))                            (the caller's second backward)
//   w     <- w - e(w); base.step() with g_sam            second_step()
// as in the reference implementations (google-research/sam, davda54/sam; ASAM's
// SamsungLabs code for T). The division uses ||T g|| + 1e-12.
//
// Under DistributedDataParallel both backward passes all-reduce, so every rank computes
// the same e(w) and stays in step (the "m = global batch" SAM of the paper).
// SAM keeps no state of its own between steps: its state dict is the base optimizer's.
#pragma once
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <kiln/optim/optimizer.h>

namespace kiln {

struct SamOptions {
  double rho = 0.05;       // the neighbourhood radius (ASAM papers use larger, e.g. 0.5-2)
  bool adaptive = false;   // ASAM
  double eta = 0.01;       // ASAM: T = |w| + eta
};

class SAM {
 public:
  // base outlives the SAM object. Throws kiln::Error for rho <= 0 or eta < 0.
  explicit SAM(Optimizer& base, const SamOptions& options = {});

  // Moves every param with a gradient to w + e(w) and drops the gradients. Throws
  // kiln::Error when called twice without second_step() between.
  void first_step();
  // Moves the params back to w and steps the base optimizer with the gradients they now
  // hold (those taken at w + e(w)); throws kiln::Error without a first_step().
  void second_step();
  // One whole step: zero_grad, closure() (returns the loss after calling backward on it),
  // first_step, zero_grad, closure(), second_step. Returns the loss at w; the loss at
  // w + e(w) is last_perturbed_loss() (their difference is the sharpness of Foret et al.).
  Tensor step(const std::function<Tensor()>& closure);

  // ||T g|| of the last first_step (a 0-d tensor on the params' device).
  const Tensor& last_grad_norm() const { return grad_norm_; }
  const Tensor& last_perturbed_loss() const { return perturbed_loss_; }
  Optimizer& base() { return base_; }
  const SamOptions& options() const { return options_; }

  std::map<std::string, Tensor> state_dict() const { return base_.state_dict(); }
  void load_state_dict(const std::map<std::string, Tensor>& s) { base_.load_state_dict(s); }

 private:
  Optimizer& base_;
  SamOptions options_;
  std::vector<Tensor> params_, e_;  // perturbed params and their e(w), between the two steps
  Tensor grad_norm_, perturbed_loss_;
};

}  // namespace kiln
