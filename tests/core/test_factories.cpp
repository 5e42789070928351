// Factories (empty, zeros, ones, full, arange, linspace, eye, from_vector, *_like),
// casts with to(dtype), copy_ with broadcasting and casting, item(), to_vector and
// printing.
#include "test_util.h"

#include <cmath>
#include <limits>

using namespace kiln;

TEST_CASE("empty, zeros, ones, full and scalar_tensor", "[core][factories]") {
  Tensor e = empty({2, 3}, DType::I32);
  CHECK(e.sizes() == Shape{2, 3});
  CHECK(e.dtype() == DType::I32);
  CHECK(e.is_contiguous());
  CHECK(empty({}).dim() == 0);
  CHECK(empty({0}).numel() == 0);

  for (DType t : test::all_dtypes()) {
    INFO(dtype_name(t));
    Tensor z = zeros({2, 2}, t), o = ones({3}, t);
    CHECK(z.dtype() == t);
    CHECK(o.dtype() == t);
    CHECK(test::values(z) == std::vector<double>{0, 0, 0, 0});
    CHECK(test::values(o) == std::vector<double>{1, 1, 1});
  }
  CHECK(test::values(full({2}, 2.5)) == std::vector<double>{2.5, 2.5});
  CHECK(full({2}, 2.5).dtype() == DType::F32);
  CHECK(test::values(full({2}, 7, DType::I64)) == std::vector<double>{7, 7});
  CHECK(full({1}, -3.75, DType::F16).item<float>() == -3.75f);
  CHECK(full({1}, 0.1, DType::BF16).item<float>() == static_cast<float>(BFloat16(0.1f)));
  CHECK(full({1}, 0.1, DType::F64).item<double>() == 0.1);
  CHECK(full({1}, true, DType::Bool).item<bool>());
  CHECK(full({1}, 300, DType::I32).item<int64_t>() == 300);
  CHECK(scalar_tensor(4.5, DType::F64).item<double>() == 4.5);
  CHECK(scalar_tensor(4.5).dim() == 0);
}

TEST_CASE("*_like factories keep shape, dtype and device", "[core][factories]") {
  Tensor x = arange(6).view({2, 3}).t();  // non-contiguous i64
  for (Tensor y : {empty_like(x), zeros_like(x), ones_like(x), full_like(x, 9)}) {
    CHECK(y.sizes() == Shape{3, 2});
    CHECK(y.dtype() == DType::I64);
    CHECK(y.device() == kCPU);
    CHECK(y.is_contiguous());
  }
  CHECK(test::values(zeros_like(x)) == std::vector<double>(6, 0));
  CHECK(test::values(ones_like(x)) == std::vector<double>(6, 1));
  CHECK(test::values(full_like(x, 9)) == std::vector<double>(6, 9));
  CHECK(empty_like(x, DType::F16).dtype() == DType::F16);
  CHECK(empty_like(x, DType::F16).sizes() == Shape{3, 2});
}

TEST_CASE("arange: values and dtype inference", "[core][factories]") {
  Tensor a = arange(5);
  CHECK(a.dtype() == DType::I64);
  CHECK(a.to_vector<int64_t>() == std::vector<int64_t>{0, 1, 2, 3, 4});
  CHECK(arange(1, 10, 3).to_vector<int64_t>() == std::vector<int64_t>{1, 4, 7});
  CHECK(arange(10, 0, -3).to_vector<int64_t>() == std::vector<int64_t>{10, 7, 4, 1});
  CHECK(arange(0).numel() == 0);
  CHECK(arange(3, 3).numel() == 0);
  Tensor f = arange(0, 1, 0.25);
  CHECK(f.dtype() == DType::F32);
  CHECK(f.to_vector<float>() == std::vector<float>{0, 0.25f, 0.5f, 0.75f});
  CHECK(arange(2.5).dtype() == DType::F32);
  CHECK(arange(2.5).to_vector<float>() == std::vector<float>{0, 1, 2});
  CHECK(arange(0.0, 1.0, 0.1).numel() == 10);
  Tensor d = arange(5, DType::F64);
  CHECK(d.dtype() == DType::F64);
  CHECK(d.to_vector<double>() == std::vector<double>{0, 1, 2, 3, 4});
  CHECK(arange(-2, 2, 1, DType::I32).to_vector<int32_t>() == std::vector<int32_t>{-2, -1, 0, 1});
  // Integer ranges are exact beyond 2^53.
  const int64_t big = int64_t{1} << 60;
  CHECK(arange(big, big + 3).to_vector<int64_t>() == std::vector<int64_t>{big, big + 1, big + 2});
  CHECK(arange(big + 5, big, -2).to_vector<int64_t>() == std::vector<int64_t>{big + 5, big + 3, big + 1});
  REQUIRE_KILN_ERROR(arange(0, 5, 0), "arange");
  REQUIRE_KILN_ERROR(arange(0, 5, -1), "arange");
  REQUIRE_KILN_ERROR(arange(0.0, std::numeric_limits<double>::infinity()), "arange");
}

