// Error checks for the CUDA runtime, cuBLAS(Lt), cuDNN and NCCL in host-side glue. Each
// macro turns a failed status into a kiln::Error (kiln::OutOfMemory for allocation
// failures) naming the call, the file and line, and the library's own description, so no
// raw status ever reaches the user. The library headers stay out of this one: a macro
// compares against the library's success constant where it is expanded, which is inside
// code that already includes that library.
#pragma once
#include <string>

#include <cuda_runtime_api.h>

namespace kiln::cuda {

// Throw kiln::Error (kiln::OutOfMemory for cudaErrorMemoryAllocation) after clearing
// CUDA's last-error state where the error is not sticky. `status` is the library's
// status enum as an int, so this header needs none of their headers.
[[noreturn]] void throw_cuda_error(cudaError_t status, const char* expr, const char* file, int line);
[[noreturn]] void throw_cublas_error(int status, const char* expr, const char* file, int line);
[[noreturn]] void throw_cudnn_error(int status, const char* expr, const char* file, int line);
[[noreturn]] void throw_nccl_error(int status, const char* expr, const char* file, int line);

// For destructors and other noexcept paths: logs a failed status at error level and
// returns false. Errors from a runtime already shutting down at process exit are
// expected there and are not logged.
bool log_cuda_error(cudaError_t status, const char* expr, const char* file, int line) noexcept;

// CUDA's name and description of a status: "cudaErrorNoDevice (no CUDA-capable device
// is detected)".
std::string describe_cuda_error(cudaError_t status);

}  // namespace kiln::cuda

// Used by host code and by the kernel files' launchers alike.
#define KILN_CUDA_CHECK(expr)                                                          \
  do {                                                                                 \
    cudaError_t kiln_status_ = (expr);                                                 \
    if (kiln_status_ != cudaSuccess) ::kiln::cuda::throw_cuda_error(kiln_status_, #expr, __FILE__, __LINE__); \
  } while (0)
#define KILN_CUDA_CHECK_LAUNCH() KILN_CUDA_CHECK(cudaGetLastError())

// Logs instead of throwing; evaluates to true on success.
#define KILN_CUDA_WARN(expr) ::kiln::cuda::log_cuda_error((expr), #expr, __FILE__, __LINE__)

#define KILN_CUBLAS_CHECK(expr)                                                                 \
  do {                                                                                          \
    cublasStatus_t kiln_blas_status_ = (expr);                                                  \
    if (kiln_blas_status_ != CUBLAS_STATUS_SUCCESS)                                             \
      ::kiln::cuda::throw_cublas_error(static_cast<int>(kiln_blas_status_), #expr, __FILE__, __LINE__); \
  } while (0)

#define KILN_CUDNN_CHECK(expr)                                                                  \
  do {                                                                                          \
    cudnnStatus_t kiln_dnn_status_ = (expr);                                                    \
    if (kiln_dnn_status_ != CUDNN_STATUS_SUCCESS)                                               \
      ::kiln::cuda::throw_cudnn_error(static_cast<int>(kiln_dnn_status_), #expr, __FILE__, __LINE__); \
  } while (0)

// ncclInProgress is the normal answer of a non-blocking communicator (the kind whose
// collectives can be aborted on a timeout); blocking communicators never return it.
#define KILN_NCCL_CHECK(expr)                                                                   \
  do {                                                                                          \
    ncclResult_t kiln_nccl_status_ = (expr);                                                    \
    if (kiln_nccl_status_ != ncclSuccess && kiln_nccl_status_ != ncclInProgress)                \
      ::kiln::cuda::throw_nccl_error(static_cast<int>(kiln_nccl_status_), #expr, __FILE__, __LINE__); \
  } while (0)
