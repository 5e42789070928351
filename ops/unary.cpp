// Unary elementwise operators: checks, output allocation, the `unary` kernel slot
// (ops/cpu/unary.cpp, cuda/kernels/unary.cu) and the backward formulas.
#include <kiln/ops/unary.h>

#include <cmath>

#include <kiln/core/autograd.h>
#include <kiln/ops/binary.h>
#include <kiln/ops/checks.h>
#include <kiln/ops/op_list.h>

namespace kiln {
namespace {

BackwardFn unary_composite_backward(UnaryOp op, const Tensor& x, const Tensor& y, double alpha);

// gx = g * op'(s) in one pass (slot unary_backward; ops/unary.h says which s), or an
// undefined tensor when g does not match s (another dtype or shape: the composite runs).
Tensor fused_grad(UnaryOp op, const Tensor& s, const Tensor& g, double alpha) {
  if (!g.defined() || g.dtype() != s.dtype() || g.sizes() != s.sizes()) return Tensor();
  const Tensor sc = s.contiguous(), gc = g.contiguous();
  Tensor gx = empty(sc.sizes(), TensorOptions(sc.dtype(), sc.device()));
  if (gx.numel() > 0)
    kernel<op::unary_backward>(sc.device())(kernel_view(sc), kernel_view(gc), kernel_view(gx), UnaryParams{op, alpha});
  return gx;
}

// The backward formula of each unary op, written with kiln ops, so it is differentiable
// again: x is the input (undetached: a create_graph pass differentiates through it), y the
// output (detached, so the node does not own its own output's graph). The formulas written
// in y recompute it from x when grad mode is on, i.e. in a create_graph pass. A
// first-order pass (grad mode off) of the ops with a fused gradient runs it instead: one
// kernel rather than several elementwise ops and their temporaries.
BackwardFn unary_backward(UnaryOp op, const Tensor& x, const Tensor& y, double alpha) {
  using V = std::vector<Tensor>;
  if (unary_has_fused_grad(op)) {
    // s: what the derivative is written in (the node keeps what the composite keeps).
    const Tensor s = op == UnaryOp::Sigmoid || op == UnaryOp::Tanh ? y : x;
    BackwardFn composite = unary_composite_backward(op, x, y, alpha);
    return [op, s, alpha, composite](const Tensor& g) {
      if (!grad_enabled()) {
        Tensor gx = fused_grad(op, s, g, alpha);
        if (gx.defined()) return V{gx};
      }
      return composite(g);
    };
  }
  return unary_composite_backward(op, x, y, alpha);
}

BackwardFn unary_composite_backward(UnaryOp op, const Tensor& x, const Tensor& y, double alpha) {
  using V = std::vector<Tensor>;
  const auto out = [x, y, op, alpha]() { return grad_enabled() ? unary(op, x, alpha) : y; };
  switch (op) {
    case UnaryOp::Neg: return [](const Tensor& g) { return V{neg(g)}; };
    case UnaryOp::Abs:
      return [x](const Tensor& g) { return V{where(gt(x, 0), g, where(lt(x, 0), neg(g), 0.0))}; };
    case UnaryOp::Exp: return [out](const Tensor& g) { return V{mul(g, out())}; };
    case UnaryOp::Log: return [x](const Tensor& g) { return V{div(g, x)}; };
    case UnaryOp::Sqrt: return [out](const Tensor& g) { return V{div(g, mul(out(), 2.0))}; };
    case UnaryOp::Rsqrt:
      return [out](const Tensor& g) {
        Tensor y = out();
        return V{mul(g, mul(mul(y, mul(y, y)), -0.5))};
      };
    case UnaryOp::Sin: return [x](const Tensor& g) { return V{mul(g, cos(x))}; };
    case UnaryOp::Cos: return [x](const Tensor& g) { return V{neg(mul(g, sin(x)))}; };
    case UnaryOp::Relu: return [x](const Tensor& g) { return V{where(gt(x, 0), g, 0.0)}; };
    case UnaryOp::LeakyRelu:
      return [x, alpha](const Tensor& g) { return V{where(gt(x, 0), g, mul(g, alpha))}; };
    case UnaryOp::Sigmoid:
      return [out](const Tensor& g) {
        Tensor y = out();
        return V{mul(g, mul(y, sub(1.0, y)))};
      };
    case UnaryOp::Tanh:
      return [out](const Tensor& g) {
        Tensor y = out();
        return V{mul(g, sub(1.0, mul(y, y)))};
      };
    case UnaryOp::Gelu:  // Phi(x) + x phi(x)
      return [x](const Tensor& g) {
        Tensor cdf = mul(add(erf(mul(x, M_SQRT1_2)), 1.0), 0.5);
        Tensor pdf = mul(exp(mul(mul(x, x), -0.5)), 0.3989422804014327);
        return V{mul(g, add(cdf, mul(x, pdf)))};
      };
    case UnaryOp::GeluTanh:  // 0.5(1+t) + 0.5x(1-t^2) k (1 + 3c x^2), t = tanh(k(x + c x^3))
      return [x](const Tensor& g) {
        constexpr double k = 0.7978845608028654, c = 0.044715;
        Tensor x2 = mul(x, x);
        Tensor t = tanh(mul(add(x, mul(mul(x2, x), c)), k));
        Tensor left = mul(add(t, 1.0), 0.5);
        Tensor right = mul(mul(mul(x, sub(1.0, mul(t, t))), 0.5 * k), add(mul(x2, 3 * c), 1.0));
        return V{mul(g, add(left, right))};
      };
    case UnaryOp::Silu:  // s (1 + x (1 - s))
      return [x](const Tensor& g) {
        Tensor s = sigmoid(x);
        return V{mul(g, mul(s, add(mul(x, sub(1.0, s)), 1.0)))};
      };
    case UnaryOp::Erf:  // 2/sqrt(pi) exp(-x^2)
      return [x](const Tensor& g) { return V{mul(g, mul(exp(neg(mul(x, x))), 1.1283791670955126))}; };
  }
  throw Error(detail::str("unary: no backward for ", op_name(op)));
}

// The tensor unary_backward's formula for `op` reads: the output for the ops whose
// derivative is written in y, nothing for neg, the input otherwise.
std::vector<Tensor> saved_by(UnaryOp op, const Tensor& x, const Tensor& y) {
  switch (op) {
    case UnaryOp::Neg: return {};
    case UnaryOp::Exp:
    case UnaryOp::Sqrt:
    case UnaryOp::Rsqrt:
    case UnaryOp::Sigmoid:
    case UnaryOp::Tanh: return {y};
    default: return {x};
  }
}

}  // namespace

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
  if (y.numel() > 0) {
    std::vector<TensorView> v = kernel_views({in, y});
    kernel<op::unary>(in.device())(v[0], v[1], UnaryParams{op, alpha});
  }
  if (!any_requires_grad({in})) return y;
  return record(name, {in}, y, unary_backward(op, in, y.detach(), alpha), saved_by(op, in, y), true);
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
Tensor erf(const Tensor& x) { return unary(UnaryOp::Erf, x); }

}  // namespace kiln