TEST_CASE("linspace: evenly spaced, endpoints exact", "[core][factories]") {
  CHECK(linspace(0, 1, 5).to_vector<float>() == std::vector<float>{0, 0.25f, 0.5f, 0.75f, 1});
  Tensor l = linspace(-3.7, 11.3, 7);
  CHECK(l.dtype() == DType::F32);
  std::vector<float> v = l.to_vector<float>();
  REQUIRE(v.size() == 7);
  CHECK(v.front() == static_cast<float>(-3.7));
  CHECK(v.back() == static_cast<float>(11.3));
  for (int i = 0; i < 7; ++i) CHECK(v[i] == Approx(-3.7 + 2.5 * i).margin(1e-5));
  std::vector<double> w = linspace(0.1, 0.7, 13, DType::F64).to_vector<double>();
  CHECK(w.front() == 0.1);
  CHECK(w.back() == 0.7);
  for (int i = 0; i < 13; ++i) CHECK(w[i] == Approx(0.1 + 0.05 * i).epsilon(1e-14));
  CHECK(linspace(2, 5, 1).to_vector<float>() == std::vector<float>{2});
  CHECK(linspace(2, 5, 0).numel() == 0);
  CHECK(linspace(5, 1, 5).to_vector<float>() == std::vector<float>{5, 4, 3, 2, 1});
  CHECK(linspace(0, 10, 6, DType::I64).to_vector<int64_t>() == std::vector<int64_t>{0, 2, 4, 6, 8, 10});
  REQUIRE_KILN_ERROR(linspace(0, 1, -1), "linspace");
}

TEST_CASE("eye", "[core][factories]") {
  CHECK(eye(3).to_vector<float>() == std::vector<float>{1, 0, 0, 0, 1, 0, 0, 0, 1});
  Tensor r = eye(2, 3, DType::I32);
  CHECK(r.sizes() == Shape{2, 3});
  CHECK(r.dtype() == DType::I32);
  CHECK(r.to_vector<int32_t>() == std::vector<int32_t>{1, 0, 0, 0, 1, 0});
  CHECK(eye(3, 2).to_vector<float>() == std::vector<float>{1, 0, 0, 1, 0, 0});
  CHECK(eye(0).numel() == 0);
  REQUIRE_KILN_ERROR(eye(-1), "eye");
}

TEST_CASE("from_vector for every dtype", "[core][factories]") {
  CHECK(from_vector<bool>({true, false, true}).to_vector<bool>() == std::vector<bool>{true, false, true});
  CHECK(from_vector<uint8_t>({0, 255}).to_vector<int64_t>() == std::vector<int64_t>{0, 255});
  CHECK(from_vector<int32_t>({-5, 7}).dtype() == DType::I32);
  CHECK(from_vector<int64_t>({1ll << 40}).item<int64_t>() == (1ll << 40));
  CHECK(from_vector<Half>({Half(1.5f), Half(-2.0f)}).to_vector<float>() == std::vector<float>{1.5f, -2.0f});
  CHECK(from_vector<BFloat16>({BFloat16(3.0f)}).dtype() == DType::BF16);
  Tensor f = from_vector<float>({1, 2, 3, 4, 5, 6}, {2, 3});
  CHECK(f.sizes() == Shape{2, 3});
  CHECK(f[1].to_vector<float>() == std::vector<float>{4, 5, 6});
  CHECK(from_vector<double>({0.1}).item<double>() == 0.1);
  REQUIRE_KILN_ERROR(from_vector<float>({1, 2, 3}, {2, 2}), "from_vector");
}

