// Binary elementwise operators: broadcasting, promotion, checks and the `binary` kernel
// slot (ops/cpu/binary.cpp, cuda/kernels/binary.cu); where (slot `where`), cast and fill.
#include <kiln/ops/binary.h>

#include <kiln/core/autograd.h>
#include <kiln/ops/checks.h>
#include <kiln/ops/op_list.h>
#include <kiln/ops/unary.h>

namespace kiln {
namespace {

// d(a op b)/da and /db times g, summed back to each operand's shape; undefined for an
// operand that needs no gradient. a, b: the inputs (undetached, so a create_graph pass
// differentiates through them); y: the output (detached; recomputed from a and b when
// grad mode is on, i.e. in a create_graph pass). Written with kiln ops: differentiable.
BackwardFn binary_backward(BinaryOp op, Tensor a, Tensor b, Tensor y_saved, bool need_a, bool need_b) {
  return [=](const Tensor& g) {
    const Tensor y = grad_enabled() && (op == BinaryOp::Div || op == BinaryOp::Pow) ? binary(op, a, b) : y_saved;
    Tensor ga, gb;
    switch (op) {
      case BinaryOp::Add:
        ga = g, gb = g;
        break;
      case BinaryOp::Sub:
        ga = g;
        if (need_b) gb = neg(g);
        break;
      case BinaryOp::Mul:
        if (need_a) ga = mul(g, b);
        if (need_b) gb = mul(g, a);
        break;
      case BinaryOp::Div:
        if (need_a) ga = div(g, b);
        if (need_b) gb = neg(div(mul(g, y), b));
        break;
      case BinaryOp::Pow:
        if (need_a) ga = mul(mul(g, b), pow(a, sub(b, 1.0)));
        if (need_b) gb = where(gt(a, 0), mul(mul(g, y), log(a)), 0.0);
        break;
      case BinaryOp::Maximum:
      case BinaryOp::Minimum: {
        // The larger (smaller) operand gets the gradient; ties split it evenly.
        Tensor a_wins = op == BinaryOp::Maximum ? gt(a, b) : lt(a, b);
        Tensor tie = eq(a, b);
        Tensor half = mul(g, 0.5);
        if (need_a) ga = where(a_wins, g, where(tie, half, 0.0));
        if (need_b) gb = where(a_wins, 0.0, where(tie, half, g));
        break;
      }
      default: throw Error(detail::str(op_name(op), ": comparisons have no gradient"));
    }
    return std::vector<Tensor>{need_a && ga.defined() ? detail::sum_to_shape(ga, a.sizes()) : Tensor(),
                               need_b && gb.defined() ? detail::sum_to_shape(gb, b.sizes()) : Tensor()};
  };
}

bool is_arithmetic(BinaryOp op) { return !is_comparison(op) && op != BinaryOp::Maximum && op != BinaryOp::Minimum; }

// The dtype the kernel computes in, given the promoted operand dtype.
DType compute_dtype(BinaryOp op, DType promoted, const Tensor& a, const Tensor& b) {
  const char* name = op_name(op);
  if (op == BinaryOp::Div && !is_floating(promoted)) return DType::F32;  // true division
  if (op == BinaryOp::Pow && promoted == DType::Bool) return DType::I64;
  KILN_CHECK(!(is_arithmetic(op) && promoted == DType::Bool), name, ": arithmetic on bool tensors is not supported (",
             describe(a), ", ", describe(b), "); cast to an integer or floating dtype first");
  return promoted;
}

// The tensors a binary op's backward formula reads (binary_backward captures them).
std::vector<Tensor> saved_by(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& y) {
  switch (op) {
    case BinaryOp::Add:
    case BinaryOp::Sub: return {};
    case BinaryOp::Div:
    case BinaryOp::Pow: return {a, b, y};
    default: return {a, b};
  }
}

// A view for a scalar operand passed by value (BinaryParams::scalar) beside `like`, a view
// of the iteration space: no data, every stride 0, in `dtype`.
TensorView scalar_operand_view(const TensorView& like, DType dtype) {
  TensorView v = like;
  v.data = nullptr;
  v.storage = nullptr;
  v.dtype = dtype;
  for (int d = 0; d < v.ndim; ++d) v.strides[d] = 0;
  v.contiguous = v.numel <= 1;
  return v;
}

// out = a op b. One of a and b may be undefined with `scalar_index` naming it (0 or 1):
// that operand is the Scalar `s`, which goes to the kernel by value and becomes a tensor
// only if the backward formula needs it.
Tensor run_binary(BinaryOp op, const Tensor& a, const Tensor& b, DType promoted, int scalar_index = -1,
                  Scalar s = {}) {
  const char* name = op_name(op);
  const Tensor& t = scalar_index == 0 ? b : a;  // a tensor operand
  if (scalar_index < 0) detail::check_same_device(name, a, b);
  DType ct = compute_dtype(op, promoted, a, b);
  Shape shape = scalar_index < 0 ? broadcast_shapes(a.sizes(), b.sizes(), name) : t.sizes();
  Tensor out = empty(shape, TensorOptions(is_comparison(op) ? DType::Bool : ct, t.device()));
  if (out.numel() == 0) return out;
  Tensor A = scalar_index == 0 ? Tensor() : cast(a, ct), B = scalar_index == 1 ? Tensor() : cast(b, ct);
  {
    NoGradGuard raw;  // the broadcast views are internal
    if (scalar_index < 0) {
      std::vector<TensorView> v = kernel_views({A.expand(shape), B.expand(shape), out});
      kernel<op::binary>(t.device())(v[0], v[1], v[2], BinaryParams{op, -1, Scalar()});
    } else {
      std::vector<TensorView> v = kernel_views({scalar_index == 0 ? B : A, out});
      const TensorView sv = scalar_operand_view(v[1], ct);
      kernel<op::binary>(t.device())(scalar_index == 0 ? sv : v[0], scalar_index == 1 ? sv : v[0], v[1],
                                     BinaryParams{op, scalar_index, s});
    }
  }
  if (is_comparison(op) || !any_requires_grad({A, B})) return out;
  if (scalar_index == 0) A = scalar_tensor(s, TensorOptions(ct, t.device()));
  if (scalar_index == 1) B = scalar_tensor(s, TensorOptions(ct, t.device()));
  return record(name, {A, B}, out,
                binary_backward(op, A, B, out.detach(), A.requires_grad(), B.requires_grad()),
                saved_by(op, A, B, out), true);
}

}  // namespace

Tensor binary(BinaryOp op, const Tensor& a, const Tensor& b) {
  detail::check_defined(op_name(op), a, "first operand");
  detail::check_defined(op_name(op), b, "second operand");
  return run_binary(op, a, b, promote_types(a.dtype(), b.dtype()));
}

Tensor binary(BinaryOp op, const Tensor& a, Scalar s) {
  detail::check_defined(op_name(op), a);
  return run_binary(op, a, Tensor(), detail::result_type(a, s), 1, s);
}

Tensor binary(BinaryOp op, Scalar s, const Tensor& b) {
  detail::check_defined(op_name(op), b);
  return run_binary(op, Tensor(), b, detail::result_type(b, s), 0, s);
}

namespace {
// a op= b (b undefined: the Scalar s).
Tensor& run_binary_(BinaryOp op, Tensor& a, const Tensor& b, Scalar s) {
  const char* name = op_name(op);
  const std::string inplace_name = std::string(name) + "_";
  const bool scalar = !b.defined();
  detail::check_inplace_no_grad(inplace_name.c_str(), {a, b});
  KILN_CHECK(!is_comparison(op), name, "_: comparisons have no in-place form");
  DType promoted = scalar ? detail::result_type(a, s) : promote_types(a.dtype(), b.dtype());
  DType ct = compute_dtype(op, promoted, a, b);
  KILN_CHECK(promote_types(ct, a.dtype()) == a.dtype(), name, "_: result dtype ", dtype_name(ct),
             " cannot be stored in-place in ", describe(a));
  if (!scalar) {
    detail::check_same_device(name, a, b);
    Shape shape = broadcast_shapes(a.sizes(), b.sizes(), name);
    KILN_CHECK(shape == a.sizes(), name, "_: ", describe(b), " does not broadcast to the in-place operand ",
               describe(a));
  }
  if (a.numel() == 0) return a;
  detail::mark_written(inplace_name.c_str(), a);
  if (scalar) {
    const TensorView va = kernel_views({a})[0];
    kernel<op::binary>(a.device())(va, scalar_operand_view(va, a.dtype()), va, BinaryParams{op, 1, s});
    return a;
  }
  // Kernels read each element before writing it, so out may be exactly a; an operand
  // that overlaps a in another layout (a.add_(a.t())) is copied first.
  Tensor bb = cast(b, a.dtype()).expand(a.sizes());
  if (bb.shares_storage(a) && !(bb.offset() == a.offset() && bb.strides() == a.strides())) bb = bb.clone();
  std::vector<TensorView> v = kernel_views({a, bb});
  kernel<op::binary>(a.device())(v[0], v[1], v[0], BinaryParams{op, -1, Scalar()});
  return a;
}
}  // namespace

Tensor& binary_(BinaryOp op, Tensor& a, const Tensor& b) {
  detail::check_defined(op_name(op), a);
  detail::check_defined(op_name(op), b);
  return run_binary_(op, a, b, Scalar());
}

Tensor& binary_(BinaryOp op, Tensor& a, Scalar s) {
  detail::check_defined(op_name(op), a);
  return run_binary_(op, a, Tensor(), s);
}

#define KILN_DEFINE_BINARY(E, name)                                                             \
  Tensor name(const Tensor& a, const Tensor& b) { return binary(BinaryOp::E, a, b); }           \
  Tensor name(const Tensor& a, Scalar b) { return binary(BinaryOp::E, a, b); }                  \
  Tensor name(Scalar a, const Tensor& b) { return binary(BinaryOp::E, a, b); }                  \
  Tensor& name##_(Tensor& a, const Tensor& b) { return binary_(BinaryOp::E, a, b); }            \
  Tensor& name##_(Tensor& a, Scalar b) { return binary_(BinaryOp::E, a, b); }
KILN_BINARY_OPS(KILN_DEFINE_BINARY)
#undef KILN_DEFINE_BINARY

Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b) {
  detail::check_defined("where", cond, "condition");
  detail::check_defined("where", a, "first operand");
  detail::check_defined("where", b, "second operand");
  detail::check_dtype("where", cond, DType::Bool, "condition");
  detail::check_same_device("where", cond, a);
  detail::check_same_device("where", a, b);
  DType t = promote_types(a.dtype(), b.dtype());
  Shape shape = broadcast_shapes(broadcast_shapes(cond.sizes(), a.sizes(), "where"), b.sizes(), "where");
  Tensor out = empty(shape, TensorOptions(t, a.device()));
  if (out.numel() == 0) return out;
  Tensor A = cast(a, t), B = cast(b, t);
  {
    NoGradGuard raw;
    std::vector<TensorView> v = kernel_views({cond.expand(shape), A.expand(shape), B.expand(shape), out});
    kernel<op::where>(a.device())(v[0], v[1], v[2], v[3]);
  }
  if (!any_requires_grad({A, B})) return out;
  return record("where", {cond, A, B}, out,
                [c = cond.detach(), a_sizes = A.sizes(), b_sizes = B.sizes(), need_a = A.requires_grad(),
                 need_b = B.requires_grad()](const Tensor& g) {
                  // Only the operands that need one (where(x > 0, g, 0.0), ReLU's backward, has
                  // a constant second operand: its gradient would be a whole tensor summed away).
                  return std::vector<Tensor>{Tensor(),
                                             need_a ? detail::sum_to_shape(where(c, g, 0.0), a_sizes) : Tensor(),
                                             need_b ? detail::sum_to_shape(where(c, 0.0, g), b_sizes) : Tensor()};
                },
                {}, true);
}

Tensor where(const Tensor& cond, const Tensor& a, Scalar b) {
  detail::check_defined("where", a, "first operand");
  return where(cond, a, scalar_tensor(b, TensorOptions(detail::result_type(a, b), a.device())));
}

Tensor where(const Tensor& cond, Scalar a, const Tensor& b) {
  detail::check_defined("where", b, "second operand");
  return where(cond, scalar_tensor(a, TensorOptions(detail::result_type(b, a), b.device())), b);
}

Tensor cast(const Tensor& x, DType dtype) {
  detail::check_defined("cast", x);
  return x.to(dtype);
}

Tensor& fill_(Tensor& x, Scalar value) {
  detail::check_defined("fill_", x);
  return x.fill_(value);
}

}  // namespace kiln
