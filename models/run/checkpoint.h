// Checkpoints of a run: <dir>/step-<12 digits>.safetensors, written atomically (temp file,
// fsync, rename, fsync of the directory) by save_safetensors, each tensor with a CRC32 in
// the file's metadata that load_safetensors verifies (core/safetensors.h).
//
// save() keeps the newest keep_last files and deletes older ones (after the new one is
// published, so there is always at least one good checkpoint). latest() is the newest
// complete checkpoint; only regular files count (a FIFO or a directory at a checkpoint's
// name is an error naming it, never a hang).
#pragma once
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <kiln/core/tensor.h>

namespace kiln::run {

struct CheckpointOptions {
  int64_t keep_last = 2;  // >= 1
};

class Checkpointer {
 public:
  explicit Checkpointer(std::string dir, CheckpointOptions options = {});
  // Writes step-<step>.safetensors and prunes old ones; returns its path.
  std::string save(int64_t step, const std::map<std::string, Tensor>& tensors,
                   const std::map<std::string, std::string>& metadata);
  // The newest checkpoint, or nothing when the directory holds none.
  std::optional<std::string> latest() const;
  // Every checkpoint, oldest first.
  std::vector<std::string> list() const;
  // Deletes temporary files of saves that were killed (<dir>/*.tmp.*); returns how many.
  int remove_stale_temps() const;
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
  CheckpointOptions options_;
};

// The path of step `step`'s checkpoint in `dir`.
std::string checkpoint_path(const std::string& dir, int64_t step);

// ---- what every trainer's checkpoint holds ----
// A trainer's checkpoint is one flat map: each module's / optimizer's state under a
// prefix ("model.", "optim.", "G.", "D.", ...) and its counters as 0-d tensors
// ("train.step", ...), with the settings a resumed run must share as metadata.

// Adds `state` to `out` under `prefix`.
void put_state(std::map<std::string, Tensor>& out, const std::string& prefix,
               const std::map<std::string, Tensor>& state);
// The entries of `all` under `prefix`, with the prefix removed.
std::map<std::string, Tensor> sub_state(const std::map<std::string, Tensor>& all, const std::string& prefix);
Tensor i64_scalar(int64_t v);
Tensor f64_scalar(double v);
// A one-element i64 / f64 entry; a kiln::Error naming the checkpoint `path` and the entry
// when it is missing or of another kind.
int64_t get_i64(const std::map<std::string, Tensor>& t, const std::string& name, const std::string& path);
double get_f64(const std::map<std::string, Tensor>& t, const std::string& name, const std::string& path);

// Resuming: the newest checkpoint of `ckpt`, after checking that its metadata agrees with
// `expected` on every key (a run resumed with another batch size or seed is not the same
// run). Throws kiln::Error naming the checkpoint, the key and both values, or saying that
// there is no checkpoint yet.
struct ResumePoint {
  std::string path;
  std::map<std::string, Tensor> tensors;
  std::map<std::string, std::string> metadata;
};
ResumePoint load_resume_point(const std::string& program, const Checkpointer& ckpt,
                              const std::map<std::string, std::string>& expected);

}  // namespace kiln::run
