// dropout on the CPU: identity and p = 1 cases, kept fraction about 1 - p, exact
// scaling, the mask as a function of (seed, offset) equal to rand() >= p, one mask for
// every dtype and layout, the backward reusing the mask, a gradient check, bad input.
#include "test_util.h"

#include <cmath>

using namespace kiln;
using V = std::vector<Tensor>;

namespace {
// 1 where kept, 0 where dropped, for a tensor of nonzero values.
std::vector<double> mask_of(const Tensor& y) {
  std::vector<double> v = test::values(y), m;
  for (double e : v) m.push_back(e != 0 ? 1.0 : 0.0);
  return m;
}
}  // namespace

TEST_CASE("dropout: identity, p = 1, generator accounting", "[ops][dropout]") {
  Tensor x = test::random_tensor({4, 5}, DType::F32, 1);
  Generator g(3);
  CHECK(dropout(x, 0.5, false, &g).is_same(x));
  CHECK(dropout(x, 0.0, true, &g).is_same(x));
  CHECK(g.offset() == 0);  // nothing drawn
  Tensor z = dropout(x, 1.0, true, &g);
  CHECK(test::values(z) == std::vector<double>(20, 0.0));
  Tensor xg = x.clone().set_requires_grad(true);
  sum(dropout(xg, 1.0, true, &g)).backward();
  CHECK(test::values(xg.grad()) == std::vector<double>(20, 0.0));
  dropout(x, 0.3, true, &g);
  CHECK(g.offset() == 20);  // numel counters reserved
  dropout(zeros({0, 3}), 0.3, true, &g);
  CHECK(g.offset() == 20);
}

TEST_CASE("dropout: kept fraction, scaling and the mask's definition", "[ops][dropout]") {
  const int64_t n = 200000;
  Tensor x = add(rand({n}, DType::F32), 0.5);  // nonzero, so a zero output means dropped
  for (double p : {0.1, 0.25, 0.5, 0.9}) {
    INFO("p " << p);
    Generator g(42);
    Tensor y = dropout(x, p, true, &g);
    std::vector<double> xv = test::values(x), yv = test::values(y);
    int64_t kept = 0;
    bool scaled = true;
    const float scale = static_cast<float>(1.0 / (1.0 - p));
    for (int64_t i = 0; i < n; ++i) {
      if (yv[i] != 0) {
        ++kept;
        scaled = scaled && static_cast<float>(yv[i]) == static_cast<float>(xv[i]) * scale;
      }
    }
    CHECK(scaled);
    const double frac = static_cast<double>(kept) / static_cast<double>(n);
    const double sd = std::sqrt(p * (1 - p) / static_cast<double>(n));
    CHECK(std::fabs(frac - (1 - p)) < 6 * sd);
    // The mean is preserved in expectation.
    CHECK(mean(y).item<double>() == Approx(mean(x).item<double>()).epsilon(0.05));
  }
  // Element i is kept iff the uniform draw rand() makes at the same counter is >= p
  // (p = 0.25 is exact in f32, so the comparison in rand's f32 is the same one).
  Generator g1(9), g2(9);
  g1.reserve(123);
  g2.reserve(123);
  Tensor y = dropout(x, 0.25, true, &g1);
  Tensor u = rand({n}, DType::F32, &g2);
  CHECK(mask_of(y) == test::values(cast(ge(u, 0.25), DType::F64)));
}

TEST_CASE("dropout: the mask depends only on seed and offset", "[ops][dropout]") {
  Tensor x = add(rand({6, 7}, DType::F64), 1.0);
  Generator a(5), b(5), c(6);
  Tensor ya = dropout(x, 0.5, true, &a), yb = dropout(x, 0.5, true, &b), yc = dropout(x, 0.5, true, &c);
  CHECK_EQUAL_T(ya, yb);
  CHECK(mask_of(ya) != mask_of(yc));
  CHECK(mask_of(dropout(x, 0.5, true, &a)) != mask_of(ya));  // the generator moved on
  // Same mask for every floating dtype and for non-contiguous inputs of the same values.
  for (DType dt : {DType::F16, DType::BF16, DType::F32}) {
    INFO(dtype_name(dt));
    Generator g(5);
    CHECK(mask_of(dropout(x.to(dt), 0.5, true, &g)) == mask_of(ya));
  }
  Generator g(5);
  CHECK_EQUAL_T(dropout(test::transposed_copy(x), 0.5, true, &g), ya);
  // The default generator is used when none is given.
  manual_seed(77);
  Tensor d1 = dropout(x, 0.5);
  manual_seed(77);
  CHECK_EQUAL_T(dropout(x, 0.5), d1);
  Generator h(77);
  CHECK_EQUAL_T(dropout(x, 0.5, true, &h), d1);
}

TEST_CASE("dropout: backward multiplies by the same mask", "[ops][dropout]") {
  Tensor x = add(rand({50, 9}, DType::F32), 1.0).set_requires_grad(true);
  Generator g(11);
  const double p = 0.4;
  Tensor y = dropout(x, p, true, &g);
  Tensor w = test::random_tensor({50, 9}, DType::F32, 12);
  y.backward(w);
  std::vector<double> m = mask_of(y), wv = test::values(w), gv = test::values(x.grad());
  const float scale = static_cast<float>(1.0 / (1.0 - p));
  bool ok = true;
  for (size_t i = 0; i < m.size(); ++i)
    ok = ok && static_cast<float>(gv[i]) == static_cast<float>(wv[i]) * (m[i] != 0 ? scale : 0.0f);
  CHECK(ok);
  // Gradient check with a fixed generator, so every evaluation draws the same mask.
  Tensor x64 = rand({4, 6}, DType::F64);
  GradcheckResult r = gradcheck(
      [](const V& v) {
        Generator fixed(3);
        return dropout(v[0], 0.3, true, &fixed);
      },
      {x64});
  INFO(r.message);
  CHECK(r.ok);
}

TEST_CASE("dropout: bad input throws kiln::Error naming the op", "[ops][dropout][errors]") {
  Tensor x = zeros({3});
  REQUIRE_KILN_ERROR(dropout(x, -0.1), "dropout");
  REQUIRE_KILN_ERROR(dropout(x, 1.5), "p must lie in [0, 1]");
  REQUIRE_KILN_ERROR(dropout(x, std::nan("")), "dropout");
  REQUIRE_KILN_ERROR(dropout(zeros({3}, DType::I64), 0.5), "dropout");
  REQUIRE_KILN_ERROR(dropout(Tensor(), 0.5), "dropout");
}
