// The CUDA device runtime (core/runtime.h): device count, the stream-ordered allocator
// (cuda/allocator.cpp), byte copies between host and device and between devices, and
// synchronisation (core counts the host synchronisations: core/runtime.h).
//
// Host-to-device copies do not wait for the device: the bytes are staged in a pinned
// buffer, the copy is queued on the current stream, and the buffer is reused only once
// an event recorded after the copy has completed. Device-to-host copies must wait (the
// caller reads the bytes next) and count as host synchronisations.
//
// Kernel error records (cuda/runtime.h): kernels report bad input (an index out of range)
// into a small per-device record instead of the host checking values before each launch
// (DESIGN: no hidden syncs). The two synchronisation points read it: a device-to-host copy
// queues the record's read behind the data on the same stream, so its one wait covers
// both; synchronize() reads it after the device is idle. A pending error is reset and
// thrown as kiln::Error naming the op.
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <sstream>
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

// ---- kernel error records ------------------------------------------------------------

struct ErrorSlot {
  std::once_flag created;
  std::atomic<KernelErrorRecord*> record{nullptr};  // device memory; set once created
  KernelErrorRecord* mirror = nullptr;              // pinned host memory the record is read into
  std::mutex read_mu;                               // one reader of `mirror` at a time
};

// One slot per device, sized once. Leaked on purpose, with the buffers they hold: freeing
// device memory from a static destructor races the CUDA runtime's own teardown.
std::vector<ErrorSlot>& error_slots() {
  static auto* slots = new std::vector<ErrorSlot>(static_cast<size_t>(cuda::device_count()));
  return *slots;
}

ErrorSlot& error_slot(int device) {
  std::vector<ErrorSlot>& slots = error_slots();
  KILN_CHECK(device >= 0 && static_cast<size_t>(device) < slots.size(), "CUDA runtime: no device cuda:", device,
             " (", slots.size(), " visible)");
  return slots[static_cast<size_t>(device)];
}

// The slot of a device whose record exists, else null (no kernel that reports has run on
// it, so there is nothing to read).
ErrorSlot* created_error_slot(int device) {
  ErrorSlot& s = error_slot(device);
  return s.record.load(std::memory_order_acquire) ? &s : nullptr;
}

// Reads the record of `device` on `stream` (already waited for, or waited for here),
// then throws if an error is pending, after queueing its reset on the same stream.
// `queued`: the caller has queued the read into the mirror before its own wait.
void report_kernel_errors(ErrorSlot& s, int device, cudaStream_t stream, bool queued) {
  KernelErrorRecord* record = s.record.load(std::memory_order_acquire);
  if (!queued) {
    KILN_CUDA_CHECK(cudaMemcpyAsync(s.mirror, record, sizeof(KernelErrorRecord), cudaMemcpyDeviceToHost, stream));
    KILN_CUDA_CHECK(cudaStreamSynchronize(stream));
  }
  const KernelErrorRecord pending = *s.mirror;
  if (pending.code == 0) return;
  KILN_CUDA_CHECK(cudaMemsetAsync(record, 0, sizeof(KernelErrorRecord), stream));
  throw Error(kernel_error_message(pending, device));
}

