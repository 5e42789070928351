// CPU reference for spd_logdet (ops/linalg.h): LAPACK's Cholesky factorisation (?potrf)
// and the inverse from it (?potri), OpenBLAS' LAPACK, one matrix at a time. Row-major
// storage is column-major of the transpose: its lower triangle is LAPACK's upper one.
#include <cmath>
#include <cstring>

#include <kiln/core/cpu_loops.h>
#include <kiln/core/error.h>
#include <kiln/ops/op_list.h>

extern "C" {
void spotrf_(const char* uplo, const int* n, float* a, const int* lda, int* info);
void dpotrf_(const char* uplo, const int* n, double* a, const int* lda, int* info);
void spotri_(const char* uplo, const int* n, float* a, const int* lda, int* info);
void dpotri_(const char* uplo, const int* n, double* a, const int* lda, int* info);
}

namespace kiln::cpu {
namespace {

inline void potrf(const char* u, const int* n, float* a, const int* lda, int* info) { spotrf_(u, n, a, lda, info); }
inline void potrf(const char* u, const int* n, double* a, const int* lda, int* info) { dpotrf_(u, n, a, lda, info); }
inline void potri(const char* u, const int* n, float* a, const int* lda, int* info) { spotri_(u, n, a, lda, info); }
inline void potri(const char* u, const int* n, double* a, const int* lda, int* info) { dpotri_(u, n, a, lda, info); }

template <class T>
void spd_logdet_impl(const TensorView& a, const TensorView& logdet, const TensorView& inverse, const SpdParams& p) {
  KILN_CHECK(p.n <= 46340, "logdet_spd: n = ", p.n, " is more than LAPACK's 32-bit sizes address");
  const int n = static_cast<int>(p.n);
  const char uplo = 'U';  // row-major lower = column-major upper
  for (int64_t b = 0; b < p.batch; ++b) {
    const T* src = a.ptr<const T>() + b * p.n * p.n;
    T* w = inverse.ptr<T>() + b * p.n * p.n;
    std::memcpy(w, src, sizeof(T) * static_cast<size_t>(p.n * p.n));
    int info = 0;
    potrf(&uplo, &n, w, &n, &info);
    KILN_CHECK(info >= 0, "logdet_spd: LAPACK potrf rejected argument ", -info);
    KILN_CHECK(info == 0, "logdet_spd: matrix ", b, " of ", p.batch, " is not positive definite (its leading minor of "
               "order ", info, " is not; LAPACK potrf)");
    double s = 0;
    for (int64_t i = 0; i < p.n; ++i) s += std::log(static_cast<double>(w[i * p.n + i]));
    logdet.ptr<T>()[b] = static_cast<T>(2 * s);
    potri(&uplo, &n, w, &n, &info);
    KILN_CHECK(info == 0, "logdet_spd: matrix ", b, " is singular to working precision (LAPACK potri info ", info, ")");
    for (int64_t i = 0; i < p.n; ++i)  // potri fills the lower triangle (row-major); mirror it
      for (int64_t j = i + 1; j < p.n; ++j) w[i * p.n + j] = w[j * p.n + i];
  }
}

}  // namespace

void spd_logdet(const TensorView& a, const TensorView& logdet, const TensorView& inverse, const SpdParams& p) {
  if (a.dtype == DType::F64) spd_logdet_impl<double>(a, logdet, inverse, p);
  else spd_logdet_impl<float>(a, logdet, inverse, p);
}

}  // namespace kiln::cpu
