// A run's directory (see run_dir.h): the lock that keeps two live runs apart, the rules of
// --resume and --overwrite, and the clean-up of what a killed save left behind.
//
// The lock is flock(2) on <run>/run.lock. flock locks belong to an open file description,
// so the kernel drops the lock when its holder exits however it dies (a stale run.lock
// from a killed run is harmless), and a second open + flock conflicts even within one
// process. The lock file is never deleted: unlinking it while another process has it open
// would let two runs each lock a different inode.
//
// --overwrite keeps any file that this process or its parent has open: `kiln-run --log-dir
// <run>/logs` opens the ranks' logs before it starts the trainer, and deleting them would
// lose the new run's logs, not the old one's.
#include <kiln/models/run/run_dir.h>

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <set>
#include <string_view>
#include <utility>
#include <system_error>
#include <vector>

#include <kiln/core/error.h>
#include <kiln/core/log.h>
#include <kiln/models/run/checkpoint.h>

namespace kiln::run {

namespace {

namespace fs = std::filesystem;

constexpr const char* kConfig = "config.toml";
constexpr const char* kMetrics = "metrics.jsonl";
constexpr const char* kCheckpoints = "checkpoints";
constexpr const char* kPlots = "plots";
constexpr const char* kLogs = "logs";
constexpr const char* kLock = "run.lock";

std::string in_quotes(const std::string& s) { return "'" + s + "'"; }
std::string errno_text(int err) { return std::system_category().message(err); }

bool present(const fs::path& p) {
  std::error_code ec;
  return fs::symlink_status(p, ec).type() != fs::file_type::not_found;
}

// The pid written in a lock file, or "" when it cannot be read.
std::string read_pid(int fd) {
  char buf[32];
  ssize_t n = ::pread(fd, buf, sizeof buf - 1, 0);
  if (n <= 0) return "";
  std::string s(buf, static_cast<size_t>(n));
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  for (char c : s)
    if (c < '0' || c > '9') return "";
  return s;
}

// Closes the lock file unless the constructor got to the end.
struct FdGuard {
  int fd = -1;
  ~FdGuard() {
    if (fd >= 0) ::close(fd);
  }
  int release() {
    int f = fd;
    fd = -1;
    return f;
  }
};

// Takes <run>/run.lock, writing this process's pid into it; throws naming the holder.
int take_lock(const std::string& run, const std::string& lock_path) {
  FdGuard g;
  // O_NONBLOCK: a FIFO at the lock's name must not block the open.
  g.fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NONBLOCK, 0644);
  if (g.fd < 0) throw Error("run directory " + in_quotes(run) + ": cannot open the lock file " + in_quotes(lock_path) +
                            ": " + errno_text(errno));
  struct stat st {};
  if (::fstat(g.fd, &st) != 0)
    throw Error("run directory " + in_quotes(run) + ": cannot stat " + in_quotes(lock_path) + ": " + errno_text(errno));
  if (!S_ISREG(st.st_mode))
    throw Error("run directory " + in_quotes(run) + ": the lock file " + in_quotes(lock_path) +
                " is not a regular file; remove it");
  int rc;
  do rc = ::flock(g.fd, LOCK_EX | LOCK_NB);
  while (rc != 0 && errno == EINTR);
  if (rc != 0) {
    if (errno == EWOULDBLOCK) {
      std::string pid = read_pid(g.fd);
      throw Error("run directory " + in_quotes(run) + " is in use by another live run (" +
                  (pid.empty() ? std::string("pid unknown") : "pid " + pid) + ", holding " + in_quotes(lock_path) +
                  "): wait for it to end, stop it, or use another directory");
    }
    throw Error("run directory " + in_quotes(run) + ": cannot lock " + in_quotes(lock_path) + ": " + errno_text(errno));
  }
  // Ours now: record who holds it, for the message above.
  const std::string pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(g.fd, 0) != 0 || ::pwrite(g.fd, pid.data(), pid.size(), 0) != static_cast<ssize_t>(pid.size()))
    throw Error("run directory " + in_quotes(run) + ": cannot write the pid into " + in_quotes(lock_path) + ": " +
                errno_text(errno));
  return g.release();
}

using FileId = std::pair<dev_t, ino_t>;

// The regular files open in this process and in its parent (a launcher writing the logs),
// as far as /proc shows them; empty where it does not.
std::set<FileId> files_in_use() {
  std::set<FileId> out;
  for (const std::string& dir : {std::string("/proc/self/fd"), "/proc/" + std::to_string(::getppid()) + "/fd"}) {
    std::error_code ec;
    fs::directory_iterator it(dir, ec), end;
    for (; !ec && it != end; it.increment(ec)) {
      struct stat st {};
      if (::stat(it->path().c_str(), &st) == 0 && S_ISREG(st.st_mode)) out.emplace(st.st_dev, st.st_ino);
    }
  }
  return out;
}