// ---- copies --------------------------------------------------------------------------

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
    // device -> host: the host reads the bytes next, so this waits (core counts it). The
    // error record is read behind the bytes, in the same wait; a pending error throws
    // instead of handing back values computed from bad input.
    DeviceGuard guard(sd);
    cudaStream_t stream = current_stream(sd);
    KILN_CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyDeviceToHost, stream));
    ErrorSlot* es = created_error_slot(sd.index);
    if (!es) {
      KILN_CUDA_CHECK(cudaStreamSynchronize(stream));
      return;
    }
    std::lock_guard<std::mutex> lock(es->read_mu);
    KILN_CUDA_CHECK(cudaMemcpyAsync(es->mirror, es->record.load(std::memory_order_acquire),
                                    sizeof(KernelErrorRecord), cudaMemcpyDeviceToHost, stream));
    KILN_CUDA_CHECK(cudaStreamSynchronize(stream));
    report_kernel_errors(*es, sd.index, stream, /*queued=*/true);
  }

  // Waits for every stream of the device, then reads its error record (the device is
  // idle, so that read is a few microseconds).
  void synchronize(Device device) override {
    DeviceGuard guard(device);
    KILN_CUDA_CHECK(cudaDeviceSynchronize());
    if (ErrorSlot* es = created_error_slot(device.index)) {
      std::lock_guard<std::mutex> lock(es->read_mu);
      report_kernel_errors(*es, device.index, current_stream(device), /*queued=*/false);
    }
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

KernelErrorRecord* kernel_error_record(int device) {
  ErrorSlot& s = error_slot(device);
  if (KernelErrorRecord* r = s.record.load(std::memory_order_acquire)) return r;
  // call_once: concurrent first users share one record; if creation throws, a later call
  // tries again.
  std::call_once(s.created, [&] {
    DeviceGuard guard(device);
    void* dev = nullptr;
    void* host = nullptr;
    KILN_CUDA_CHECK(cudaMalloc(&dev, sizeof(KernelErrorRecord)));
    cudaError_t e = cudaHostAlloc(&host, sizeof(KernelErrorRecord), cudaHostAllocDefault);
    // Zeroed in the order of the current stream, where the kernels that report and the
    // runtime's reads are queued: no host wait.
    if (e == cudaSuccess) e = cudaMemsetAsync(dev, 0, sizeof(KernelErrorRecord), current_stream(device));
    if (e != cudaSuccess) {
      if (host) KILN_CUDA_WARN(cudaFreeHost(host));
      KILN_CUDA_WARN(cudaFree(dev));
      KILN_CUDA_CHECK(e);
    }
    s.mirror = static_cast<KernelErrorRecord*>(host);
    std::memset(s.mirror, 0, sizeof(KernelErrorRecord));
    s.record.store(static_cast<KernelErrorRecord*>(dev), std::memory_order_release);
  });
  return s.record.load(std::memory_order_acquire);
}

std::string kernel_error_message(const KernelErrorRecord& r, int device) {
  struct OpInfo {
    KernelErrorOp op;
    const char* name;
    const char* also;  // the other ops whose kernel this is, with the verb ("" when none)
  };
  static constexpr OpInfo kOps[] = {
      {KernelErrorOp::IndexSelect, "index_select", "embedding also uses"},
      {KernelErrorOp::Gather, "gather", "nll_loss also uses"},
      {KernelErrorOp::ScatterAdd, "scatter_add",
       "one_hot and the backward of index_select, gather and embedding also use"},
      {KernelErrorOp::CrossEntropy, "cross_entropy", ""},
  };
  const uint32_t op = r.code >> 8, kind = r.code & 0xffu;
  const OpInfo* info = nullptr;
  for (const OpInfo& o : kOps)
    if (static_cast<uint32_t>(o.op) == op) info = &o;
  std::ostringstream os;
  if (!info) {
    os << "a CUDA kernel on cuda:" << device << " reported an unknown error (code 0x" << std::hex << r.code
       << std::dec << ", bound " << r.bound << ", value " << r.value << ")";
    return os.str();
  }
  os << info->name << ": ";
  switch (static_cast<KernelErrorKind>(kind)) {
    case KernelErrorKind::IndexOutOfRange:
      os << "an index was out of range [0, " << r.bound << "): got " << r.value;
      break;
    case KernelErrorKind::TargetOutOfRange:
      os << "a target was out of range [0, " << r.bound << ") and not ignore_index: got " << r.value;
      break;
    default:
      os << "unknown error kind " << kind << " (bound " << r.bound << ", value " << r.value << ")";
      break;
  }
  os << " (checked on cuda:" << device << " by the " << info->name << " kernel";
  if (*info->also) os << ", which " << info->also;
  os << "; reported at the next synchronisation point, so it may come from an earlier op)";
  return os.str();
}

bool env_flag(const char* name, bool fallback) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return fallback;
  return !(std::strcmp(v, "0") == 0 || std::strcmp(v, "false") == 0 || std::strcmp(v, "off") == 0);
}

namespace {
std::atomic<int>& tf32_flag() {
  static std::atomic<int> flag = env_flag("KILN_ALLOW_TF32", false) ? 1 : 0;
  return flag;
}
}  // namespace

bool allow_tf32() { return tf32_flag().load(std::memory_order_relaxed) != 0; }
void set_allow_tf32(bool on) { tf32_flag().store(on ? 1 : 0, std::memory_order_relaxed); }

}  // namespace kiln::cuda
