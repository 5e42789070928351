// Global gradient norm and clipping, written with kiln ops so they run on the gradients'
// device: per-gradient partial sums, stacked, reduced; the clip coefficient is a 0-d
// tensor multiplied into the gradients under NoGradGuard.
#include <kiln/optim/clip.h>

#include <cmath>

#include <kiln/core/autograd.h>
#include <kiln/ops/binary.h>
#include <kiln/ops/checks.h>
#include <kiln/ops/index.h>
#include <kiln/ops/reduce.h>
#include <kiln/ops/unary.h>

namespace kiln {
namespace {

std::vector<Tensor> grads_of(const std::vector<Tensor>& params) {
  std::vector<Tensor> grads;
  for (const Tensor& p : params) {
    KILN_CHECK(p.defined(), "clip_grad_norm_: undefined param");
    Tensor g = p.grad();
    if (g.defined()) grads.push_back(g);
  }
  return grads;
}

Tensor norm_of(const std::vector<Tensor>& grads, double p, const char* op) {
  KILN_CHECK(p > 0, op, ": norm_type must be > 0 or infinity, got ", p);
  if (grads.empty()) return scalar_tensor(0.0, DType::F32);
  DType acc = DType::F32;
  for (const Tensor& g : grads) {
    KILN_CHECK(is_floating(g.dtype()), op, ": gradients must be floating, got ", describe(g));
    if (g.dtype() == DType::F64) acc = DType::F64;
  }
  const Device dev = grads[0].device();
  const bool inf = std::isinf(p);
  std::vector<Tensor> parts;
  for (const Tensor& g : grads) {
    if (g.numel() == 0) continue;
    Tensor x = cast(g, acc);
    Tensor part;
    if (inf) part = max(abs(x));
    else if (p == 2.0) part = sum(mul(x, x));
    else if (p == 1.0) part = sum(abs(x));
    else part = sum(pow(abs(x), p));
    parts.push_back(part.to(dev));
  }
  if (parts.empty()) return scalar_tensor(0.0, TensorOptions(acc, dev));
  Tensor all = stack(parts);
  if (inf) return max(all);
  Tensor total = sum(all);
  if (p == 2.0) return sqrt(total);
  if (p == 1.0) return total;
  return pow(total, 1.0 / p);
}

}  // namespace

Tensor total_grad_norm(const std::vector<Tensor>& params, double norm_type) {
  NoGradGuard no_grad;
  return norm_of(grads_of(params), norm_type, "total_grad_norm");
}

Tensor clip_grad_norm_(const std::vector<Tensor>& params, double max_norm, double norm_type,
                       bool error_if_nonfinite) {
  const char* op = "clip_grad_norm_";
  KILN_CHECK(max_norm >= 0, op, ": max_norm must be >= 0, got ", max_norm);
  NoGradGuard no_grad;
  std::vector<Tensor> grads = grads_of(params);
  Tensor total = norm_of(grads, norm_type, op);
  if (grads.empty()) return total;
  if (error_if_nonfinite) {
    const double v = total.item<double>();  // the one host read, asked for by the caller
    KILN_CHECK(std::isfinite(v), op, ": the total norm of order ", norm_type, " of the gradients is ", v,
               "; they were left unscaled");
  }
  // coef = min(1, max_norm / (total + 1e-6)) as a device tensor: no host round trip.
  Tensor coef = minimum(div(max_norm, add(total, 1e-6)), 1.0);
  for (Tensor& g : grads) {
    Tensor c = coef.to(g.device()).to(g.dtype());
    mul_(g, c);
  }
  return total;
}

}  // namespace kiln