TEST_CASE("to(dtype): truncation toward zero, to bool, widening", "[core][cast]") {
  Tensor f = from_vector<float>({-2.7f, -0.5f, 0.0f, 0.5f, 2.7f, 100.9f});
  CHECK(f.to(DType::I32).to_vector<int32_t>() == std::vector<int32_t>{-2, 0, 0, 0, 2, 100});
  CHECK(f.to(DType::I64).to_vector<int64_t>() == std::vector<int64_t>{-2, 0, 0, 0, 2, 100});
  CHECK(f.to(DType::Bool).to_vector<bool>() == std::vector<bool>{true, true, false, true, true, true});
  CHECK(from_vector<float>({std::nanf(""), -0.0f}).to(DType::Bool).to_vector<bool>() ==
        std::vector<bool>{true, false});
  CHECK(from_vector<float>({0.5f, 3.9f, 255.0f}).to(DType::U8).to_vector<int32_t>() ==
        std::vector<int32_t>{0, 3, 255});
  CHECK(from_vector<bool>({true, false}).to(DType::F32).to_vector<float>() == std::vector<float>{1, 0});
  CHECK(from_vector<int64_t>({3, 0, -1}).to(DType::Bool).to_vector<bool>() == std::vector<bool>{true, false, true});
  // 2^24 + 1 is not representable in f32: round to nearest even.
  CHECK(from_vector<int64_t>({16777217}).to(DType::F32).item<float>() == 16777216.0f);
  CHECK(from_vector<double>({0.1}).to(DType::F32).item<float>() == 0.1f);
  CHECK(from_vector<float>({65504, 70000, 1e-8f}).to(DType::F16).to_vector<float>() ==
        std::vector<float>{65504, std::numeric_limits<float>::infinity(), 0});
  CHECK(from_vector<float>({1.0f + std::ldexp(1.0f, -8)}).to(DType::BF16).item<float>() == 1.0f);
  CHECK(from_vector<int32_t>({-7}).to(DType::F64).item<double>() == -7.0);
  // Same dtype: no copy.
  Tensor i = from_vector<int32_t>({1});
  CHECK(i.to(DType::I32).is_same(i));
  CHECK(i.to(kCPU).is_same(i));
  CHECK(cast(i, DType::I32).is_same(i));
  // A cast of a non-contiguous tensor keeps its logical order.
  Tensor t = from_vector<int32_t>({1, 2, 3, 4, 5, 6}, {2, 3}).t();
  CHECK(t.to(DType::F64).to_vector<double>() == std::vector<double>{1, 4, 2, 5, 3, 6});
}

TEST_CASE("copy_ broadcasts and casts", "[core][copy]") {
  Tensor dst = zeros({2, 3}, DType::F64);
  dst.copy_(from_vector<int32_t>({1, 2, 3}));
  CHECK(dst.to_vector<double>() == std::vector<double>{1, 2, 3, 1, 2, 3});
  dst.copy_(from_vector<float>({-1.5f, 2.5f}, {2, 1}));
  CHECK(dst.to_vector<double>() == std::vector<double>{-1.5, -1.5, -1.5, 2.5, 2.5, 2.5});
  dst.copy_(scalar_tensor(4));
  CHECK(dst.to_vector<double>() == std::vector<double>(6, 4));
  // From a transposed source, into a transposed destination.
  Tensor src = from_vector<float>({1, 2, 3, 4, 5, 6}, {3, 2}).t();  // [[1,3,5],[2,4,6]]
  dst.copy_(src);
  CHECK(dst.to_vector<double>() == std::vector<double>{1, 3, 5, 2, 4, 6});
  Tensor d2 = zeros({3, 2}, DType::I32);
  d2.t().copy_(from_vector<float>({1.9f, 2, 3, 4, 5, 6}, {2, 3}));
  CHECK(d2.to_vector<int32_t>() == std::vector<int32_t>{1, 4, 2, 5, 3, 6});
  // f32 -> f16 -> f32 through copy_.
  Tensor h = empty({3}, DType::F16);
  h.copy_(from_vector<float>({0.1f, 1000.0f, -2.0f}));
  CHECK(h.to_vector<float>() ==
        std::vector<float>{static_cast<float>(Half(0.1f)), 1000.0f, -2.0f});
  // Overlapping copy within one storage reads the old values.
  Tensor a = arange(6, DType::F32);
  a.narrow(0, 1, 5).copy_(a.narrow(0, 0, 5));
  CHECK(a.to_vector<float>() == std::vector<float>{0, 0, 1, 2, 3, 4});
  REQUIRE_KILN_ERROR(dst.copy_(zeros({4})), "copy_");
  REQUIRE_THROWS_AS(dst.copy_(zeros({3, 3})), Error);
  REQUIRE_THROWS_AS(dst.copy_(Tensor()), Error);
  REQUIRE_KILN_ERROR(dst.copy_(Tensor()), "copy_");
}

