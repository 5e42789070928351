// Philox4x32-10 for many consecutive counters at once, in AVX2 registers where the build
// has them (core/cpu_philox.cpp): the CPU random kernel's generator. Bit for bit what philox4x32
// (core/philox.h) gives one counter at a time, which the CUDA kernels use.
#pragma once
#include <cstdint>

namespace kiln::cpu {

// out[w * n + i] = word w (< words <= 4) of philox4x32(seed, counter + i), for i < n.
void philox_words(uint64_t seed, uint64_t counter, int64_t n, int words, uint32_t* out);

}  // namespace kiln::cpu
