// spd_logdet on CUDA (contract in ops/linalg.h): cuSOLVER's Cholesky factorisation
// (cusolverDn?potrf) of each matrix into scratch, the log-determinant from the factors'
// diagonals (cuda/kernels/linalg.cu), then A^{-1} by ?potrs against identities. Row-major
// storage is column-major of the transpose, so CUBLAS_FILL_MODE_UPPER reads the row-major
// lower triangle, as the CPU reference's LAPACK calls do. The factorisations' info values
// are read back once (one synchronisation) so that a matrix that is not positive definite
// is a kiln::Error, not NaN. A host-compiled .cpp beside the kernels: it calls a library.
#include <cstdint>
#include <vector>

#include <cusolverDn.h>

#include <kiln/cuda/device.h>
#include <kiln/cuda/error.h>
#include <kiln/cuda/handles.h>
#include <kiln/cuda/kernels/linalg.h>
#include <kiln/cuda/kernels/scratch.h>
#include <kiln/ops/op_list.h>

namespace kiln::cuda {
namespace {

void check_solver(cusolverStatus_t st, const char* what) {
  KILN_CHECK(st == CUSOLVER_STATUS_SUCCESS, "logdet_spd: cuSOLVER ", what, " failed (status ", static_cast<int>(st),
             ")");
}

cusolverStatus_t potrf_buffer(cusolverDnHandle_t h, int n, float* a, int* lwork) {
  return cusolverDnSpotrf_bufferSize(h, CUBLAS_FILL_MODE_UPPER, n, a, n, lwork);
}
cusolverStatus_t potrf_buffer(cusolverDnHandle_t h, int n, double* a, int* lwork) {
  return cusolverDnDpotrf_bufferSize(h, CUBLAS_FILL_MODE_UPPER, n, a, n, lwork);
}
cusolverStatus_t potrf(cusolverDnHandle_t h, int n, float* a, float* work, int lwork, int* info) {
  return cusolverDnSpotrf(h, CUBLAS_FILL_MODE_UPPER, n, a, n, work, lwork, info);
}
cusolverStatus_t potrf(cusolverDnHandle_t h, int n, double* a, double* work, int lwork, int* info) {
  return cusolverDnDpotrf(h, CUBLAS_FILL_MODE_UPPER, n, a, n, work, lwork, info);
}
cusolverStatus_t potrs(cusolverDnHandle_t h, int n, const float* a, float* b, int* info) {
  return cusolverDnSpotrs(h, CUBLAS_FILL_MODE_UPPER, n, n, a, n, b, n, info);
}
cusolverStatus_t potrs(cusolverDnHandle_t h, int n, const double* a, double* b, int* info) {
  return cusolverDnDpotrs(h, CUBLAS_FILL_MODE_UPPER, n, n, a, n, b, n, info);
}

template <class T>
void spd_logdet_impl(const TensorView& a, const TensorView& logdet, const TensorView& inverse, const SpdParams& p) {
  KILN_CHECK(p.n <= 46340, "logdet_spd: n = ", p.n, " is more than cuSOLVER's 32-bit sizes address");
  const Device device = a.device;
  DeviceGuard guard(device);
  const cudaStream_t stream = current_stream(device);
  cusolverDnHandle_t h = cusolver_handle(device.index);
  const int n = static_cast<int>(p.n);
  const size_t mat = static_cast<size_t>(p.n * p.n);
  DeviceScratch factor(sizeof(T) * mat * static_cast<size_t>(p.batch), device);
  DeviceScratch infos(sizeof(int) * static_cast<size_t>(p.batch), device);
  T* f = static_cast<T*>(factor.get());
  int* info = static_cast<int*>(infos.get());
  KILN_CUDA_CHECK(cudaMemcpyAsync(f, a.data, sizeof(T) * mat * static_cast<size_t>(p.batch),
                                  cudaMemcpyDeviceToDevice, stream));
  int lwork = 0;
  check_solver(potrf_buffer(h, n, f, &lwork), "potrf_bufferSize");
  DeviceScratch work(sizeof(T) * static_cast<size_t>(lwork > 0 ? lwork : 1), device);
  for (int64_t b = 0; b < p.batch; ++b)
    check_solver(potrf(h, n, f + b * mat, static_cast<T*>(work.get()), lwork, info + b), "potrf");
  std::vector<int> host(static_cast<size_t>(p.batch));
  KILN_CUDA_CHECK(cudaMemcpyAsync(host.data(), info, sizeof(int) * host.size(), cudaMemcpyDeviceToHost, stream));
  KILN_CUDA_CHECK(cudaStreamSynchronize(stream));
  for (int64_t b = 0; b < p.batch; ++b)
    KILN_CHECK(host[static_cast<size_t>(b)] == 0, "logdet_spd: matrix ", b, " of ", p.batch,
               " is not positive definite (its leading minor of order ", host[static_cast<size_t>(b)],
               " is not; cuSOLVER potrf)");
  linalg::cholesky_logdet(f, logdet.ptr<T>(), p.batch, p.n, stream);
  T* inv = inverse.ptr<T>();
  linalg::fill_identity(inv, p.batch, p.n, stream);
  for (int64_t b = 0; b < p.batch; ++b) check_solver(potrs(h, n, f + b * mat, inv + b * mat, info + b), "potrs");
}

}  // namespace

void spd_logdet(const TensorView& a, const TensorView& logdet, const TensorView& inverse, const SpdParams& p) {
  if (a.dtype == DType::F64) spd_logdet_impl<double>(a, logdet, inverse, p);
  else spd_logdet_impl<float>(a, logdet, inverse, p);
}

}  // namespace kiln::cuda
