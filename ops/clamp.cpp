// clamp: checks, output allocation, the `clamp` kernel slot (ops/cpu/clamp.cpp,
// cuda/kernels/clamp.cu) and the backward formula.
#include <kiln/ops/clamp.h>

#include <cmath>

#include <kiln/core/autograd.h>
#include <kiln/ops/binary.h>
#include <kiln/ops/checks.h>
#include <kiln/ops/op_list.h>

namespace kiln {
namespace {

// The checks of clamp and clamp_ (`name`), once; returns the kernel's parameters.
ClampParams clamp_params(const char* name, const Tensor& x, std::optional<double> min, std::optional<double> max) {
  detail::check_defined(name, x);
  KILN_CHECK(x.dtype() != DType::Bool, name, ": not defined for bool tensors, got ", describe(x));
  KILN_CHECK(min || max, name, ": at least one of min and max must be given");
  KILN_CHECK(!(min && std::isnan(*min)) && !(max && std::isnan(*max)), name, ": min and max must not be NaN");
  KILN_CHECK(!(min && max) || *min <= *max, name, ": min (", *min, ") must not be greater than max (", *max, ")");
  return ClampParams{min.has_value(), max.has_value(), min.value_or(0.0), max.value_or(0.0)};
}

// d clamp(x)/dx times g: g where lo <= x <= hi (bounds included, as in PyTorch), 0 elsewhere
// and at NaN. x is the saved input (detached); half types compare in f32 as the kernels do.
// Built from where, so the formula is itself differentiable (in g).
Tensor clamp_backward(const Tensor& x, const ClampParams& p, const Tensor& g) {
  Tensor xc = cast(x, accumulate_dtype(x.dtype()));
  Tensor gx = g;
  if (p.has_min) gx = where(ge(xc, p.min), gx, 0.0);
  if (p.has_max) gx = where(le(xc, p.max), gx, 0.0);
  return gx;
}

}  // namespace

Tensor clamp(const Tensor& x, std::optional<double> min, std::optional<double> max) {
  const ClampParams p = clamp_params("clamp", x, min, max);
  Tensor y = empty_like(x);
  if (y.numel() > 0) kernel<op::clamp>(x.device())(kernel_view(x), kernel_view(y), p);
  if (!any_requires_grad({x})) return y;
  return record(
      "clamp", {x}, y,
      [xs = x.detach(), p](const Tensor& g) { return std::vector<Tensor>{clamp_backward(xs, p, g)}; }, {x});
}

Tensor clamp_min(const Tensor& x, double min) { return clamp(x, min, std::nullopt); }
Tensor clamp_max(const Tensor& x, double max) { return clamp(x, std::nullopt, max); }

Tensor& clamp_(Tensor& x, std::optional<double> min, std::optional<double> max) {
  const ClampParams p = clamp_params("clamp_", x, min, max);
  detail::check_inplace_no_grad("clamp_", {x});
  if (x.numel() == 0) return x;
  detail::mark_written("clamp_", x);
  kernel<op::clamp>(x.device())(kernel_view(x), kernel_view(x), p);  // y = x: read, then written
  return x;
}

}  // namespace kiln
