// batch_norm / layer_norm / group_norm: checks, layout ((N, C, S) or (M, D)),
// statistics tensors, dispatch, running-stat updates and the backward formulas. The
// forward saves x, the weight and the per-channel / per-row statistics (mean and
// 1/std in accumulate_dtype(x)); each backward is one fused kernel call. In a
// create_graph pass (second derivatives: gradient penalties, unrolled GANs) the
// backward instead differentiates a composite of recorded ops that recomputes the same
// forward (composite_backward, core/autograd.h), so the gradients are differentiable.
#include <kiln/ops/norm.h>
#include <kiln/ops/autocast.h>

#include <kiln/core/autograd.h>
#include <kiln/ops/binary.h>
#include <kiln/ops/checks.h>
#include <kiln/ops/op_list.h>
#include <kiln/ops/reduce.h>
#include <kiln/ops/unary.h>

namespace kiln {
namespace {

bool is_half(DType t) { return t == DType::F16 || t == DType::BF16; }

// A parameter-like tensor (weight, bias, running stat): on x's device, x's dtype (or f32
// for half x), of shape `shape`. Undefined is allowed.
void check_param(const char* op, const Tensor& x, const Tensor& p, const char* name, const Shape& shape) {
  if (!p.defined()) return;
  KILN_CHECK(p.device() == x.device(), op, ": ", name, " ", describe(p), " is not on the input's device (input ",
             describe(x), ")");
  KILN_CHECK(p.dtype() == x.dtype() || (p.dtype() == DType::F32 && is_half(x.dtype())), op, ": ", name, " must be ",
             dtype_name(x.dtype()), is_half(x.dtype()) ? " or f32" : "", " for input ", describe(x), ", got ",
             describe(p));
  KILN_CHECK(p.sizes() == shape, op, ": ", name, " must have shape ", shape_str(shape), " for input ", describe(x),
             ", got ", describe(p));
}

void check_same_param_dtype(const char* op, const Tensor& a, const char* an, const Tensor& b, const char* bn) {
  if (!a.defined() || !b.defined()) return;
  KILN_CHECK(a.dtype() == b.dtype(), op, ": ", an, " and ", bn, " must share a dtype, got ", describe(a), " and ",
             describe(b));
}

Tensor contiguous_or_undefined(const Tensor& t) { return t.defined() ? t.contiguous() : t; }

// What the backward closures need to know about which gradients to produce.
struct Needs {
  bool x, w, b;
};
Needs needs(const Tensor& x, const Tensor& w, const Tensor& b) {
  auto req = [](const Tensor& t) { return t.defined() && t.requires_grad(); };
  return {req(x), req(w), req(b)};
}

// Gradient buffers for a backward: dx like x, dweight / dbias like the parameter (or
// undefined when not needed).
struct Grads {
  Tensor dx, dw, db;
};
// The bias's shape and dtype: all its gradient needs (the closures do not keep it).
struct Meta {
  Shape sizes;
  TensorOptions opts;
};
Meta meta_of(const Tensor& t) { return t.defined() ? Meta{t.sizes(), {t.dtype(), t.device()}} : Meta{}; }
Grads alloc_grads(const Needs& n, const Tensor& xs, const Tensor& w, const Meta& b) {
  Grads g;
  if (n.x) g.dx = empty_like(xs);
  if (n.w) g.dw = empty(w.sizes(), TensorOptions(w.dtype(), w.device()));
  if (n.b) g.db = empty(b.sizes, b.opts);
  return g;
}
// An empty input: dx is empty, parameter gradients are sums over nothing.
std::vector<Tensor> empty_grads(Grads g) {
  if (g.dx.defined()) g.dx.fill_(0);
  if (g.dw.defined()) g.dw.fill_(0);
  if (g.db.defined()) g.db.fill_(0);
  return {g.dx, g.dw, g.db};
}

// Product of x's dims from `from` on (1 for none).
int64_t numel_from(const Tensor& x, int64_t from) {
  int64_t n = 1;
  for (int64_t d = from; d < x.dim(); ++d) n *= x.size(d);
  return n;
}

// ---- composites: the same forwards from recorded ops, for double backward ----------

using V = std::vector<Tensor>;

// x * w + b with w, b of `pshape` broadcast (either undefined).
Tensor affine(Tensor y, const Tensor& w, const Tensor& b, const Shape& pshape) {
  if (w.defined()) y = mul(y, cast(w, y.dtype()).view(pshape));
  if (b.defined()) y = add(y, cast(b, y.dtype()).view(pshape));
  return y;
}

// (x - mean) / sqrt(var + eps) over `dims` (biased variance), recorded.
Tensor standardize(const Tensor& x, const Dims& dims, double eps) {
  Tensor c = sub(x, mean(x, dims, true));
  return mul(c, rsqrt(add(mean(mul(c, c), dims, true), eps)));
}

// The parameter shape (1, C, 1, ...) of a (N, C, ...) input.
Shape channel_shape(const Tensor& x) {
  Shape s(static_cast<size_t>(x.dim()), 1);
  s[1] = x.size(1);
  return s;
}

Tensor batch_norm_composite(const V& in, const Tensor& save_mean, const Tensor& save_invstd, bool training,
                            double eps) {
  const Tensor& x = in[0];
  const Shape ps = channel_shape(x);
  Tensor xhat;
  if (training) {
    Dims dims{0};
    for (int64_t d = 2; d < x.dim(); ++d) dims.push_back(d);
    xhat = standardize(x, dims, eps);
  } else {  // the running statistics are constants
    xhat = mul(sub(x, cast(save_mean, x.dtype()).view(ps)), cast(save_invstd, x.dtype()).view(ps));
  }
  return affine(xhat, in[1], in[2], ps);
}

Tensor layer_norm_composite(const V& in, int64_t k, double eps) {
  const Tensor& x = in[0];
  Dims dims;
  for (int64_t d = x.dim() - k; d < x.dim(); ++d) dims.push_back(d);
  Shape ps(x.sizes().end() - k, x.sizes().end());
  return affine(standardize(x, dims, eps), in[1], in[2], ps);
}

Tensor group_norm_composite(const V& in, int64_t G, double eps) {
  const Tensor& x = in[0];
  const int64_t N = x.size(0);
  Tensor xhat = standardize(x.reshape({N, G, -1}), {2}, eps).reshape(x.sizes());
  return affine(xhat, in[1], in[2], channel_shape(x));
}

}  // namespace

Tensor batch_norm(const Tensor& x_in, const Tensor& running_mean, const Tensor& running_var, const Tensor& weight,
                  const Tensor& bias, bool training, double momentum, double eps) {
  const Tensor x = detail::autocast_f32(x_in);  // ops/autocast.h
  const char* op = "batch_norm";
  detail::check_defined(op, x);
  detail::check_floating(op, x);
  KILN_CHECK(x.dim() >= 2, op, ": expects input of shape (N, C, ...), got ", describe(x));
  const int64_t N = x.size(0), C = x.size(1), S = numel_from(x, 2);
  check_param(op, x, weight, "weight", {C});
  check_param(op, x, bias, "bias", {C});
  check_param(op, x, running_mean, "running_mean", {C});
  check_param(op, x, running_var, "running_var", {C});
  check_same_param_dtype(op, weight, "weight", bias, "bias");
  check_same_param_dtype(op, running_mean, "running_mean", running_var, "running_var");
  KILN_CHECK(running_mean.defined() == running_var.defined(), op,
             ": running_mean and running_var must both be given or both be undefined, got ", describe(running_mean),
             " and ", describe(running_var));
  KILN_CHECK(training || running_mean.defined(), op,
             ": eval mode (training = false) normalises with running_mean and running_var, which are undefined");
  KILN_CHECK(!training || N * S > 1 || C == 0, op,
             ": expected more than 1 value per channel when training, got input ", describe(x));
  KILN_CHECK(eps >= 0, op, ": eps must be >= 0, got ", eps);

  const BatchNormParams params{N, C, S, training, momentum, eps};
  Tensor xs, w = contiguous_or_undefined(weight), b = contiguous_or_undefined(bias);
  Tensor y, save_mean, save_invstd;
  {
    NoGradGuard raw;
    xs = x.contiguous().detach();
    w = w.defined() ? w.detach() : w;
    b = b.defined() ? b.detach() : b;
    y = empty_like(xs);
    const TensorOptions so(accumulate_dtype(x.dtype()), x.device());
    save_mean = empty({C}, so);
    save_invstd = empty({C}, so);
    if (x.numel() > 0) {
      // The kernels update contiguous running stats in place; others go through a copy.
      const bool update = training && running_mean.defined();
      Tensor rm = running_mean.defined() ? running_mean.contiguous() : running_mean;
      Tensor rv = running_var.defined() ? running_var.contiguous() : running_var;
      kernel<op::batch_norm_forward>(x.device())(kernel_view(xs), kernel_view(w), kernel_view(b), kernel_view(rm),
                                                 kernel_view(rv), kernel_view(y), kernel_view(save_mean),
                                                 kernel_view(save_invstd), params);
      if (update && !rm.is_same(running_mean)) Tensor(running_mean).copy_(rm);
      if (update && !rv.is_same(running_var)) Tensor(running_var).copy_(rv);
    }
  }
  const Needs need = needs(x, weight, bias);
  if (!need.x && !need.w && !need.b) return y;
  return record(op, {x, weight, bias}, y,
                [need, in = V{x, weight, bias}, xs, w, bm = meta_of(b), save_mean, save_invstd,
                 params](const Tensor& g) {
                  if (grad_enabled())  // create_graph: differentiable gradients
                    return composite_backward(
                        [&](const V& v) {
                          return batch_norm_composite(v, save_mean, save_invstd, params.training, params.eps);
                        },
                        in, g);
                  Grads gr = alloc_grads(need, xs, w, bm);
                  if (xs.numel() == 0) return empty_grads(gr);
                  const Tensor gc = g.contiguous();
                  kernel<op::batch_norm_backward>(xs.device())(
                      kernel_view(gc), kernel_view(xs), kernel_view(w), kernel_view(save_mean),
                      kernel_view(save_invstd), kernel_view(gr.dx), kernel_view(gr.dw), kernel_view(gr.db), params);
                  return std::vector<Tensor>{gr.dx, gr.dw, gr.db};
                },
                {x, xs, weight, w}, true);
}

Tensor layer_norm(const Tensor& x_in, const Shape& normalized_shape, const Tensor& weight, const Tensor& bias,
                  double eps) {
  const Tensor x = detail::autocast_f32(x_in);  // ops/autocast.h
  const char* op = "layer_norm";
  detail::check_defined(op, x);
  detail::check_floating(op, x);
  const int64_t k = static_cast<int64_t>(normalized_shape.size());
  KILN_CHECK(k >= 1, op, ": normalized_shape must name at least one dim");
  bool match = x.dim() >= k;
  for (int64_t i = 0; match && i < k; ++i) match = x.size(x.dim() - k + i) == normalized_shape[i];
  KILN_CHECK(match, op, ": normalized_shape ", shape_str(normalized_shape), " does not match the trailing dims of ",
             describe(x));
  check_param(op, x, weight, "weight", normalized_shape);
  check_param(op, x, bias, "bias", normalized_shape);
  check_same_param_dtype(op, weight, "weight", bias, "bias");
  KILN_CHECK(eps >= 0, op, ": eps must be >= 0, got ", eps);
  const int64_t D = shape_numel(normalized_shape);
  int64_t M = 1;
  for (int64_t i = 0; i < x.dim() - k; ++i) M *= x.size(i);
  const LayerNormParams params{M, D, eps};

  Tensor xs, w = contiguous_or_undefined(weight), b = contiguous_or_undefined(bias);
  Tensor y, mean, rstd;
  {
    NoGradGuard raw;
    xs = x.contiguous().detach();
    w = w.defined() ? w.detach() : w;
    b = b.defined() ? b.detach() : b;
    y = empty_like(xs);
    const TensorOptions so(accumulate_dtype(x.dtype()), x.device());
    mean = empty({M}, so);
    rstd = empty({M}, so);
    if (x.numel() > 0)
      kernel<op::layer_norm_forward>(x.device())(kernel_view(xs), kernel_view(w), kernel_view(b), kernel_view(y),
                                                 kernel_view(mean), kernel_view(rstd), params);
  }
  const Needs need = needs(x, weight, bias);
  if (!need.x && !need.w && !need.b) return y;
  return record(op, {x, weight, bias}, y,
                [need, in = V{x, weight, bias}, k, xs, w, bm = meta_of(b), mean, rstd, params](const Tensor& g) {
    if (grad_enabled())  // create_graph: differentiable gradients
      return composite_backward([&](const V& v) { return layer_norm_composite(v, k, params.eps); }, in, g);
    Grads gr = alloc_grads(need, xs, w, bm);
    if (xs.numel() == 0) return empty_grads(gr);
    const Tensor gc = g.contiguous();
    kernel<op::layer_norm_backward>(xs.device())(kernel_view(gc), kernel_view(xs), kernel_view(w), kernel_view(mean),
                                                 kernel_view(rstd), kernel_view(gr.dx), kernel_view(gr.dw),
                                                 kernel_view(gr.db), params);
    return std::vector<Tensor>{gr.dx, gr.dw, gr.db};
  }, {x, xs, weight, w}, true);
}

Tensor group_norm(const Tensor& x_in, int64_t num_groups, const Tensor& weight, const Tensor& bias, double eps) {
  const Tensor x = detail::autocast_f32(x_in);  // ops/autocast.h
  const char* op = "group_norm";
  detail::check_defined(op, x);
  detail::check_floating(op, x);
  KILN_CHECK(x.dim() >= 2, op, ": expects input of shape (N, C, ...), got ", describe(x));
  const int64_t N = x.size(0), C = x.size(1), S = numel_from(x, 2), G = num_groups;
  KILN_CHECK(G >= 1, op, ": num_groups must be positive, got ", G);
  KILN_CHECK(C % G == 0, op, ": the number of channels (", C, ") of input ", describe(x),
             " must be divisible by num_groups (", G, ")");
  check_param(op, x, weight, "weight", {C});
  check_param(op, x, bias, "bias", {C});
  check_same_param_dtype(op, weight, "weight", bias, "bias");
  KILN_CHECK(eps >= 0, op, ": eps must be >= 0, got ", eps);

  const GroupNormParams params{N, C, S, G, eps};
  Tensor xs, w = contiguous_or_undefined(weight), b = contiguous_or_undefined(bias);
  Tensor y, mean, rstd;
  {
    NoGradGuard raw;
    xs = x.contiguous().detach();
    w = w.defined() ? w.detach() : w;
    b = b.defined() ? b.detach() : b;
    y = empty_like(xs);
    const TensorOptions so(accumulate_dtype(x.dtype()), x.device());
    mean = empty({N, G}, so);
    rstd = empty({N, G}, so);
    if (x.numel() > 0)
      kernel<op::group_norm_forward>(x.device())(kernel_view(xs), kernel_view(w), kernel_view(b), kernel_view(y),
                                                 kernel_view(mean), kernel_view(rstd), params);
  }
  const Needs need = needs(x, weight, bias);
  if (!need.x && !need.w && !need.b) return y;
  return record(op, {x, weight, bias}, y,
                [need, in = V{x, weight, bias}, xs, w, bm = meta_of(b), mean, rstd, params](const Tensor& g) {
    if (grad_enabled())  // create_graph: differentiable gradients
      return composite_backward([&](const V& v) { return group_norm_composite(v, params.G, params.eps); }, in, g);
    Grads gr = alloc_grads(need, xs, w, bm);
    if (xs.numel() == 0) return empty_grads(gr);
    const Tensor gc = g.contiguous();
    kernel<op::group_norm_backward>(xs.device())(kernel_view(gc), kernel_view(xs), kernel_view(w), kernel_view(mean),
                                                 kernel_view(rstd), kernel_view(gr.dx), kernel_view(gr.dw),
                                                 kernel_view(gr.db), params);
    return std::vector<Tensor>{gr.dx, gr.dw, gr.db};
  }, {x, xs, weight, w}, true);
}

}  // namespace kiln
