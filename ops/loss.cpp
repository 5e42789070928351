// Losses: cross_entropy through the fused kernel slots cross_entropy_forward/backward
// (ops/cpu/loss.cpp, cuda/kernels/loss.cu); nll_loss, binary_cross_entropy_with_logits
// and mse_loss composed from kiln ops (they are memory-bound and simple).
#include <kiln/ops/loss.h>
#include <kiln/ops/autocast.h>

#include <cmath>

#include <kiln/core/autograd.h>
#include <kiln/ops/binary.h>
#include <kiln/ops/checks.h>
#include <kiln/ops/index.h>
#include <kiln/ops/op_list.h>
#include <kiln/ops/reduce.h>
#include <kiln/ops/softmax.h>
#include <kiln/ops/unary.h>

namespace kiln {

const char* reduction_name(Reduction r) {
  switch (r) {
    case Reduction::None: return "none";
    case Reduction::Mean: return "mean";
    case Reduction::Sum: return "sum";
  }
  return "?";
}

namespace {

// Checks the (C) / (N, C) / (N, C, d1, ...) input against a class-index target of shape
// () / (N) / (N, d1, ...); returns C.
int64_t check_class_target(const char* op, const Tensor& x, const Tensor& target, const char* xname) {
  detail::check_defined(op, x, xname);
  detail::check_defined(op, target, "target");
  detail::check_same_device(op, x, target);
  KILN_CHECK(is_floating(x.dtype()), op, ": ", xname, " must be floating (f16, bf16, f32, f64), got ", describe(x));
  KILN_CHECK(target.dtype() == DType::I64 || target.dtype() == DType::I32, op,
             ": target must hold class indices (i64 or i32), got ", describe(target),
             is_floating(target.dtype()) ? " (class-probability targets are not supported)" : "");
  KILN_CHECK(x.dim() >= 1, op, ": ", xname, " must have shape (C), (N, C) or (N, C, d1, ...), got ", describe(x));
  Shape want;
  if (x.dim() > 1) {
    want.push_back(x.size(0));
    for (int64_t d = 2; d < x.dim(); ++d) want.push_back(x.size(d));
  }
  KILN_CHECK(target.sizes() == want, op, ": target must have shape ", shape_str(want), " for ", xname, " ",
             describe(x), " (the ", xname, " shape without its class dim 1), got ", describe(target));
  const int64_t classes = x.dim() == 1 ? x.size(0) : x.size(1);
  KILN_CHECK(classes > 0 || target.numel() == 0, op, ": ", xname, " ", describe(x), " has no classes");
  return classes;
}

// Every target is ignore_index or lies in [0, classes): min and max of the others, read
// back in one transfer. On the host for CPU targets only; on CUDA the kernels check each
// target as they read it (cross_entropy's, or gather's for nll_loss) and the runtime
// throws at the next synchronisation point, so nothing is read back here.
void check_target_range(const char* op, const Tensor& t64, int64_t classes, int64_t ignore_index) {
  if (t64.numel() == 0 || !detail::host_checks_indices(t64)) return;
  NoGradGuard raw;
  Tensor valid = where(ne(t64, ignore_index), t64, Scalar(int64_t{0}));
  std::vector<int64_t> mm = stack({min(valid), max(valid)}).to_vector<int64_t>();
  KILN_CHECK(mm[0] >= 0 && mm[1] < classes, op, ": target values must lie in [0, ", classes,
             ") or equal ignore_index (", ignore_index, "), got values in [", mm[0], ", ", mm[1], "]");
}

Tensor reduce_loss(const Tensor& loss, Reduction reduction) {
  switch (reduction) {
    case Reduction::None: return loss;
    case Reduction::Sum: return sum(loss);
    case Reduction::Mean: return mean(loss);
  }
  throw Error("loss: unknown reduction");
}

// cross_entropy from recorded ops, for its double backward: logits (C) / (N, C) /
// (N, C, d...) -> the reduced loss, as the fused kernel computes it. t64: the flattened
// targets; count: the number of targets that are not ignore_index (for the mean).
Tensor cross_entropy_composite(const Tensor& logits, const Tensor& t64, const Tensor& count, Reduction reduction,
                               int64_t ignore_index, double eps, const Shape& target_shape) {
  const int64_t nd = logits.dim(), C = nd == 1 ? logits.size(0) : logits.size(1);
  Tensor x = logits;
  if (nd == 1) x = x.unsqueeze(0);
  if (nd > 2) {
    Shape perm{0};
    for (int64_t d = 2; d < nd; ++d) perm.push_back(d);
    perm.push_back(1);
    x = x.permute(perm);
  }
  x = cast(x.reshape({-1, C}), accumulate_dtype(logits.dtype()));
  Tensor logp = log_softmax(x, 1);
  Tensor valid = ne(t64, ignore_index);
  Tensor hot = cast(one_hot(where(valid, t64, Scalar(int64_t{0})), C), logp.dtype());
  Tensor loss = neg(sum(mul(logp, hot), {1}));
  if (eps > 0) loss = add(mul(loss, 1.0 - eps), mul(neg(mean(logp, {1})), eps));
  loss = where(valid, loss, 0.0);
  Tensor out;
  switch (reduction) {
    case Reduction::None: out = loss.reshape(target_shape); break;
    case Reduction::Sum: out = sum(loss); break;
    case Reduction::Mean: out = div(sum(loss), count); break;
  }
  return cast(out, logits.dtype());
}

}  // namespace

// ---- cross_entropy ----------------------------------------------------------------

// The logits are laid out as rows of C (a copy moves the class dim last for (N, C, d...)
// and makes the rows contiguous); the kernel writes each row's loss and log-sum-exp in
// the accumulation dtype, and the backward reuses the log-sum-exp, so it is one pass:
//   dlogits = (softmax - (1 - eps) onehot - eps / C) * g   (g / count for the mean).
Tensor cross_entropy(const Tensor& logits_in, const Tensor& target, Reduction reduction, int64_t ignore_index,
                     double label_smoothing) {
  const Tensor logits = detail::autocast_f32(logits_in);  // ops/autocast.h
  const char* op = "cross_entropy";
  const int64_t classes = check_class_target(op, logits, target, "logits");
  KILN_CHECK(label_smoothing >= 0.0 && label_smoothing <= 1.0, op, ": label_smoothing must lie in [0, 1], got ",
             label_smoothing);
  const Device dev = logits.device();
  const DType acc = accumulate_dtype(logits.dtype());
  const int64_t ndim = logits.dim();

  Tensor x2d, t64, losses, lse, count, out;
  {
    NoGradGuard raw;
    t64 = cast(target, DType::I64).contiguous().reshape({-1});
    check_target_range(op, t64, classes, ignore_index);
    const int64_t rows = t64.numel();
    Tensor x = logits;
    if (ndim == 1) {
      x = x.unsqueeze(0);
    } else if (ndim > 2) {  // (N, C, d1, ..., dk) -> (N, d1, ..., dk, C)
      Shape perm{0};
      for (int64_t d = 2; d < ndim; ++d) perm.push_back(d);
      perm.push_back(1);
      x = x.permute(perm);
    }
    x2d = x.contiguous().reshape({rows, classes});
    losses = empty({rows}, TensorOptions(acc, dev));
    lse = empty({rows}, TensorOptions(acc, dev));
    if (rows > 0)
      kernel<op::cross_entropy_forward>(dev)(kernel_view(x2d), kernel_view(t64), kernel_view(losses), kernel_view(lse),
                                             CrossEntropyParams{ignore_index, label_smoothing});
    switch (reduction) {
      case Reduction::None: out = losses.reshape(target.sizes()); break;
      case Reduction::Sum: out = sum(losses); break;
      case Reduction::Mean:
        count = cast(sum(ne(t64, ignore_index)), acc);
        out = div(sum(losses), count);
        break;
    }
    out = cast(out, logits.dtype());
  }
  if (!any_requires_grad({logits})) return out;
  return record(op, {logits}, out,
                [x2d = x2d.detach(), t64, lse, count, reduction, ignore_index, label_smoothing, acc,
                 logits_sizes = logits.sizes(), logits, target_shape = target.sizes()](const Tensor& g) {
                  if (grad_enabled())  // create_graph: differentiable gradients
                    return composite_backward(
                        [&](const std::vector<Tensor>& v) {
                          return cross_entropy_composite(v[0], t64, count, reduction, ignore_index, label_smoothing,
                                                         target_shape);
                        },
                        {logits}, g);
                  const int64_t rows = x2d.size(0), ncls = x2d.size(1);
                  Tensor gr = cast(g, acc);
                  if (reduction == Reduction::None) gr = gr.reshape({rows});
                  else if (reduction == Reduction::Mean) gr = div(gr, count);
                  gr = gr.contiguous();
                  Tensor dx = empty({rows, ncls}, TensorOptions(x2d.dtype(), x2d.device()));
                  if (dx.numel() > 0)
                    kernel<op::cross_entropy_backward>(x2d.device())(
                        kernel_view(x2d), kernel_view(t64), kernel_view(lse), kernel_view(gr), kernel_view(dx),
                        CrossEntropyParams{ignore_index, label_smoothing});
                  const int64_t nd = static_cast<int64_t>(logits_sizes.size());
                  if (nd <= 2) return std::vector<Tensor>{dx.reshape(logits_sizes)};
                  // (N, d1, ..., dk, C) back to (N, C, d1, ..., dk).
                  Shape permuted{logits_sizes[0]};
                  for (int64_t d = 2; d < nd; ++d) permuted.push_back(logits_sizes[d]);
                  permuted.push_back(ncls);
                  Shape inv{0, nd - 1};
                  for (int64_t d = 1; d < nd - 1; ++d) inv.push_back(d);
                  return std::vector<Tensor>{dx.view(permuted).permute(inv)};
                },
                {logits}, true);
}

// ---- nll_loss ---------------------------------------------------------------------

Tensor nll_loss(const Tensor& logp_in, const Tensor& target, Reduction reduction, int64_t ignore_index) {
  const Tensor logp = detail::autocast_f32(logp_in);  // ops/autocast.h
  const char* op = "nll_loss";
  const int64_t classes = check_class_target(op, logp, target, "input");
  Tensor t64 = cast(target, DType::I64);
  check_target_range(op, t64, classes, ignore_index);
  const bool unbatched = logp.dim() == 1;
  Tensor x = unbatched ? logp.unsqueeze(0) : logp;  // (N, C, d...)
  Tensor t = unbatched ? t64.unsqueeze(0) : t64;     // (N, d...)
  Tensor valid = ne(t, ignore_index);
  Tensor safe = where(valid, t, Scalar(int64_t{0}));  // ignored targets read class 0, then masked out
  Tensor picked;
  {
    detail::IndicesChecked checked;  // above (on CUDA: by the gather kernel, which names nll_loss)
    picked = gather(x, 1, safe.unsqueeze(1)).squeeze(1);
  }
  // where, not a multiply by the mask: an ignored row may hold -inf at class 0.
  Tensor loss = where(valid, neg(picked), 0.0);
  if (unbatched) loss = loss.squeeze(0);
  switch (reduction) {
    case Reduction::None: return loss;
    case Reduction::Sum: return sum(loss);
    case Reduction::Mean: return div(sum(loss), cast(sum(valid), loss.dtype()));
  }
  throw Error("nll_loss: unknown reduction");
}

// ---- binary_cross_entropy_with_logits -----------------------------------------------

namespace {

// log(1 + exp(-|x|)) + max(-x, 0) = log(1 + exp(-x)), computed without overflow.
Tensor softplus_neg(const Tensor& x) { return add(log(add(exp(neg(abs(x))), 1.0)), relu(neg(x))); }

}  // namespace

Tensor binary_cross_entropy_with_logits(const Tensor& x_in, const Tensor& y, Reduction reduction,
                                        const Tensor& pos_weight) {
  const Tensor x = detail::autocast_f32(x_in);  // ops/autocast.h
  const char* op = "binary_cross_entropy_with_logits";
  detail::check_defined(op, x);
  detail::check_defined(op, y, "target");
  detail::check_same_device(op, x, y);
  KILN_CHECK(is_floating(x.dtype()), op, ": input must be floating (f16, bf16, f32, f64), got ", describe(x));
  KILN_CHECK(is_floating(y.dtype()), op, ": target must be floating (probabilities in [0, 1]), got ", describe(y));
  KILN_CHECK(y.sizes() == x.sizes(), op, ": target must have the input's shape: target ", describe(y), " vs input ",
             describe(x));
  Tensor yt = cast(y, x.dtype());
  Tensor pw;
  if (pos_weight.defined()) {
    detail::check_same_device(op, x, pos_weight);
    KILN_CHECK(is_floating(pos_weight.dtype()), op, ": pos_weight must be floating, got ", describe(pos_weight));
    bool fits = pos_weight.dim() <= x.dim();
    for (int64_t d = 1; fits && d <= pos_weight.dim(); ++d) {
      const int64_t w = pos_weight.size(-d);
      fits = w == 1 || w == x.size(-d);
    }
    KILN_CHECK(fits, op, ": pos_weight ", describe(pos_weight), " must broadcast to the input's shape ",
               shape_str(x.sizes()));
    pw = cast(pos_weight, x.dtype());
  }

  Tensor loss;
  {
    NoGradGuard raw;
    if (!pw.defined()) {
      loss = add(sub(relu(x), mul(x, yt)), log(add(exp(neg(abs(x))), 1.0)));
    } else {
      Tensor l = add(mul(sub(pw, 1.0), yt), 1.0);
      loss = add(mul(sub(1.0, yt), x), mul(l, softplus_neg(x)));
    }
  }
  std::vector<Tensor> inputs{x, yt};
  if (pw.defined()) inputs.push_back(pw);
  if (any_requires_grad(inputs)) {
    // dx = (1 + (pw - 1) y) sigmoid(x) - pw y   (sigmoid(x) - y without pos_weight)
    // dy = (pw - 1) softplus(-x) - x             (-x)
    // dpw = y softplus(-x), summed to pos_weight's shape
    loss = record(op, inputs, loss,
                  // (operands captured undetached: the formula is differentiable again)
                  [xs = x, ys = yt, pws = pw, need_y = yt.requires_grad()](const Tensor& g) {
                    std::vector<Tensor> grads;
                    if (!pws.defined()) {
                      grads.push_back(mul(g, sub(sigmoid(xs), ys)));
                      grads.push_back(need_y ? mul(g, neg(xs)) : Tensor());
                      return grads;
                    }
                    Tensor sp = softplus_neg(xs);
                    Tensor l = add(mul(sub(pws, 1.0), ys), 1.0);
                    grads.push_back(mul(g, sub(mul(l, sigmoid(xs)), mul(pws, ys))));
                    grads.push_back(need_y ? mul(g, sub(mul(sub(pws, 1.0), sp), xs)) : Tensor());
                    grads.push_back(detail::sum_to_shape(mul(g, mul(ys, sp)), pws.sizes()));
                    return grads;
                  },
                  inputs, true);
  }
  return reduce_loss(loss, reduction);
}

// ---- mse_loss -----------------------------------------------------------------------

Tensor mse_loss(const Tensor& a_in, const Tensor& b, Reduction reduction) {
  const Tensor a = detail::autocast_f32(a_in);  // ops/autocast.h
  const char* op = "mse_loss";
  detail::check_defined(op, a);
  detail::check_defined(op, b, "target");
  detail::check_same_device(op, a, b);
  KILN_CHECK(is_floating(a.dtype()) && is_floating(b.dtype()), op, ": expects floating tensors, got ", describe(a),
             " and ", describe(b));
  KILN_CHECK(a.sizes() == b.sizes(), op, ": input and target must have one shape, got ", describe(a), " and ",
             describe(b));
  Tensor d = sub(a, b);
  return reduce_loss(mul(d, d), reduction);
}

}  // namespace kiln
