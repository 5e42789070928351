// clamp on the CPU: hand-computed values (NaN, infinities, -0.0, integers, half types,
// only-min, only-max), non-contiguous input, the in-place form, bad input, and the
// gradient (PyTorch's convention at the bounds, and a finite-difference check in f64).
#include "test_util.h"

#include <cmath>
#include <limits>

#include <kiln/ops/clamp.h>

using namespace kiln;
using V = std::vector<Tensor>;

namespace {
const double kInf = std::numeric_limits<double>::infinity();

Tensor f32(std::vector<float> v) { return from_vector<float>(v); }
std::vector<double> d(const Tensor& t) { return test::values(t); }

// The contract's formula in double, an absent bound being +-inf.
double clamp_ref(double x, double lo, double hi) { return x < lo ? lo : (x > hi ? hi : x); }

void check_grad(const std::function<Tensor(const V&)>& f, const V& inputs) {
  GradcheckResult r = gradcheck(f, inputs);
  INFO(r.message);
  CHECK(r.ok);
}
}  // namespace

TEST_CASE("clamp: hand-computed values", "[ops][clamp]") {
  Tensor x = f32({-2, -0.5f, 0, 0.5f, 2});
  Tensor y = clamp(x, -1, 1);
  CHECK(y.dtype() == DType::F32);
  CHECK(d(y) == std::vector<double>{-1, -0.5, 0, 0.5, 1});
  CHECK(d(x) == std::vector<double>{-2, -0.5, 0, 0.5, 2});  // out of place
  // Only one bound.
  CHECK(d(clamp_min(x, 0)) == std::vector<double>{0, 0, 0, 0.5, 2});
  CHECK(d(clamp_max(x, 0)) == std::vector<double>{-2, -0.5, 0, 0, 0});
  CHECK(d(clamp(x, 0.25, std::nullopt)) == std::vector<double>{0.25, 0.25, 0.25, 0.5, 2});
  CHECK(d(clamp(x, std::nullopt, -0.25)) == std::vector<double>{-2, -0.5, -0.25, -0.25, -0.25});
  // min == max gives that value everywhere.
  CHECK(d(clamp(x, 0.5, 0.5)) == std::vector<double>{0.5, 0.5, 0.5, 0.5, 0.5});
  // f64 keeps bounds that f32 cannot hold; f32 rounds them to float.
  CHECK(d(clamp(from_vector<double>({0.0, 1.0}), 0.1, 0.9)) == std::vector<double>{0.1, 0.9});
  CHECK(clamp(f32({0}), 0.1, 1).item<float>() == 0.1f);
}

TEST_CASE("clamp: NaN, infinities and signed zero", "[ops][clamp]") {
  const double nan = std::nan("");
  for (DType t : test::floating_dtypes()) {
    INFO(dtype_name(t));
    Tensor x = from_vector<double>({nan, -kInf, kInf, 3, -3}).to(t);
    std::vector<double> y = d(clamp(x, -1, 1));
    CHECK(std::isnan(y[0]));  // NaN propagates, as in PyTorch
    CHECK(std::vector<double>(y.begin() + 1, y.end()) == std::vector<double>{-1, 1, 1, -1});
    std::vector<double> lo = d(clamp_min(x, -1));
    CHECK(std::isnan(lo[0]));
    CHECK(std::vector<double>(lo.begin() + 1, lo.end()) == std::vector<double>{-1, kInf, 3, -1});
    std::vector<double> hi = d(clamp_max(x, 1));
    CHECK(std::isnan(hi[0]));
    CHECK(std::vector<double>(hi.begin() + 1, hi.end()) == std::vector<double>{-kInf, 1, 1, -3});
    // x = -0.0 is not below lo = 0: it stays -0.0 (PyTorch too).
    std::vector<double> z = d(clamp(from_vector<double>({-0.0}).to(t), 0.0, 1.0));
    CHECK(z[0] == 0.0);
    CHECK(std::signbit(z[0]));
    // Infinite bounds are allowed.
    CHECK_EQUAL_T(clamp(x, -kInf, 2), clamp_max(x, 2));
  }
}

