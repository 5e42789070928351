// Device side of the kernel error record (cuda/runtime.h): how a kernel reports a bad
// value (an index out of range) without a host synchronisation. The launcher passes
// kernel_error_record(device) to the kernel; a thread that finds a bad value calls
// report_kernel_error and skips the element. The runtime throws at the next
// synchronisation point. Include only from .cu files.
#pragma once
#include <cstdint>

#include <kiln/cuda/runtime.h>

namespace kiln::cuda {

// Claims the record if no error is pending (the first error wins) and stores the range
// and the value. Only reached on bad input (callers test the range first); the plain read
// first keeps many bad indices from queueing atomics on one address.
__device__ __forceinline__ void report_kernel_error(KernelErrorRecord* record, uint32_t code, int64_t bound,
                                                    int64_t value) {
  if (*static_cast<volatile uint32_t*>(&record->code) != 0u) return;
  if (atomicCAS(&record->code, 0u, code) == 0u) {
    record->bound = bound;
    record->value = value;
  }
}

// True when 0 <= i < n; otherwise reports `code` and returns false.
__device__ __forceinline__ bool index_in_range(KernelErrorRecord* record, uint32_t code, int64_t i, int64_t n) {
  // One unsigned comparison covers both ends (a negative i wraps to a huge value).
  if (static_cast<uint64_t>(i) < static_cast<uint64_t>(n)) return true;
  report_kernel_error(record, code, n, i);
  return false;
}

}  // namespace kiln::cuda
