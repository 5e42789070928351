// Reductions: normalise dims, lay the input out as (outer, r, inner) without copying
// where possible, and call core's `reduce` kernel slot (ops/cpu/reduce.cpp,
// cuda/kernels/reduce.cu). var/std compose mean, sub, mul and sum (two passes).
#include <kiln/ops/reduce.h>
#include <kiln/ops/autocast.h>

#include <algorithm>

#include <limits>

#include <kiln/core/autograd.h>
#include <kiln/ops/binary.h>
#include <kiln/ops/checks.h>
#include <kiln/ops/unary.h>

namespace kiln {
namespace {

Shape kept_shape(const Tensor& x, const std::vector<int64_t>& rd, bool keepdim) {
  Shape s;
  size_t j = 0;
  for (int64_t i = 0; i < x.dim(); ++i) {
    bool reduced = j < rd.size() && rd[j] == i;
    if (reduced) ++j;
    if (!reduced) s.push_back(x.size(i));
    else if (keepdim) s.push_back(1);
  }
  return s;
}

Tensor reduce_raw(ReduceOp op, const Tensor& x, const Dims& dims, bool keepdim);

// sum/mean spread the gradient evenly; max/min give it to the extremal elements (split
// evenly among ties).
Tensor reduce_impl(ReduceOp op, const Tensor& x, const Dims& dims, bool keepdim) {
  Tensor out;
  {
    NoGradGuard raw;
    out = reduce_raw(op, x, dims, keepdim);
  }
  if (op == ReduceOp::ArgMax || op == ReduceOp::ArgMin || !any_requires_grad({x})) return out;
  std::vector<int64_t> rd = detail::reduce_dims(op_name(op), x, dims);
  Shape keep_shape = kept_shape(x, rd, true);
  int64_t r = 1;
  for (int64_t d : rd) r *= x.size(d);
  return record(op_name(op), {x}, out,
                [op, r, keep_shape, rd, xs = x.detach(), ys = out.detach()](const Tensor& g) {
                  Tensor gk = g.reshape(keep_shape);
                  if (op == ReduceOp::Sum) return std::vector<Tensor>{gk.expand(xs.sizes())};
                  if (op == ReduceOp::Mean) return std::vector<Tensor>{div(gk, static_cast<double>(r)).expand(xs.sizes())};
                  Tensor mask = eq(xs, ys.reshape(keep_shape));
                  Tensor count = sum(mask, rd, true);
                  return std::vector<Tensor>{where(mask, div(gk, count), 0.0)};
                },
                op == ReduceOp::Sum || op == ReduceOp::Mean ? std::vector<Tensor>{} : std::vector<Tensor>{x, out},
                true);  // differentiable: the max/min mask has no gradient of its own
}

Tensor reduce_raw(ReduceOp op, const Tensor& x, const Dims& dims, bool keepdim) {
  const char* name = op_name(op);
  detail::check_defined(name, x);
  std::vector<int64_t> rd = detail::reduce_dims(name, x, dims);
  bool arg = op == ReduceOp::ArgMax || op == ReduceOp::ArgMin;
  DType out_t = x.dtype();
  if (arg) out_t = DType::I64;
  if (op == ReduceOp::Sum && !is_floating(x.dtype())) out_t = DType::I64;
  if (op == ReduceOp::Mean) detail::check_floating(name, x);
  KILN_CHECK(!((op == ReduceOp::Max || op == ReduceOp::Min || arg) && x.dtype() == DType::Bool), name,
             ": not supported for bool tensors, got ", describe(x));

  int64_t r = 1;
  for (int64_t d : rd) r *= x.size(d);
  Shape out_shape = kept_shape(x, rd, keepdim);
  Tensor out = empty(out_shape, TensorOptions(out_t, x.device()));
  if (out.numel() == 0) return out;
  if (r == 0) {
    KILN_CHECK(op == ReduceOp::Sum || op == ReduceOp::Mean, name, ": cannot reduce over an empty dimension of ",
               describe(x));
    out.fill_(op == ReduceOp::Sum ? 0.0 : std::numeric_limits<double>::quiet_NaN());
    return out;
  }

  // A contiguous input whose reduced dims are one block needs no copy.
  bool block = true;
  for (size_t i = 1; i < rd.size(); ++i) block = block && rd[i] == rd[i - 1] + 1;
  Tensor in;
  int64_t outer = 1, inner = 1;
  if (rd.empty()) {
    in = x.contiguous();
  } else if (block && x.is_contiguous()) {
    in = x;
    for (int64_t i = 0; i < rd.front(); ++i) outer *= x.size(i);
    for (int64_t i = rd.back() + 1; i < x.dim(); ++i) inner *= x.size(i);
  } else {
    Shape perm;
    size_t j = 0;
    for (int64_t i = 0; i < x.dim(); ++i) {
      if (j < rd.size() && rd[j] == i) ++j;
      else perm.push_back(i), outer *= x.size(i);
    }
    perm.insert(perm.end(), rd.begin(), rd.end());
    in = x.permute(perm).contiguous();
  }
  // `op` is the ReduceOp here: the slot tag is spelled in full.
  kernel<kiln::op::reduce>(x.device())(kernel_view(in), kernel_view(out), ReduceParams{op, outer, r, inner});
  return out;
}

}  // namespace

// Under autocast (ops/autocast.h) sums and means of half tensors run in f32.
Tensor sum(const Tensor& x, const Dims& dims, bool keepdim) {
  return reduce_impl(ReduceOp::Sum, detail::autocast_f32(x), dims, keepdim);
}
Tensor mean(const Tensor& x, const Dims& dims, bool keepdim) {
  return reduce_impl(ReduceOp::Mean, detail::autocast_f32(x), dims, keepdim);
}
Tensor max(const Tensor& x, const Dims& dims, bool keepdim) { return reduce_impl(ReduceOp::Max, x, dims, keepdim); }
Tensor min(const Tensor& x, const Dims& dims, bool keepdim) { return reduce_impl(ReduceOp::Min, x, dims, keepdim); }

namespace {
Tensor arg_impl(ReduceOp op, const Tensor& x, std::optional<int64_t> dim, bool keepdim) {
  detail::check_defined(op_name(op), x);
  if (dim) return reduce_impl(op, x, {*dim}, keepdim);
  Tensor flat = reduce_impl(op, x.reshape({-1}), {0}, false);
  if (!keepdim) return flat;
  return flat.reshape(Shape(x.dim(), 1));
}
}  // namespace

Tensor argmax(const Tensor& x, std::optional<int64_t> dim, bool keepdim) {
  return arg_impl(ReduceOp::ArgMax, x, dim, keepdim);
}
Tensor argmin(const Tensor& x, std::optional<int64_t> dim, bool keepdim) {
  return arg_impl(ReduceOp::ArgMin, x, dim, keepdim);
}

Tensor var(const Tensor& x, const Dims& dims, int64_t correction, bool keepdim) {
  detail::check_defined("var", x);
  detail::check_floating("var", x);
  KILN_CHECK(correction >= 0, "var: correction must be non-negative, got ", correction);
  std::vector<int64_t> rd = detail::reduce_dims("var", x, dims);
  int64_t n = 1;
  for (int64_t d : rd) n *= x.size(d);
  Tensor centered = sub(x, mean(x, dims, true));
  Tensor ss = sum(mul(centered, centered), dims, keepdim);
  // PyTorch's divisor: max(0, n - correction). n <= correction gives inf (NaN for a zero
  // sum), and an empty reduction 0/0 = NaN, never a negative variance or -0.
  return div(ss, static_cast<double>(std::max<int64_t>(0, n - correction)));
}

Tensor std(const Tensor& x, const Dims& dims, int64_t correction, bool keepdim) {
  return kiln::sqrt(var(x, dims, correction, keepdim));
}

}  // namespace kiln
