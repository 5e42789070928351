// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11):
// a counter-based generator, so any element's random numbers are a pure function of
// (seed, counter). CPU and CUDA share this code and give the same bits. Element i of a
// random tensor drawn at generator offset o uses counter o + i.
#pragma once
#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define KILN_HD __host__ __device__ __forceinline__
#else
#define KILN_HD inline
#endif

namespace kiln {

struct PhiloxOut {
  uint32_t x[4];
};

KILN_HD uint32_t philox_mulhilo(uint32_t a, uint32_t b, uint32_t* hi) {
  uint64_t p = static_cast<uint64_t>(a) * b;
  *hi = static_cast<uint32_t>(p >> 32);
  return static_cast<uint32_t>(p);
}

KILN_HD PhiloxOut philox4x32(uint64_t seed, uint64_t counter) {
  uint32_t c0 = static_cast<uint32_t>(counter), c1 = static_cast<uint32_t>(counter >> 32), c2 = 0, c3 = 0;
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  for (int round = 0; round < 10; ++round) {
    uint32_t hi0, hi1;
    uint32_t lo0 = philox_mulhilo(0xD2511F53u, c0, &hi0);
    uint32_t lo1 = philox_mulhilo(0xCD9E8D57u, c2, &hi1);
    uint32_t n0 = hi1 ^ c1 ^ k0, n1 = lo1, n2 = hi0 ^ c3 ^ k1, n3 = lo0;
    c0 = n0; c1 = n1; c2 = n2; c3 = n3;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return PhiloxOut{{c0, c1, c2, c3}};
}

// Uniform in [0, 1) with `bits` (24 for float; 11 for f16 and 8 for bf16, so that the
// sample stays below 1 after rounding to the narrow type) or 53 (double) random bits.
KILN_HD float philox_uniform_f32(uint32_t r, int bits = 24) {
  return static_cast<float>(r >> (32 - bits)) * (1.0f / static_cast<float>(1u << bits));
}
KILN_HD double philox_uniform_f64(uint32_t a, uint32_t b) {
  uint64_t v = (static_cast<uint64_t>(a) << 21) ^ (b >> 11);
  return static_cast<double>(v & ((1ull << 53) - 1)) * (1.0 / 9007199254740992.0);
}

}  // namespace kiln

namespace kiln {

// The three random kinds, shared by the CPU reference and the CUDA kernel so the two
// produce the same numbers: uniform in [a, b), normal(mean a, std b) by Box-Muller on
// the first two words, integers in [a, b) from 64 bits modulo the range.
// Each kind from the generator's words (the CPU kernel computes the words for many
// counters at once, core/cpu_philox.h), then from (seed, counter).
KILN_HD float philox_uniform_from(uint32_t x0, float a, float b, int bits = 24) {
  return a + (b - a) * philox_uniform_f32(x0, bits);
}
KILN_HD double philox_uniform_from(uint32_t x0, uint32_t x1, double a, double b) {
  return a + (b - a) * philox_uniform_f64(x0, x1);
}
KILN_HD float philox_normal_from(uint32_t x0, uint32_t x1, float mean, float std) {
  float u1 = (static_cast<float>(x0 >> 8) + 1.0f) * (1.0f / 16777216.0f);  // (0, 1]
  float u2 = philox_uniform_f32(x1);
  return mean + std * (sqrtf(-2.0f * logf(u1)) * cosf(6.283185307179586f * u2));
}
KILN_HD double philox_normal_from(uint32_t x0, uint32_t x1, uint32_t x2, uint32_t x3, double mean, double std) {
  double u1 = 1.0 - philox_uniform_f64(x0, x1);  // (0, 1]
  double u2 = philox_uniform_f64(x2, x3);
  return mean + std * (::sqrt(-2.0 * ::log(u1)) * ::cos(6.283185307179586 * u2));
}
KILN_HD int64_t philox_int_from(uint32_t x0, uint32_t x1, int64_t low, int64_t high) {
  uint64_t v = static_cast<uint64_t>(x0) | (static_cast<uint64_t>(x1) << 32);
  return low + static_cast<int64_t>(v % static_cast<uint64_t>(high - low));
}

KILN_HD float philox_uniform_sample_f32(uint64_t seed, uint64_t counter, float a, float b, int bits = 24) {
  return philox_uniform_from(philox4x32(seed, counter).x[0], a, b, bits);
}
KILN_HD double philox_uniform_sample_f64(uint64_t seed, uint64_t counter, double a, double b) {
  PhiloxOut r = philox4x32(seed, counter);
  return philox_uniform_from(r.x[0], r.x[1], a, b);
}
KILN_HD float philox_normal_sample_f32(uint64_t seed, uint64_t counter, float mean, float std) {
  PhiloxOut r = philox4x32(seed, counter);
  return philox_normal_from(r.x[0], r.x[1], mean, std);
}
KILN_HD double philox_normal_sample_f64(uint64_t seed, uint64_t counter, double mean, double std) {
  PhiloxOut r = philox4x32(seed, counter);
  return philox_normal_from(r.x[0], r.x[1], r.x[2], r.x[3], mean, std);
}
KILN_HD int64_t philox_int_sample(uint64_t seed, uint64_t counter, int64_t low, int64_t high) {
  PhiloxOut r = philox4x32(seed, counter);
  return philox_int_from(r.x[0], r.x[1], low, high);
}

}  // namespace kiln

namespace kiln {

// Dropout's keep decision (ops/dropout.h), shared by the CPU reference and the CUDA
// kernel: the element with counter c is kept iff its 24-bit uniform sample
// u = (x[0] >> 8) / 2^24 (the value philox_uniform_sample_f32(seed, c, 0, 1) returns) is
// >= p. Since u is a multiple of 2^-24, u >= p iff (x[0] >> 8) >= ceil(p 2^24): an integer
// comparison, so the two backends cannot round differently. The threshold is computed
// once, on the host.
inline uint32_t philox_keep_threshold(double p) {
  const double t = std::ceil(p * 16777216.0);
  if (!(t > 0.0)) return 0;
  return t >= 16777216.0 ? 16777216u : static_cast<uint32_t>(t);
}
KILN_HD bool philox_keep(uint64_t seed, uint64_t counter, uint32_t threshold) {
  return (philox4x32(seed, counter).x[0] >> 8) >= threshold;
}

}  // namespace kiln
