// cuBLAS, cuBLASLt and cuDNN handles for the host-side glue. Handles are created lazily,
// one set per (thread, device), and bound to the device's current stream each time they
// are fetched. The library headers stay out of this one: the handle types are forward
// declared exactly as the libraries declare them, so only the .cpp glue that calls the
// libraries includes cublasLt.h or cudnn.h.
#pragma once
#include <cstddef>

#include <cuda_runtime_api.h>

// Same declarations as cublas_api.h, cublasLt.h and cudnn_graph.h (a repeated typedef of
// the same type is legal C++).
struct cublasContext;
typedef struct cublasContext* cublasHandle_t;
struct cublasLtContext;
typedef struct cublasLtContext* cublasLtHandle_t;
struct cudnnContext;
typedef struct cudnnContext* cudnnHandle_t;

namespace kiln::cuda {

// Workspace each cuBLASLt call may use: 32 MiB is what NVIDIA recommends for Hopper, where
// the largest kernels need it; smaller GPUs simply use less of it.
inline constexpr size_t kCublasLtWorkspaceBytes = size_t{32} << 20;

// Call these with `device` current (inside a DeviceGuard) and use the result on this
// thread only: a handle is not safe to share between threads, and each thread gets its
// own (pooled, so a thread that exits hands its handles to the next one).

// The cuBLAS handle, bound to current_stream(device).
cublasHandle_t cublas_handle(int device);

// A cuBLASLt handle with a workspace private to current_stream(device): work on another
// stream gets another workspace, so two streams never race on one. cuBLASLt takes the
// stream per call; it is returned here with the workspace that belongs to it.
struct CublasLt {
  cublasLtHandle_t handle = nullptr;
  cudaStream_t stream = nullptr;
  void* workspace = nullptr;
  size_t workspace_bytes = 0;  // 0 when the workspace could not be allocated
};
CublasLt cublaslt(int device);

// The cuDNN handle, bound to current_stream(device). Creating the first one loads cuDNN's
// sub-libraries, which takes a moment.
cudnnHandle_t cudnn_handle(int device);

}  // namespace kiln::cuda
