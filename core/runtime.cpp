// The runtime registry and the kernel-slot errors.
#include <kiln/core/runtime.h>

#include <array>
#include <atomic>
#include <mutex>
#include <string>

#include <kiln/core/error.h>
#include <kiln/core/kernel.h>

namespace kiln {
DeviceRuntime& cpu_runtime();  // core/cpu_runtime.cpp

namespace {
std::array<DeviceRuntime*, kNumDeviceTypes>& registry() {
  static std::array<DeviceRuntime*, kNumDeviceTypes> r{};
  return r;
}
void ensure_loaded() {
  static std::once_flag once;
  std::call_once(once, [] {
    registry()[static_cast<int>(DeviceType::CPU)] = &cpu_runtime();
    detail::load_builtin_backends();
  });
}
}  // namespace

void register_runtime(DeviceType type, DeviceRuntime* r) { registry()[static_cast<int>(type)] = r; }

bool has_runtime(DeviceType type) {
  ensure_loaded();
  return registry()[static_cast<int>(type)] != nullptr;
}

DeviceRuntime& runtime(DeviceType type) {
  ensure_loaded();
  DeviceRuntime* r = registry()[static_cast<int>(type)];
  if (!r) throw DeviceError("CUDA device requested, but this kiln was built without CUDA (KILN_CUDA=OFF)");
  return *r;
}

DeviceRuntime& runtime(Device device) {
  DeviceRuntime& r = runtime(device.type);
  if (device.is_cuda()) {
    int n = r.device_count();
    if (n == 0) throw DeviceError("CUDA device " + device.str() + " requested, but no usable CUDA device was found");
    if (device.index < 0 || device.index >= n)
      throw DeviceError("CUDA device " + device.str() + " requested, but only " + std::to_string(n) +
                        " device(s) are visible");
  }
  return r;
}

namespace {
std::atomic<int64_t> g_host_syncs{0};
}
void detail::count_host_sync() { g_host_syncs.fetch_add(1, std::memory_order_relaxed); }
int64_t host_sync_count() { return g_host_syncs.load(std::memory_order_relaxed); }

void synchronize(Device device) {
  runtime(device).synchronize(device);
  if (!device.is_cpu()) detail::count_host_sync();
}

bool cuda_is_available() { return cuda_device_count() > 0; }
int cuda_device_count() { return has_runtime(DeviceType::CUDA) ? runtime(DeviceType::CUDA).device_count() : 0; }

namespace detail {
void throw_missing_kernel(const char* op, Device device) {
  throw Error(str(op, ": no kernel for ", device.str(), " is registered in this build"));
}
}  // namespace detail

}  // namespace kiln
