// Scratch memory on a device for the CUDA kernels, from kiln's allocator
// (runtime(device).allocator()), handed back when it goes out of scope. Plain C++ (no
// CUDA headers), so both the .cu kernel files and the host-compiled .cpp files beside
// them (conv_cudnn.cpp) use it.
//
// kiln's CUDA allocator is stream-ordered on the device's current stream, the stream the
// launchers use: the block is usable by the work queued after the allocation, and handing
// it back right after queueing the kernels (or library calls) that use it is safe: the
// free runs in stream order, after them. Construct it under the launch's DeviceGuard.
#pragma once
#include <cstddef>

#include <kiln/core/runtime.h>

namespace kiln::cuda {

class DeviceScratch {
 public:
  DeviceScratch() = default;  // holds nothing (get() is null)
  // `bytes` may be 0: nothing is allocated and get() is null. Throws kiln::OutOfMemory
  // when the allocator cannot serve the request.
  DeviceScratch(size_t bytes, Device device) : device_(device), bytes_(bytes) {
    if (bytes_ == 0) return;
    alloc_ = &runtime(device).allocator();
    ptr_ = alloc_->allocate(bytes_, device_);
  }
  ~DeviceScratch() { release(); }
  DeviceScratch(const DeviceScratch&) = delete;
  DeviceScratch& operator=(const DeviceScratch&) = delete;
  DeviceScratch(DeviceScratch&& o) noexcept : alloc_(o.alloc_), device_(o.device_), bytes_(o.bytes_), ptr_(o.ptr_) {
    o.alloc_ = nullptr;
    o.bytes_ = 0;
    o.ptr_ = nullptr;
  }
  DeviceScratch& operator=(DeviceScratch&& o) noexcept {
    if (this != &o) {
      release();
      alloc_ = o.alloc_;
      device_ = o.device_;
      bytes_ = o.bytes_;
      ptr_ = o.ptr_;
      o.alloc_ = nullptr;
      o.bytes_ = 0;
      o.ptr_ = nullptr;
    }
    return *this;
  }

  template <class T = void>
  T* get() const {
    return static_cast<T*>(ptr_);
  }
  size_t bytes() const { return bytes_; }

 private:
  void release() noexcept {
    if (ptr_ != nullptr) alloc_->deallocate(ptr_, bytes_, device_);
    ptr_ = nullptr;
  }

  Allocator* alloc_ = nullptr;
  Device device_;
  size_t bytes_ = 0;
  void* ptr_ = nullptr;
};

}  // namespace kiln::cuda
