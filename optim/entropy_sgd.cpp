#include <kiln/optim/entropy_sgd.h>

#include <cmath>
#include <vector>

#include <kiln/core/autograd.h>
#include <kiln/core/error.h>
#include <kiln/core/generator.h>
#include <kiln/ops/binary.h>

namespace kiln {

EntropySGD::EntropySGD(Optimizer& base, const EntropySGDOptions& o) : base_(base), o_(o) {
  KILN_CHECK(o.inner_steps >= 1, "EntropySGD: inner_steps must be >= 1, got ", o.inner_steps);
  KILN_CHECK(o.gamma > 0 && std::isfinite(o.gamma), "EntropySGD: gamma must be > 0, got ", o.gamma);
  KILN_CHECK(o.scoping >= 0 && std::isfinite(o.scoping), "EntropySGD: scoping must be >= 0, got ", o.scoping);
  KILN_CHECK(o.inner_lr > 0 && std::isfinite(o.inner_lr), "EntropySGD: inner_lr must be > 0, got ", o.inner_lr);
  KILN_CHECK(o.noise >= 0 && std::isfinite(o.noise), "EntropySGD: noise must be >= 0, got ", o.noise);
  KILN_CHECK(o.alpha > 0 && o.alpha <= 1, "EntropySGD: alpha must lie in (0, 1], got ", o.alpha);
}

double EntropySGD::gamma() const { return o_.gamma * std::pow(1 + o_.scoping, double(steps_)); }

double EntropySGD::step(const std::function<Tensor()>& closure) {
  KILN_CHECK(static_cast<bool>(closure), "EntropySGD.step: needs a closure that computes the loss and calls backward");
  const double g = gamma();
  std::vector<Tensor> params, x, mu;
  for (size_t i = 0; i < base_.num_params(); ++i) {
    params.push_back(base_.param(i));
    x.push_back(base_.param(i).detach().clone());
    mu.push_back(base_.param(i).detach().clone());
  }
  Generator gen(o_.seed);
  gen.set_state(o_.seed, static_cast<uint64_t>(steps_) << 40);
  const double sd = std::sqrt(o_.inner_lr) * o_.noise;
  double loss_sum = 0;
  for (int64_t l = 0; l < o_.inner_steps; ++l) {
    base_.zero_grad();
    loss_sum += closure().item<double>();
    NoGradGuard no_grad;
    for (size_t i = 0; i < params.size(); ++i) {
      Tensor xp = params[i];  // x' lives in the params (the closure evaluates there)
      Tensor gr = xp.grad();
      Tensor d = sub(gr.defined() ? gr : zeros_like(xp), mul(sub(x[i], xp), g));
      xp.sub_(d, o_.inner_lr);
      if (sd > 0) xp.add_(randn(xp.sizes(), TensorOptions(xp.dtype()), &gen).to(xp.device()), sd);
      mu[i].mul_(1 - o_.alpha).add_(xp, o_.alpha);
    }
  }
  {
    NoGradGuard no_grad;
    for (size_t i = 0; i < params.size(); ++i) {
      params[i].copy_(x[i]);
      params[i].set_grad(mul(sub(x[i], mu[i]), g));
    }
  }
  base_.step();
  ++steps_;
  return loss_sum / double(o_.inner_steps);
}

std::map<std::string, Tensor> EntropySGD::state_dict() const {
  auto s = base_.state_dict();
  s["entropy_sgd.step"] = scalar_tensor(double(steps_), TensorOptions(DType::F64));
  return s;
}

void EntropySGD::load_state_dict(const std::map<std::string, Tensor>& state) {
  auto it = state.find("entropy_sgd.step");
  KILN_CHECK(it != state.end(), "EntropySGD::load_state_dict: no \"entropy_sgd.step\" entry");
  std::map<std::string, Tensor> rest = state;
  rest.erase("entropy_sgd.step");
  base_.load_state_dict(rest);
  steps_ = static_cast<int64_t>(it->second.to(kCPU).item<double>());
}

}  // namespace kiln
