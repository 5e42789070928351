// softmax / log_softmax: checks, (outer, n, inner) layout, the `softmax` kernel slot
// (ops/cpu/softmax.cpp, cuda/kernels/softmax.cu) and the backward formulas.
#include <kiln/ops/softmax.h>
#include <kiln/ops/autocast.h>

#include <kiln/core/autograd.h>
#include <kiln/ops/binary.h>
#include <kiln/ops/reduce.h>
#include <kiln/ops/unary.h>
#include <kiln/ops/checks.h>
#include <kiln/ops/op_list.h>

namespace kiln {
namespace {
// (outer, n, inner) of a softmax over dim d (already wrapped) of `sizes`.
SoftmaxParams layout(const Shape& sizes, int64_t d, bool log) {
  SoftmaxParams p{1, 1, 1, log};
  if (sizes.empty()) return p;
  for (int64_t i = 0; i < d; ++i) p.outer *= sizes[i];
  p.n = sizes[d];
  for (int64_t i = d + 1; i < static_cast<int64_t>(sizes.size()); ++i) p.inner *= sizes[i];
  return p;
}

Tensor softmax_impl(const char* name, const Tensor& x, int64_t dim, bool log) {
  detail::check_defined(name, x);
  detail::check_floating(name, x);
  NoGradGuard raw;
  Tensor in = x.contiguous();
  Tensor out = empty_like(in);
  if (x.numel() == 0) return out;
  const int64_t d = x.dim() > 0 ? wrap_dim(dim, x.dim(), name) : 0;
  kernel<op::softmax>(x.device())(kernel_view(in), kernel_view(out), layout(x.sizes(), d, log));
  return out;
}

// The first-order gradient in one kernel (slot softmax_backward), or an undefined tensor
// when g does not match y (another dtype or shape: the composite formula runs).
Tensor fused_backward(const Tensor& y, const Tensor& g, int64_t d, bool log) {
  if (!g.defined() || y.dim() == 0 || g.dtype() != y.dtype() || g.sizes() != y.sizes()) return Tensor();
  const Tensor yc = y.contiguous(), gc = g.contiguous();
  Tensor gx = empty(yc.sizes(), TensorOptions(yc.dtype(), yc.device()));
  if (gx.numel() == 0) return gx;
  kernel<op::softmax_backward>(yc.device())(kernel_view(yc), kernel_view(gc), kernel_view(gx),
                                            layout(y.sizes(), d, log));
  return gx;
}
}  // namespace

// softmax: dx = y (g - sum(g y)); log_softmax: dx = g - exp(y) sum(g), sums over dim: in
// one kernel for a first-order pass, as ops for a create_graph pass (differentiable).
Tensor softmax(const Tensor& x_in, int64_t dim) {
  const Tensor x = detail::autocast_f32(x_in);  // ops/autocast.h
  Tensor y = softmax_impl("softmax", x, dim, false);
  if (!any_requires_grad({x})) return y;
  int64_t d = x.dim() == 0 ? 0 : wrap_dim(dim, x.dim(), "softmax");
  // y is recomputed from x when grad mode is on (a create_graph pass), so the formula is
  // differentiable in x too.
  return record("softmax", {x}, y, [d, x, y_saved = y.detach()](const Tensor& g) {
    if (!grad_enabled())
      if (Tensor gx = fused_backward(y_saved, g, d, false); gx.defined()) return std::vector<Tensor>{gx};
    const Tensor ys = grad_enabled() ? softmax(x, d) : y_saved;
    if (ys.dim() == 0) return std::vector<Tensor>{mul(g, 0.0)};
    return std::vector<Tensor>{mul(ys, sub(g, sum(mul(g, ys), {d}, true)))};
  }, {y}, true);
}

Tensor log_softmax(const Tensor& x_in, int64_t dim) {
  const Tensor x = detail::autocast_f32(x_in);
  Tensor y = softmax_impl("log_softmax", x, dim, true);
  if (!any_requires_grad({x})) return y;
  int64_t d = x.dim() == 0 ? 0 : wrap_dim(dim, x.dim(), "log_softmax");
  return record("log_softmax", {x}, y, [d, x, y_saved = y.detach()](const Tensor& g) {
    if (!grad_enabled())
      if (Tensor gx = fused_backward(y_saved, g, d, true); gx.defined()) return std::vector<Tensor>{gx};
    const Tensor ys = grad_enabled() ? log_softmax(x, d) : y_saved;
    if (ys.dim() == 0) return std::vector<Tensor>{mul(g, 0.0)};
    return std::vector<Tensor>{sub(g, mul(exp(ys), sum(g, {d}, true)))};
  }, {y}, true);
}

}  // namespace kiln
