#include <kiln/optim/sam.h>

#include <kiln/core/autograd.h>
#include <kiln/core/error.h>
#include <kiln/ops/binary.h>
#include <kiln/ops/reduce.h>
#include <kiln/ops/unary.h>

namespace kiln {

SAM::SAM(Optimizer& base, const SamOptions& o) : base_(base), options_(o) {
  KILN_CHECK(o.rho > 0, "SAM: rho must be > 0, got ", o.rho);
  KILN_CHECK(o.eta >= 0, "SAM: eta must be >= 0, got ", o.eta);
}

void SAM::first_step() {
  KILN_CHECK(params_.empty(), "SAM.first_step: called twice without second_step");
  NoGradGuard no_grad;
  std::vector<Tensor> params, tg;  // T g per param with a gradient
  std::vector<Tensor> scale;       // T per param (undefined: 1)
  for (size_t i = 0; i < base_.num_params(); ++i) {
    const Tensor& p = base_.param(i);
    Tensor g = p.grad();
    if (!g.defined()) continue;
    Tensor t;
    if (options_.adaptive && p.dim() >= 2) t = add(abs(p), options_.eta);
    params.push_back(p);
    scale.push_back(t);
    tg.push_back(t.defined() ? mul(g, t) : g);
  }
  KILN_CHECK(!params.empty(), "SAM.first_step: no param has a gradient (call backward first)");
  Tensor sq;
  for (const Tensor& x : tg) {
    Tensor s = sum(mul(x, x)).to(DType::F64);
    sq = sq.defined() ? add(sq, s) : s;
  }
  grad_norm_ = sqrt(sq);
  Tensor factor = div(scalar_tensor(options_.rho, TensorOptions(DType::F64, grad_norm_.device())),
                      add(grad_norm_, 1e-12));
  for (size_t k = 0; k < params.size(); ++k) {
    Tensor e = scale[k].defined() ? mul(tg[k], scale[k]) : tg[k];
    e = mul(e, factor.to(e.dtype()));
    Tensor& p = params[k];
    p.add_(e);
    e_.push_back(e);
  }
  params_ = std::move(params);
  base_.zero_grad();
}

void SAM::second_step() {
  KILN_CHECK(!params_.empty(), "SAM.second_step: no first_step before it");
  {
    NoGradGuard no_grad;
    for (size_t k = 0; k < params_.size(); ++k) params_[k].sub_(e_[k]);
  }
  params_.clear();
  e_.clear();
  base_.step();
}

Tensor SAM::step(const std::function<Tensor()>& closure) {
  KILN_CHECK(static_cast<bool>(closure), "SAM.step: needs a closure that computes the loss and calls backward");
  base_.zero_grad();
  Tensor loss = closure().detach();
  first_step();
  perturbed_loss_ = closure().detach();
  second_step();
  return loss;
}

}  // namespace kiln