// Deletes `p`: a file, or a directory with everything in it (a symbolic link itself, never
// what it points to), except the files in `keep` and the directories that hold them.
// Returns whether `p` is gone.
bool remove_except(const std::string& run, const fs::path& p, const std::set<FileId>& keep) {
  struct stat st {};
  if (::lstat(p.c_str(), &st) != 0) {
    if (errno == ENOENT) return true;
    throw Error("run directory " + in_quotes(run) + ": --overwrite cannot look at " + in_quotes(p.string()) + ": " +
                errno_text(errno));
  }
  bool all = true;
  if (S_ISDIR(st.st_mode)) {
    std::error_code ec;
    std::vector<fs::path> children;
    for (fs::directory_iterator it(p, ec), end; !ec && it != end; it.increment(ec)) children.push_back(it->path());
    if (ec)
      throw Error("run directory " + in_quotes(run) + ": --overwrite cannot list " + in_quotes(p.string()) + ": " +
                  ec.message());
    for (const fs::path& c : children) all = remove_except(run, c, keep) && all;
    if (!all) return false;
    if (::rmdir(p.c_str()) != 0 && errno != ENOENT)
      throw Error("run directory " + in_quotes(run) + ": --overwrite cannot delete " + in_quotes(p.string()) + ": " +
                  errno_text(errno));
    return true;
  }
  if (S_ISREG(st.st_mode) && keep.count({st.st_dev, st.st_ino})) {
    log_info("run directory ", run, ": --overwrite keeps ", p.string(), ", which is open (a log being written?)");
    return false;
  }
  if (::unlink(p.c_str()) != 0 && errno != ENOENT)
    throw Error("run directory " + in_quotes(run) + ": --overwrite cannot delete " + in_quotes(p.string()) + ": " +
                errno_text(errno));
  return true;
}

// Temporary files of an atomic rewrite of the run's own files ("metrics.jsonl.tmp.<...>",
// "config.toml.tmp.<...>"), left by a process that was killed.
int remove_stale_run_temps(const std::string& run) {
  int removed = 0;
  std::error_code ec;
  fs::directory_iterator it(run, ec), end;
  if (ec) throw Error("run directory " + in_quotes(run) + ": cannot list it: " + ec.message());
  for (; it != end; it.increment(ec)) {
    if (ec) break;
    const std::string name = it->path().filename().string();
    bool ours = false;
    for (std::string_view base : {kConfig, kMetrics})
      if (name.size() > base.size() + 5 && name.compare(0, base.size(), base) == 0 &&
          name.compare(base.size(), 5, ".tmp.") == 0)
        ours = true;
    std::error_code sec;
    if (!ours || it->symlink_status(sec).type() != fs::file_type::regular) continue;
    const std::string path = it->path().string();
    if (::unlink(path.c_str()) != 0 && errno != ENOENT)
      throw Error("run directory " + in_quotes(run) + ": cannot delete the stale temporary file " + in_quotes(path) +
                  ": " + errno_text(errno));
    log_info("removed ", path, ", left by a run that was interrupted");
    ++removed;
  }
  if (ec) throw Error("run directory " + in_quotes(run) + ": cannot list it: " + ec.message());
  return removed;
}

}  // namespace

RunDir::RunDir(std::string path, StartMode mode, bool main_rank) : path_(std::move(path)) {
  KILN_CHECK(!path_.empty(), "run directory: the path is empty");
  std::error_code ec;
  fs::file_status st = fs::status(path_, ec);
  const bool exists = st.type() != fs::file_type::not_found;
  if (ec && exists) throw Error("run directory " + in_quotes(path_) + ": cannot look at it: " + ec.message());
  if (exists && st.type() != fs::file_type::directory)
    throw Error("run directory " + in_quotes(path_) + " exists but is not a directory");

  if (!main_rank) {
    // Rank 0 creates, locks and cleans the directory; the others only read from it.
    if (!exists)
      throw Error("run directory " + in_quotes(path_) +
                  " does not exist (rank 0 creates it: start the other ranks after it has)");
    return;
  }
  if (mode == StartMode::Resume && !exists)
    throw Error("run directory " + in_quotes(path_) +
                " does not exist, so there is no run to --resume; start a new run without --resume");
  if (!exists) {
    fs::create_directories(path_, ec);
    if (ec) throw Error("run directory " + in_quotes(path_) + ": cannot create it: " + ec.message());
  }

  FdGuard lock;
  lock.fd = take_lock(path_, (fs::path(path_) / kLock).string());

  // Under the lock: no other run can change the directory while the mode is applied.
  switch (mode) {
    case StartMode::Fresh:
      if (holds_run(path_)) {
        std::string found;
        for (const char* name : {kConfig, kMetrics, kCheckpoints})
          if (present(fs::path(path_) / name)) found += std::string(found.empty() ? "" : ", ") + name;
        throw Error("run directory " + in_quotes(path_) + " already holds a run (" + found +
                    "): pass --resume to continue it, or --overwrite to delete it and start again");
      }
      break;
    case StartMode::Resume:
      if (!holds_run(path_))
        throw Error("run directory " + in_quotes(path_) + " holds no run to --resume (no " + kConfig + ", " + kMetrics +
                    " or " + kCheckpoints + "/); start a new run without --resume");
      break;
    case StartMode::Overwrite: {
      const std::set<FileId> keep = files_in_use();
      for (const char* name : {kConfig, kMetrics, kCheckpoints, kPlots, kLogs})
        remove_except(path_, fs::path(path_) / name, keep);
      break;
    }
  }

  // Each one removed is logged.
  Checkpointer(checkpoint_dir()).remove_stale_temps();
  remove_stale_run_temps(path_);
  lock_fd_ = lock.release();
}

RunDir::~RunDir() {
  if (lock_fd_ >= 0) ::close(lock_fd_);  // releases the flock
}

std::string RunDir::config_path() const { return (fs::path(path_) / kConfig).string(); }
std::string RunDir::metrics_path() const { return (fs::path(path_) / kMetrics).string(); }
std::string RunDir::checkpoint_dir() const { return (fs::path(path_) / kCheckpoints).string(); }
std::string RunDir::plots_dir() const { return (fs::path(path_) / kPlots).string(); }
std::string RunDir::logs_dir() const { return (fs::path(path_) / kLogs).string(); }

bool RunDir::holds_run(const std::string& path) {
  for (const char* name : {kConfig, kMetrics, kCheckpoints})
    if (present(fs::path(path) / name)) return true;
  return false;
}

}  // namespace kiln::run
