// The device runtime: per device type, the allocator, byte copies between the host and
// the device, synchronisation and the device count. The CPU runtime lives in core
// (core/cpu_runtime.cpp); the CUDA one in cuda/runtime.cpp, registered by
// detail::load_builtin_backends(). Kernels are not here: each op has a kernel slot
// (core/kernel.h).
#pragma once
#include <cstddef>
#include <cstdint>

#include <kiln/core/allocator.h>
#include <kiln/core/device.h>

namespace kiln {

class DeviceRuntime {
 public:
  virtual ~DeviceRuntime() = default;
  virtual const char* name() const = 0;
  // Number of usable devices (1 for the CPU); 0 means the runtime is built but unusable.
  virtual int device_count() = 0;
  virtual Allocator& allocator() = 0;
  // Contiguous byte copy where one side (or both) is this runtime's device and the other
  // may be the host. Ordered on the device's current stream.
  virtual void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, size_t nbytes) = 0;
  // Waits for all work queued on the device; reports errors that kernels raised on the
  // device since the last synchronisation (for example an index out of range).
  virtual void synchronize(Device device) = 0;
};

void register_runtime(DeviceType type, DeviceRuntime* runtime);
bool has_runtime(DeviceType type);
// The runtime of a device; throws kiln::DeviceError when it is not built or not usable
// (naming the reason: built without CUDA, no GPU, no such index).
DeviceRuntime& runtime(DeviceType type);
DeviceRuntime& runtime(Device device);
// Waits for the device (counted as a host synchronisation unless it is the CPU).
void synchronize(Device device);

// How many times the host has waited for a device since the process started: device-to-
// host copies (item(), to_vector(), .cpu(), a copy_ into host memory) and synchronize()
// on a non-CPU device. A training step should add none (DESIGN: no hidden syncs); tests
// and benchmarks read the difference around a step.
int64_t host_sync_count();
namespace detail {
void count_host_sync();
}  // namespace detail

// CUDA availability without throwing: false when kiln was built without CUDA, when no
// driver is loaded or when no device is visible.
bool cuda_is_available();
int cuda_device_count();

namespace detail {
// Registers the runtimes and kernels of the backends this kiln was built with (the CUDA
// runtime, the kernels of core's list). Called once, on first use of runtime() or of a
// core kernel slot. Declared here and defined at the top of the library (ops/register.cpp),
// the one place that knows which backends were built: a link-time edge, not an include,
// so that a static link pulls every backend in without static initialisers.
void load_builtin_backends();
}  // namespace detail

}  // namespace kiln