TEST_CASE("clamp: integer dtypes keep their dtype, bounds cast to it", "[ops][clamp]") {
  // Bounds truncate toward zero: (-1.5, 3.7) acts as (-1, 3) (what casting PyTorch's
  // float result back to the integer type gives).
  Tensor i = from_vector<int32_t>({-5, 0, 3, 7});
  Tensor yi = clamp(i, -1.5, 3.7);
  CHECK(yi.dtype() == DType::I32);
  CHECK(yi.to_vector<int32_t>() == std::vector<int32_t>{-1, 0, 3, 3});
  CHECK(clamp_min(i, 1).to_vector<int32_t>() == std::vector<int32_t>{1, 1, 3, 7});
  CHECK(clamp_max(i, -2).to_vector<int32_t>() == std::vector<int32_t>{-5, -2, -2, -2});
  // Bounds beyond the dtype's range saturate: they limit nothing.
  Tensor u = from_vector<uint8_t>({0, 100, 200});
  CHECK(clamp(u, -5, 300).dtype() == DType::U8);
  CHECK(clamp(u, -5, 300).to_vector<int32_t>() == std::vector<int32_t>{0, 100, 200});
  CHECK(clamp(u, 50, 150).to_vector<int32_t>() == std::vector<int32_t>{50, 100, 150});
  CHECK(clamp_min(u, 300).to_vector<int32_t>() == std::vector<int32_t>{255, 255, 255});
  const int64_t big = int64_t{1} << 62;
  Tensor l = from_vector<int64_t>({big, -big, 5});
  CHECK(clamp(l, -1e30, 1e30).to_vector<int64_t>() == std::vector<int64_t>{big, -big, 5});
  CHECK(clamp_max(l, 0x1p40).to_vector<int64_t>() == std::vector<int64_t>{int64_t{1} << 40, -big, 5});
  CHECK(clamp_min(l, 1e30).to_vector<int64_t>() ==
        std::vector<int64_t>(3, std::numeric_limits<int64_t>::max()));
}

TEST_CASE("clamp: half dtypes compute in f32", "[ops][clamp]") {
  for (DType t : {DType::F16, DType::BF16}) {
    INFO(dtype_name(t));
    Tensor x = f32({1, 2, -1, 1.5f}).to(t);
    Tensor y = clamp(x, 1.3, 1.7);
    CHECK(y.dtype() == t);
    // The bounds land in the dtype as float 1.3f, 1.7f rounded to it.
    CHECK_EQUAL_T(y, f32({1.3f, 1.7f, 1.3f, 1.5f}).to(t));
  }
}

TEST_CASE("clamp: non-contiguous, multi-dim, empty and 0-d input", "[ops][clamp]") {
  for (DType t : {DType::F32, DType::F64, DType::BF16, DType::I64}) {
    INFO(dtype_name(t));
    Tensor x = test::random_tensor({5, 7, 3}, t, 11, 2.0);
    Tensor ref = clamp(x, -1, 1.5);
    REQUIRE(ref.sizes() == Shape{5, 7, 3});
    CHECK_EQUAL_T(clamp(test::transposed_copy(x), -1, 1.5), ref);
    CHECK_EQUAL_T(clamp(test::strided_copy(x), -1, 1.5), ref);
    CHECK_EQUAL_T(clamp(x.permute({2, 0, 1}), -1, 1.5), ref.permute({2, 0, 1}));
    Tensor e = x.select(1, 2).unsqueeze(1).expand({5, 4, 3});  // stride 0
    CHECK_EQUAL_T(clamp(e, -1, 1.5), clamp(e.contiguous(), -1, 1.5));
    // Values match the formula element by element (integer bounds truncate: -1, 1).
    const double hi = is_floating(t) ? 1.5 : 1.0;
    std::vector<double> xv = d(x), yv = d(ref), want;
    for (double v : xv) want.push_back(clamp_ref(v, -1, hi));
    CHECK_EQUAL_T(ref, from_vector<double>(want, ref.sizes()).to(t));
    CHECK(yv.size() == want.size());
  }
  CHECK(clamp(zeros({0, 3}), 0, 1).sizes() == Shape{0, 3});
  Tensor s = clamp(scalar_tensor(5.0), 0, 1);
  CHECK(s.dim() == 0);
  CHECK(s.item<float>() == 1.0f);
}

TEST_CASE("clamp_: in place", "[ops][clamp]") {
  Tensor a = f32({-2, 0.5f, 2});
  Tensor& r = clamp_(a, -1, 1);
  CHECK(&r == &a);
  CHECK(d(a) == std::vector<double>{-1, 0.5, 1});
  clamp_(a, std::nullopt, 0);
  CHECK(d(a) == std::vector<double>{-1, 0, 0});
  // On a non-contiguous view it writes into the base.
  Tensor base = f32({-5, -5, -5, 5, 5, 5});
  base = base.view({2, 3});
  Tensor col = base.select(1, 1);
  clamp_(col, -1, 1);
  CHECK(d(base) == std::vector<double>{-5, -1, -5, 5, 1, 5});
  Tensor tv = base.t();
  clamp_(tv, 0, 2);
  CHECK(d(base) == std::vector<double>{0, 0, 0, 2, 1, 2});
  Tensor i = from_vector<int64_t>({-10, 10});
  clamp_(i, -3.9, 3.9);
  CHECK(i.to_vector<int64_t>() == std::vector<int64_t>{-3, 3});
  Tensor empty = zeros({0});
  CHECK(clamp_(empty, 0, 1).numel() == 0);

  // WGAN weight clipping: parameters require grad, so they are clipped with grad mode off.
  Tensor w = f32({-0.5f, 0.005f, 0.3f});
  w.set_requires_grad(true);
  REQUIRE_KILN_ERROR(clamp_(w, -0.01, 0.01), "clamp_");
  {
    NoGradGuard no_grad;
    clamp_(w, -0.01, 0.01);
  }
  CHECK(w.to_vector<float>() == std::vector<float>{-0.01f, 0.005f, 0.01f});

  // Expanded views (elements sharing memory) are refused, and nothing is written.
  Tensor one = f32({5});
  Tensor ex = one.expand({3});
  REQUIRE_KILN_ERROR(clamp_(ex, 0, 1), "clamp_");
  CHECK(one.item<float>() == 5.0f);

  // Modifying clamp's saved input in place makes its backward refuse to run.
  Tensor leaf = f32({0.5f, 3}).set_requires_grad(true);
  Tensor h = mul(leaf, 1.0);
  Tensor y = sum(clamp(h, 0, 1));
  {
    NoGradGuard no_grad;
    clamp_(h, 0, 0.1);
  }
  CHECK_THROWS_WITH(y.backward(), Catch::Contains("backward through clamp"));  // evaluated once
}

