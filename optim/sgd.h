// Stochastic gradient descent with momentum, dampening, Nesterov momentum and L2 weight
// decay: exactly torch.optim.SGD. For each param with a gradient:
//   g = grad (negated when maximize);  g = g + weight_decay * p
//   if momentum != 0:  buf = g on the first step (a copy), then
//                      buf = momentum * buf + (1 - dampening) * g;
//                      g = nesterov ? g + momentum * buf : buf
//   p = p - lr * g
// State: state.<i>.momentum_buffer (momentum != 0 only); no step count.
#pragma once
#include <vector>

#include <kiln/optim/optimizer.h>

namespace kiln {

struct SGDOptions {
  double lr = 1e-3;
  double momentum = 0.0;
  double dampening = 0.0;
  double weight_decay = 0.0;
  bool nesterov = false;  // needs momentum > 0 and dampening == 0
  bool maximize = false;
};

// Group options: "lr", "momentum", "dampening", "weight_decay", "nesterov", "maximize".
class SGD final : public Optimizer {
 public:
  explicit SGD(const std::vector<Tensor>& params, const SGDOptions& options = {});
  explicit SGD(const std::vector<ParamGroup>& groups, const SGDOptions& defaults = {});
  const char* name() const override { return "SGD"; }

 protected:
  void check_options(const std::map<std::string, double>& options, size_t group) const override;
  std::vector<std::string> state_names() const override { return {"momentum_buffer"}; }
  std::vector<std::string> required_state_names() const override { return {}; }
  bool counts_steps() const override { return false; }
  void update(size_t group, const std::vector<size_t>& indices, const std::vector<Tensor>& grads) override;
};

}  // namespace kiln
