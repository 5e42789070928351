// The kinds of each kernel family (unary, binary, reduce, random). Free of heavy
// includes, so CUDA kernel files can include it.
#pragma once

namespace kiln {

// Each family is an X-macro list, so adding a member is one line here plus its formula
// in the family's CPU and CUDA kernel tables.
#define KILN_UNARY_OPS(X)                                                          \
  X(Neg, neg) X(Abs, abs) X(Exp, exp) X(Log, log) X(Sqrt, sqrt) X(Rsqrt, rsqrt)    \
  X(Sin, sin) X(Cos, cos) X(Relu, relu) X(LeakyRelu, leaky_relu)                   \
  X(Sigmoid, sigmoid) X(Tanh, tanh) X(Gelu, gelu) X(GeluTanh, gelu_tanh) X(Silu, silu) X(Erf, erf)

#define KILN_BINARY_OPS(X)                                                        \
  X(Add, add) X(Sub, sub) X(Mul, mul) X(Div, div) X(Pow, pow) X(Maximum, maximum) \
  X(Minimum, minimum) X(Eq, eq) X(Ne, ne) X(Lt, lt) X(Le, le) X(Gt, gt) X(Ge, ge)

#define KILN_REDUCE_OPS(X) X(Sum, sum) X(Mean, mean) X(Max, max) X(Min, min) X(ArgMax, argmax) X(ArgMin, argmin)

#define KILN_ENUM_MEMBER(E, name) E,
enum class UnaryOp : int { KILN_UNARY_OPS(KILN_ENUM_MEMBER) };
enum class BinaryOp : int { KILN_BINARY_OPS(KILN_ENUM_MEMBER) };
enum class ReduceOp : int { KILN_REDUCE_OPS(KILN_ENUM_MEMBER) };
#undef KILN_ENUM_MEMBER
enum class RandomKind : int { Uniform, Normal, Int };
// How pad2d fills the border, and conv2d's padding_mode (ops/pad.h, ops/conv.h):
// zeros, mirror without repeating the edge (reflect), repeat the edge (replicate), wrap
// around (circular), as in PyTorch.
enum class PaddingMode : int { Zeros, Reflect, Replicate, Circular };
inline const char* padding_mode_name(PaddingMode m) {
  switch (m) {
    case PaddingMode::Zeros: return "zeros";
    case PaddingMode::Reflect: return "reflect";
    case PaddingMode::Replicate: return "replicate";
    case PaddingMode::Circular: return "circular";
  }
  return "?";
}

const char* op_name(UnaryOp op);
const char* op_name(BinaryOp op);
const char* op_name(ReduceOp op);
inline bool is_comparison(BinaryOp op) { return static_cast<int>(op) >= static_cast<int>(BinaryOp::Eq); }
// neg, abs and relu are defined for integer types too; the others need floating inputs.
inline bool unary_accepts_integers(UnaryOp op) {
  return op == UnaryOp::Neg || op == UnaryOp::Abs || op == UnaryOp::Relu;
}

}  // namespace kiln
