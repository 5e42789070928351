// CPU matrix products through OpenBLAS (cblas_sgemm/dgemm); f16/bf16 operands are
// widened to f32, multiplied with f32 accumulation and narrowed back.
#include <kiln/ops/cpu/cpu_backend.h>
#include <kiln/ops/cpu/loops.h>

#include <cblas.h>

namespace kiln::detail {
namespace {

struct GemmOperand {
  CBLAS_TRANSPOSE trans;
  int64_t ld;
};

// Row-major (R, C) with ld = stride(1), or column-major, i.e. the transpose of a
// row-major (C, R) with ld = stride(2).
GemmOperand operand(const Tensor& t) {
  if (t.stride(2) == 1) return {CblasNoTrans, t.stride(1)};
  return {CblasTrans, t.stride(2)};
}

}  // namespace

void CpuBackend::matmul(const Tensor& a, const Tensor& b, const Tensor& out) {
  int64_t B = a.size(0), M = a.size(1), K = a.size(2), N = b.size(2);
  KILN_CHECK(M <= INT32_MAX && N <= INT32_MAX && K <= INT32_MAX, "matmul: matrix dims exceed the BLAS int range");
  if (a.dtype() == DType::F32 || a.dtype() == DType::F64) {
    GemmOperand oa = operand(a), ob = operand(b);
    for (int64_t i = 0; i < B; ++i) {
      if (a.dtype() == DType::F32) {
        cblas_sgemm(CblasRowMajor, oa.trans, ob.trans, M, N, K, 1.0f, a.data<float>() + i * a.stride(0), oa.ld,
                    b.data<float>() + i * b.stride(0), ob.ld, 0.0f, out.data<float>() + i * M * N, N);
      } else {
        cblas_dgemm(CblasRowMajor, oa.trans, ob.trans, M, N, K, 1.0, a.data<double>() + i * a.stride(0), oa.ld,
                    b.data<double>() + i * b.stride(0), ob.ld, 0.0, out.data<double>() + i * M * N, N);
      }
    }
    return;
  }
  KILN_CHECK(a.dtype() == DType::F16 || a.dtype() == DType::BF16, "matmul: unsupported dtype ",
             dtype_name(a.dtype()), " on the CPU");
  Tensor a32 = empty(a.sizes(), DType::F32), b32 = empty(b.sizes(), DType::F32), o32 = empty(out.sizes(), DType::F32);
  copy(a, a32);
  copy(b, b32);
  matmul(a32, b32, o32);
  copy(o32, out);
}

}  // namespace kiln::detail
