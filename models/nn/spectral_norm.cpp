#include <kiln/models/nn/spectral_norm.h>

#include <algorithm>
#include <vector>

#include <kiln/core/autograd.h>
#include <kiln/core/error.h>
#include <kiln/models/nn/conv.h>
#include <kiln/models/nn/functional.h>
#include <kiln/models/nn/linear.h>
#include <kiln/ops/binary.h>
#include <kiln/ops/checks.h>
#include <kiln/ops/clamp.h>
#include <kiln/ops/matmul.h>
#include <kiln/ops/reduce.h>
#include <kiln/ops/unary.h>

namespace kiln::nn {
namespace {

// x / max(||x||, eps) for a vector x.
Tensor normalize(const Tensor& x, double eps) { return div(x, clamp_min(sqrt(sum(mul(x, x))), eps)); }

// The weight as the matrix power iteration works on: (weight.size(dim), rest).
Tensor as_matrix(const Tensor& w, int64_t dim) {
  const Tensor t = dim == 0 ? w : w.transpose(0, dim);
  return t.reshape({t.size(0), -1});
}

}  // namespace

Tensor spectral_normalize(const Tensor& weight, const Tensor& u, const Tensor& v, int64_t dim, int64_t iterations,
                          double eps, bool write_back) {
  const char* op = "spectral_normalize";
  kiln::detail::check_defined(op, weight, "weight");
  kiln::detail::check_defined(op, u, "u");
  kiln::detail::check_defined(op, v, "v");
  KILN_CHECK(weight.dim() >= 1 && (dim == 0 || (dim == 1 && weight.dim() >= 2)), op, ": dim ", dim,
             " of a weight ", describe(weight));
  KILN_CHECK(iterations >= 0 && eps > 0, op, ": iterations must be >= 0 and eps > 0, got ", iterations, " and ",
             eps);
  const Tensor W = as_matrix(weight, dim);
  KILN_CHECK(u.dim() == 1 && u.size(0) == W.size(0) && v.dim() == 1 && v.size(0) == W.size(1), op, ": u (",
             W.size(0), ") and v (", W.size(1), ") for a weight ", describe(weight), ", got ", describe(u), " and ",
             describe(v));
  Tensor uu = u, vv = v;
  if (iterations > 0) {
    NoGradGuard no_grad;
    const Tensor Wd = W.detach();
    for (int64_t i = 0; i < iterations; ++i) {
      vv = normalize(matmul(Wd.t(), uu), eps);
      uu = normalize(matmul(Wd, vv), eps);
    }
    if (write_back) {
      Tensor(u).copy_(uu);
      Tensor(v).copy_(vv);
    }
  }
  // sigma = u^T W v, with u and v constants.
  const Tensor sigma = sum(mul(uu.detach(), matmul(W, vv.detach())));
  return div(weight, sigma);
}

SpectralNorm::SpectralNorm(std::shared_ptr<Module> layer, int64_t n_power_iterations, double eps, Generator* gen,
                           int64_t warm_up)
    : Module("SpectralNorm"),
      n_power_iterations(n_power_iterations),
      eps(eps),
      dim(dynamic_cast<ConvTranspose2d*>(layer.get()) ? 1 : 0) {
  KILN_CHECK(layer != nullptr, "SpectralNorm: no layer given");
  KILN_CHECK(n_power_iterations >= 1 && eps > 0 && warm_up >= 0,
             "SpectralNorm: n_power_iterations must be >= 1, eps > 0 and warm_up >= 0, got ", n_power_iterations,
             ", ", eps, ", ", warm_up);
  Tensor w;
  if (auto l = dynamic_cast<Linear*>(layer.get())) w = l->weight;
  else if (auto c = dynamic_cast<Conv2d*>(layer.get())) w = c->weight;
  else if (auto t = dynamic_cast<ConvTranspose2d*>(layer.get())) w = t->weight;
  KILN_CHECK(w.defined(), "SpectralNorm: supports Linear, Conv2d and ConvTranspose2d, got ", layer->type_name());
  const std::vector<Tensor> params = layer->parameters();
  weight_index_ = static_cast<size_t>(
      std::find_if(params.begin(), params.end(), [&](const Tensor& p) { return p.is_same(w); }) - params.begin());
  module = register_module("module", std::move(layer));
  const Tensor W = as_matrix(w, dim);
  const TensorOptions opts(w.dtype(), w.device());
  {
    NoGradGuard no_grad;
    u = register_buffer("u", normalize(randn({W.size(0)}, opts, gen), eps));
    v = register_buffer("v", normalize(randn({W.size(1)}, opts, gen), eps));
  }
  power_iterate(warm_up);
}

void SpectralNorm::power_iterate(int64_t steps) {
  KILN_CHECK(steps >= 0, "SpectralNorm::power_iterate: steps must be >= 0, got ", steps);
  if (steps > 0) spectral_normalize(module->parameters()[weight_index_], u, v, dim, steps, eps, true);
}

Tensor SpectralNorm::normalized(const Tensor& w, int64_t steps, bool keep) {
  return spectral_normalize(w, u, v, dim, steps, eps, keep);
}

Tensor SpectralNorm::forward(const Tensor& input) {
  std::vector<Tensor> p = module->parameters();
  const bool training = is_training();
  p[weight_index_] = normalized(p[weight_index_], training ? n_power_iterations : 0, training);
  return functional_call(*module, input, p);
}

std::string SpectralNorm::extra_repr() const {
  return kiln::detail::str("n_power_iterations=", n_power_iterations, ", eps=", detail::repr_double(eps));
}

}  // namespace kiln::nn
