// spd_logdet on CUDA (contract in ops/linalg.h): cuSOLVER's Cholesky factorisation
// (cusolverDn?potrf) of each matrix into scratch, the log-determinant from the factors'
// diagonals (cuda/kernels/linalg.cu), then A^{-1} by ?potrs against identities. Row-major
// storage is column-major of the transpose, so CUBLAS_FILL_MODE_UPPER reads the row-major
// lower triangle, as the CPU reference's LAPACK calls do. The factorisations' info values
// are read back once (one synchronisation) so that a matrix that is not positive definite
// is a kiln::Error, not NaN. A host-compiled .cpp beside the kernels: it calls a library.
//
// cuSOLVER is loaded on first use (dlopen of libcusolver.so.12, the CUDA 12/13 soname),
// not linked: it is 140 MB that only this op needs, a GPU host may lack it (PyTorch's
// wheels carry it, but not every host has them), and a missing library must be a clear
// error of logdet_spd, not a libkiln that does not load. One dense handle per (thread,
// device), kept for the process's life like the other library handles (cuda/handles.h).
#include <dlfcn.h>

#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include <cusolverDn.h>

#include <kiln/cuda/device.h>
#include <kiln/cuda/error.h>
#include <kiln/cuda/kernels/linalg.h>
#include <kiln/cuda/kernels/scratch.h>
#include <kiln/ops/op_list.h>

namespace kiln::cuda {
namespace {

// The cuSOLVER entry points spd_logdet calls, resolved from the library.
struct Cusolver {
  decltype(&cusolverDnCreate) create = nullptr;
  decltype(&cusolverDnSetStream) set_stream = nullptr;
  decltype(&cusolverDnSpotrf_bufferSize) spotrf_buffer = nullptr;
  decltype(&cusolverDnDpotrf_bufferSize) dpotrf_buffer = nullptr;
  decltype(&cusolverDnSpotrf) spotrf = nullptr;
  decltype(&cusolverDnDpotrf) dpotrf = nullptr;
  decltype(&cusolverDnSpotrs) spotrs = nullptr;
  decltype(&cusolverDnDpotrs) dpotrs = nullptr;
  std::string error;  // why it could not be loaded ("" when it was)
};

const Cusolver& cusolver() {
  static const Cusolver lib = [] {
    Cusolver c;
    void* h = nullptr;
    std::string tried;
    for (const char* name : {"libcusolver.so.12", "libcusolver.so.11", "libcusolver.so"}) {
      h = dlopen(name, RTLD_NOW | RTLD_LOCAL);
      if (h) break;
      const char* e = dlerror();
      tried += detail::str(tried.empty() ? "" : "; ", e ? e : name);
    }
    if (!h) {
      c.error = "cannot load cuSOLVER (" + tried + "); install the CUDA toolkit's cuSOLVER or PyTorch's "
                "nvidia-cusolver package and put its lib folder on LD_LIBRARY_PATH";
      return c;
    }
    auto sym = [&](auto& fn, const char* name) {
      fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(h, name));
      if (!fn && c.error.empty()) c.error = detail::str("cuSOLVER lacks ", name);
    };
    sym(c.create, "cusolverDnCreate");
    sym(c.set_stream, "cusolverDnSetStream");
    sym(c.spotrf_buffer, "cusolverDnSpotrf_bufferSize");
    sym(c.dpotrf_buffer, "cusolverDnDpotrf_bufferSize");
    sym(c.spotrf, "cusolverDnSpotrf");
    sym(c.dpotrf, "cusolverDnDpotrf");
    sym(c.spotrs, "cusolverDnSpotrs");
    sym(c.dpotrs, "cusolverDnDpotrs");
    return c;
  }();
  KILN_CHECK(lib.error.empty(), "logdet_spd on CUDA: ", lib.error);
  return lib;
}

void check_solver(cusolverStatus_t st, const char* what) {
  KILN_CHECK(st == CUSOLVER_STATUS_SUCCESS, "logdet_spd: cuSOLVER ", what, " failed (status ", static_cast<int>(st),
             ")");
}

// This thread's dense handle for `device`, bound to the device's current stream.
cusolverDnHandle_t solver_handle(const Device& device) {
  const Cusolver& c = cusolver();
  thread_local std::vector<cusolverDnHandle_t> handles;
  const auto d = static_cast<size_t>(device.index);
  if (handles.size() <= d) handles.resize(d + 1, nullptr);
  if (!handles[d]) check_solver(c.create(&handles[d]), "cusolverDnCreate");
  check_solver(c.set_stream(handles[d], current_stream(device)), "cusolverDnSetStream");
  return handles[d];
}

cusolverStatus_t potrf_buffer(cusolverDnHandle_t h, int n, float* a, int* lwork) {
  return cusolver().spotrf_buffer(h, CUBLAS_FILL_MODE_UPPER, n, a, n, lwork);
}
cusolverStatus_t potrf_buffer(cusolverDnHandle_t h, int n, double* a, int* lwork) {
  return cusolver().dpotrf_buffer(h, CUBLAS_FILL_MODE_UPPER, n, a, n, lwork);
}
cusolverStatus_t potrf(cusolverDnHandle_t h, int n, float* a, float* work, int lwork, int* info) {
  return cusolver().spotrf(h, CUBLAS_FILL_MODE_UPPER, n, a, n, work, lwork, info);
}
cusolverStatus_t potrf(cusolverDnHandle_t h, int n, double* a, double* work, int lwork, int* info) {
  return cusolver().dpotrf(h, CUBLAS_FILL_MODE_UPPER, n, a, n, work, lwork, info);
}
cusolverStatus_t potrs(cusolverDnHandle_t h, int n, const float* a, float* b, int* info) {
  return cusolver().spotrs(h, CUBLAS_FILL_MODE_UPPER, n, n, a, n, b, n, info);
}
cusolverStatus_t potrs(cusolverDnHandle_t h, int n, const double* a, double* b, int* info) {
  return cusolver().dpotrs(h, CUBLAS_FILL_MODE_UPPER, n, n, a, n, b, n, info);
}

template <class T>
void spd_logdet_impl(const TensorView& a, const TensorView& logdet, const TensorView& inverse, const SpdParams& p) {
  KILN_CHECK(p.n <= 46340, "logdet_spd: n = ", p.n, " is more than cuSOLVER's 32-bit sizes address");
  const Device device = a.device;
  DeviceGuard guard(device);
  const cudaStream_t stream = current_stream(device);
  cusolverDnHandle_t h = solver_handle(device);
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
