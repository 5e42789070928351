// Per-step values of a training loop (losses, norms, ...) kept on the device until they
// are needed, then read back in one go: one host synchronisation per progress line or
// checkpoint instead of one per step. flush() checks the guarded values of every queued
// step in step order (NonFiniteGuard: a NaN/inf stops the run before anything after it is
// checkpointed), writes one metrics record per step and returns what the progress line
// shows. Every trainer's loop uses it:
//
//   run::StepLog log(&guard, &metrics, {"loss"});
//   for (...) {
//     Tensor loss = ...; loss.backward(); opt.step();
//     log.push(step, epoch, {{"loss", loss}}, {{"lr", lr}});
//     if (progress.due(step)) { auto f = log.flush(last_ckpt); progress.log(..., f.mean("loss"), ...); }
//   }
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <kiln/core/tensor.h>
#include <kiln/models/run/metrics.h>
#include <kiln/models/run/progress.h>

namespace kiln::run {

class StepLog {
 public:
  // What one flush read back, per value name (in the order of the first queued step).
  struct Summary {
    std::vector<std::string> names;
    std::vector<double> sum_finite;     // the sum of the finite values
    std::vector<int64_t> count_finite;  // how many were finite
    std::vector<double> mean_all;       // the mean of all (NaN when one was not finite)
    std::vector<double> last;           // the newest step's value
    int64_t steps = 0;
    // mean_all / last of `name`; NaN when no step had it.
    double mean(const std::string& name) const;
    double latest(const std::string& name) const;
  };

  // guard, metrics: may be null (no checks / no records: ranks other than 0 write none).
  // guarded: the names whose values go through the guard (e.g. {"loss"}).
  StepLog(NonFiniteGuard* guard, MetricsWriter* metrics, std::vector<std::string> guarded);

  // Queues step `step` (1-based, global) of epoch `epoch` (1-based; 0 leaves "epoch" out
  // of the record). values: 0-d or one-element tensors on any device (an undefined tensor
  // is a missing value: NaN, written as null, never guarded); extra: host values written
  // as they are (lr, ...).
  void push(int64_t step, int64_t epoch, std::vector<std::pair<std::string, Tensor>> values, Record extra = {});
  // Reads every queued value back (one read), checks, writes the records, empties the
  // queue. last_checkpoint: named by the guard's message when it stops the run.
  Summary flush(const std::string& last_checkpoint);
  size_t size() const { return pending_.size(); }
  bool empty() const { return pending_.empty(); }

 private:
  struct Pending {
    int64_t step, epoch;
    std::vector<std::pair<std::string, Tensor>> values;
    Record extra;
  };
  NonFiniteGuard* guard_;
  MetricsWriter* metrics_;
  std::vector<std::string> guarded_;
  std::vector<Pending> pending_;
};

}  // namespace kiln::run
