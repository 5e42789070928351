// Helpers shared by the reduction-shaped kernels (reduce.cu, softmax.cu, loss.cu,
// index.cu, norm.cu): warp and block all-reductions over any trivially copyable state
// with a combine functor, the SM count used to size split reductions, and (through
// scratch.h) DeviceScratch for the partial states of split reductions. Every reduction
// tree here has a fixed shape for a given launch configuration, so floating-point results
// are deterministic run to run. Include only from .cu files.
#pragma once
#include <atomic>
#include <cstdint>
#include <type_traits>

#include <kiln/cuda/kernels/common.cuh>
#include <kiln/cuda/kernels/scratch.h>

namespace kiln::cuda {

inline constexpr int kWarpSize = 32;
inline constexpr unsigned kFullMask = 0xffffffffu;

// ---- device helpers ----------------------------------------------------------------

// __shfl_xor_sync for any trivially copyable value: native for 32/64-bit scalars, word
// by word for structs (value-index pairs, (max, sum) pairs).
template <class T>
__device__ __forceinline__ T shfl_xor(const T& v, int lane_mask) {
  if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double> || std::is_same_v<T, int> ||
                std::is_same_v<T, unsigned> || std::is_same_v<T, long long> ||
                std::is_same_v<T, unsigned long long>) {
    return __shfl_xor_sync(kFullMask, v, lane_mask);
  } else {
    static_assert(std::is_trivially_copyable_v<T> && sizeof(T) % 4 == 0, "shfl_xor: unsupported state type");
    constexpr int kWords = sizeof(T) / 4;
    uint32_t w[kWords];
    memcpy(w, &v, sizeof(T));
#pragma unroll
    for (int k = 0; k < kWords; ++k) w[k] = __shfl_xor_sync(kFullMask, w[k], lane_mask);
    T r;
    memcpy(&r, w, sizeof(T));
    return r;
  }
}

// Butterfly all-reduce over aligned groups of `group` lanes (a power of two <= 32): every
// lane of a group ends with the group's result. A commutative combine gives bit-identical
// results in all lanes. All 32 lanes must execute the call.
template <class T, class Combine>
__device__ __forceinline__ T warp_all_reduce(T v, Combine combine, int group = kWarpSize) {
  for (int m = group >> 1; m > 0; m >>= 1) v = combine(v, shfl_xor(v, m));
  return v;
}

// All-reduce over a 1-D block whose size is a multiple of 32 (at most 1024): warp
// butterflies, one value per warp through shared memory, then every warp reduces those
// values with the same tree, so every thread returns the same result without a third
// barrier. Safe to call repeatedly (the leading barrier protects the shared slots).
template <class T, class Combine>
__device__ __forceinline__ T block_all_reduce(T v, Combine combine, T identity) {
  __shared__ T slots[kWarpSize];
  const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize;
  const int nwarps = blockDim.x / kWarpSize;
  v = warp_all_reduce(v, combine);
  __syncthreads();
  if (lane == 0) slots[warp] = v;
  __syncthreads();
  v = lane < nwarps ? slots[lane] : identity;
  return warp_all_reduce(v, combine);
}

// ---- host helpers ------------------------------------------------------------------

// Number of SMs of the current device (cached per device; the launchers run under the
// glue's DeviceGuard).
inline int num_sms() {
  constexpr int kMaxDevices = 64;
  static std::atomic<int> cache[kMaxDevices];
  int dev = 0;
  KILN_CUDA_CHECK(cudaGetDevice(&dev));
  int n = dev < kMaxDevices ? cache[dev].load(std::memory_order_relaxed) : 0;
  if (n == 0) {
    KILN_CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev));
    if (dev < kMaxDevices) cache[dev].store(n, std::memory_order_relaxed);
  }
  return n;
}

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace kiln::cuda