TEST_CASE("clamp: bad input throws kiln::Error naming the op", "[ops][clamp][errors]") {
  Tensor x = f32({1, 2});
  REQUIRE_KILN_ERROR(clamp(Tensor(), 0, 1), "clamp");
  REQUIRE_KILN_ERROR(clamp(from_vector<bool>({true, false}), 0, 1), "clamp");
  REQUIRE_KILN_ERROR(clamp(x, std::nullopt, std::nullopt), "clamp");
  REQUIRE_KILN_ERROR(clamp(x, 2, 1), "clamp");
  REQUIRE_KILN_ERROR(clamp(x, std::nan(""), 1), "clamp");
  REQUIRE_KILN_ERROR(clamp_max(x, std::nan("")), "clamp");
  Tensor b = from_vector<bool>({true});
  REQUIRE_KILN_ERROR(clamp_(b, 0, 1), "clamp_");
  REQUIRE_KILN_ERROR(clamp_(x, 1, 0), "clamp_");
  REQUIRE_KILN_ERROR(clamp_(x, std::nullopt, std::nullopt), "clamp_");
  CHECK(d(x) == std::vector<double>{1, 2});  // nothing written
}

TEST_CASE("clamp: gradient passes where min <= x <= max (PyTorch's convention)", "[ops][clamp][autograd]") {
  // torch.clamp(x, -1, 1).sum().backward() gives x.grad = [0, 1, 1, 1, 0, 0]: the bounds
  // themselves pass the gradient, NaN does not.
  Tensor x = from_vector<double>({-2, -1, 0, 1, 2, std::nan("")}).set_requires_grad(true);
  Tensor y = clamp(x, -1, 1);
  REQUIRE(y.requires_grad());
  CHECK(y.grad_fn()->name() == "clamp");
  sum(y).backward();
  CHECK(d(x.grad()) == std::vector<double>{0, 1, 1, 1, 0, 0});
  x.set_grad(Tensor());
  sum(clamp_min(x, -1)).backward();
  CHECK(d(x.grad()) == std::vector<double>{0, 1, 1, 1, 1, 0});
  x.set_grad(Tensor());
  sum(clamp_max(x, 1)).backward();
  CHECK(d(x.grad()) == std::vector<double>{1, 1, 1, 1, 0, 0});
  x.set_grad(Tensor());
  sum(clamp(x, 1, 1)).backward();
  CHECK(d(x.grad()) == std::vector<double>{0, 0, 0, 1, 0, 0});
  // Half types: the mask is taken in f32, like the forward's compares.
  Tensor h = f32({0.5f, 2}).to(DType::F16).set_requires_grad(true);
  sum(clamp(h, 0, 1)).backward();
  CHECK(h.grad().dtype() == DType::F16);
  CHECK(d(h.grad()) == std::vector<double>{1, 0});
}

TEST_CASE("gradcheck: clamp", "[ops][clamp][autograd][gradcheck]") {
  // f64 values in [-2, 2] kept away from the bounds, where the derivative jumps.
  Generator g(7);
  Tensor x = add(mul(rand({4, 5}, DType::F64, &g), 4.0), -2.0);
  for (double v : d(x))
    for (double bound : {-0.5, 0.75}) REQUIRE(std::fabs(v - bound) > 1e-3);
  check_grad([](const V& v) { return clamp(v[0], -0.5, 0.75); }, {x});
  check_grad([](const V& v) { return clamp_min(v[0], -0.5); }, {x});
  check_grad([](const V& v) { return clamp_max(v[0], 0.75); }, {x});
  check_grad([](const V& v) { return clamp(v[0].t(), -0.5, 0.75); }, {x});  // non-contiguous
  check_grad([](const V& v) { return mul(clamp(v[0], -0.5, 0.75), v[0]); }, {x});
}
