// Turning failed CUDA, cuBLAS(Lt), cuDNN and NCCL statuses into kiln exceptions. The
// message carries the failed call, where it was made and the library's own words, plus
// a hint for the errors whose cause is not where they surface (asynchronous kernel
// faults, sticky context errors, missing kernel images).
#include <kiln/cuda/error.h>

#include <cublas_api.h>
#include <cudnn.h>
#include <nccl.h>

#include <kiln/core/error.h>
#include <kiln/core/log.h>

namespace kiln::cuda {
namespace {

// Errors after which the context is corrupt: every later call in this process fails too.
bool is_sticky(cudaError_t s) {
  switch (s) {
    case cudaErrorIllegalAddress:
    case cudaErrorLaunchFailure:
    case cudaErrorAssert:
    case cudaErrorHardwareStackError:
    case cudaErrorIllegalInstruction:
    case cudaErrorMisalignedAddress:
    case cudaErrorInvalidAddressSpace:
    case cudaErrorInvalidPc:
    case cudaErrorLaunchTimeout:
    case cudaErrorECCUncorrectable:
      return true;
    default:
      return false;
  }
}

std::string where(const char* expr, const char* file, int line) {
  return detail::str(" in `", expr, "` at ", file, ":", line);
}

}  // namespace

std::string describe_cuda_error(cudaError_t status) {
  return detail::str(cudaGetErrorName(status), " (", cudaGetErrorString(status), ")");
}

void throw_cuda_error(cudaError_t status, const char* expr, const char* file, int line) {
  // The runtime also records a non-sticky error as its "last error"; clear it so that the
  // next KILN_CUDA_CHECK_LAUNCH does not report this failure a second time.
  (void)cudaGetLastError();
  std::string msg = detail::str("CUDA error ", describe_cuda_error(status), where(expr, file, line));
  if (is_sticky(status)) {
    msg += "; this error is sticky: the CUDA context is unusable and the process must restart to use the GPU. "
           "Kernel faults surface at a later call: rerun with CUDA_LAUNCH_BLOCKING=1 to find the faulting kernel";
  } else if (status == cudaErrorNoKernelImageForDevice) {
    msg += "; kiln was built without code for this GPU: rebuild with CMAKE_CUDA_ARCHITECTURES naming its "
           "compute capability";
  }
  if (status == cudaErrorMemoryAllocation) throw OutOfMemory(msg);
  throw Error(msg);
}

void throw_cublas_error(int status, const char* expr, const char* file, int line) {
  auto s = static_cast<cublasStatus_t>(status);
  std::string msg = detail::str("cuBLAS error ", cublasGetStatusName(s), " (", cublasGetStatusString(s), ")",
                                where(expr, file, line));
  if (s == CUBLAS_STATUS_ALLOC_FAILED) throw OutOfMemory(msg);
  throw Error(msg);
}

void throw_cudnn_error(int status, const char* expr, const char* file, int line) {
  auto s = static_cast<cudnnStatus_t>(status);
  std::string msg = detail::str("cuDNN error ", cudnnGetErrorString(s), where(expr, file, line));
  // cuDNN 9 keeps a detailed, per-thread account of its last failure (which descriptor,
  // which attribute); it is usually the only useful part.
  char detail_msg[1024] = {0};
  cudnnGetLastErrorString(detail_msg, sizeof(detail_msg));
  if (detail_msg[0] != '\0') msg += detail::str(": ", detail_msg);
  if (s == CUDNN_STATUS_INTERNAL_ERROR_DEVICE_ALLOCATION_FAILED || s == CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED)
    throw OutOfMemory(msg);
  throw Error(msg);
}

void throw_nccl_error(int status, const char* expr, const char* file, int line) {
  auto s = static_cast<ncclResult_t>(status);
  std::string msg = detail::str("NCCL error ", ncclGetErrorString(s), where(expr, file, line));
  // The last error NCCL saw on any communicator (the call's own communicator is not known
  // here); it names the failing peer or transport. NCCL_DEBUG=WARN prints more.
  const char* last = ncclGetLastError(nullptr);
  if (last && last[0] != '\0') msg += detail::str(": ", last);
  if (s == ncclSystemError || s == ncclRemoteError) msg += " (set NCCL_DEBUG=WARN for the cause)";
  throw Error(msg);
}

bool log_cuda_error(cudaError_t status, const char* expr, const char* file, int line) noexcept {
  if (status == cudaSuccess) return true;
  (void)cudaGetLastError();
  // At process exit the runtime may be torn down before the objects that free memory or
  // destroy handles; their failures then are expected and not worth a log line.
  if (status == cudaErrorCudartUnloading || status == cudaErrorContextIsDestroyed) return false;
  try {
    log_error("CUDA error ", describe_cuda_error(status), where(expr, file, line));
  } catch (...) {
    // Logging itself failed (out of memory formatting the message); nothing else to do.
  }
  return false;
}

}  // namespace kiln::cuda
