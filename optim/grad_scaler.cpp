// Dynamic loss scaling (optim/grad_scaler.h).
#include <kiln/optim/grad_scaler.h>

#include <cmath>

#include <kiln/core/autograd.h>
#include <kiln/core/error.h>
#include <kiln/ops/binary.h>
#include <kiln/optim/clip.h>

namespace kiln {

GradScaler::GradScaler(const GradScalerOptions& o) : options_(o), scale_(o.init_scale) {
  KILN_CHECK(o.init_scale > 0 && std::isfinite(o.init_scale), "GradScaler: init_scale must be positive, got ",
             o.init_scale);
  KILN_CHECK(o.growth_factor > 1.0, "GradScaler: growth_factor must be > 1, got ", o.growth_factor);
  KILN_CHECK(o.backoff_factor > 0.0 && o.backoff_factor < 1.0, "GradScaler: backoff_factor must lie in (0, 1), got ",
             o.backoff_factor);
  KILN_CHECK(o.growth_interval >= 1, "GradScaler: growth_interval must be >= 1, got ", o.growth_interval);
  if (!o.enabled) scale_ = 1.0;
}

Tensor GradScaler::scale(const Tensor& loss) const {
  KILN_CHECK(loss.defined(), "GradScaler::scale: the loss is undefined");
  return options_.enabled ? mul(loss, scale_) : loss;
}

void GradScaler::unscale_(Optimizer& opt) {
  if (!options_.enabled) return;
  KILN_CHECK(!unscaled_, "GradScaler::unscale_: called twice before update() (the gradients are already unscaled)");
  NoGradGuard no_grad;
  std::vector<Tensor> params;
  for (size_t i = 0; i < opt.num_params(); ++i) {
    const Tensor& p = opt.param(i);
    Tensor g = p.grad();
    if (!g.defined()) continue;
    mul_(g, 1.0 / scale_);
    params.push_back(p);
  }
  // One read: the sum of |g| over every gradient is finite iff none is inf or NaN.
  const double total = params.empty() ? 0.0 : total_grad_norm(params, 1.0).item<double>();
  found_inf_ = !std::isfinite(total);
  unscaled_ = true;
}

bool GradScaler::step(Optimizer& opt) {
  if (!options_.enabled) {
    opt.step();
    return true;
  }
  if (!unscaled_) unscale_(opt);
  if (found_inf_) {
    ++skipped_;
    return false;
  }
  opt.step();
  return true;
}

void GradScaler::update() {
  if (!options_.enabled) return;
  KILN_CHECK(unscaled_, "GradScaler::update: call step() (or unscale_) first");
  if (found_inf_) {
    scale_ *= options_.backoff_factor;
    growth_tracker_ = 0;
  } else if (++growth_tracker_ >= options_.growth_interval) {
    scale_ *= options_.growth_factor;
    growth_tracker_ = 0;
  }
  unscaled_ = found_inf_ = false;
}

std::map<std::string, Tensor> GradScaler::state_dict() const {
  return {{"scale", full({}, scale_, TensorOptions(DType::F64))},
          {"growth_tracker", full({}, growth_tracker_, TensorOptions(DType::I64))}};
}

void GradScaler::load_state_dict(const std::map<std::string, Tensor>& state) {
  auto s = state.find("scale");
  auto g = state.find("growth_tracker");
  KILN_CHECK(s != state.end() && g != state.end() && s->second.numel() == 1 && g->second.numel() == 1,
             "GradScaler::load_state_dict: expects one-element 'scale' and 'growth_tracker'");
  const double v = s->second.to(DType::F64).item<double>();
  KILN_CHECK(v > 0 && std::isfinite(v), "GradScaler::load_state_dict: scale must be positive, got ", v);
  scale_ = v;
  growth_tracker_ = g->second.to(DType::I64).item<int64_t>();
}

}  // namespace kiln
