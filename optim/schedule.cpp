// LR schedules: the shared counter/apply/state logic and each schedule's formula.
#include <kiln/optim/schedule.h>

#include <cmath>
#include <numbers>

#include <kiln/ops/checks.h>

namespace kiln {

LRScheduler::LRScheduler(Optimizer& optimizer) : opt_(optimizer) {
  for (size_t g = 0; g < opt_.num_groups(); ++g) base_lrs_.push_back(opt_.lr(g));
  KILN_CHECK(!base_lrs_.empty(), "LRScheduler: the optimizer has no param groups");
}

void LRScheduler::apply() {
  for (size_t g = 0; g < base_lrs_.size(); ++g) opt_.set_lr(g, lr_at(step_, base_lrs_[g]));
}

void LRScheduler::step() {
  ++step_;
  apply();
}

std::map<std::string, Tensor> LRScheduler::state_dict() const {
  return {{"step", scalar_tensor(step_, DType::I64)}, {"base_lrs", from_vector(base_lrs_)}};
}

void LRScheduler::load_state_dict(const std::map<std::string, Tensor>& dict) {
  const std::string op = detail::str(name(), ".load_state_dict");
  for (const auto& [k, t] : dict) {
    KILN_CHECK(k == "step" || k == "base_lrs", op, ": unexpected entry '", k, "' (expected 'step' and 'base_lrs')");
    KILN_CHECK(t.defined(), op, ": entry '", k, "' is an undefined tensor");
  }
  auto s = dict.find("step"), b = dict.find("base_lrs");
  KILN_CHECK(s != dict.end(), op, ": missing 'step'");
  KILN_CHECK(b != dict.end(), op, ": missing 'base_lrs'");
  KILN_CHECK(s->second.dim() == 0 && s->second.dtype() == DType::I64, op, ": 'step' must be a 0-d i64 tensor, got ",
             describe(s->second));
  KILN_CHECK(b->second.dim() == 1 && b->second.dtype() == DType::F64, op,
             ": 'base_lrs' must be a 1-d f64 tensor, got ", describe(b->second));
  const int64_t step = s->second.item<int64_t>();
  KILN_CHECK(step >= 0, op, ": 'step' must be >= 0, got ", step);
  std::vector<double> base = b->second.to_vector<double>();
  KILN_CHECK(base.size() == opt_.num_groups(), op, ": 'base_lrs' has ", base.size(), " entries, the optimizer has ",
             opt_.num_groups(), " param groups");
  for (double v : base) KILN_CHECK(std::isfinite(v) && v >= 0, op, ": invalid base lr ", v);
  step_ = step;
  base_lrs_ = std::move(base);
  apply();
}

// ---- StepLR ----

StepLR::StepLR(Optimizer& optimizer, int64_t step_size, double gamma)
    : LRScheduler(optimizer), step_size_(step_size), gamma_(gamma) {
  KILN_CHECK(step_size > 0, "StepLR: step_size must be > 0, got ", step_size);
  KILN_CHECK(std::isfinite(gamma) && gamma > 0, "StepLR: gamma must be finite and > 0, got ", gamma);
  apply();
}

double StepLR::lr_at(int64_t step, double base_lr) const {
  return base_lr * std::pow(gamma_, static_cast<double>(step / step_size_));
}

// ---- CosineWithWarmup ----

CosineWithWarmup::CosineWithWarmup(Optimizer& optimizer, int64_t warmup_steps, int64_t total_steps, double min_lr)
    : LRScheduler(optimizer), warmup_(warmup_steps), total_(total_steps), min_lr_(min_lr) {
  KILN_CHECK(total_steps > 0 && warmup_steps >= 0 && warmup_steps <= total_steps,
             "CosineWithWarmup: need 0 <= warmup_steps <= total_steps and total_steps > 0, got warmup ", warmup_steps,
             " and total ", total_steps);
  KILN_CHECK(std::isfinite(min_lr) && min_lr >= 0, "CosineWithWarmup: min_lr must be finite and >= 0, got ", min_lr);
  for (double b : base_lrs())
    KILN_CHECK(min_lr <= b, "CosineWithWarmup: min_lr ", min_lr, " exceeds a param group's lr ", b);
  apply();
}

double CosineWithWarmup::lr_at(int64_t step, double base_lr) const {
  if (step < warmup_) return base_lr * static_cast<double>(step + 1) / static_cast<double>(warmup_);
  if (step >= total_) return min_lr_;
  const double progress = static_cast<double>(step - warmup_) / static_cast<double>(total_ - warmup_);
  return min_lr_ + (base_lr - min_lr_) * 0.5 * (1.0 + std::cos(std::numbers::pi * progress));
}

// ---- KneeSchedule ----

KneeSchedule::KneeSchedule(Optimizer& optimizer, int64_t total_steps, int64_t explore_steps, int64_t warmup_steps,
                           double min_lr)
    : LRScheduler(optimizer), total_(total_steps), explore_(explore_steps), warmup_(warmup_steps), min_lr_(min_lr) {
  KILN_CHECK(total_steps > 0 && explore_steps >= 0 && warmup_steps >= 0 && warmup_steps + explore_steps <= total_steps,
             "KneeSchedule: need warmup_steps, explore_steps >= 0 with warmup_steps + explore_steps <= total_steps ",
             "and total_steps > 0, got warmup ", warmup_steps, ", explore ", explore_steps, ", total ", total_steps);
  KILN_CHECK(std::isfinite(min_lr) && min_lr >= 0, "KneeSchedule: min_lr must be finite and >= 0, got ", min_lr);
  for (double b : base_lrs())
    KILN_CHECK(min_lr <= b, "KneeSchedule: min_lr ", min_lr, " exceeds a param group's lr ", b);
  apply();
}

KneeSchedule KneeSchedule::with_explore_fraction(Optimizer& optimizer, int64_t total_steps, double explore_fraction,
                                                 int64_t warmup_steps, double min_lr) {
  KILN_CHECK(explore_fraction >= 0 && explore_fraction <= 1, "KneeSchedule: explore_fraction must lie in [0, 1], got ",
             explore_fraction);
  const auto explore = static_cast<int64_t>(std::llround(explore_fraction * static_cast<double>(total_steps)));
  return KneeSchedule(optimizer, total_steps, explore, warmup_steps, min_lr);
}

double KneeSchedule::lr_at(int64_t step, double base_lr) const {
  if (step < warmup_) return base_lr * static_cast<double>(step + 1) / static_cast<double>(warmup_);
  if (step < warmup_ + explore_) return base_lr;
  if (step >= total_) return min_lr_;
  const double left = static_cast<double>(total_ - step) / static_cast<double>(total_ - warmup_ - explore_);
  return min_lr_ + (base_lr - min_lr_) * left;
}

}  // namespace kiln
