// Philox4x32-10 for many consecutive counters at once (core/cpu_philox.h). With AVX2 (the
// x86-64-v3 baseline kiln's CPU code is built for) 16 counters go through the rounds
// together: each 32-bit word in the low half of a 64-bit lane, so that one vpmuludq gives
// four rounds' full 32 x 32 -> 64-bit products, and four independent vectors keep the
// multiplier busy. Other targets, and the tail of a block, take the scalar philox4x32
// (core/philox.h); the words are the same bits either way. Compiler intrinsics only: core
// needs no SIMD library.
#include <kiln/core/cpu_philox.h>

#include <kiln/core/philox.h>

#if defined(__AVX2__)
#include <immintrin.h>
#endif

namespace kiln::cpu {

void philox_words(uint64_t seed, uint64_t counter, int64_t n, int words, uint32_t* out) {
  int64_t i = 0;
#if defined(__AVX2__)
  constexpr int kVectors = 4;  // 4 x 4 counters
  const __m256i low = _mm256_set1_epi64x(0xFFFFFFFFll);
  const __m256i m0 = _mm256_set1_epi64x(0xD2511F53ll), m1 = _mm256_set1_epi64x(0xCD9E8D57ll);
  const __m256i pack = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);  // the low words of 4 lanes first
  for (; i + 4 * kVectors <= n; i += 4 * kVectors) {
    __m256i c[4][kVectors];
    for (int v = 0; v < kVectors; ++v) {
      const long long b = static_cast<long long>(counter + static_cast<uint64_t>(i + 4 * v));
      const __m256i ctr = _mm256_add_epi64(_mm256_set1_epi64x(b), _mm256_setr_epi64x(0, 1, 2, 3));
      c[0][v] = _mm256_and_si256(ctr, low);
      c[1][v] = _mm256_srli_epi64(ctr, 32);
      c[2][v] = _mm256_setzero_si256();
      c[3][v] = _mm256_setzero_si256();
    }
    uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
    for (int round = 0; round < 10; ++round) {
      const __m256i key0 = _mm256_set1_epi64x(k0), key1 = _mm256_set1_epi64x(k1);
      for (int v = 0; v < kVectors; ++v) {
        const __m256i p0 = _mm256_mul_epu32(c[0][v], m0);  // 0xD2511F53 * c0, 64 bits
        const __m256i p1 = _mm256_mul_epu32(c[2][v], m1);  // 0xCD9E8D57 * c2
        const __m256i n0 = _mm256_xor_si256(_mm256_xor_si256(_mm256_srli_epi64(p1, 32), c[1][v]), key0);
        const __m256i n2 = _mm256_xor_si256(_mm256_xor_si256(_mm256_srli_epi64(p0, 32), c[3][v]), key1);
        c[1][v] = _mm256_and_si256(p1, low);
        c[3][v] = _mm256_and_si256(p0, low);
        c[0][v] = n0;
        c[2][v] = n2;
      }
      k0 += 0x9E3779B9u;
      k1 += 0xBB67AE85u;
    }
    for (int w = 0; w < words; ++w)
      for (int v = 0; v < kVectors; ++v)
        _mm_storeu_si128(reinterpret_cast<__m128i*>(out + w * n + i + 4 * v),
                         _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(c[w][v], pack)));
  }
#endif
  for (; i < n; ++i) {  // the tail (or everything without AVX2), one counter at a time
    const PhiloxOut r = philox4x32(seed, counter + static_cast<uint64_t>(i));
    for (int w = 0; w < words; ++w) out[w * n + i] = r.x[w];
  }
}

}  // namespace kiln::cpu
