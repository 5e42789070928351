// Mixup and CutMix (models/data/mix.h): the Beta draws' moments, the mixed images against
// their formulas, the permutation, the box's area and lam, the mixed loss, determinism.
#include <algorithm>
#include <cmath>

#include <kiln/models/data/mix.h>

#include "test_util.h"

using namespace kiln;
using kiln::test::values;

namespace {

// x[i] = i everywhere (B, 1, H, W), y = 0..B-1.
std::pair<Tensor, Tensor> numbered(int64_t B, int64_t H, int64_t W) {
  std::vector<float> x;
  std::vector<int64_t> y;
  for (int64_t i = 0; i < B; ++i) {
    y.push_back(i);
    for (int64_t k = 0; k < H * W; ++k) x.push_back(float(i));
  }
  return {from_vector(x, {B, 1, H, W}), from_vector(y)};
}

}  // namespace

TEST_CASE("sample_beta has Beta(a, b)'s mean and variance", "[data][mix]") {
  for (auto [a, b] : {std::pair{0.4, 0.4}, std::pair{2.0, 5.0}}) {
    Generator gen(3);
    const int n = 4000;
    double m = 0, v = 0;
    std::vector<double> xs;
    for (int i = 0; i < n; ++i) xs.push_back(data::sample_beta(a, b, gen));
    for (double x : xs) {
      CHECK((x >= 0 && x <= 1));
      m += x / n;
    }
    for (double x : xs) v += (x - m) * (x - m) / n;
    const double want_m = a / (a + b), want_v = a * b / ((a + b) * (a + b) * (a + b + 1));
    CHECK(m == Approx(want_m).margin(0.02));
    CHECK(v == Approx(want_v).epsilon(0.1));
  }
  Generator gen(1);
  CHECK_KILN_ERROR(data::sample_beta(0.0, 1.0, gen), "sample_beta");
}

TEST_CASE("mixup mixes each image with a permuted partner by lam", "[data][mix]") {
  auto [x, y] = numbered(16, 3, 4);
  Generator gen(7);
  data::MixedBatch m = data::mixup(x, y, 0.4, gen);
  REQUIRE((m.lam >= 0 && m.lam <= 1));
  std::vector<int64_t> perm = m.y_b.to_vector<int64_t>();
  std::vector<int64_t> sorted = perm;
  std::sort(sorted.begin(), sorted.end());
  for (int64_t i = 0; i < 16; ++i) CHECK(sorted[i] == i);  // a permutation
  CHECK(perm != sorted);
  const auto xs = values(m.x);
  for (int64_t i = 0; i < 16; ++i)
    for (int64_t k = 0; k < 12; ++k) CHECK(xs[i * 12 + k] == Approx(m.lam * i + (1 - m.lam) * perm[i]).epsilon(1e-6));
  CHECK(m.y_a.to_vector<int64_t>() == y.to_vector<int64_t>());
  // The same generator state mixes the same way.
  Generator g2(7);
  data::MixedBatch m2 = data::mixup(x, y, 0.4, g2);
  CHECK(m2.lam == m.lam);
  CHECK(values(m2.x) == xs);
  CHECK_KILN_ERROR(data::mixup(x, y, 0.0, gen), "alpha");
  CHECK_KILN_ERROR(data::mixup(x.reshape({16, 12}), y, 1.0, gen), "(B, C, H, W)");
}

TEST_CASE("cutmix pastes one box from the partner; lam is the area left", "[data][mix]") {
  auto [x, y] = numbered(8, 10, 12);
  for (uint64_t seed : {1, 2, 3, 4, 5}) {
    Generator gen(seed);
    data::MixedBatch m = data::cutmix(x, y, 1.0, gen);
    std::vector<int64_t> perm = m.y_b.to_vector<int64_t>();
    const auto xs = values(m.x);
    for (int64_t i = 0; i < 8; ++i) {
      if (perm[i] == i) continue;
      int64_t pasted = 0, ymin = 99, ymax = -1, xmin = 99, xmax = -1;
      for (int64_t r = 0; r < 10; ++r)
        for (int64_t c = 0; c < 12; ++c) {
          const double v = xs[(i * 10 + r) * 12 + c];
          CHECK((v == double(i) || v == double(perm[i])));
          if (v == double(perm[i])) {
            ++pasted;
            ymin = std::min(ymin, r), ymax = std::max(ymax, r), xmin = std::min(xmin, c), xmax = std::max(xmax, c);
          }
        }
      CHECK(1 - double(pasted) / 120 == Approx(m.lam));  // lam from the box actually pasted
      if (pasted > 0) CHECK(pasted == (ymax - ymin + 1) * (xmax - xmin + 1));  // one rectangle
    }
  }
}

TEST_CASE("mixed_cross_entropy is lam CE(y_a) + (1 - lam) CE(y_b)", "[data][mix]") {
  Tensor logits = test::random_tensor({4, 3}, DType::F64, 5).set_requires_grad(true);
  data::MixedBatch b;
  b.y_a = from_vector<int64_t>({0, 1, 2, 0});
  b.y_b = from_vector<int64_t>({2, 2, 1, 0});
  b.lam = 0.3;
  const double want = 0.3 * cross_entropy(logits, b.y_a).item<double>() + 0.7 * cross_entropy(logits, b.y_b).item<double>();
  CHECK(data::mixed_cross_entropy(logits, b).item<double>() == Approx(want));
}
