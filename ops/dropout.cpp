// dropout: checks, counters reserved from the generator, the `dropout` kernel slot (the
// mask kernel: ops/cpu/dropout.cpp, cuda/kernels/dropout.cu) forward and backward.
#include <kiln/ops/dropout.h>

#include <kiln/core/autograd.h>
#include <kiln/ops/binary.h>
#include <kiln/ops/checks.h>
#include <kiln/ops/op_list.h>

namespace kiln {

// x * keep / (1 - p) with the mask of (seed, offset): dropout's forward and, being
// linear in x with the same mask, its own backward (so it is differentiable twice).
Tensor dropout_with_mask(const Tensor& x, double p, uint64_t seed, uint64_t offset) {
  return detail::apply_dropout_mask(x, p, seed, offset);
}

namespace detail {
Tensor apply_dropout_mask(const Tensor& x, double p, uint64_t seed, uint64_t offset) {
  Tensor out;
  {
    NoGradGuard raw;
    Tensor in = x.contiguous();
    out = empty(x.sizes(), TensorOptions(x.dtype(), x.device()));
    if (out.numel() > 0)
      kernel<op::dropout>(x.device())(kernel_view(in), kernel_view(out), DropoutParams{p, seed, offset});
  }
  if (!any_requires_grad({x})) return out;
  return record("dropout", {x}, out,
                [p, seed, offset](const Tensor& gy) { return std::vector<Tensor>{apply_dropout_mask(gy, p, seed, offset)}; },
                {}, true);
}
}  // namespace detail

Tensor dropout(const Tensor& x, double p, bool training, Generator* gen) {
  detail::check_defined("dropout", x);
  KILN_CHECK(p >= 0.0 && p <= 1.0, "dropout: p must lie in [0, 1], got ", p);
  KILN_CHECK(is_floating(x.dtype()), "dropout: expects a floating tensor (f16, bf16, f32, f64), got ", describe(x));
  if (!training || p == 0.0) return x;
  if (p == 1.0) return mul(x, 0.0);  // x * 0, as PyTorch does: NaN and inf stay NaN

  Generator& g = gen != nullptr ? *gen : default_generator();
  const uint64_t seed = g.seed();
  const uint64_t offset = g.reserve(static_cast<uint64_t>(x.numel()));
  // dx = g * keep / (1 - p): the same kernel on g, with the mask regenerated from its counters.
  return detail::apply_dropout_mask(x, p, seed, offset);
}

}  // namespace kiln
