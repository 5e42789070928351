// CUDA devices and streams for the host-side glue: how many devices are usable (0 when
// there is no driver or no device, never an error), a guard that sets the current
// device for a scope, and each device's current compute stream.
#pragma once
#include <cuda_runtime_api.h>

#include <kiln/core/device.h>

namespace kiln::cuda {

// Number of usable devices; 0 (and a debug log with CUDA's reason) when none.
int device_count();
// Why device_count() is 0 ("" when devices exist).
const char* unavailable_reason();

// Sets the current device for a scope and restores the previous one.
class DeviceGuard {
 public:
  explicit DeviceGuard(Device d);
  explicit DeviceGuard(int index);
  ~DeviceGuard();
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int prev_ = -1;
};

// The current compute stream of a device (one per device, created on first use, a
// non-blocking stream). Kernels and library calls are ordered on it.
cudaStream_t current_stream(int device);
inline cudaStream_t current_stream(Device d) { return current_stream(d.index); }
void set_current_stream(int device, cudaStream_t stream);

}  // namespace kiln::cuda
