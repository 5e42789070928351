// The allocator interface. Each device type's backend provides one: the CPU one is
// aligned malloc; the CUDA one is the stream-ordered pool allocator (cuda/allocator.cpp).
#pragma once
#include <cstddef>
#include <cstdint>

#include <kiln/core/device.h>

namespace kiln {

struct MemoryStats {
  int64_t allocated = 0;       // bytes in live tensors
  int64_t peak_allocated = 0;  // high-water mark of `allocated` since the last reset
  int64_t reserved = 0;        // bytes held from the system, including the cache
  int64_t num_allocs = 0;
};

class Allocator {
 public:
  virtual ~Allocator() = default;
  // Throws kiln::OutOfMemory (naming the requested and the free bytes) on failure.
  virtual void* allocate(size_t nbytes, Device device) = 0;
  virtual void deallocate(void* ptr, size_t nbytes, Device device) noexcept = 0;
  virtual MemoryStats stats(Device device) const = 0;
  virtual void reset_peak(Device device) = 0;
  // Returns cached memory to the system where the allocator caches.
  virtual void empty_cache(Device device) {}
};

}  // namespace kiln
