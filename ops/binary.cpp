// Binary elementwise operators: broadcasting, promotion, checks and dispatch; where,
// cast and fill.
#include <kiln/ops/binary.h>

#include <kiln/ops/checks.h>

namespace kiln {
namespace {

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

Tensor run_binary(BinaryOp op, const Tensor& a, const Tensor& b, DType promoted) {
  const char* name = op_name(op);
  detail::check_same_device(name, a, b);
  DType ct = compute_dtype(op, promoted, a, b);
  Shape shape = broadcast_shapes(a.sizes(), b.sizes(), name);
  Tensor out = empty(shape, TensorOptions(is_comparison(op) ? DType::Bool : ct, a.device()));
  if (out.numel() == 0) return out;
  backend(a.device()).binary(op, cast(a, ct).expand(shape), cast(b, ct).expand(shape), out);
  return out;
}

}  // namespace

Tensor binary(BinaryOp op, const Tensor& a, const Tensor& b) {
  detail::check_defined(op_name(op), a, "first operand");
  detail::check_defined(op_name(op), b, "second operand");
  return run_binary(op, a, b, promote_types(a.dtype(), b.dtype()));
}

Tensor binary(BinaryOp op, const Tensor& a, Scalar s) {
  detail::check_defined(op_name(op), a);
  DType t = detail::result_type(a, s);
  return run_binary(op, a, scalar_tensor(s, TensorOptions(t, a.device())), t);
}

Tensor binary(BinaryOp op, Scalar s, const Tensor& b) {
  detail::check_defined(op_name(op), b);
  DType t = detail::result_type(b, s);
  return run_binary(op, scalar_tensor(s, TensorOptions(t, b.device())), b, t);
}

Tensor& binary_(BinaryOp op, Tensor& a, const Tensor& b) {
  const char* name = op_name(op);
  detail::check_defined(name, a);
  detail::check_defined(name, b);
  detail::check_same_device(name, a, b);
  KILN_CHECK(!is_comparison(op), name, "_: comparisons have no in-place form");
  DType promoted = promote_types(a.dtype(), b.dtype());
  DType ct = compute_dtype(op, promoted, a, b);
  KILN_CHECK(promote_types(ct, a.dtype()) == a.dtype(), name, "_: result dtype ", dtype_name(ct),
             " cannot be stored in-place in ", describe(a));
  Shape shape = broadcast_shapes(a.sizes(), b.sizes(), name);
  KILN_CHECK(shape == a.sizes(), name, "_: ", describe(b), " does not broadcast to the in-place operand ",
             describe(a));
  if (a.numel() == 0) return a;
  // Kernels read each element before writing it, so aliasing out with a is safe.
  backend(a.device()).binary(op, a, cast(b, a.dtype()).expand(shape), a);
  return a;
}

Tensor& binary_(BinaryOp op, Tensor& a, Scalar s) {
  detail::check_defined(op_name(op), a);
  return binary_(op, a, scalar_tensor(s, TensorOptions(detail::result_type(a, s), a.device())));
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
  backend(a.device()).where(cond.expand(shape), cast(a, t).expand(shape), cast(b, t).expand(shape), out);
  return out;
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
