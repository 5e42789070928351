// LR schedules: their lr curves at chosen steps, step() writing every group's lr, the
// knee schedule's flat-then-linear shape, state round trips and argument checks.
#include <cmath>
#include <numbers>

#include "test_util.h"

using namespace kiln;

namespace {

struct Opt {
  Tensor w = zeros({2}).set_requires_grad(true);
  Tensor u = zeros({3}).set_requires_grad(true);
  SGD sgd{std::vector<ParamGroup>{{{w}, {}}, {{u}, {{"lr", 0.1}}}}, SGDOptions{.lr = 1.0}};
};

}  // namespace

TEST_CASE("StepLR decays by gamma every step_size steps", "[optim]") {
  Opt o;
  StepLR s(o.sgd, 3, 0.5);
  const std::vector<double> want{1, 1, 1, 0.5, 0.5, 0.5, 0.25, 0.25};
  for (int64_t k = 0; k < 8; ++k) CHECK(s.lr_at(k) == want[k]);
  CHECK(o.sgd.lr(0) == 1.0);
  CHECK(o.sgd.lr(1) == 0.1);
  for (int k = 0; k < 4; ++k) s.step();
  CHECK(s.last_step() == 4);
  CHECK(o.sgd.lr(0) == 0.5);
  CHECK(o.sgd.lr(1) == 0.05);  // each group decays from its own base lr
}

TEST_CASE("CosineWithWarmup warms up linearly then follows a half cosine", "[optim]") {
  Opt o;
  CosineWithWarmup s(o.sgd, 10, 110, 0.01);
  CHECK(s.lr_at(0) == Approx(0.1));
  CHECK(s.lr_at(4) == Approx(0.5));
  CHECK(s.lr_at(9) == Approx(1.0));
  CHECK(s.lr_at(10) == Approx(1.0));
  CHECK(s.lr_at(60) == Approx(0.01 + 0.99 * 0.5));
  CHECK(s.lr_at(35) == Approx(0.01 + 0.99 * 0.5 * (1 + std::cos(std::numbers::pi * 0.25))));
  CHECK(s.lr_at(110) == Approx(0.01));
  CHECK(s.lr_at(500) == Approx(0.01));
  // Monotone decay after the warmup.
  for (int64_t k = 10; k < 110; ++k) CHECK(s.lr_at(k + 1) <= s.lr_at(k));
  CHECK(o.sgd.lr(0) == Approx(0.1));  // made: lr_at(0)
  s.step();
  CHECK(o.sgd.lr(0) == Approx(0.2));
  CHECK(o.sgd.lr(1) == Approx(0.02));
  // No warmup: the peak at step 0.
  Opt o2;
  CosineWithWarmup s2(o2.sgd, 0, 100);
  CHECK(s2.lr_at(0) == 1.0);
  CHECK(s2.lr_at(100) == 0.0);
}

TEST_CASE("KneeSchedule explores at the peak, then decays linearly", "[optim]") {
  Opt o;
  KneeSchedule s(o.sgd, 100, 40, 10);  // warmup 10, explore 40, decay over the last 50
  CHECK(s.lr_at(0) == Approx(0.1));
  CHECK(s.lr_at(9) == Approx(1.0));
  for (int64_t k = 10; k < 50; ++k) CHECK(s.lr_at(k) == 1.0);  // flat
  CHECK(s.lr_at(50) == Approx(1.0));
  CHECK(s.lr_at(75) == Approx(0.5));
  CHECK(s.lr_at(99) == Approx(0.02));
  CHECK(s.lr_at(100) == 0.0);
  CHECK(s.lr_at(1000) == 0.0);
  for (int64_t k = 50; k < 100; ++k) CHECK(s.lr_at(k) - s.lr_at(k + 1) == Approx(0.02));  // linear
  CHECK(s.lr_at(75, 0.1) == Approx(0.05));

  // min_lr floor, no warmup, explore as a fraction of the run.
  Opt o2;
  auto f = KneeSchedule::with_explore_fraction(o2.sgd, 200, 0.3, 0, 0.1);
  CHECK(f.explore_steps() == 60);
  CHECK(f.lr_at(0) == 1.0);
  CHECK(f.lr_at(59) == 1.0);
  CHECK(f.lr_at(60) == Approx(1.0));
  CHECK(f.lr_at(130) == Approx(0.1 + 0.9 * 0.5));
  CHECK(f.lr_at(200) == Approx(0.1));
  CHECK(f.lr_at(60, 0.1) == Approx(0.1));  // the group whose base lr is min_lr stays there
  for (int k = 0; k < 130; ++k) f.step();
  CHECK(o2.sgd.lr(0) == Approx(0.55));
}

TEST_CASE("schedule state round trip", "[optim]") {
  Opt a;
  KneeSchedule sa(a.sgd, 100, 30, 5);
  for (int k = 0; k < 57; ++k) sa.step();
  auto saved = sa.state_dict();
  CHECK(saved.at("step").item<int64_t>() == 57);
  CHECK(test::values(saved.at("base_lrs")) == std::vector<double>{1.0, 0.1});

  // A fresh schedule over an optimizer whose lr was already changed restores base lrs.
  Opt b;
  b.sgd.set_lr(0.3);
  KneeSchedule sb(b.sgd, 100, 30, 5);
  sb.load_state_dict(saved);
  CHECK(sb.last_step() == 57);
  CHECK(b.sgd.lr(0) == a.sgd.lr(0));
  CHECK(b.sgd.lr(1) == a.sgd.lr(1));
  sa.step();
  sb.step();
  CHECK(b.sgd.lr(0) == a.sgd.lr(0));

  auto bad = saved;
  bad["step"] = scalar_tensor(3.0, DType::F64);
  REQUIRE_KILN_ERROR(sb.load_state_dict(bad), "KneeSchedule.load_state_dict");
  bad = saved;
  bad["base_lrs"] = from_vector<double>({1.0});
  REQUIRE_KILN_ERROR(sb.load_state_dict(bad), "base_lrs");
  bad = saved;
  bad["extra"] = zeros({1});
  REQUIRE_KILN_ERROR(sb.load_state_dict(bad), "unexpected entry 'extra'");
  bad = saved;
  bad.erase("step");
  REQUIRE_KILN_ERROR(sb.load_state_dict(bad), "missing 'step'");
  CHECK(sb.last_step() == 58);
}

TEST_CASE("schedules check their arguments", "[optim]") {
  Opt o;
  REQUIRE_KILN_ERROR(StepLR(o.sgd, 0), "step_size");
  REQUIRE_KILN_ERROR(StepLR(o.sgd, 2, -1.0), "gamma");
  REQUIRE_KILN_ERROR(CosineWithWarmup(o.sgd, 20, 10), "warmup");
  REQUIRE_KILN_ERROR(CosineWithWarmup(o.sgd, 0, 10, 0.5), "min_lr");  // above group 1's lr 0.1
  REQUIRE_KILN_ERROR(KneeSchedule(o.sgd, 100, 80, 30), "KneeSchedule");
  REQUIRE_KILN_ERROR(KneeSchedule(o.sgd, 100, -1), "KneeSchedule");
  REQUIRE_KILN_ERROR(KneeSchedule::with_explore_fraction(o.sgd, 100, 1.5), "explore_fraction");
}
