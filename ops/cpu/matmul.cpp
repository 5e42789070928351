// CPU matrix products through OpenBLAS (cblas_sgemm/dgemm); f16/bf16 operands are
// widened to f32, multiplied with f32 accumulation and narrowed back.
#include <kiln/core/cpu_loops.h>
#include <kiln/ops/op_list.h>

#include <cblas.h>

namespace kiln::cpu {
namespace {

using namespace kiln::detail;

struct GemmOperand {
  CBLAS_TRANSPOSE trans;
  int64_t ld;
};

// Row-major (R, C) with ld = stride(1), or column-major, i.e. the transpose of a
// row-major (C, R) with ld = stride(2).
GemmOperand operand(const TensorView& t) {
  if (t.stride(2) == 1) return {CblasNoTrans, t.stride(1)};
  return {CblasTrans, t.stride(2)};
}

}  // namespace

void matmul(const TensorView& a, const TensorView& b, const TensorView& out) {
  int64_t B = a.size(0), M = a.size(1), K = a.size(2), N = b.size(2);
  KILN_CHECK(M <= INT32_MAX && N <= INT32_MAX && K <= INT32_MAX, "matmul: matrix dims exceed the BLAS int range");
  if (a.dtype == DType::F32 || a.dtype == DType::F64) {
    GemmOperand oa = operand(a), ob = operand(b);
    for (int64_t i = 0; i < B; ++i) {
      if (a.dtype == DType::F32) {
        cblas_sgemm(CblasRowMajor, oa.trans, ob.trans, M, N, K, 1.0f, a.ptr<const float>() + i * a.stride(0), oa.ld,
                    b.ptr<const float>() + i * b.stride(0), ob.ld, 0.0f, out.ptr<float>() + i * M * N, N);
      } else {
        cblas_dgemm(CblasRowMajor, oa.trans, ob.trans, M, N, K, 1.0, a.ptr<const double>() + i * a.stride(0), oa.ld,
                    b.ptr<const double>() + i * b.stride(0), ob.ld, 0.0, out.ptr<double>() + i * M * N, N);
      }
    }
    return;
  }
  // f16 / bf16 (ops/matmul.cpp admits floating dtypes only).
  Tensor a32 = empty(shape_of(a), DType::F32), b32 = empty(shape_of(b), DType::F32),
         o32 = empty(shape_of(out), DType::F32);
  const TensorView va = kernel_view(a32), vb = kernel_view(b32), vo = kernel_view(o32);
  copy(a, va);
  copy(b, vb);
  matmul(va, vb, vo);
  copy(vo, out);
}

// The CPU reference of the fused linear: the product, then the bias (a stride-0 row
// broadcast, added in place as add(y, bias) adds it) and the activation, through the
// binary and unary kernels; the same bits as matmul, add and gelu_tanh one after another.
void matmul_bias(const TensorView& a, const TensorView& b, const TensorView& bias, const TensorView& out,
                 const TensorView& pre, const MatmulBiasParams& p) {
  kernel<op::matmul>(kCPU)(a, b, out);  // the slot's kernel: oneDNN's sgemm unless KILN_ONEDNN=0
  const int64_t M = out.size(1), N = out.size(2);
  const TensorView o = as_matrix(out, M, N, N);
  const TensorView sum = pre.defined ? as_matrix(pre, M, N, N) : o;  // the activation's input
  binary(o, as_matrix(bias, M, N, 0), p.activation == LinearActivation::None ? o : sum, BinaryParams{BinaryOp::Add});
  if (p.activation == LinearActivation::GeluTanh) unary(sum, o, UnaryParams{UnaryOp::GeluTanh, 0});
}

}  // namespace kiln::cpu
