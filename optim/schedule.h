// Learning-rate schedules: objects that set an optimizer's lr per step. Each has a pure
// lr_at(step, base_lr) and a step() that advances its counter and writes
// lr_at(counter, base lr of the group) into every param group. The base lrs are the
// groups' lrs when the schedule is made (the peak lr for the warmup schedules). As in
// PyTorch, making a schedule applies lr_at(0), and step() belongs after optimizer.step():
//
//   for (int64_t s = 0; s < total; ++s) { ...backward...; opt.step(); sched.step(); }
//
// The warmup of CosineWithWarmup and KneeSchedule is linear, lr = base * (s + 1) / warmup
// for s < warmup, so the first step already moves and step warmup - 1 reaches the peak.
// state_dict(): "step" (0-d i64) and "base_lrs" (1-d f64, one per group).
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <kiln/core/tensor.h>
#include <kiln/optim/optimizer.h>

namespace kiln {

class LRScheduler {
 public:
  explicit LRScheduler(Optimizer& optimizer);
  virtual ~LRScheduler() = default;
  LRScheduler(const LRScheduler&) = delete;
  LRScheduler& operator=(const LRScheduler&) = delete;

  virtual const char* name() const = 0;
  // The lr at `step` for a group whose base lr is base_lr (pure: no state is read).
  virtual double lr_at(int64_t step, double base_lr) const = 0;
  // lr_at for group 0's base lr.
  double lr_at(int64_t step) const { return lr_at(step, base_lrs_.at(0)); }

  // Advances the counter by one and sets each group's lr.
  void step();
  // The counter: the number of step() calls since the schedule began.
  int64_t last_step() const { return step_; }
  const std::vector<double>& base_lrs() const { return base_lrs_; }
  Optimizer& optimizer() const { return opt_; }

  std::map<std::string, Tensor> state_dict() const;
  // Restores the counter and base lrs (validated: names, dtypes, group count) and sets
  // the optimizer's lrs for the restored step.
  void load_state_dict(const std::map<std::string, Tensor>& dict);

 protected:
  // Sets every group's lr for the current counter; derived constructors call it last.
  void apply();

 private:
  Optimizer& opt_;
  std::vector<double> base_lrs_;
  int64_t step_ = 0;
};

// lr = base * gamma^floor(step / step_size) (torch.optim.lr_scheduler.StepLR).
class StepLR final : public LRScheduler {
 public:
  StepLR(Optimizer& optimizer, int64_t step_size, double gamma = 0.1);
  const char* name() const override { return "StepLR"; }
  double lr_at(int64_t step, double base_lr) const override;
  using LRScheduler::lr_at;

 private:
  int64_t step_size_;
  double gamma_;
};

// Linear warmup to the base lr over warmup_steps, then a half cosine from the base lr
// (at step warmup_steps) down to min_lr (at step total_steps); min_lr afterwards.
class CosineWithWarmup final : public LRScheduler {
 public:
  CosineWithWarmup(Optimizer& optimizer, int64_t warmup_steps, int64_t total_steps, double min_lr = 0.0);
  const char* name() const override { return "CosineWithWarmup"; }
  double lr_at(int64_t step, double base_lr) const override;
  using LRScheduler::lr_at;

 private:
  int64_t warmup_, total_;
  double min_lr_;
};

// The knee schedule (explore-exploit) of Iyer et al., "Wide-minima Density Hypothesis and
// the Explore-Exploit Learning Rate Schedule" (ICLR 2021 / JMLR 2023): an optional linear
// warmup, then `explore_steps` at the peak (base) lr, which keeps the optimizer where wide
// minima are dense, then a linear decay to min_lr that reaches it at total_steps:
//   s < W:            base * (s + 1) / W
//   W <= s < W + E:   base
//   W + E <= s < T:   min_lr + (base - min_lr) * (T - s) / (T - W - E)
//   s >= T:           min_lr
class KneeSchedule final : public LRScheduler {
 public:
  KneeSchedule(Optimizer& optimizer, int64_t total_steps, int64_t explore_steps, int64_t warmup_steps = 0,
               double min_lr = 0.0);
  // explore_steps = round(explore_fraction * total_steps): the paper gives the explore
  // budget as a share of the whole run (e.g. 50% of the epochs).
  static KneeSchedule with_explore_fraction(Optimizer& optimizer, int64_t total_steps, double explore_fraction,
                                            int64_t warmup_steps = 0, double min_lr = 0.0);
  const char* name() const override { return "KneeSchedule"; }
  double lr_at(int64_t step, double base_lr) const override;
  using LRScheduler::lr_at;
  int64_t explore_steps() const { return explore_; }

 private:
  int64_t total_, explore_, warmup_;
  double min_lr_;
};

}  // namespace kiln
