// The CUDA device runtime (cuda/runtime.cpp): its registration with core's registry, and
// the per-device kernel error record through which kernels report bad input (an index
// out of range) without a host synchronisation.
//
// A kernel that finds a bad value claims the record of its device with
// atomicCAS(&record->code, 0, code) (cuda/kernels/device_errors.cuh), stores the bound and
// the value, and skips that element instead of reading out of bounds. The runtime reads
// the record at its synchronisation points — synchronize(Device) and device-to-host
// copies (item(), .cpu(), to_vector()) — after the wait it does anyway, resets it and
// throws kiln::Error naming the op. The first error since the last report wins.
#pragma once
#include <cstdint>
#include <string>

namespace kiln::cuda {

// Called by detail::load_builtin_backends() (ops/register.cpp).
void register_runtime();

// What went wrong (the low byte of a code).
enum class KernelErrorKind : uint32_t {
  IndexOutOfRange = 1,   // an index outside [0, bound)
  TargetOutOfRange = 2,  // a class target outside [0, bound) that is not ignore_index
};
// Which kernel found it (the next byte). Adding a kernel that reports: one entry here and
// one row in the message table of cuda/runtime.cpp.
enum class KernelErrorOp : uint32_t {
  IndexSelect = 1,  // index_select, embedding
  Gather = 2,       // gather, nll_loss
  ScatterAdd = 3,   // scatter_add, one_hot, the backward of index_select/gather/embedding
  CrossEntropy = 4,
};
constexpr uint32_t kernel_error_code(KernelErrorOp op, KernelErrorKind kind) {
  return (static_cast<uint32_t>(op) << 8) | static_cast<uint32_t>(kind);
}

// The record in device memory, one per device. `code` is 0 while no error is pending;
// `bound` and `value` are written only by the thread whose compare-and-swap set it.
struct KernelErrorRecord {
  uint32_t code;
  uint32_t reserved;
  int64_t bound;  // the op's range is [0, bound)
  int64_t value;  // the first offending value
};

// The device pointer of `device`'s record, for a kernel launch on the device's current
// stream. Allocated on first use per device (cudaMalloc: this one tiny buffer is outside
// the stream-ordered pool, so memory statistics do not see it) and zeroed on the current
// stream, so the kernels queued after it see zero without the host waiting; kept for the
// life of the process. Must be called with the device current or any device (it sets it).
KernelErrorRecord* kernel_error_record(int device);

// The message for a record read back from `device`: names the op, the range, the value
// and that it is reported late.
std::string kernel_error_message(const KernelErrorRecord& record, int device);

// TF32 tensor cores for f32 matmuls (cuBLAS: CUBLAS_COMPUTE_32F_FAST_TF32) and convolutions
// (cuDNN's tensor-op algorithms). Off by default: kiln's f32 is f32 (10 mantissa bits in
// the products would no longer track the CPU reference). PyTorch's equivalents are
// torch.backends.cuda.matmul.allow_tf32 (off by default) and torch.backends.cudnn.allow_tf32
// (on by default). The environment variable KILN_ALLOW_TF32=1 sets the initial value;
// set_allow_tf32 changes it for the ops launched afterwards (the plan and algorithm caches
// key on it).
bool allow_tf32();
void set_allow_tf32(bool on);

// An on/off environment variable of the CUDA backend: unset or empty gives `fallback`; "0",
// "false" and "off" are off, anything else on (KILN_ALLOW_TF32, KILN_CUDNN_BENCHMARK, ...).
bool env_flag(const char* name, bool fallback);

}  // namespace kiln::cuda
