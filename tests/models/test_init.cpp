// nn::init: gains, fans, and the statistics of each initialiser over large tensors
// (bounds exactly, mean and std within a tolerance far above the sampling error);
// in-place writes on parameters, reproducibility from a generator, errors.
#include "test_util.h"

#include <cmath>

using namespace kiln;
using namespace kiln::nn;
using namespace kiln::nn::init;

namespace {

struct Stats {
  double mean, std, min, max;
};
Stats stats(const Tensor& t) {
  Tensor d = t.to(DType::F64);
  return {mean(d).item<double>(), kiln::std(d).item<double>(), min(d).item<double>(), max(d).item<double>()};
}

// |a / b - 1| < rel
bool near_ratio(double a, double b, double rel) { return std::fabs(a / b - 1.0) < rel; }

}  // namespace

TEST_CASE("nn::init::calculate_gain follows PyTorch", "[nn]") {
  CHECK(calculate_gain(Nonlinearity::Linear) == 1.0);
  CHECK(calculate_gain(Nonlinearity::Conv2d) == 1.0);
  CHECK(calculate_gain(Nonlinearity::ConvTranspose3d) == 1.0);
  CHECK(calculate_gain(Nonlinearity::Sigmoid) == 1.0);
  CHECK(calculate_gain(Nonlinearity::Tanh) == Approx(5.0 / 3.0));
  CHECK(calculate_gain(Nonlinearity::ReLU) == Approx(std::sqrt(2.0)));
  CHECK(calculate_gain(Nonlinearity::LeakyReLU) == Approx(std::sqrt(2.0 / (1.0 + 0.01 * 0.01))));
  CHECK(calculate_gain(Nonlinearity::LeakyReLU, 0.0) == Approx(std::sqrt(2.0)));
  CHECK(calculate_gain(Nonlinearity::LeakyReLU, std::sqrt(5.0)) == Approx(std::sqrt(1.0 / 3.0)));
  CHECK(calculate_gain(Nonlinearity::SELU) == 0.75);
}

TEST_CASE("nn::init::calculate_fan_in_and_fan_out for 2-D, 3-D and 4-D weights", "[nn]") {
  CHECK(calculate_fan_in_and_fan_out(empty({5, 3})) == std::pair<int64_t, int64_t>{3, 5});
  CHECK(calculate_fan_in_and_fan_out(empty({16, 8, 3, 3})) == std::pair<int64_t, int64_t>{72, 144});
  CHECK(calculate_fan_in_and_fan_out(empty({6, 4, 5})) == std::pair<int64_t, int64_t>{20, 30});
  REQUIRE_KILN_ERROR(calculate_fan_in_and_fan_out(empty({7})), "calculate_fan_in_and_fan_out");
  REQUIRE_KILN_ERROR(calculate_fan_in_and_fan_out(empty({7})), "fewer than 2 dimensions");
  REQUIRE_KILN_ERROR(xavier_uniform_(empty({7})), "fewer than 2 dimensions");
}

TEST_CASE("nn::init::uniform_ and normal_", "[nn]") {
  Generator g(1);
  Tensor t = empty({1000, 500});
  uniform_(t, -0.5, 1.5, &g);
  Stats s = stats(t);
  CHECK(s.min >= -0.5);
  CHECK(s.max <= 1.5);
  CHECK(s.min < -0.49);
  CHECK(s.max > 1.49);
  CHECK(std::fabs(s.mean - 0.5) < 0.01);
  CHECK(near_ratio(s.std, 2.0 / std::sqrt(12.0), 0.01));

  normal_(t, 3.0, 0.25, &g);
  s = stats(t);
  CHECK(std::fabs(s.mean - 3.0) < 0.005);
  CHECK(near_ratio(s.std, 0.25, 0.01));

  Tensor i = zeros({3}, DType::I32);
  REQUIRE_KILN_ERROR(uniform_(i), "uniform_");
  REQUIRE_KILN_ERROR(normal_(i), "normal_");
  REQUIRE_KILN_ERROR(normal_(t, 0.0, -1.0), "std >= 0");
  REQUIRE_KILN_ERROR(uniform_(t, 1.0, 0.0), "a <= b");
}

TEST_CASE("nn::init::constant_, zeros_, ones_", "[nn]") {
  Tensor t = empty({4, 3});
  CHECK(constant_(t, 2.5).is_same(t));
  CHECK(test::values(t) == std::vector<double>(12, 2.5));
  zeros_(t);
  CHECK(test::values(t) == std::vector<double>(12, 0.0));
  ones_(t);
  CHECK(test::values(t) == std::vector<double>(12, 1.0));
  Tensor i = zeros({2}, DType::I64);
  constant_(i, 7);
  CHECK(test::values(i) == std::vector<double>{7, 7});
}

