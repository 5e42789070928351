// A run's checkpoints (see checkpoint.h): names by step, newest-N pruning after the new one
// is published, and the directory listing that finds them. The listing looks at each
// entry's type before anything opens it, so a FIFO or a directory with a checkpoint's name
// is reported instead of blocking a reader.
#include <kiln/models/run/checkpoint.h>

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <system_error>
#include <utility>

#include <kiln/core/error.h>
#include <kiln/core/log.h>
#include <kiln/core/safetensors.h>

namespace kiln::run {

namespace {

namespace fs = std::filesystem;

constexpr int kStepDigits = 12;
constexpr int64_t kMaxStep = 999'999'999'999;  // 12 digits
constexpr std::string_view kPrefix = "step-", kSuffix = ".safetensors";

std::string in_quotes(const std::string& s) { return "'" + s + "'"; }

// The step of a name "step-<12 digits>.safetensors", or -1 for any other name.
int64_t step_of(const std::string& name) {
  if (name.size() != kPrefix.size() + kStepDigits + kSuffix.size()) return -1;
  if (name.compare(0, kPrefix.size(), kPrefix) != 0) return -1;
  if (name.compare(kPrefix.size() + kStepDigits, kSuffix.size(), kSuffix) != 0) return -1;
  int64_t step = 0;
  for (size_t i = kPrefix.size(); i < kPrefix.size() + kStepDigits; ++i) {
    if (name[i] < '0' || name[i] > '9') return -1;
    step = step * 10 + (name[i] - '0');
  }
  return step;
}

const char* kind_of(fs::file_type t) {
  switch (t) {
    case fs::file_type::directory: return "a directory";
    case fs::file_type::fifo: return "a FIFO (named pipe)";
    case fs::file_type::character: return "a character device";
    case fs::file_type::block: return "a block device";
    case fs::file_type::socket: return "a socket";
    case fs::file_type::symlink:
    case fs::file_type::not_found: return "a dangling symbolic link";
    default: return "not a regular file";
  }
}

// Regular files whose name matches, by step (oldest first); throws for a matching name
// that is something else. A missing directory holds no checkpoints.
std::vector<std::pair<int64_t, std::string>> scan(const std::string& dir) {
  std::vector<std::pair<int64_t, std::string>> out;
  std::error_code ec;
  fs::file_status ds = fs::status(dir, ec);
  if (ec || ds.type() == fs::file_type::not_found) {
    if (ds.type() == fs::file_type::not_found) return out;
    throw Error("checkpoint directory " + in_quotes(dir) + ": cannot look at it: " + ec.message());
  }
  if (ds.type() != fs::file_type::directory)
    throw Error("checkpoint directory " + in_quotes(dir) + " is " + kind_of(ds.type()) + ", not a directory");
  fs::directory_iterator it(dir, ec), end;
  if (ec) throw Error("checkpoint directory " + in_quotes(dir) + ": cannot list it: " + ec.message());
  for (; it != end; it.increment(ec)) {
    if (ec) break;
    const std::string name = it->path().filename().string();
    const int64_t step = step_of(name);
    if (step < 0) continue;
    const std::string path = it->path().string();
    std::error_code sec;
    fs::file_status st = fs::status(it->path(), sec);  // follows a symbolic link
    if (sec && st.type() != fs::file_type::not_found)
      throw Error("checkpoint " + in_quotes(path) + ": cannot look at it: " + sec.message());
    if (st.type() == fs::file_type::not_found && fs::symlink_status(it->path(), sec).type() == fs::file_type::not_found)
      continue;  // deleted since it was listed
    if (st.type() != fs::file_type::regular)
      throw Error("checkpoint " + in_quotes(path) + " is " + kind_of(st.type()) +
                  ", not a regular file: move it out of the checkpoint directory");
    out.emplace_back(step, path);
  }
  if (ec) throw Error("checkpoint directory " + in_quotes(dir) + ": cannot list it: " + ec.message());
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

std::string checkpoint_path(const std::string& dir, int64_t step) {
  KILN_CHECK(step >= 0 && step <= kMaxStep, "checkpoint_path: step ", step, " is outside [0, ", kMaxStep,
             "] (checkpoint names hold ", kStepDigits, " digits)");
  char name[64];
  std::snprintf(name, sizeof name, "step-%012lld.safetensors", static_cast<long long>(step));
  return (fs::path(dir) / name).string();
}

Checkpointer::Checkpointer(std::string dir, CheckpointOptions options) : dir_(std::move(dir)), options_(options) {
  KILN_CHECK(!dir_.empty(), "Checkpointer: the checkpoint directory is empty");
  KILN_CHECK(options_.keep_last >= 1, "Checkpointer: keep_last is ", options_.keep_last,
             "; it must be at least 1 (the newest checkpoint is always kept)");
}

std::string Checkpointer::save(int64_t step, const std::map<std::string, Tensor>& tensors,
                               const std::map<std::string, std::string>& metadata) {
  const std::string path = checkpoint_path(dir_, step);
  std::error_code ec;
  fs::create_directories(dir_, ec);
  if (ec) throw Error("checkpoint directory " + in_quotes(dir_) + ": cannot create it: " + ec.message());
  // Renaming over a FIFO or a device would quietly replace it: refuse, like the listing.
  fs::file_status st = fs::symlink_status(path, ec);
  if (!ec && st.type() != fs::file_type::not_found && st.type() != fs::file_type::regular &&
      st.type() != fs::file_type::symlink)
    throw Error("checkpoint " + in_quotes(path) + " is " + kind_of(st.type()) +
                ", not a regular file: move it out of the checkpoint directory");
  save_safetensors(path, tensors, metadata);

  // The new checkpoint is published: now the oldest beyond keep_last can go (never the
  // one just written, even when newer steps are there).
  auto all = scan(dir_);
  int64_t excess = static_cast<int64_t>(all.size()) - options_.keep_last;
  for (const auto& [s, p] : all) {
    if (excess <= 0) break;
    if (p == path) continue;
    if (::unlink(p.c_str()) != 0 && errno != ENOENT)
      throw Error("checkpoint " + in_quotes(p) + ": cannot delete it (keep_last " + std::to_string(options_.keep_last) +
                  "): " + std::system_category().message(errno));
    log_debug("Checkpointer: deleted ", p, " (keep_last ", options_.keep_last, ")");
    --excess;
  }
  return path;
}

std::optional<std::string> Checkpointer::latest() const {
  auto all = scan(dir_);
  if (all.empty()) return std::nullopt;
  return all.back().second;
}

std::vector<std::string> Checkpointer::list() const {
  std::vector<std::string> out;
  for (auto& [step, path] : scan(dir_)) out.push_back(std::move(path));
  return out;
}

int Checkpointer::remove_stale_temps() const {
  std::error_code ec;
  if (!fs::is_directory(dir_, ec)) return 0;
  int removed = 0;
  fs::directory_iterator it(dir_, ec), end;
  if (ec) throw Error("checkpoint directory " + in_quotes(dir_) + ": cannot list it: " + ec.message());
  for (; it != end; it.increment(ec)) {
    if (ec) break;
    // save_safetensors writes "<target>.tmp.<pid>.<n>" beside its target.
    const std::string name = it->path().filename().string();
    if (name.find(".tmp.") == std::string::npos) continue;
    std::error_code sec;
    if (it->symlink_status(sec).type() != fs::file_type::regular) continue;
    const std::string path = it->path().string();
    if (::unlink(path.c_str()) != 0) {
      if (errno == ENOENT) continue;
      throw Error("checkpoint directory " + in_quotes(dir_) + ": cannot delete the stale temporary file " + in_quotes(path) +
                  ": " + std::system_category().message(errno));
    }
    log_info("removed ", path, ", left by a save that was interrupted");
    ++removed;
  }
  if (ec) throw Error("checkpoint directory " + in_quotes(dir_) + ": cannot list it: " + ec.message());
  return removed;
}

void put_state(std::map<std::string, Tensor>& out, const std::string& prefix,
               const std::map<std::string, Tensor>& state) {
  for (auto& [k, v] : state) out[prefix + k] = v;
}

std::map<std::string, Tensor> sub_state(const std::map<std::string, Tensor>& all, const std::string& prefix) {
  std::map<std::string, Tensor> out;
  for (auto& [k, v] : all)
    if (k.rfind(prefix, 0) == 0) out[k.substr(prefix.size())] = v;
  return out;
}

Tensor i64_scalar(int64_t v) { return scalar_tensor(v, DType::I64); }
Tensor f64_scalar(double v) { return scalar_tensor(v, DType::F64); }

namespace {
const Tensor& get_scalar(const std::map<std::string, Tensor>& t, const std::string& name, const std::string& path,
                         DType dtype) {
  auto it = t.find(name);
  KILN_CHECK(it != t.end(), "checkpoint ", path, " has no '", name, "'");
  KILN_CHECK(it->second.numel() == 1 && it->second.dtype() == dtype, "checkpoint ", path, ": '", name,
             "' is not a one-element ", dtype_name(dtype), " tensor");
  return it->second;
}
}  // namespace

int64_t get_i64(const std::map<std::string, Tensor>& t, const std::string& name, const std::string& path) {
  return get_scalar(t, name, path, DType::I64).item<int64_t>();
}
double get_f64(const std::map<std::string, Tensor>& t, const std::string& name, const std::string& path) {
  return get_scalar(t, name, path, DType::F64).item<double>();
}

ResumePoint load_resume_point(const std::string& program, const Checkpointer& ckpt,
                              const std::map<std::string, std::string>& expected) {
  std::optional<std::string> latest = ckpt.latest();
  KILN_CHECK(latest.has_value(), program, ": --resume: ", ckpt.dir(),
             " holds no checkpoint yet (start it again without --resume, with --overwrite)");
  SafetensorsContents ck = load_safetensors_with_metadata(*latest, kCPU);
  for (auto& [k, v] : expected) {
    auto it = ck.metadata.find(k);
    const std::string have = it == ck.metadata.end() ? "<missing>" : it->second;
    KILN_CHECK(have == v, program, ": --resume: checkpoint ", *latest, " was written with ", k, "=", have,
               ", this run has ", v);
  }
  return ResumePoint{*latest, std::move(ck.tensors), std::move(ck.metadata)};
}

}  // namespace kiln::run
