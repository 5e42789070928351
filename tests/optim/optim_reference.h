// Hand-written references of PyTorch's torch.optim.SGD and torch.optim.Adam/AdamW
// (the single-tensor formulas of torch/optim/sgd.py and adam.py), on plain vectors of
// doubles, for the optimizer tests. Kept independent of kiln's kernels on purpose.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace kiln::test {

using Vals = std::vector<std::vector<double>>;  // one vector per param

struct RefSgd {
  double lr = 1e-3, momentum = 0, dampening = 0, weight_decay = 0;
  bool nesterov = false, maximize = false;
  Vals buf;
  std::vector<bool> has_buf;

  // Updates the params whose has_grad is true.
  void step(Vals& params, const Vals& grads, const std::vector<bool>& has_grad) {
    buf.resize(params.size());
    has_buf.resize(params.size(), false);
    for (size_t i = 0; i < params.size(); ++i) {
      if (!has_grad[i]) continue;
      std::vector<double>& p = params[i];
      buf[i].resize(p.size());
      for (size_t j = 0; j < p.size(); ++j) {
        double d = maximize ? -grads[i][j] : grads[i][j];
        if (weight_decay != 0) d = d + weight_decay * p[j];  // grad.add(param, alpha=wd)
        if (momentum != 0) {
          if (!has_buf[i]) buf[i][j] = d;                      // torch.clone(grad)
          else buf[i][j] = momentum * buf[i][j] + (1 - dampening) * d;  // mul_(m).add_(g, 1 - damp)
          d = nesterov ? d + momentum * buf[i][j] : buf[i][j];
        }
        p[j] = p[j] + (-lr) * d;  // param.add_(grad, alpha=-lr)
      }
      if (momentum != 0) has_buf[i] = true;
    }
  }
};

struct RefAdam {
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0;
  bool amsgrad = false, maximize = false, decoupled = false;  // decoupled: AdamW
  Vals m, v, vmax;
  std::vector<int64_t> steps;

  void step(Vals& params, const Vals& grads, const std::vector<bool>& has_grad) {
    m.resize(params.size());
    v.resize(params.size());
    vmax.resize(params.size());
    steps.resize(params.size(), 0);
    for (size_t i = 0; i < params.size(); ++i) {
      if (!has_grad[i]) continue;
      std::vector<double>& p = params[i];
      m[i].resize(p.size(), 0.0);
      v[i].resize(p.size(), 0.0);
      vmax[i].resize(p.size(), 0.0);
      const double t = static_cast<double>(++steps[i]);
      const double bias_correction1 = 1 - std::pow(beta1, t);
      const double bias_correction2 = 1 - std::pow(beta2, t);
      const double step_size = lr / bias_correction1;
      const double bias_correction2_sqrt = std::sqrt(bias_correction2);
      for (size_t j = 0; j < p.size(); ++j) {
        double g = maximize ? -grads[i][j] : grads[i][j];
        if (weight_decay != 0) {
          if (decoupled) p[j] = p[j] * (1 - lr * weight_decay);  // param.mul_(1 - lr * wd)
          else g = g + weight_decay * p[j];                       // grad.add(param, alpha=wd)
        }
        // exp_avg.lerp_(grad, 1 - beta1), with lerp's two-sided formula
        const double w = 1 - beta1;
        m[i][j] = w < 0.5 ? m[i][j] + w * (g - m[i][j]) : g - (g - m[i][j]) * (1 - w);
        v[i][j] = v[i][j] * beta2 + (1 - beta2) * g * g;  // mul_(beta2).addcmul_(g, g, 1 - beta2)
        double s = v[i][j];
        if (amsgrad) {
          vmax[i][j] = std::max(vmax[i][j], v[i][j]);
          s = vmax[i][j];
        }
        const double denom = std::sqrt(s) / bias_correction2_sqrt + eps;
        p[j] = p[j] + (-step_size) * (m[i][j] / denom);  // param.addcdiv_(m, denom, value=-step_size)
      }
    }
  }
};

}  // namespace kiln::test