TEST_CASE("nn::init::kaiming_uniform_ and kaiming_normal_ statistics", "[nn]") {
  Generator g(2);
  Tensor w = empty({256, 64, 3, 3});  // fan_in 576, fan_out 2304
  const double fan_in = 576, fan_out = 2304;

  kaiming_uniform_(w, 0.0, FanMode::FanIn, Nonlinearity::ReLU, &g);
  double bound = std::sqrt(6.0 / fan_in);  // sqrt(3) * sqrt(2) / sqrt(fan_in)
  Stats s = stats(w);
  CHECK(s.max <= bound);
  CHECK(s.min >= -bound);
  CHECK(s.max > 0.99 * bound);
  CHECK(s.min < -0.99 * bound);
  CHECK(near_ratio(s.std, bound / std::sqrt(3.0), 0.01));
  CHECK(std::fabs(s.mean) < 0.01 * bound);

  kaiming_uniform_(w, 0.0, FanMode::FanOut, Nonlinearity::ReLU, &g);
  s = stats(w);
  CHECK(s.max < std::sqrt(6.0 / fan_out));
  CHECK(near_ratio(s.std, std::sqrt(2.0 / fan_out), 0.01));

  // PyTorch's default (leaky_relu with a): Linear's a = sqrt(5) gives bound 1/sqrt(fan_in).
  kaiming_uniform_(w, std::sqrt(5.0), FanMode::FanIn, Nonlinearity::LeakyReLU, &g);
  s = stats(w);
  CHECK(s.max < 1.0 / std::sqrt(fan_in));
  CHECK(s.max > 0.99 / std::sqrt(fan_in));

  kaiming_normal_(w, 0.0, FanMode::FanIn, Nonlinearity::ReLU, &g);
  s = stats(w);
  CHECK(near_ratio(s.std, std::sqrt(2.0 / fan_in), 0.01));
  CHECK(std::fabs(s.mean) < 0.01 * std::sqrt(2.0 / fan_in));

  kaiming_normal_(w, 0.0, FanMode::FanOut, Nonlinearity::Tanh, &g);
  s = stats(w);
  CHECK(near_ratio(s.std, (5.0 / 3.0) / std::sqrt(fan_out), 0.01));

  // Zero-element tensors are left alone, whatever their rank.
  Tensor none = empty({0, 4});
  CHECK(kaiming_uniform_(none).is_same(none));
  CHECK(kaiming_normal_(empty({0})).numel() == 0);
  REQUIRE_KILN_ERROR(kaiming_uniform_(empty({5})), "fewer than 2 dimensions");
  REQUIRE_KILN_ERROR(kaiming_uniform_(zeros({2, 2}, DType::I32)), "kaiming_uniform_");
}

TEST_CASE("nn::init::xavier_uniform_ and xavier_normal_ statistics", "[nn]") {
  Generator g(3);
  Tensor w = empty({800, 300});  // fan_in 300, fan_out 800
  xavier_uniform_(w, 1.0, &g);
  double bound = std::sqrt(6.0 / 1100.0);
  Stats s = stats(w);
  CHECK(s.max <= bound);
  CHECK(s.min >= -bound);
  CHECK(s.max > 0.99 * bound);
  CHECK(near_ratio(s.std, std::sqrt(2.0 / 1100.0), 0.01));

  xavier_uniform_(w, 2.0, &g);
  CHECK(stats(w).max < 2 * bound);
  CHECK(stats(w).max > 1.98 * bound);

  xavier_normal_(w, 1.0, &g);
  s = stats(w);
  CHECK(near_ratio(s.std, std::sqrt(2.0 / 1100.0), 0.01));
  CHECK(std::fabs(s.mean) < 0.01 * std::sqrt(2.0 / 1100.0));

  Tensor c = empty({32, 16, 5, 5});  // fan_in 400, fan_out 800
  xavier_normal_(c, 1.0, &g);
  CHECK(near_ratio(stats(c).std, std::sqrt(2.0 / 1200.0), 0.02));
}

TEST_CASE("nn::init: in place on parameters, reproducible, any floating dtype", "[nn]") {
  Linear lin(64, 32);
  Tensor w = lin.weight;
  Tensor ret = kaiming_normal_(lin.weight);  // the parameter requires grad: written under NoGradGuard
  CHECK(ret.is_same(w));
  CHECK(lin.weight.is_same(w));
  CHECK(w.requires_grad());
  CHECK(w.is_leaf());

  Generator a(77), b(77);
  Tensor x = empty({10, 10}), y = empty({10, 10});
  xavier_uniform_(x, 1.0, &a);
  xavier_uniform_(y, 1.0, &b);
  CHECK(test::bit_equal(x, y));
  xavier_uniform_(x, 1.0, &a);  // the generator moved on
  CHECK_FALSE(test::bit_equal(x, y));

  // The default generator follows manual_seed.
  manual_seed(5);
  normal_(x);
  manual_seed(5);
  normal_(y);
  CHECK(test::bit_equal(x, y));

  // Half and double targets: drawn in f32 (f64) and cast.
  for (DType dt : {DType::F16, DType::BF16, DType::F64}) {
    Tensor h = empty({200, 100}, dt);
    Generator gh(4);
    kaiming_uniform_(h, 0.0, FanMode::FanIn, Nonlinearity::ReLU, &gh);
    Stats s = stats(h);
    INFO(dtype_name(dt));
    CHECK(s.max <= std::sqrt(6.0 / 100.0) * 1.001);
    CHECK(near_ratio(s.std, std::sqrt(2.0 / 100.0), 0.03));
  }
}
