// Philox4x32-10 against the Random123 known-answer vectors, the Generator's seed/offset
// semantics, and the random factories' distributions.
#include "test_util.h"

#include <kiln/core/parallel.h>
#include <kiln/core/philox.h>

#include <array>
#include <cmath>
#include <cstring>
#include <set>

using namespace kiln;

namespace {
// An independent Philox4x32-10 with the full 4-word counter and 2-word key, written
// from Salmon et al. (SC'11) / Random123's philox.h.
std::array<uint32_t, 4> ref_philox(std::array<uint32_t, 4> c, std::array<uint32_t, 2> k) {
  for (int r = 0; r < 10; ++r) {
    uint64_t p0 = uint64_t{0xD2511F53u} * c[0], p1 = uint64_t{0xCD9E8D57u} * c[2];
    uint32_t hi0 = uint32_t(p0 >> 32), lo0 = uint32_t(p0), hi1 = uint32_t(p1 >> 32), lo1 = uint32_t(p1);
    c = {hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0};
    k[0] += 0x9E3779B9u;
    k[1] += 0xBB67AE85u;
  }
  return c;
}
}  // namespace

TEST_CASE("reference Philox reproduces the Random123 known answers", "[core][philox]") {
  CHECK(ref_philox({0, 0, 0, 0}, {0, 0}) == std::array<uint32_t, 4>{0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8});
  CHECK(ref_philox({0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}, {0xffffffff, 0xffffffff}) ==
        std::array<uint32_t, 4>{0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd});
  CHECK(ref_philox({0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}, {0xa4093822, 0x299f31d0}) ==
        std::array<uint32_t, 4>{0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1});
}

TEST_CASE("philox4x32 matches the Random123 known-answer vector", "[core][philox]") {
  // counter {0,0,0,0}, key {0,0} -> Random123 kat_vectors: philox4x32 10.
  PhiloxOut r = philox4x32(0, 0);
  CHECK(r.x[0] == 0x6627e8d5u);
  CHECK(r.x[1] == 0xe169c58du);
  CHECK(r.x[2] == 0xbc57ac4cu);
  CHECK(r.x[3] == 0x9b00dbd8u);
}

TEST_CASE("philox4x32 maps (seed, counter) to key and counter words", "[core][philox]") {
  // counter low/high in c0/c1, c2 = c3 = 0; key = seed low/high.
  const uint64_t seeds[] = {0, 1, 0x5eed, 0xdeadbeefcafef00dull, ~0ull};
  const uint64_t counters[] = {0, 1, 2, 0xffffffffull, 0x100000000ull, 0x123456789abcdefull, ~0ull};
  for (uint64_t s : seeds)
    for (uint64_t c : counters) {
      PhiloxOut r = philox4x32(s, c);
      auto want = ref_philox({uint32_t(c), uint32_t(c >> 32), 0, 0}, {uint32_t(s), uint32_t(s >> 32)});
      INFO("seed " << s << " counter " << c);
      CHECK(std::array<uint32_t, 4>{r.x[0], r.x[1], r.x[2], r.x[3]} == want);
    }
}

TEST_CASE("random factories take their values from the Philox stream", "[core][philox][random]") {
  // Element 0 of seed 0 uses counter 0, whose first word is 0x6627e8d5 (KAT): rand takes
  // its top 24 bits.
  Generator g(0);
  Tensor u = rand({1}, DType::F32, &g);
  CHECK(u.item<float>() == static_cast<float>(0x6627e8d5u >> 8) / 16777216.0f);
  Generator g2(0);
  Tensor ri = randint(0, 1000003, {1}, DType::I64, &g2);
  uint64_t v = 0x6627e8d5ull | (0xe169c58dull << 32);
  CHECK(ri.item<int64_t>() == static_cast<int64_t>(v % 1000003));
  // Element i uses counter offset + i.
  Generator g3(0x5eed);
  std::vector<float> a = rand({5}, DType::F32, &g3).to_vector<float>();
  for (int i = 0; i < 5; ++i) {
    auto w = ref_philox({uint32_t(i), 0, 0, 0}, {0x5eed, 0});
    CHECK(a[i] == static_cast<float>(w[0] >> 8) / 16777216.0f);
  }
}

