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

}  // namespace kiln::run
