// Philox4x32-10 blocks in vector registers (core/cpu_philox.h), on Google Highway with
// runtime dispatch to the widest vectors the CPU has. This file is compiled once per CPU
// target Highway supports (foreach_target.h includes it again for each).
//
// Each 32-bit word lives in the low half of a 64-bit lane, so that one even-lane 32 x 32 ->
// 64-bit multiply gives a round's full product; the words come out bit for bit as
// philox4x32 (core/philox.h) computes them one counter at a time.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kiln/core/cpu_philox.cpp"
#include <hwy/foreach_target.h>  // IWYU pragma: keep

#include <hwy/highway.h>

#include <kiln/core/cpu_philox.h>
#include <kiln/core/philox.h>

HWY_BEFORE_NAMESPACE();
namespace kiln::cpu {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

void PhiloxWords(uint64_t seed, uint64_t counter, int64_t n, int words, uint32_t* out) {
  const hn::ScalableTag<uint64_t> d;
  const hn::Repartition<uint32_t, decltype(d)> d32;
  using V = hn::Vec<decltype(d)>;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  const V low = hn::Set(d, 0xFFFFFFFFull);
  const V m0 = hn::Set(d, 0xD2511F53ull), m1 = hn::Set(d, 0xCD9E8D57ull);
  const auto m0w = hn::BitCast(d32, m0), m1w = hn::BitCast(d32, m1);
  HWY_ALIGN uint64_t lanes[hn::MaxLanes(d)];
  int64_t i = 0;
  for (; i + N <= n; i += N) {
    for (int64_t l = 0; l < N; ++l) lanes[l] = counter + static_cast<uint64_t>(i + l);
    const V ctr = hn::Load(d, lanes);
    V c0 = hn::And(ctr, low), c1 = hn::ShiftRight<32>(ctr), c2 = hn::Zero(d), c3 = hn::Zero(d);
    uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
    for (int round = 0; round < 10; ++round) {
      const V p0 = hn::MulEven(hn::BitCast(d32, c0), m0w);  // 0xD2511F53 * c0, 64 bits
      const V p1 = hn::MulEven(hn::BitCast(d32, c2), m1w);  // 0xCD9E8D57 * c2
      const V n0 = hn::Xor(hn::Xor(hn::ShiftRight<32>(p1), c1), hn::Set(d, k0));
      const V n2 = hn::Xor(hn::Xor(hn::ShiftRight<32>(p0), c3), hn::Set(d, k1));
      c1 = hn::And(p1, low);
      c3 = hn::And(p0, low);
      c0 = n0;
      c2 = n2;
      k0 += 0x9E3779B9u;
      k1 += 0xBB67AE85u;
    }
    const V c[4] = {c0, c1, c2, c3};
    for (int w = 0; w < words; ++w) {
      hn::Store(c[w], d, lanes);
      uint32_t* o = out + w * n + i;
      for (int64_t l = 0; l < N; ++l) o[l] = static_cast<uint32_t>(lanes[l]);
    }
  }
  for (; i < n; ++i) {  // the tail, one counter at a time
    const PhiloxOut r = philox4x32(seed, counter + static_cast<uint64_t>(i));
    for (int w = 0; w < words; ++w) out[w * n + i] = r.x[w];
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace kiln::cpu
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace kiln::cpu {

HWY_EXPORT(PhiloxWords);

void philox_words(uint64_t seed, uint64_t counter, int64_t n, int words, uint32_t* out) {
  HWY_DYNAMIC_DISPATCH(PhiloxWords)(seed, counter, n, words, out);
}

}  // namespace kiln::cpu
#endif  // HWY_ONCE
