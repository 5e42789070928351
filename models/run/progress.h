// The look every trainer shares: a progress line per log interval on stderr (step, epoch,
// loss, lr, throughput, ETA; "\r" on a terminal, one line per update otherwise), a guard
// against non-finite losses, and the final one-line JSON summary on stdout.
#pragma once
#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <kiln/core/error.h>
#include <kiln/core/tensor.h>
#include <kiln/models/run/metrics.h>

namespace kiln::run {

class Progress {
 public:
  // total_steps: of the whole run; start_step: steps already done (a resumed run), so the
  // ETA is computed from this invocation's pace. Logs at least every log_every_steps steps
  // and every log_every_s seconds.
  Progress(std::string program, int64_t total_steps, int64_t start_step, int64_t log_every_steps = 50,
           double log_every_s = 2.0);
  // Whether step `step` (1-based, global) should be logged: log_every_steps steps or
  // log_every_s seconds since the previous log(), the run's last step, or `force`.
  bool due(int64_t step, bool force = false) const;
  // Prints the line "step 12/100  epoch 1/3  loss 0.4321  lr 0.003  1234 img/s  ETA 1:02"
  // on stderr. epoch: 1-based, as shown; loss: what the trainer wants shown (train_cnn: the
  // epoch's running mean); images: images processed since the previous log() (all ranks),
  // for the throughput over that interval. The ETA is from this invocation's pace.
  void log(int64_t step, int64_t epoch, int64_t epochs, double loss, double lr, int64_t images);
  // The same line with the trainer's own quantities in place of "loss ... lr ...":
  // "step 12/100  epoch 1/3  d_loss 1.2345  g_loss 0.8765  1234 img/s  ETA 1:02"
  // (each value printed with %.4g).
  void log(int64_t step, int64_t epoch, int64_t epochs, const std::vector<std::pair<std::string, double>>& fields,
           int64_t images);
  void end_epoch_line();  // finishes a "\r" line on a terminal (nothing otherwise)
  // What the throughput counts ("img" by default: "1234 img/s"; a language model: "tok").
  void set_unit(std::string unit) { unit_ = std::move(unit); }
  // The run's length once it is known (a time-budgeted run fixes it after timing its first steps).
  void set_total_steps(int64_t total_steps) {
    total_steps_ = total_steps;
    total_known_ = true;
  }
  // Until set_total_steps: the run ends on a time budget `seconds_left` from now, its step
  // count not known yet; the line shows "step 90/?" and the ETA of the budget.
  void set_time_left(double seconds_left);
  // epochs <= 0 in log(): the line has no "epoch e/E" field (step-based runs).
  double elapsed_seconds() const;  // since construction
  const std::string& program() const { return program_; }

 private:
  void line(int64_t step, int64_t epoch, int64_t epochs, const std::string& fields, int64_t images);
  std::string program_;
  int64_t total_steps_, start_step_, log_every_steps_;
  bool total_known_ = true;
  double time_left_ = 0;  // when !total_known_: the budget left at t_time_left_
  std::chrono::steady_clock::time_point t_time_left_;
  double log_every_s_;
  bool tty_;
  std::chrono::steady_clock::time_point t_start_, t_last_;
  int64_t last_step_;
  bool line_open_ = false;
  std::string unit_ = "img";  // a "\r" line is on the terminal without its '\n'
};

// "1:02:03" / "2:03"; "?" for a negative or non-finite number.
std::string format_duration(double seconds);

// Thrown when a loss is NaN or infinite under NonFinitePolicy::Stop.
class NonFiniteLoss : public Error {
 public:
  using Error::Error;
};

enum class NonFinitePolicy { Stop, Skip };

// Returns true when `loss` is finite. Otherwise Stop throws NonFiniteLoss ("<program>: loss
// is nan at step 123 (epoch 2); stopping. The last checkpoint (step 100) is kept; ...") and
// Skip returns false after a warning (the trainer then skips the optimizer step, as a loss
// scaler would) — after max_skips consecutive skips it throws as well (max_skips 3: three
// non-finite losses in a row are skipped, the fourth throws; a finite loss resets the count).
// step: 1-based global step; epoch: 1-based, as shown; last_checkpoint: the path of the last
// good checkpoint, "" when none was saved yet. The messages name the value (nan, inf, -inf),
// the step and epoch, the checkpoint, and the flags --resume and "--on-nonfinite skip".
class NonFiniteGuard {
 public:
  NonFiniteGuard(std::string program, NonFinitePolicy policy, int64_t max_skips = 100);
  bool check(double loss, int64_t step, int64_t epoch, const std::string& last_checkpoint);
  int64_t skipped() const { return skipped_total_; }

 private:
  std::string program_;
  NonFinitePolicy policy_;
  int64_t max_skips_, consecutive_ = 0, skipped_total_ = 0;
};

// The state about to be checkpointed must be finite: a loss can still be finite at the step
// whose update sent the parameters to inf. Throws NonFiniteLoss naming the first tensor of
// `state` (floating ones) that holds a NaN or inf, the step and the last good checkpoint;
// one host read for all of them.
void check_finite_state(const std::string& program, const std::map<std::string, Tensor>& state, int64_t step,
                        const std::string& last_checkpoint);

// Prints `record` as one JSON line on stdout and flushes (the run's final summary); throws
// kiln::Error when stdout cannot be written (a full disk under "> summary.json").
void print_summary(const Record& record);

}  // namespace kiln::run
