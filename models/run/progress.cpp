// The look every trainer shares (progress.h): the progress line, the non-finite-loss guard
// and the final JSON summary.
#include <kiln/models/run/progress.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>

#include <unistd.h>

#include <kiln/core/log.h>
#include <kiln/ops/binary.h>
#include <kiln/ops/index.h>
#include <kiln/ops/reduce.h>
#include <kiln/ops/unary.h>

namespace kiln::run {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// "nan", "inf", "-inf" (or the number, for completeness).
std::string value_text(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

std::string checkpoint_text(const std::string& last_checkpoint) {
  if (last_checkpoint.empty())
    return "No checkpoint was saved before it; run again (perhaps with a lower learning rate)";
  return "The last good checkpoint, '" + last_checkpoint +
         "', is kept: resume from it with --resume (perhaps with a lower learning rate)";
}

}  // namespace

Progress::Progress(std::string program, int64_t total_steps, int64_t start_step, int64_t log_every_steps,
                   double log_every_s)
    : program_(std::move(program)),
      total_steps_(total_steps),
      start_step_(start_step),
      log_every_steps_(log_every_steps),
      log_every_s_(log_every_s),
      tty_(::isatty(STDERR_FILENO) != 0),
      t_start_(Clock::now()),
      t_last_(t_start_),
      last_step_(start_step) {
  KILN_CHECK(total_steps >= 0, program_, ": progress: total steps must be >= 0 (got ", total_steps, ")");
  KILN_CHECK(start_step >= 0 && start_step <= total_steps, program_, ": progress: the start step (", start_step,
             ") must lie in [0, ", total_steps, "]");
  KILN_CHECK(log_every_steps >= 1, program_, ": progress: log every N steps needs N >= 1 (got ", log_every_steps,
             ")");
  KILN_CHECK(std::isfinite(log_every_s) && log_every_s >= 0, program_,
             ": progress: log every S seconds needs a finite S >= 0 (got ", log_every_s, ")");
}

void Progress::set_time_left(double seconds_left) {
  total_known_ = false;
  time_left_ = seconds_left;
  t_time_left_ = Clock::now();
}

bool Progress::due(int64_t step, bool force) const {
  if (force || (total_known_ && step >= total_steps_)) return true;
  if (step - last_step_ >= log_every_steps_) return true;
  return seconds_between(t_last_, Clock::now()) >= log_every_s_;
}

void Progress::log(int64_t step, int64_t epoch, int64_t epochs, double loss, double lr, int64_t images) {
  char buf[96];
  std::snprintf(buf, sizeof buf, "loss %.4f  lr %.3g", loss, lr);
  line(step, epoch, epochs, buf, images);
}

void Progress::log(int64_t step, int64_t epoch, int64_t epochs,
                   const std::vector<std::pair<std::string, double>>& fields, int64_t images) {
  std::string text;
  char buf[64];
  for (auto& [name, v] : fields) {
    std::snprintf(buf, sizeof buf, "%.4g", v);
    text += (text.empty() ? "" : "  ") + name + " " + buf;
  }
  line(step, epoch, epochs, text, images);
}

void Progress::line(int64_t step, int64_t epoch, int64_t epochs, const std::string& fields, int64_t images) {
  const auto now = Clock::now();
  const double interval = seconds_between(t_last_, now);
  const double ips = static_cast<double>(images) / std::max(interval, 1e-9);
  const int64_t done = step - start_step_;
  const int64_t left = std::max<int64_t>(total_steps_ - step, 0);
  const double eta = !total_known_ ? std::max(time_left_ - seconds_between(t_time_left_, now), 0.0)
                     : done > 0 ? seconds_between(t_start_, now) / static_cast<double>(done) * static_cast<double>(left)
                                : NAN;
  const std::string total = total_known_ ? std::to_string(total_steps_) : "?";
  char ep[64] = "";
  if (epochs > 0) std::snprintf(ep, sizeof ep, "  epoch %lld/%lld", (long long)epoch, (long long)epochs);
  std::fprintf(stderr, "%sstep %lld/%s%s  %s  %.0f %s/s  ETA %s%s", tty_ ? "\r" : "", (long long)step,
               total.c_str(), ep, fields.c_str(), ips, unit_.c_str(), format_duration(eta).c_str(),
               tty_ ? "   " : "\n");
  std::fflush(stderr);
  t_last_ = now;
  last_step_ = step;
  line_open_ = tty_;
}

void Progress::end_epoch_line() {
  if (!line_open_) return;
  std::fputc('\n', stderr);
  std::fflush(stderr);
  line_open_ = false;
}

double Progress::elapsed_seconds() const { return seconds_between(t_start_, Clock::now()); }

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  if (seconds >= 9.2e18) return "?";  // beyond int64 seconds: no meaningful clock time
  const int64_t t = static_cast<int64_t>(seconds + 0.5);
  char buf[48];
  if (t >= 3600)
    std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", (long long)(t / 3600), (long long)(t / 60 % 60),
                  (long long)(t % 60));
  else
    std::snprintf(buf, sizeof buf, "%lld:%02lld", (long long)(t / 60), (long long)(t % 60));
  return buf;
}

