// Library handles (see handles.h). A handle is not thread-safe, so each thread gets its
// own set per device; sets live in a per-device pool and a thread's sets return to it when
// the thread exits, so short-lived threads reuse handles instead of creating new ones.
// Handles and workspaces are never destroyed: destroying them from static destructors at
// exit, after the CUDA runtime may have unloaded, crashes, and the driver reclaims them
// with the process anyway.
#include <kiln/cuda/handles.h>

#include <memory>
#include <mutex>
#include <vector>

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cudnn.h>

#include <kiln/core/error.h>
#include <kiln/core/log.h>
#include <kiln/cuda/device.h>
#include <kiln/cuda/error.h>

namespace kiln::cuda {
namespace {

struct Workspace {
  cudaStream_t stream = nullptr;
  void* ptr = nullptr;
  size_t bytes = 0;
};

struct HandleSet {
  cublasHandle_t blas = nullptr;
  cublasLtHandle_t lt = nullptr;
  cudnnHandle_t dnn = nullptr;
  std::vector<Workspace> workspaces;  // cuBLASLt's, one per stream it has run on
};

class HandlePool {
 public:
  HandleSet* acquire() {
    std::lock_guard<std::mutex> lock(mu_);
    if (free_.empty()) return new HandleSet();
    HandleSet* h = free_.back();
    free_.pop_back();
    return h;
  }
  void release(HandleSet* h) {
    std::lock_guard<std::mutex> lock(mu_);
    free_.push_back(h);
  }

 private:
  std::mutex mu_;
  std::vector<HandleSet*> free_;
};

std::vector<HandlePool>& pools() {
  static auto* p = new std::vector<HandlePool>(static_cast<size_t>(device_count()));
  return *p;
}

struct ThreadHandles {
  std::vector<HandleSet*> sets;  // by device; null until this thread uses the device
  ThreadHandles() = default;
  ThreadHandles(const ThreadHandles&) = delete;
  ThreadHandles& operator=(const ThreadHandles&) = delete;
  ~ThreadHandles() {
    for (size_t d = 0; d < sets.size(); ++d) {
      if (!sets[d]) continue;
      try {
        pools()[d].release(sets[d]);
      } catch (...) {
        // Out of memory growing the free list: the set leaks, which is harmless.
      }
    }
  }
};

HandleSet& thread_set(int device) {
  int n = device_count();
  if (device < 0 || device >= n) {
    throw DeviceError(detail::str("CUDA library handles: device cuda:", device, " requested, but ", n,
                                  " device(s) are visible"));
  }
  thread_local ThreadHandles mine;
  if (mine.sets.size() < static_cast<size_t>(n)) mine.sets.resize(static_cast<size_t>(n), nullptr);
  HandleSet*& h = mine.sets[static_cast<size_t>(device)];
  if (!h) h = pools()[static_cast<size_t>(device)].acquire();
  return *h;
}

}  // namespace

cublasHandle_t cublas_handle(int device) {
  HandleSet& h = thread_set(device);
  if (!h.blas) {
    DeviceGuard guard(device);  // a handle belongs to the device current at its creation
    KILN_CUBLAS_CHECK(cublasCreate(&h.blas));
  }
  KILN_CUBLAS_CHECK(cublasSetStream(h.blas, current_stream(device)));
  return h.blas;
}

CublasLt cublaslt(int device) {
  HandleSet& h = thread_set(device);
  if (!h.lt) {
    DeviceGuard guard(device);
    KILN_CUBLAS_CHECK(cublasLtCreate(&h.lt));
  }
  cudaStream_t stream = current_stream(device);
  for (const Workspace& w : h.workspaces) {
    if (w.stream == stream) return {h.lt, stream, w.ptr, w.bytes};
  }
  // A plain cudaMalloc, outside the tensor pool: the workspace lives as long as the
  // process and should not show up as a tensor in the memory statistics.
  DeviceGuard guard(device);
  void* p = nullptr;
  cudaError_t status = cudaMalloc(&p, kCublasLtWorkspaceBytes);
  if (status != cudaSuccess) {
    // cuBLASLt still works without a workspace, only with fewer algorithms to pick from;
    // not recording the failure lets a later call try again once memory is free.
    (void)cudaGetLastError();
    log_warn("cuBLASLt: could not allocate its ", kCublasLtWorkspaceBytes >> 20, " MiB workspace on cuda:", device,
             " (", describe_cuda_error(status), "); continuing without one");
    return {h.lt, stream, nullptr, 0};
  }
  h.workspaces.push_back({stream, p, kCublasLtWorkspaceBytes});
  return {h.lt, stream, p, kCublasLtWorkspaceBytes};
}

cudnnHandle_t cudnn_handle(int device) {
  HandleSet& h = thread_set(device);
  if (!h.dnn) {
    DeviceGuard guard(device);
    KILN_CUDNN_CHECK(cudnnCreate(&h.dnn));
  }
  KILN_CUDNN_CHECK(cudnnSetStream(h.dnn, current_stream(device)));
  return h.dnn;
}

}  // namespace kiln::cuda
