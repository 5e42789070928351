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
