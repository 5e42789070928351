// A training run's directory: one folder holds everything a run writes.
//
//   <run>/config.toml        the effective configuration (every flag, defaults included)
//   <run>/metrics.jsonl      one JSON record per line (models/run/metrics.h)
//   <run>/checkpoints/       step-<12 digits>.safetensors (models/run/checkpoint.h)
//   <run>/plots/             PNG curves drawn from the metrics at the end (tools/plot_metrics.py)
//   <run>/logs/              per-rank logs (kiln-run --log-dir <run>/logs)
//   <run>/run.lock           held (flock) while a run is alive
//
// Nothing is silently overwritten: starting a fresh run in a directory that already holds a
// run refuses, naming --resume and --overwrite; --overwrite deletes only the files above
// (never anything else in the directory, nor a file this process or its parent has open:
// the logs that `kiln-run --log-dir <run>/logs` opened for the new run); a second live run
// on the same directory fails at once, naming the pid that holds it. Stale temporary files
// left by a save that was killed (checkpoints/*.tmp.*, and config.toml.tmp.* and
// metrics.jsonl.tmp.* of an interrupted rewrite) are removed when a run starts.
#pragma once
#include <string>

namespace kiln::run {

enum class StartMode {
  Fresh,      // the directory must not hold a run
  Resume,     // continue the run the directory holds (refuses, naming the path, when it holds none)
  Overwrite,  // delete the run the directory holds, then start fresh
};

class RunDir {
 public:
  // Creates `path` (and parents) if needed, takes the lock and applies `mode`. Throws
  // kiln::Error with a message a user can act on. `main_rank` false (data-parallel ranks
  // other than 0): only checks that the directory exists, takes no lock, writes nothing.
  RunDir(std::string path, StartMode mode, bool main_rank = true);
  ~RunDir();  // releases the lock
  RunDir(const RunDir&) = delete;
  RunDir& operator=(const RunDir&) = delete;

  const std::string& path() const { return path_; }
  std::string config_path() const;      // <run>/config.toml
  std::string metrics_path() const;     // <run>/metrics.jsonl
  std::string checkpoint_dir() const;   // <run>/checkpoints
  std::string plots_dir() const;        // <run>/plots
  std::string logs_dir() const;         // <run>/logs
  // Whether a directory holds a run (any of config.toml, metrics.jsonl, checkpoints/).
  static bool holds_run(const std::string& path);

 private:
  std::string path_;
  int lock_fd_ = -1;
};

}  // namespace kiln::run
