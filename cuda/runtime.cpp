// The CUDA device runtime (core/runtime.h): device count, the stream-ordered allocator
// (cuda/allocator.cpp), byte copies between host and device and between devices, and
// synchronisation (core counts the host synchronisations: core/runtime.h).
//
// Host-to-device copies do not wait for the device: the bytes are staged in a pinned
// buffer, the copy is queued on the current stream, and the buffer is reused only once
// an event recorded after the copy has completed. Device-to-host copies must wait (the
// caller reads the bytes next) and count as host synchronisations.
#include <cstdint>
#include <cstring>
#include <mutex>
#include <vector>

#include <cuda_runtime_api.h>

#include <kiln/core/error.h>
#include <kiln/core/runtime.h>
#include <kiln/cuda/allocator.h>
#include <kiln/cuda/device.h>
#include <kiln/cuda/error.h>
#include <kiln/cuda/runtime.h>

namespace kiln::cuda {
namespace {

// Orders `waiter` after the work queued so far on `signaller` (streams of any devices),
// without blocking the host.
void stream_wait(cudaStream_t waiter, cudaStream_t signaller, int signaller_device) {
  DeviceGuard guard(signaller_device);  // an event is recorded on its own device's stream
  cudaEvent_t ev = nullptr;
  KILN_CUDA_CHECK(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming));
  cudaError_t rec = cudaEventRecord(ev, signaller);
  cudaError_t wait = rec == cudaSuccess ? cudaStreamWaitEvent(waiter, ev, 0) : cudaSuccess;
  // Destroying a recorded event is safe: its resources go once the wait has been satisfied.
  KILN_CUDA_WARN(cudaEventDestroy(ev));
  KILN_CUDA_CHECK(rec);
  KILN_CUDA_CHECK(wait);
}

// Pinned host buffers for host-to-device staging. A buffer is busy until the event
// recorded after its copy completes; acquire() reuses the first idle buffer that is big
// enough and grows the pool otherwise. Buffers are kept for the life of the process.
class PinnedStaging {
 public:
  struct Block {
    void* host = nullptr;
    size_t bytes = 0;
    int device = -1;
    cudaEvent_t done = nullptr;  // recorded after the copy out of `host`
  };

  // Copies `nbytes` from host memory `src` to device memory `dst` on `stream` of `device`
  // without waiting for it.
  void copy_to_device(void* dst, const void* src, size_t nbytes, int device, cudaStream_t stream) {
    std::lock_guard<std::mutex> lock(mu_);
    Block& b = acquire(nbytes, device);
    std::memcpy(b.host, src, nbytes);
    KILN_CUDA_CHECK(cudaMemcpyAsync(dst, b.host, nbytes, cudaMemcpyHostToDevice, stream));
    KILN_CUDA_CHECK(cudaEventRecord(b.done, stream));
  }

  ~PinnedStaging() {
    for (Block& b : blocks_) {
      if (b.done) KILN_CUDA_WARN(cudaEventSynchronize(b.done));
      if (b.done) KILN_CUDA_WARN(cudaEventDestroy(b.done));
      if (b.host) KILN_CUDA_WARN(cudaFreeHost(b.host));
    }
  }

 private:
  Block& acquire(size_t nbytes, int device) {
    for (Block& b : blocks_) {
      if (b.device != device || b.bytes < nbytes) continue;
      cudaError_t q = cudaEventQuery(b.done);
      if (q == cudaSuccess) return b;
      if (q != cudaErrorNotReady) KILN_CUDA_CHECK(q);
    }
    Block b;
    b.bytes = std::max<size_t>(nbytes, size_t{1} << 20);  // at least 1 MiB, so small copies share
    b.device = device;
    KILN_CUDA_CHECK(cudaHostAlloc(&b.host, b.bytes, cudaHostAllocDefault));
    cudaError_t e = cudaEventCreateWithFlags(&b.done, cudaEventDisableTiming);
    if (e != cudaSuccess) {
      KILN_CUDA_WARN(cudaFreeHost(b.host));
      KILN_CUDA_CHECK(e);
    }
    blocks_.push_back(b);
    return blocks_.back();
  }

  std::mutex mu_;
  std::vector<Block> blocks_;  // grows only; references stay valid within one call
};

class CudaRuntime final : public DeviceRuntime {
 public:
  const char* name() const override { return "cuda"; }
  int device_count() override { return cuda::device_count(); }
  Allocator& allocator() override { return cuda_allocator(); }

  void copy_bytes(void* dst, Device dd, const void* src, Device sd, size_t nbytes) override {
    KILN_CHECK(dd.is_cuda() || sd.is_cuda(), "CUDA runtime: copy_bytes between ", sd.str(), " and ", dd.str(),
               " involves no CUDA device");
    if (nbytes == 0) return;
    if (dd.is_cuda() && sd.is_cuda()) {
      DeviceGuard guard(dd);
      cudaStream_t dst_stream = current_stream(dd);
      if (dd == sd) {
        KILN_CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyDeviceToDevice, dst_stream));
        return;
      }
      // The source was produced on its own device's stream, and its block is freed (and
      // reusable) in that stream's order: fence both ways around the copy.
      cudaStream_t src_stream = current_stream(sd);
      stream_wait(dst_stream, src_stream, sd.index);
      KILN_CUDA_CHECK(cudaMemcpyPeerAsync(dst, dd.index, src, sd.index, nbytes, dst_stream));
      stream_wait(src_stream, dst_stream, dd.index);
      return;
    }
    if (dd.is_cuda()) {  // host -> device: staged, not waited for
      DeviceGuard guard(dd);
      staging_.copy_to_device(dst, src, nbytes, dd.index, current_stream(dd));
      return;
    }
    // device -> host: the host reads the bytes next, so this waits (core counts it).
    DeviceGuard guard(sd);
    cudaStream_t stream = current_stream(sd);
    KILN_CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyDeviceToHost, stream));
    KILN_CUDA_CHECK(cudaStreamSynchronize(stream));
  }

  void synchronize(Device device) override {
    DeviceGuard guard(device);
    KILN_CUDA_CHECK(cudaDeviceSynchronize());
  }

 private:
  PinnedStaging staging_;
};

}  // namespace

void register_runtime() {
  // Touches no CUDA API: loading kiln must work, and stay cheap, without a GPU.
  static CudaRuntime r;
  kiln::register_runtime(DeviceType::CUDA, &r);
}

}  // namespace kiln::cuda
