// The queued per-step values of a training loop (models/run/step_log.h).
#include <kiln/models/run/step_log.h>

#include <algorithm>
#include <cmath>

#include <kiln/core/error.h>
#include <kiln/ops/binary.h>
#include <kiln/ops/index.h>

namespace kiln::run {

namespace {
size_t index_of(const std::vector<std::string>& names, const std::string& name) {
  return static_cast<size_t>(std::find(names.begin(), names.end(), name) - names.begin());
}
}  // namespace

double StepLog::Summary::mean(const std::string& name) const {
  const size_t i = index_of(names, name);
  return i < names.size() ? mean_all[i] : NAN;
}

double StepLog::Summary::latest(const std::string& name) const {
  const size_t i = index_of(names, name);
  return i < names.size() ? last[i] : NAN;
}

StepLog::StepLog(NonFiniteGuard* guard, MetricsWriter* metrics, std::vector<std::string> guarded)
    : guard_(guard), metrics_(metrics), guarded_(std::move(guarded)) {}

void StepLog::push(int64_t step, int64_t epoch, std::vector<std::pair<std::string, Tensor>> values, Record extra) {
  for (auto& [name, t] : values) {
    if (!t.defined()) continue;
    KILN_CHECK(t.numel() == 1, "StepLog::push: the value '", name, "' of step ", step, " has ", t.numel(),
               " elements; one per step is logged");
    t = t.detach();
  }
  pending_.push_back({step, epoch, std::move(values), std::move(extra)});
}

StepLog::Summary StepLog::flush(const std::string& last_checkpoint) {
  Summary s;
  if (pending_.empty()) return s;
  // One read for everything: the defined values of every step, as f64, in order.
  std::vector<Tensor> parts;
  for (const Pending& p : pending_)
    for (const auto& [name, t] : p.values)
      if (t.defined()) parts.push_back(cast(t, DType::F64).reshape({1}));
  std::vector<double> v;
  if (!parts.empty()) v = cat(parts).to_vector<double>();
  size_t k = 0;
  for (const Pending& p : pending_) {
    Record rec{{"type", std::string("step")}};
    if (p.epoch > 0) rec.push_back({"epoch", p.epoch});
    rec.push_back({"step", p.step});
    for (const auto& [name, t] : p.values) {
      const double x = t.defined() ? v[k++] : NAN;
      if (t.defined() && guard_ != nullptr &&
          std::find(guarded_.begin(), guarded_.end(), name) != guarded_.end())
        guard_->check(x, p.step, p.epoch, last_checkpoint);  // throws under the Stop policy
      size_t i = index_of(s.names, name);
      if (i == s.names.size()) {
        s.names.push_back(name);
        s.sum_finite.push_back(0);
        s.count_finite.push_back(0);
        s.mean_all.push_back(0);
        s.last.push_back(NAN);
      }
      if (t.defined()) {
        if (std::isfinite(x)) s.sum_finite[i] += x, ++s.count_finite[i];
        s.mean_all[i] += x;
        s.last[i] = x;
      }
      rec.push_back({name, x});
    }
    for (const auto& e : p.extra) rec.push_back(e);
    if (metrics_ != nullptr && metrics_->is_open()) metrics_->write(rec);
  }
  // mean_all: over the steps that had the value.
  for (size_t i = 0; i < s.names.size(); ++i) {
    int64_t n = 0;
    for (const Pending& p : pending_)
      for (const auto& [name, t] : p.values)
        if (name == s.names[i] && t.defined()) ++n;
    s.mean_all[i] = n > 0 ? s.mean_all[i] / static_cast<double>(n) : NAN;
  }
  s.steps = static_cast<int64_t>(pending_.size());
  pending_.clear();
  return s;
}

}  // namespace kiln::run
