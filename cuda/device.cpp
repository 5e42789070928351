// CUDA devices and streams: the cached device count (0 without a driver or a GPU, which
// is a normal state, not an error), the device guard, and each device's current compute
// stream. Per-device state is created once and never freed: CUDA objects must not be
// destroyed by static destructors that may run after the runtime has unloaded.
#include <kiln/cuda/device.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <kiln/core/error.h>
#include <kiln/core/log.h>
#include <kiln/cuda/error.h>

namespace kiln::cuda {
namespace {

struct DeviceCount {
  int count = 0;
  std::string reason;
};

const DeviceCount& probe() {
  static const DeviceCount result = [] {
    DeviceCount r;
    int n = 0;
    cudaError_t status = cudaGetDeviceCount(&n);
    if (status != cudaSuccess) {
      // No driver, a driver older than the runtime, CUDA_VISIBLE_DEVICES hiding every
      // GPU: all mean "no GPU here". The failed call leaves a last-error behind that a
      // later KILN_CUDA_CHECK_LAUNCH would misreport, so clear it.
      (void)cudaGetLastError();
      r.reason = describe_cuda_error(status);
      n = 0;
    } else if (n == 0) {
      r.reason = "cudaGetDeviceCount found no device";
    }
    r.count = n;
    if (n == 0) log_debug("CUDA unavailable: ", r.reason);
    else log_debug("CUDA: ", n, " device(s)");
    return r;
  }();
  return result;
}

struct StreamSlot {
  std::once_flag created;
  cudaStream_t own = nullptr;                 // kiln's stream for this device
  std::atomic<cudaStream_t> current{nullptr};  // null until first use: then `own`
};

// One slot per device, sized once; leaked on purpose (see the file comment).
std::vector<StreamSlot>& stream_slots() {
  static auto* slots = new std::vector<StreamSlot>(static_cast<size_t>(device_count()));
  return *slots;
}

StreamSlot& slot(int device) {
  int n = device_count();
  if (device < 0 || device >= n) {
    throw DeviceError(detail::str("CUDA device cuda:", device, " requested, but ",
                                  n == 0 ? std::string("no usable CUDA device was found (") + unavailable_reason() + ")"
                                         : std::to_string(n) + " device(s) are visible"));
  }
  return stream_slots()[static_cast<size_t>(device)];
}

}  // namespace

int device_count() { return probe().count; }
const char* unavailable_reason() { return probe().reason.c_str(); }

namespace {
int cuda_index(Device d) {
  KILN_CHECK(d.is_cuda(), "DeviceGuard: ", d.str(), " is not a CUDA device");
  return d.index;
}
}  // namespace

DeviceGuard::DeviceGuard(Device d) : DeviceGuard(cuda_index(d)) {}

DeviceGuard::DeviceGuard(int index) {
  (void)slot(index);  // a clear DeviceError for a bad index instead of "invalid device ordinal"
  int prev = 0;
  KILN_CUDA_CHECK(cudaGetDevice(&prev));
  if (prev != index) {
    KILN_CUDA_CHECK(cudaSetDevice(index));
    prev_ = prev;  // only restore what we changed; -1 means nothing to undo
  }
}

DeviceGuard::~DeviceGuard() {
  if (prev_ >= 0) KILN_CUDA_WARN(cudaSetDevice(prev_));
}

namespace {
// Creates the device's own stream on first use. call_once: concurrent first users get one
// stream, and if creation throws a later call tries again.
cudaStream_t own_stream(StreamSlot& s, int device) {
  std::call_once(s.created, [&] {
    DeviceGuard guard(device);
    // Non-blocking: kiln's work must not serialise with the legacy default stream that
    // other libraries in the process may be using.
    KILN_CUDA_CHECK(cudaStreamCreateWithFlags(&s.own, cudaStreamNonBlocking));
  });
  return s.own;
}
}  // namespace

cudaStream_t current_stream(int device) {
  StreamSlot& s = slot(device);
  if (cudaStream_t cur = s.current.load(std::memory_order_acquire)) return cur;
  cudaStream_t expected = nullptr;
  s.current.compare_exchange_strong(expected, own_stream(s, device), std::memory_order_acq_rel);
  return s.current.load(std::memory_order_acquire);
}

// Passing nullptr returns the device to kiln's own stream. Work already queued on the
// old stream is not ordered before work on the new one: the caller synchronises (or
// records an event) when that matters.
void set_current_stream(int device, cudaStream_t stream) {
  StreamSlot& s = slot(device);
  s.current.store(stream ? stream : own_stream(s, device), std::memory_order_release);
}

}  // namespace kiln::cuda