TEST_CASE("the CPU random kernel gives each element its counter's scalar sample, at any thread count",
          "[core][philox][random]") {
  // The kernel computes the Philox words of a block of counters in vector registers and
  // splits blocks over threads; every element must still be the scalar functions' value
  // (the CUDA kernel's), bit for bit: odd sizes (vector tails, a partial last block),
  // an offset whose low word wraps inside the tensor, every dtype and kind.
  const int threads_before = num_threads();
  const uint64_t seed = 0xdeadbeefcafef00dull;
  const uint64_t offsets[] = {0, 0xffffffffull - 700, 12345};
  const int64_t sizes[] = {1, 7, 1023, 1025, 5000};
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    for (uint64_t off : offsets)
      for (int64_t n : sizes) {
        INFO("threads " << threads << " offset " << off << " n " << n);
        Generator g(seed);
        g.set_state(seed, off);
        std::vector<float> un = randn({n}, DType::F32, &g).to_vector<float>();
        g.set_state(seed, off);
        std::vector<float> uu = rand({n}, DType::F32, &g).to_vector<float>();
        g.set_state(seed, off);
        std::vector<double> dn = randn({n}, DType::F64, &g).to_vector<double>();
        g.set_state(seed, off);
        std::vector<double> du = rand({n}, DType::F64, &g).to_vector<double>();
        g.set_state(seed, off);
        std::vector<int64_t> ri = randint(-5, 1000003, {n}, DType::I64, &g).to_vector<int64_t>();
        g.set_state(seed, off);
        std::vector<double> hn = test::values(randn({n}, DType::BF16, &g));
        g.set_state(seed, off);
        std::vector<double> hu = test::values(rand({n}, DType::F16, &g));
        int64_t bad = 0;
        for (int64_t i = 0; i < n; ++i) {
          const uint64_t c = off + static_cast<uint64_t>(i);
          const float want_n = philox_normal_sample_f32(seed, c, 0.0f, 1.0f);
          bad += std::memcmp(&un[i], &want_n, sizeof(float)) != 0;
          bad += uu[i] != philox_uniform_sample_f32(seed, c, 0.0f, 1.0f);
          bad += dn[i] != philox_normal_sample_f64(seed, c, 0.0, 1.0);
          bad += du[i] != philox_uniform_sample_f64(seed, c, 0.0, 1.0);
          bad += ri[i] != philox_int_sample(seed, c, -5, 1000003);
          bad += hn[i] != static_cast<double>(static_cast<float>(BFloat16(philox_normal_sample_f32(seed, c, 0.0f, 1.0f))));
          bad += hu[i] != static_cast<double>(static_cast<float>(Half(philox_uniform_sample_f32(seed, c, 0.0f, 1.0f, 11))));
        }
        CHECK(bad == 0);
      }
  }
  set_num_threads(threads_before);
}

TEST_CASE("Generator: same seed, same numbers; offsets advance; manual_seed resets", "[core][random]") {
  Generator g1(42), g2(42);
  CHECK(g1.seed() == 42);
  CHECK(g1.offset() == 0);
  Tensor a = rand({10}, DType::F32, &g1);
  CHECK(g1.offset() == 10);
  Tensor b = rand({10}, DType::F32, &g2);
  CHECK(test::bit_equal(a, b));

  // The next draw continues the stream: different numbers.
  Tensor c = rand({10}, DType::F32, &g1);
  CHECK(g1.offset() == 20);
  CHECK_FALSE(test::equal(a, c));

  // Counter-based: two draws of 4 and 6 equal one draw of 10.
  Generator g3(42);
  Tensor p = rand({4}, DType::F32, &g3), q = rand({2, 3}, DType::F32, &g3);
  CHECK(test::bit_equal(cat({p, q.reshape({6})}), a));

  // set_state resumes at any offset.
  Generator g4(1);
  g4.set_state(42, 4);
  CHECK(test::bit_equal(rand({6}, DType::F32, &g4), a.slice(0, 4, 10).contiguous()));

  g1.manual_seed(42);
  CHECK(g1.offset() == 0);
  CHECK(test::bit_equal(rand({10}, DType::F32, &g1), a));

  Generator other(43);
  CHECK_FALSE(test::equal(rand({10}, DType::F32, &other), a));

  // randn and randint reserve one counter per element too.
  Generator g5(7);
  randn({3, 5}, DType::F32, &g5);
  CHECK(g5.offset() == 15);
  randint(0, 10, {7}, DType::I64, &g5);
  CHECK(g5.offset() == 22);

  // The default generator.
  manual_seed(123);
  Tensor d1 = randn({8});
  CHECK(default_generator().offset() == 8);
  manual_seed(123);
  Tensor d2 = randn({8});
  CHECK(test::bit_equal(d1, d2));
  Generator g6(123);
  CHECK(test::bit_equal(randn({8}, DType::F32, &g6), d1));
}