NonFiniteGuard::NonFiniteGuard(std::string program, NonFinitePolicy policy, int64_t max_skips)
    : program_(std::move(program)), policy_(policy), max_skips_(max_skips) {
  KILN_CHECK(max_skips >= 0, program_, ": the most consecutive non-finite steps to skip must be >= 0 (got ",
             max_skips, ")");
}

bool NonFiniteGuard::check(double loss, int64_t step, int64_t epoch, const std::string& last_checkpoint) {
  if (std::isfinite(loss)) {
    consecutive_ = 0;
    return true;
  }
  const std::string what =
      program_ + ": loss is " + value_text(loss) + " at step " + std::to_string(step) + " (epoch " + std::to_string(epoch) + ")";
  if (policy_ == NonFinitePolicy::Stop)
    throw NonFiniteLoss(what + "; stopping. " + checkpoint_text(last_checkpoint) +
                        ". To skip such steps instead (no update, as a loss scaler would), run with --on-nonfinite skip.");
  if (consecutive_ >= max_skips_)
    throw NonFiniteLoss(what + "; stopping: that is " + std::to_string(consecutive_ + 1) +
                        " non-finite losses in a row, and --on-nonfinite skip skips at most " +
                        std::to_string(max_skips_) + " in a row (" + std::to_string(skipped_total_) +
                        " skipped in all). " + checkpoint_text(last_checkpoint) + ".");
  ++consecutive_;
  ++skipped_total_;
  log_warn(what, "; skipping the step (no update; ", consecutive_, " in a row, at most ", max_skips_, "; ",
           skipped_total_, " skipped in all)");
  return false;
}

void print_summary(const Record& record) {
  const std::string line = format_record(record) + "\n";
  errno = 0;
  const bool ok = std::fwrite(line.data(), 1, line.size(), stdout) == line.size() && std::fflush(stdout) == 0 &&
                  !std::ferror(stdout);
  if (!ok) {
    const int err = errno;
    throw Error(std::string("cannot write the run's summary to stdout: ") +
                (err != 0 ? std::strerror(err) : "write error"));
  }
}

void check_finite_state(const std::string& program, const std::map<std::string, Tensor>& state, int64_t step,
                        const std::string& last_checkpoint) {
  std::vector<std::string> names;
  std::vector<Tensor> peaks;  // max |x| per tensor: NaN or inf when any element is
  for (const auto& [name, t] : state) {
    if (!t.defined() || !is_floating(t.dtype()) || t.numel() == 0) continue;
    names.push_back(name);
    peaks.push_back(kiln::max(kiln::abs(t.detach())).to(DType::F64).to(kCPU).reshape({1}));
  }
  if (peaks.empty()) return;
  const std::vector<double> v = cat(peaks).to_vector<double>();
  for (size_t i = 0; i < v.size(); ++i) {
    if (std::isfinite(v[i])) continue;
    throw NonFiniteLoss(kiln::detail::str(
        program, ": '", names[i], "' holds ", std::isnan(v[i]) ? "nan" : "inf", " at step ", step,
        " (the update diverged); not checkpointing it. ",
        last_checkpoint.empty() ? std::string("No checkpoint was saved before it")
                                : "The last good checkpoint, " + last_checkpoint + ", is kept",
        "; lower the learning rate, or use --on-nonfinite skip"));
  }
}

}  // namespace kiln::run