TEST_CASE("fill_ and zero_", "[core][copy]") {
  Tensor x = ones({2, 2}, DType::BF16);
  x.zero_();
  CHECK(test::values(x) == std::vector<double>(4, 0));
  x.fill_(1.5);
  CHECK(test::values(x) == std::vector<double>(4, 1.5));
  Tensor b = zeros({3}, DType::Bool);
  b.fill_(true);
  CHECK(b.to_vector<bool>() == std::vector<bool>{true, true, true});
  Tensor i = zeros({3}, DType::I32);
  i.fill_(-9);
  CHECK(i.to_vector<int32_t>() == std::vector<int32_t>{-9, -9, -9});
}

TEST_CASE("item and to_vector", "[core][copy]") {
  CHECK(scalar_tensor(3.5).item().to_double() == 3.5);
  CHECK(scalar_tensor(3.5).item().is_floating());
  CHECK(full({1, 1}, 7, DType::I64).item<int64_t>() == 7);
  CHECK(full({1, 1}, 7, DType::I64).item().is_integral());
  CHECK(full({1}, -2.5, DType::F16).item<double>() == -2.5);
  CHECK(full({1}, 1, DType::Bool).item<bool>());
  CHECK(full({1}, 200, DType::U8).item<int>() == 200);
  CHECK(arange(10)[7].item<int64_t>() == 7);
  REQUIRE_KILN_ERROR(zeros({2}).item(), "item");
  REQUIRE_KILN_ERROR(zeros({0}).item(), "item");

  Tensor t = from_vector<int32_t>({1, 2, 3, 4, 5, 6}, {2, 3}).t();
  CHECK(t.to_vector<int32_t>() == std::vector<int32_t>{1, 4, 2, 5, 3, 6});
  CHECK(t.to_vector<float>() == std::vector<float>{1, 4, 2, 5, 3, 6});
  CHECK(t.to_vector<int64_t>() == std::vector<int64_t>{1, 4, 2, 5, 3, 6});
  std::vector<Half> hv = t.to_vector<Half>();
  CHECK(static_cast<float>(hv[1]) == 4.0f);
  CHECK(from_vector<float>({1, 2, 3, 4}).slice(0, 0, 4, 3).to_vector<float>() == std::vector<float>{1, 4});
  CHECK(zeros({0, 3}).to_vector<float>().empty());
}

TEST_CASE("printing shows dtype, device, shape and values", "[core][print]") {
  std::string s = from_vector<float>({1.5f, -2.25f, 3}, {1, 3}).str();
  CHECK_THAT(s, Catch::Contains("f32"));
  CHECK_THAT(s, Catch::Contains("cpu"));
  CHECK_THAT(s, Catch::Contains("[1, 3]"));
  CHECK_THAT(s, Catch::Contains("1.5"));
  CHECK_THAT(s, Catch::Contains("-2.25"));
  CHECK_THAT(s, Catch::Contains("3"));
  CHECK_THAT(s, !Catch::Contains("..."));

  std::string si = from_vector<int64_t>({42, -7}).str();
  CHECK_THAT(si, Catch::Contains("i64"));
  CHECK_THAT(si, Catch::Contains("42"));
  CHECK_THAT(si, Catch::Contains("-7"));
  CHECK_THAT(si, !Catch::Contains("42."));

  CHECK_THAT(scalar_tensor(2.5, DType::F64).str(), Catch::Contains("2.5"));
  CHECK_THAT(scalar_tensor(2.5, DType::F64).str(), Catch::Contains("f64"));
  CHECK_THAT(zeros({0, 2}).str(), Catch::Contains("[0, 2]"));
  CHECK_THAT(full({2}, 1, DType::Bool).str(), Catch::Contains("bool"));
  CHECK_THAT(ones({2, 2}, DType::BF16).t().str(), Catch::Contains("bf16"));
  CHECK(Tensor().str().find("undefined") != std::string::npos);

  std::ostringstream os;
  os << from_vector<int32_t>({5, 6});
  CHECK_THAT(os.str(), Catch::Contains("i32"));
  CHECK_THAT(os.str(), Catch::Contains("6"));

  // Large tensors are elided: the first and last values with "..." between.
  Tensor big = arange(100000);
  std::string b = big.str();
  CHECK_THAT(b, Catch::Contains("..."));
  CHECK_THAT(b, Catch::Contains("99999"));
  CHECK_THAT(b, Catch::Contains("[100000]"));
  CHECK_THAT(b, !Catch::Contains("50000"));
  CHECK(b.size() < 400);
  std::string b2 = arange(300 * 400, DType::F32).view({300, 400}).t().str();
  CHECK_THAT(b2, Catch::Contains("..."));
  CHECK_THAT(b2, Catch::Contains("[400, 300]"));
  CHECK_THAT(b2, Catch::Contains("119999"));  // last element of the transposed view
  CHECK(b2.size() < 2000);
}
