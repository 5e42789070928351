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

}  // namespace kiln::cpu
