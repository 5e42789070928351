// Unary elementwise operators: checks, output allocation, dispatch.
#include <kiln/ops/unary.h>

#include <kiln/ops/binary.h>
#include <kiln/ops/checks.h>

namespace kiln {

Tensor unary(UnaryOp op, const Tensor& x, double alpha) {
  const char* name = op_name(op);
  detail::check_defined(name, x);
  Tensor in = x;
  if (unary_accepts_integers(op)) {
    KILN_CHECK(x.dtype() != DType::Bool, name, ": not defined for bool tensors, got ", describe(x));
  } else if (!is_floating(x.dtype())) {
    in = cast(x, DType::F32);  // integer and bool inputs compute in f32, as in PyTorch
  }
  Tensor y = empty_like(in);
  if (y.numel() > 0) backend(in.device()).unary(op, in, y, alpha);
  return y;
}

Tensor neg(const Tensor& x) { return unary(UnaryOp::Neg, x); }
Tensor abs(const Tensor& x) { return unary(UnaryOp::Abs, x); }
Tensor exp(const Tensor& x) { return unary(UnaryOp::Exp, x); }
Tensor log(const Tensor& x) { return unary(UnaryOp::Log, x); }
Tensor sqrt(const Tensor& x) { return unary(UnaryOp::Sqrt, x); }
Tensor rsqrt(const Tensor& x) { return unary(UnaryOp::Rsqrt, x); }
Tensor sin(const Tensor& x) { return unary(UnaryOp::Sin, x); }
Tensor cos(const Tensor& x) { return unary(UnaryOp::Cos, x); }
Tensor relu(const Tensor& x) {
  KILN_CHECK(x.defined() && x.dtype() != DType::Bool, "relu: not defined for bool tensors");
  return unary(UnaryOp::Relu, x);
}
Tensor leaky_relu(const Tensor& x, double slope) { return unary(UnaryOp::LeakyRelu, x, slope); }
Tensor sigmoid(const Tensor& x) { return unary(UnaryOp::Sigmoid, x); }
Tensor tanh(const Tensor& x) { return unary(UnaryOp::Tanh, x); }
Tensor gelu(const Tensor& x, bool approximate) { return unary(approximate ? UnaryOp::GeluTanh : UnaryOp::Gelu, x); }
Tensor gelu_tanh(const Tensor& x) { return unary(UnaryOp::GeluTanh, x); }
Tensor silu(const Tensor& x) { return unary(UnaryOp::Silu, x); }

}  // namespace kiln
