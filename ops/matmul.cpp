// matmul/bmm: shape rules, batch broadcasting and a BLAS-friendly layout; the product
// itself is the device's matmul kernel (cuBLASLt or OpenBLAS).
#include <kiln/ops/matmul.h>
#include <kiln/ops/autocast.h>

#include <kiln/core/autograd.h>
#include <kiln/ops/checks.h>
#include <kiln/ops/op_list.h>

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

}  // namespace kiln