TEST_CASE("rand is uniform in [0, 1)", "[core][random]") {
  Generator g(2024);
  for (DType t : {DType::F32, DType::F64, DType::F16, DType::BF16}) {
    INFO(dtype_name(t));
    Tensor u = rand({100000}, t, &g);
    CHECK(u.dtype() == t);
    CHECK(u.sizes() == Shape{100000});
    std::vector<double> v = test::values(u);
    double lo = 1, hi = 0, s = 0;
    for (double x : v) {
      lo = std::min(lo, x);
      hi = std::max(hi, x);
      s += x;
    }
    CHECK(lo >= 0.0);
    CHECK(hi <= 1.0);
    if (t == DType::F32 || t == DType::F64) CHECK(hi < 1.0);  // half types: see the next test
    CHECK(std::fabs(s / v.size() - 0.5) < 0.01);
    // Both halves are hit.
    int below = 0;
    for (double x : v) below += x < 0.5;
    CHECK(std::abs(below - 50000) < 1500);
  }
  Tensor l = rand_like(zeros({3, 4}, DType::F64), &g);
  CHECK(l.sizes() == Shape{3, 4});
  CHECK(l.dtype() == DType::F64);
}

// rand's contract is [0, 1) in every dtype (PyTorch's too). Rounding a float in
// [1 - 2^-12, 1) to f16 (or [1 - 2^-9, 1) to bf16) gives exactly 1.0.
TEST_CASE("rand in f16/bf16 never returns 1.0", "[core][random]") {
  Generator g(2024);
  for (DType t : {DType::F16, DType::BF16}) {
    INFO(dtype_name(t));
    std::vector<double> v = test::values(rand({100000}, t, &g));
    int ones_seen = 0;
    for (double x : v) ones_seen += x >= 1.0;
    CHECK(ones_seen == 0);
  }
}

TEST_CASE("randn has mean ~0 and std ~1", "[core][random]") {
  Generator g(99);
  for (DType t : {DType::F32, DType::F64}) {
    INFO(dtype_name(t));
    std::vector<double> v = test::values(randn({100000}, t, &g));
    double s = 0, ss = 0;
    int beyond3 = 0, nonfinite = 0;
    for (double x : v) {
      nonfinite += !std::isfinite(x);
      s += x;
      ss += x * x;
      beyond3 += std::fabs(x) > 3;
    }
    CHECK(nonfinite == 0);
    double m = s / v.size(), sd = std::sqrt(ss / v.size() - m * m);
    CHECK(std::fabs(m) < 0.02);
    CHECK(std::fabs(sd - 1.0) < 0.02);
    // P(|x| > 3) = 0.0027: about 270 of 100k.
    CHECK(beyond3 > 150);
    CHECK(beyond3 < 400);
  }
  Tensor n = randn_like(ones({2, 2}, DType::BF16), &g);
  CHECK(n.dtype() == DType::BF16);
  CHECK(n.sizes() == Shape{2, 2});
}

TEST_CASE("randint stays in [low, high) and hits every value", "[core][random]") {
  Generator g(5);
  for (DType t : {DType::I64, DType::I32, DType::F32}) {
    INFO(dtype_name(t));
    Tensor r = randint(-3, 4, {10000}, t, &g);
    CHECK(r.dtype() == t);
    std::set<int64_t> seen;
    int fractional = 0;
    for (double x : test::values(r)) {
      fractional += x != std::floor(x);
      seen.insert(static_cast<int64_t>(x));
    }
    CHECK(fractional == 0);
    CHECK(*seen.begin() == -3);
    CHECK(*seen.rbegin() == 3);
    CHECK(seen.size() == 7);
  }
  Tensor big = randint(1000000000000ll, 1000000000005ll, {100}, DType::I64, &g);
  std::vector<int64_t> bv = big.to_vector<int64_t>();
  CHECK(*std::min_element(bv.begin(), bv.end()) >= 1000000000000ll);
  CHECK(*std::max_element(bv.begin(), bv.end()) < 1000000000005ll);
  CHECK(randint(0, 10, {3, 4}).dtype() == DType::I64);
}

TEST_CASE("random factories reject bad arguments", "[core][random][errors]") {
  REQUIRE_KILN_ERROR(rand({3}, DType::I32), "rand");
  REQUIRE_KILN_ERROR(randn({3}, DType::I64), "randn");
  REQUIRE_KILN_ERROR(randint(5, 5, {3}), "randint");
  REQUIRE_KILN_ERROR(randint(5, 1, {3}), "randint");
  REQUIRE_KILN_ERROR(randint(0, 2, {3}, DType::Bool), "randint");
}
