// matmul/bmm: shape rules, batch broadcasting and a BLAS-friendly layout; the product
// itself is the device's matmul kernel (cuBLASLt or OpenBLAS).
#include <kiln/ops/matmul.h>
#include <kiln/ops/autocast.h>

#include <kiln/core/autograd.h>
#include <kiln/ops/checks.h>
#include <kiln/ops/op_list.h>
#include <kiln/ops/reduce.h>
#include <kiln/ops/unary.h>
#include <kiln/ops/binary.h>

namespace kiln {
namespace {

// A (B, R, C) operand with unit stride in one of its last two dims and a valid leading
// dimension, copying only when neither holds.
Tensor blas_layout(const Tensor& t) {
  int64_t R = t.size(1), C = t.size(2);
  Shape st = t.strides();
  if (t.size(0) == 1) st[0] = R * C;
  if (st[2] == 1 || C == 1) {  // row-major candidate
    if (C == 1) st[2] = 1;
    if (R == 1) st[1] = std::max<int64_t>(C, 1);
    if (st[1] >= std::max<int64_t>(C, 1)) return t.as_strided(t.sizes(), st, t.offset());
  }
  st = t.strides();
  if (t.size(0) == 1) st[0] = R * C;
  if (st[1] == 1 || R == 1) {  // column-major candidate
    if (R == 1) st[1] = 1;
    if (C == 1) st[2] = std::max<int64_t>(R, 1);
    if (st[2] >= std::max<int64_t>(R, 1)) return t.as_strided(t.sizes(), st, t.offset());
  }
  return t.contiguous();
}

void check_operands(const char* op, const Tensor& a, const Tensor& b) {
  detail::check_defined(op, a, "first operand");
  detail::check_defined(op, b, "second operand");
  detail::check_same_device(op, a, b);
  detail::check_floating(op, a);
  KILN_CHECK(a.dtype() == b.dtype(), op, ": operands must have the same dtype, got ", describe(a), " and ",
             describe(b));
  KILN_CHECK(a.dim() >= 1 && b.dim() >= 1, op, ": operands must have at least 1 dim, got ", describe(a), " and ",
             describe(b));
}

Tensor product_raw(const Tensor& A, const Tensor& B) {  // (Bt, M, K) @ (Bt, K, N)
  NoGradGuard raw;
  Tensor out = empty({A.size(0), A.size(1), B.size(2)}, TensorOptions(A.dtype(), A.device()));
  if (out.numel() == 0) return out;
  if (A.size(2) == 0) return out.fill_(0);
  const Tensor a = blas_layout(A), b = blas_layout(B);
  kernel<op::matmul>(A.device())(kernel_view(a), kernel_view(b), kernel_view(out));
  return out;
}

// dA = g B^T, dB = A^T g; broadcast batch dims and 1-D operands are undone by the
// backward of the views matmul builds A and B with.
Tensor product(const Tensor& A, const Tensor& B) {
  Tensor out = product_raw(A, B);
  if (!any_requires_grad({A, B})) return out;
  return record("matmul", {A, B}, out,
                // A and B undetached and the products recorded: differentiable again.
                [a = A, b = B, need_a = A.requires_grad(), need_b = B.requires_grad()](const Tensor& g) {
                  return std::vector<Tensor>{need_a ? product(g, b.transpose(1, 2)) : Tensor(),
                                             need_b ? product(a.transpose(1, 2), g) : Tensor()};
                },
                {A, B}, true);
}

}  // namespace

Tensor matmul(const Tensor& a_in, const Tensor& b_in) {
  const Tensor a = detail::autocast_half(a_in), b = detail::autocast_half(b_in);  // ops/autocast.h
  check_operands("matmul", a, b);
  Tensor a2 = a.dim() == 1 ? a.unsqueeze(0) : a;
  Tensor b2 = b.dim() == 1 ? b.unsqueeze(1) : b;
  int64_t M = a2.size(-2), K = a2.size(-1), K2 = b2.size(-2), N = b2.size(-1);
  KILN_CHECK(K == K2, "matmul: inner dimensions differ: ", describe(a), " @ ", describe(b), " (", K, " vs ", K2,
             ")");
  if (a.dim() > 2 && b.dim() <= 2) {
    // (..., M, K) @ (K, N): fold the batch dims into M, so the product and the weight
    // gradient of a linear layer over (B, T, C) are each one GEMM (not B GEMMs and a sum).
    Shape lead(a.sizes().begin(), a.sizes().end() - 1);
    Tensor out = product(a.reshape({1, shape_numel(lead), K}), b2.unsqueeze(0));
    if (b.dim() > 1) lead.push_back(N);
    return out.view(lead);
  }
  Shape ba(a2.sizes().begin(), a2.sizes().end() - 2), bb(b2.sizes().begin(), b2.sizes().end() - 2);
  Shape batch = broadcast_shapes(ba, bb, "matmul");
  int64_t nb = shape_numel(batch);
  Shape ea = batch, eb = batch;
  ea.insert(ea.end(), {M, K});
  eb.insert(eb.end(), {K, N});
  Tensor out = product(a2.expand(ea).reshape({nb, M, K}), b2.expand(eb).reshape({nb, K, N}));
  Shape os = batch;
  if (a.dim() > 1) os.push_back(M);
  if (b.dim() > 1) os.push_back(N);
  return out.view(os);
}

Tensor bmm(const Tensor& a_in, const Tensor& b_in) {
  const Tensor a = detail::autocast_half(a_in), b = detail::autocast_half(b_in);
  check_operands("bmm", a, b);
  KILN_CHECK(a.dim() == 3 && b.dim() == 3, "bmm: expects 3-D operands (B, M, K) and (B, K, N), got ", describe(a),
             " and ", describe(b));
  KILN_CHECK(a.size(0) == b.size(0) && a.size(2) == b.size(1), "bmm: shapes do not match: ", describe(a), " @ ",
             describe(b));
  return product(a, b);
}

namespace {

Tensor apply(LinearActivation act, const Tensor& y) { return act == LinearActivation::GeluTanh ? gelu_tanh(y) : y; }

// cuBLASLt's GELU_AUX_BIAS epilogue wants the stored activation input's leading dimension
// (N) a multiple of 8, and every epilogue f16/bf16/f32 outputs; the CPU takes any shape.
bool fused_kernel_takes(const Tensor& x, int64_t n) {
  return x.device().is_cpu() || (n % 8 == 0 && x.dtype() != DType::F64);
}

}  // namespace

Tensor fused_linear(const Tensor& x_in, const Tensor& w_in, const Tensor& b_in, LinearActivation act) {
  detail::check_defined("linear", x_in, "input");
  detail::check_defined("linear", w_in, "weight");
  KILN_CHECK(w_in.dim() == 2, "linear: weight must be 2-D (out_features, in_features), got ", describe(w_in));
  KILN_CHECK(x_in.dim() >= 1 && x_in.size(-1) == w_in.size(1), "linear: input ", describe(x_in),
             " does not end in in_features = ", w_in.size(1), " (weight ", describe(w_in), ")");
  if (b_in.defined())
    KILN_CHECK(b_in.dim() == 1 && b_in.size(0) == w_in.size(0), "linear: bias ", describe(b_in),
               " must have shape [", w_in.size(0), "] (weight ", describe(w_in), ")");
  // Under autocast all three in the half dtype (the bias too, as nn::Linear adds it).
  const Tensor x = detail::autocast_half(x_in), w = detail::autocast_half(w_in);
  if (!b_in.defined()) return apply(act, matmul(x, w.t()));
  const Tensor b = detail::autocast_half(b_in);
  const int64_t K = w.size(1), N = w.size(0);
  check_operands("linear", x, w);
  KILN_CHECK(b.dtype() == x.dtype(), "linear: bias ", describe(b), " must have the input's dtype ", describe(x));
  detail::check_same_device("linear", x, b);
  if (!fused_kernel_takes(x, N)) return apply(act, add(matmul(x, w.t()), b));

  Shape lead(x.sizes().begin(), x.sizes().end() - 1);
  const int64_t M = shape_numel(lead);
  Shape out_shape = lead;
  out_shape.push_back(N);
  const Tensor x2 = x.reshape({1, M, K});
  const TensorOptions o(x.dtype(), x.device());
  const bool need_grad = any_requires_grad({x2, w, b});
  const bool gelu = act == LinearActivation::GeluTanh;
  Tensor out = empty({1, M, N}, o), pre = gelu && need_grad ? empty({1, M, N}, o) : Tensor();
  if (M > 0 && N > 0) {
    NoGradGuard raw;
    if (K == 0) {  // an empty product: the bias alone
      const Tensor s = add(zeros({1, M, N}, o), b);
      if (pre.defined()) pre.copy_(s);
      out = apply(act, s).contiguous();
    } else {
      // A GPU's bias view at an odd offset is copied: cuBLASLt reads the vector with wide loads.
      const bool aligned = x.device().is_cpu() ||
                           (b.offset() * static_cast<int64_t>(dtype_size(b.dtype()))) % 16 == 0;
      const Tensor bc = b.is_contiguous() && aligned ? b : b.clone();
      const Tensor a = blas_layout(x2), bt = blas_layout(w.t().unsqueeze(0));
      kernel<op::matmul_bias>(x.device())(kernel_view(a), kernel_view(bt), kernel_view(bc), kernel_view(out),
                                          kernel_view(pre), MatmulBiasParams{act});
    }
  }
  if (!need_grad) return out.view(out_shape);
  BackwardFn backward = [x2, w, b, pre, act, M, N, K, need_x = x2.requires_grad(), need_w = w.requires_grad(),
                         need_b = b.requires_grad()](const Tensor& g) {
    using V = std::vector<Tensor>;
    Tensor dpre = g;
    if (act != LinearActivation::None) {
      if (grad_enabled()) {
        // A create_graph pass: the whole op again from recorded ops, so that the gradients
        // are differentiable again.
        return composite_backward([act](const V& t) { return apply(act, add(matmul(t[0], t[1].t()), t[2])); },
                                  {x2, w, b}, g);
      }
      const Tensor gc = g.contiguous();
      dpre = empty_like(gc);
      if (dpre.numel() > 0)
        kernel<op::unary_backward>(gc.device())(kernel_view(pre), kernel_view(gc), kernel_view(dpre),
                                                UnaryParams{UnaryOp::GeluTanh, 0});
    }
    const Tensor d2 = dpre.reshape({M, N});
    return V{need_x ? matmul(dpre, w) : Tensor(), need_w ? matmul(d2.t(), x2.reshape({M, K})) : Tensor(),
             need_b ? sum(d2, {0}) : Tensor()};
  };
  return record("linear", {x2, w, b}, out, std::move(backward), {x2, w, b}, true).view(out_shape);
}

}  // namespace kiln
