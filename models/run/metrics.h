// Metrics as JSON lines: one record (a flat JSON object) per line, appended.
//
// Nothing is torn or duplicated: each record is formatted in memory and written with one
// write(2) to a file opened O_APPEND, so a crash or a kill leaves whole lines only (a line
// cut by a full disk is detected: the short write throws); every failed write throws
// kiln::Error naming the file and the reason (ENOSPC: "No space left on device"), so the
// run exits non-zero instead of carrying on without its metrics. On resume,
// truncate_after(step) first drops a torn last line and every record of a step after the
// checkpoint's, so the steps that are trained again are not recorded twice.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <variant>
#include <vector>

namespace kiln::run {

// A metric value: integers, numbers (non-finite ones are written as null), strings, flags.
using MetricValue = std::variant<int64_t, double, std::string, bool>;
using Record = std::vector<std::pair<std::string, MetricValue>>;

// One JSON object on one line, keys in order, no trailing newline (nlohmann::json inside).
std::string format_record(const Record& record);

class MetricsWriter {
 public:
  MetricsWriter() = default;  // writes nothing (ranks other than 0)
  explicit MetricsWriter(const std::string& path);  // opens for appending, creating it
  ~MetricsWriter();
  MetricsWriter(MetricsWriter&&) noexcept;
  MetricsWriter& operator=(MetricsWriter&&) noexcept;
  MetricsWriter(const MetricsWriter&) = delete;
  MetricsWriter& operator=(const MetricsWriter&) = delete;

  bool is_open() const { return fd_ >= 0; }
  void write(const Record& record);  // throws kiln::Error on any failure
  void sync();                       // fsync: called before a checkpoint is published

  // Rewrites `path` keeping only its complete lines whose "step" is <= step (records
  // without a "step" are kept), atomically (temp file + rename). Returns the number of
  // records dropped. A missing file is fine (0).
  static int64_t truncate_after(const std::string& path, int64_t step);

 private:
  std::string path_;
  int fd_ = -1;
};

}  // namespace kiln::run
