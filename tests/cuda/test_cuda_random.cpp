// Philox on the device: the same seed and offset give the same numbers on the CPU and
// on CUDA (rand and randint bit-exact, randn within 1e-5), for odd sizes and offsets.
#include "test_util.h"

#include <cmath>

using namespace kiln;
using test::cuda0;

TEST_CASE("cuda: rand gives the CPU's values exactly", "[cuda][random]") {
  for (DType t : test::floating_dtypes()) {
    for (const Shape& s : test::odd_shapes()) {
      INFO(dtype_name(t) << " " << shape_str(s));
      Generator gc(1234), gg(1234);
      Tensor c = rand(s, t, &gc);
      Tensor g = rand(s, TensorOptions(t, cuda0()), &gg);
      CHECK(g.is_cuda());
      CHECK(gc.offset() == gg.offset());
      CHECK(test::bit_equal(g, c));
      // The next draw continues from the same offset on both.
      CHECK(test::bit_equal(rand({37}, TensorOptions(t, cuda0()), &gg), rand({37}, t, &gc)));
    }
  }
  // A generator resumed mid-stream.
  Generator a(77), b(77);
  a.set_state(77, (uint64_t{1} << 32) + 5);  // counter crosses into the high word
  b.set_state(77, (uint64_t{1} << 32) + 5);
  CHECK(test::bit_equal(rand({1000}, TensorOptions(DType::F32, cuda0()), &a), rand({1000}, DType::F32, &b)));
  Generator big_seed(0xdeadbeefcafef00dull), big_seed2(0xdeadbeefcafef00dull);
  CHECK(test::bit_equal(rand({513}, TensorOptions(DType::F64, cuda0()), &big_seed),
                        rand({513}, DType::F64, &big_seed2)));
  // Values lie in [0, 1).
  Generator g3(5);
  Tensor u = rand({1 << 20}, cuda0(), &g3);
  CHECK(min(u).item<float>() >= 0.0f);
  CHECK(max(u).item<float>() < 1.0f);
  CHECK(std::fabs(mean(u).item<float>() - 0.5f) < 0.01f);
}

TEST_CASE("cuda: randn matches the CPU within 1e-5", "[cuda][random]") {
  for (DType t : {DType::F32, DType::F64}) {
    for (const Shape& s : test::odd_shapes()) {
      INFO(dtype_name(t) << " " << shape_str(s));
      Generator gc(99), gg(99);
      Tensor c = randn(s, t, &gc), g = randn(s, TensorOptions(t, cuda0()), &gg);
      CHECK(gc.offset() == gg.offset());
      CHECK_CLOSE_TOL(g, c, 1e-6, 1e-5);
    }
  }
  for (DType t : {DType::F16, DType::BF16}) {
    INFO(dtype_name(t));
    Generator gc(98), gg(98);
    Tensor c = randn({1023, 257}, t, &gc), g = randn({1023, 257}, TensorOptions(t, cuda0()), &gg);
    CHECK_CLOSE(g, c);  // the float sample may round to a neighbouring half value
  }
  Generator g4(6);
  Tensor n = randn({1 << 20}, cuda0(), &g4);
  CHECK(std::fabs(mean(n).item<float>()) < 0.01f);
  CHECK(std::fabs(kiln::std(n).item<float>() - 1.0f) < 0.01f);
}

TEST_CASE("cuda: randint matches the CPU exactly", "[cuda][random]") {
  for (DType t : {DType::I64, DType::I32, DType::U8, DType::F32}) {
    for (const Shape& s : test::odd_shapes()) {
      INFO(dtype_name(t) << " " << shape_str(s));
      Generator gc(7), gg(7);
      Tensor c = randint(0, 100, s, t, &gc), g = randint(0, 100, s, TensorOptions(t, cuda0()), &gg);
      CHECK(test::bit_equal(g, c));
    }
  }
  Generator gc(8), gg(8);
  const int64_t lo = -(int64_t{1} << 40), hi = int64_t{1} << 41;
  CHECK(test::bit_equal(randint(lo, hi, {4099}, TensorOptions(DType::I64, cuda0()), &gg),
                        randint(lo, hi, {4099}, DType::I64, &gc)));
  Tensor r = randint(-3, 4, {100000}, TensorOptions(DType::I64, cuda0()));
  CHECK(min(r).item<int64_t>() == -3);
  CHECK(max(r).item<int64_t>() == 3);
}
