// Elementwise unary operators. Integer inputs are computed in f32 (as PyTorch does),
// except neg, abs and relu, which keep integer types.
#pragma once
#include <kiln/core/op_kinds.h>
#include <kiln/core/tensor.h>

namespace kiln {

// Kernel parameters of the unary family (slot `unary`, ops/op_list.h): y = op(x; alpha),
// alpha being leaky_relu's slope. x and y share shape and dtype, any strides.
struct UnaryParams {
  UnaryOp op = UnaryOp::Neg;
  double alpha = 0;
};

Tensor unary(UnaryOp op, const Tensor& x, double alpha = 0.0);

// Kernel slot unary_backward (first-order gradients in one pass): gx = g * op'(.) where s
// is the tensor the derivative is written in: the output y for sigmoid and tanh
// (y(1 - y), 1 - y^2), the input x for relu (s > 0 ? g : 0), leaky_relu (s > 0 ? g :
// alpha g), gelu, gelu_tanh and silu. s, g, gx: one shape, one floating dtype, contiguous;
// computed in f32 (f64 for f64). Other ops have no fused gradient (unary_has_fused_grad).
inline bool unary_has_fused_grad(UnaryOp op) {
  switch (op) {
    case UnaryOp::Relu:
    case UnaryOp::LeakyRelu:
    case UnaryOp::Sigmoid:
    case UnaryOp::Tanh:
    case UnaryOp::Gelu:
    case UnaryOp::GeluTanh:
    case UnaryOp::Silu: return true;
    default: return false;
  }
}

Tensor neg(const Tensor& x);
Tensor abs(const Tensor& x);
Tensor exp(const Tensor& x);
Tensor log(const Tensor& x);
Tensor sqrt(const Tensor& x);
Tensor rsqrt(const Tensor& x);
Tensor sin(const Tensor& x);
Tensor cos(const Tensor& x);
Tensor relu(const Tensor& x);
Tensor leaky_relu(const Tensor& x, double negative_slope = 0.01);
Tensor sigmoid(const Tensor& x);
Tensor tanh(const Tensor& x);
// gelu(x) = x * Phi(x) (erf form); approximate = true uses the tanh form of GPT-2.
Tensor gelu(const Tensor& x, bool approximate = false);
Tensor gelu_tanh(const Tensor& x);
Tensor silu(const Tensor& x);
Tensor erf(const Tensor& x);

inline Tensor operator-(const Tensor& x) { return neg(x); }

}  // namespace kiln
