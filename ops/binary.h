// Elementwise binary operators with NumPy broadcasting and PyTorch's dtype promotion;
// tensor-scalar forms, in-place forms, where, casts and fill.
#pragma once
#include <kiln/core/op_kinds.h>
#include <kiln/core/tensor.h>

namespace kiln {

// Kernel parameters of the binary family (slot `binary`): out = a op b, where a and b have
// out's shape (broadcast by stride 0) and one dtype; out has that dtype, or Bool for
// comparisons. One operand may be a scalar passed by value (scalar_operand 0 for a, 1
// for b): its view then has no data (data == nullptr, all strides 0) and `scalar`, in
// the operands' dtype, is its value; no 0-d device tensor is made for `x * 2`.
// Slot `where`: out = cond ? a : b, cond Bool, all of out's shape.
struct BinaryParams {
  BinaryOp op = BinaryOp::Add;
  int scalar_operand = -1;
  Scalar scalar;
};

Tensor binary(BinaryOp op, const Tensor& a, const Tensor& b);
Tensor binary(BinaryOp op, const Tensor& a, Scalar b);
Tensor binary(BinaryOp op, Scalar a, const Tensor& b);
// In place: a = a op b; b must broadcast to a's shape and the result must fit a's dtype.
Tensor& binary_(BinaryOp op, Tensor& a, const Tensor& b);
Tensor& binary_(BinaryOp op, Tensor& a, Scalar b);

#define KILN_DECLARE_BINARY(E, name)                  \
  Tensor name(const Tensor& a, const Tensor& b);      \
  Tensor name(const Tensor& a, Scalar b);             \
  Tensor name(Scalar a, const Tensor& b);             \
  Tensor& name##_(Tensor& a, const Tensor& b);        \
  Tensor& name##_(Tensor& a, Scalar b);
KILN_BINARY_OPS(KILN_DECLARE_BINARY)
#undef KILN_DECLARE_BINARY

// cond ? a : b with broadcasting; cond must be bool; a and b are promoted.
Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b);
Tensor where(const Tensor& cond, const Tensor& a, Scalar b);
Tensor where(const Tensor& cond, Scalar a, const Tensor& b);

// Cast (a copy, or x itself when the dtype already matches).
Tensor cast(const Tensor& x, DType dtype);
Tensor& fill_(Tensor& x, Scalar value);

inline Tensor operator+(const Tensor& a, const Tensor& b) { return add(a, b); }
inline Tensor operator-(const Tensor& a, const Tensor& b) { return sub(a, b); }
inline Tensor operator*(const Tensor& a, const Tensor& b) { return mul(a, b); }
inline Tensor operator/(const Tensor& a, const Tensor& b) { return div(a, b); }
inline Tensor operator+(const Tensor& a, Scalar b) { return add(a, b); }
inline Tensor operator-(const Tensor& a, Scalar b) { return sub(a, b); }
inline Tensor operator*(const Tensor& a, Scalar b) { return mul(a, b); }
inline Tensor operator/(const Tensor& a, Scalar b) { return div(a, b); }
inline Tensor operator+(Scalar a, const Tensor& b) { return add(a, b); }
inline Tensor operator-(Scalar a, const Tensor& b) { return sub(a, b); }
inline Tensor operator*(Scalar a, const Tensor& b) { return mul(a, b); }
inline Tensor operator/(Scalar a, const Tensor& b) { return div(a, b); }
inline Tensor& operator+=(Tensor& a, const Tensor& b) { return add_(a, b); }
inline Tensor& operator-=(Tensor& a, const Tensor& b) { return sub_(a, b); }
inline Tensor& operator*=(Tensor& a, const Tensor& b) { return mul_(a, b); }
inline Tensor& operator/=(Tensor& a, const Tensor& b) { return div_(a, b); }
inline Tensor& operator+=(Tensor& a, Scalar b) { return add_(a, b); }
inline Tensor& operator-=(Tensor& a, Scalar b) { return sub_(a, b); }
inline Tensor& operator*=(Tensor& a, Scalar b) { return mul_(a, b); }
inline Tensor& operator/=(Tensor& a, Scalar b) { return div_(a, b); }

}  // namespace kiln
