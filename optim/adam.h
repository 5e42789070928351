// Adam and AdamW: exactly torch.optim.Adam / torch.optim.AdamW (the single-tensor
// formulas; amsgrad and maximize supported). For each param with a gradient, with its
// step count t incremented first:
//   g = grad (negated when maximize)
//   Adam:  g = g + weight_decay * p          (L2 penalty folded into the gradient)
//   AdamW: p = p * (1 - lr * weight_decay)   (decoupled weight decay)
//   m = lerp(m, g, 1 - beta1)                (= beta1 * m + (1 - beta1) * g)
//   v = beta2 * v + (1 - beta2) * g * g
//   amsgrad: vmax = max(vmax, v), used for v below
//   p = p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
// State: state.<i>.step, state.<i>.exp_avg, state.<i>.exp_avg_sq and, with amsgrad,
// state.<i>.max_exp_avg_sq; f32 for f16/bf16/f32 params, f64 for f64. The step count is
// kept on the host (a double in the state dict, as PyTorch's step is a float tensor).
#pragma once
#include <vector>

#include <kiln/optim/optimizer.h>

namespace kiln {

struct AdamOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;
  bool amsgrad = false;
  bool maximize = false;
};

// AdamW's defaults differ from Adam's only in weight_decay (PyTorch's 1e-2).
struct AdamWOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 1e-2;
  bool amsgrad = false;
  bool maximize = false;
};

// Group options: "lr", "beta1", "beta2", "eps", "weight_decay", "amsgrad", "maximize".
class Adam : public Optimizer {
 public:
  explicit Adam(const std::vector<Tensor>& params, const AdamOptions& options = {});
  explicit Adam(const std::vector<ParamGroup>& groups, const AdamOptions& defaults = {});
  const char* name() const override { return decoupled_ ? "AdamW" : "Adam"; }
  bool decoupled_weight_decay() const { return decoupled_; }

 protected:
  Adam(const std::vector<ParamGroup>& groups, const AdamOptions& defaults, bool decoupled_weight_decay);
  void check_options(const std::map<std::string, double>& options, size_t group) const override;
  std::vector<std::string> state_names() const override { return {"exp_avg", "exp_avg_sq", "max_exp_avg_sq"}; }
  std::vector<std::string> required_state_names() const override { return {"exp_avg", "exp_avg_sq"}; }
  bool counts_steps() const override { return true; }
  void update(size_t group, const std::vector<size_t>& indices, const std::vector<Tensor>& grads) override;

 private:
  bool decoupled_;
};

class AdamW final : public Adam {
 public:
  explicit AdamW(const std::vector<Tensor>& params, const AdamWOptions& options = {});
  explicit AdamW(const std::vector<ParamGroup>& groups, const AdamWOptions& defaults = {});
};

}  // namespace kiln
