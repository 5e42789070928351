// ExponentialAverage: the recurrence step by step (with and without warm-up), dtype
// promotion, the state round trip and argument checks.
#include <cmath>

#include "test_util.h"

using namespace kiln;
using kiln::test::values;

TEST_CASE("ExponentialAverage follows avg = d avg + (1 - d) value", "[optim]") {
  Tensor a = from_vector<float>({1, 2, 3});
  Tensor b = from_vector<float>({0, 0}, {1, 2});
  ExponentialAverage ema({a, b}, 0.9);
  std::vector<double> ra{1, 2, 3}, rb{0, 0};
  for (int t = 0; t < 5; ++t) {
    std::vector<float> va{float(t), float(-t), 0.5f}, vb{float(2 * t), 1.0f};
    CHECK(ema.next_decay() == 0.9);
    ema.update({from_vector<float>(va), from_vector<float>(vb, {1, 2})});
    for (int i = 0; i < 3; ++i) ra[i] = 0.9 * ra[i] + 0.1 * va[i];
    for (int i = 0; i < 2; ++i) rb[i] = 0.9 * rb[i] + 0.1 * vb[i];
  }
  CHECK(ema.count() == 5);
  const auto ga = values(a), gb = values(b);  // updated in place: the caller's tensors
  for (int i = 0; i < 3; ++i) CHECK(ga[i] == Approx(ra[i]).epsilon(1e-6));
  for (int i = 0; i < 2; ++i) CHECK(gb[i] == Approx(rb[i]).epsilon(1e-6));
}

TEST_CASE("ExponentialAverage warm-up uses min(decay, (1 + t) / (10 + t))", "[optim]") {
  Tensor a = from_vector<double>({4.0});
  ExponentialAverage ema({a}, 0.999, /*warmup=*/true);
  double r = 4.0;
  for (int t = 0; t < 30; ++t) {
    const double d = std::min(0.999, (1.0 + t) / (10.0 + t));
    CHECK(ema.next_decay() == Approx(d));
    ema.update({from_vector<double>({double(t)})});
    r = d * r + (1 - d) * t;
  }
  CHECK(values(a)[0] == Approx(r).epsilon(1e-12));
  // f32 values fold into an f64 average.
  ema.update({from_vector<float>({1.0f})});
  CHECK(a.dtype() == DType::F64);
}

TEST_CASE("ExponentialAverage state round trip and checks", "[optim]") {
  Tensor a = from_vector<float>({1, 1});
  ExponentialAverage e1({a}, 0.5, true);
  for (int t = 0; t < 3; ++t) e1.update({from_vector<float>({0, 0})});
  Tensor a2 = a.clone();
  ExponentialAverage e2({a2}, 0.5, true);
  e2.load_state_dict(e1.state_dict());
  CHECK(e2.count() == 3);
  CHECK(e2.next_decay() == e1.next_decay());
  e1.update({from_vector<float>({2, 2})});
  e2.update({from_vector<float>({2, 2})});
  CHECK(values(a) == values(a2));

  CHECK_KILN_ERROR(ExponentialAverage({a}, 1.0), "decay");
  CHECK_KILN_ERROR(ExponentialAverage({a}, -0.1), "decay");
  CHECK_KILN_ERROR(ExponentialAverage({Tensor()}, 0.9), "ExponentialAverage");
  CHECK_KILN_ERROR(ExponentialAverage({from_vector<int64_t>({1})}, 0.9), "floating");
  CHECK_KILN_ERROR(e1.update({}), "1 averages");
  CHECK_KILN_ERROR(e1.update({from_vector<float>({1, 2, 3})}), "average");
  CHECK_KILN_ERROR(e1.load_state_dict({}), "count");
}
