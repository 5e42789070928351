// Metrics as JSON lines (metrics.h). nlohmann::json is used here only, never in a header.
#include <kiln/models/run/metrics.h>

#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <limits>
#include <string_view>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <kiln/core/error.h>

namespace kiln::run {
namespace {

std::string in_quotes(const std::string& s) { return "'" + s + "'"; }
std::string errno_text(int err) { return std::strerror(err); }

// write(2) all of [data, data + n), retrying on EINTR and continuing after a short write
// (a pipe may take a line in pieces). Returns 0 or the errno of the failure; `written`
// gets the bytes that did reach the file.
int write_all(int fd, const char* data, size_t n, size_t& written) {
  written = 0;
  while (written < n) {
    ssize_t w = ::write(fd, data + written, n - written);
    if (w < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    if (w == 0) return EIO;  // no progress and no error: do not spin
    written += static_cast<size_t>(w);
  }
  return 0;
}

// Closes a file descriptor unless released; removes a temporary file unless released.
struct TempFile {
  std::string path;
  int fd = -1;
  ~TempFile() {
    if (fd >= 0) ::close(fd);
    if (!path.empty()) ::unlink(path.c_str());
  }
};

std::string dir_of(const std::string& path) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

// Whether a record (one complete line, without its '\n') survives truncate_after(step).
// Lines that are not a JSON object (a torn line glued to the next record, garbage) do not.
bool keep_line(std::string_view line, int64_t step) {
  nlohmann::json j = nlohmann::json::parse(line.begin(), line.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return false;
  auto it = j.find("step");
  if (it == j.end()) return true;  // a record without a step (a config, a summary) is kept
  if (it->is_number_unsigned()) {
    uint64_t s = it->get<uint64_t>();
    return step >= 0 && s <= static_cast<uint64_t>(step);
  }
  if (it->is_number_integer()) return it->get<int64_t>() <= step;
  if (it->is_number_float()) {
    double s = it->get<double>();
    return std::isfinite(s) && s <= static_cast<double>(step);
  }
  return true;  // "step" that is no number (null, a string): not ours to judge, keep it
}

bool blank(std::string_view s) { return s.find_first_not_of(" \t\r") == std::string_view::npos; }

}  // namespace

std::string format_record(const Record& record) {
  nlohmann::ordered_json j = nlohmann::ordered_json::object();
  for (const auto& [key, value] : record) {
    KILN_CHECK(!j.contains(key), "metrics record: key \"", key, "\" appears twice");
    nlohmann::ordered_json& v = j[key];
    std::visit(
        [&v](const auto& x) {
          using T = std::decay_t<decltype(x)>;
          if constexpr (std::is_same_v<T, double>) {
            if (std::isfinite(x)) v = x;  // else stays null: JSON has no NaN or infinity
          } else {
            v = x;
          }
        },
        value);
  }
  // Invalid UTF-8 in a string is replaced (U+FFFD) rather than failing the run's metrics.
  return j.dump(-1, ' ', /*ensure_ascii=*/false, nlohmann::ordered_json::error_handler_t::replace);
}

MetricsWriter::MetricsWriter(const std::string& path) : path_(path) {
  do {
    fd_ = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  } while (fd_ < 0 && errno == EINTR);
  if (fd_ < 0)
    throw Error("metrics file " + in_quotes(path) + ": cannot open for appending: " + errno_text(errno) +
                " (check that its directory exists and is writable)");
}

MetricsWriter::~MetricsWriter() {
  if (fd_ >= 0) ::close(fd_);
}

MetricsWriter::MetricsWriter(MetricsWriter&& o) noexcept : path_(std::move(o.path_)), fd_(o.fd_) { o.fd_ = -1; }

MetricsWriter& MetricsWriter::operator=(MetricsWriter&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    path_ = std::move(o.path_);
    fd_ = o.fd_;
    o.fd_ = -1;
  }
  return *this;
}

void MetricsWriter::write(const Record& record) {
  if (fd_ < 0) return;
  std::string line = format_record(record);
  line += '\n';
  size_t written = 0;
  int err = write_all(fd_, line.data(), line.size(), written);
  if (err == 0) return;
  // A line cut short (a full disk): take the piece back where the file allows it, so the
  // file keeps whole lines; a resume's truncate_after drops it otherwise.
  if (written > 0) {
    off_t end = ::lseek(fd_, 0, SEEK_CUR);
    if (end >= static_cast<off_t>(written)) (void)!::ftruncate(fd_, end - static_cast<off_t>(written));
  }
  throw Error("metrics file " + in_quotes(path_) + ": cannot write a record (" + std::to_string(written) + " of " +
              std::to_string(line.size()) + " bytes written): " + errno_text(err));
}

void MetricsWriter::sync() {
  if (fd_ < 0) return;
  if (::fsync(fd_) == 0) return;
  int err = errno;
  if (err == EINVAL || err == EROFS) return;  // a pipe or a device (/dev/stdout): nothing to sync
  throw Error("metrics file " + in_quotes(path_) + ": cannot sync to disk: " + errno_text(err));
}

int64_t MetricsWriter::truncate_after(const std::string& path, int64_t step) {
  // O_NONBLOCK: a FIFO at the path must not block the run before any output.
  int raw;
  do {
    raw = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  } while (raw < 0 && errno == EINTR);
  if (raw < 0) {
    if (errno == ENOENT) return 0;
    throw Error("metrics file " + in_quotes(path) + ": cannot open to truncate it for --resume: " + errno_text(errno));
  }
  TempFile in;  // (path empty: only closes)
  in.fd = raw;
  struct stat st {};
  if (::fstat(raw, &st) != 0)
    throw Error("metrics file " + in_quotes(path) + ": cannot stat: " + errno_text(errno));
  if (!S_ISREG(st.st_mode)) return 0;  // a pipe or a device keeps nothing to truncate

  std::string text;
  text.resize(static_cast<size_t>(st.st_size));
  size_t got = 0;
  for (;;) {
    if (got == text.size()) text.resize(text.size() + 65536);  // the file may have grown
    ssize_t r = ::read(raw, text.data() + got, text.size() - got);
    if (r < 0) {
      if (errno == EINTR) continue;
      throw Error("metrics file " + in_quotes(path) + ": cannot read: " + errno_text(errno));
    }
    if (r == 0) break;
    got += static_cast<size_t>(r);
  }
  text.resize(got);

  std::string kept;
  kept.reserve(text.size());
  int64_t dropped = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string::npos) {  // a torn last line (no '\n'): a write cut by a crash
      if (!blank(std::string_view(text).substr(pos))) ++dropped;
      pos = text.size();
      break;
    }
    std::string_view line = std::string_view(text).substr(pos, nl - pos);
    if (keep_line(line, step)) {
      kept.append(line);
      kept += '\n';
    } else if (!blank(line)) {
      ++dropped;
    }
    pos = nl + 1;
  }
  if (kept.size() == text.size()) return dropped;  // nothing to change: leave the file alone

  // Write the kept records beside the file, make them durable, then rename over it.
  static std::atomic<uint64_t> sequence{0};
  const std::string dir = dir_of(path);
  TempFile tmp;
  tmp.path = path + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(sequence++);
  tmp.fd = ::open(tmp.path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, st.st_mode & 07777);
  if (tmp.fd < 0) {
    int err = errno;
    tmp.path.clear();
    throw Error("metrics file " + in_quotes(path) + ": cannot create the temporary file for truncating it in " +
                in_quotes(dir) + ": " + errno_text(err) + " (the file is unchanged)");
  }
  auto fail = [&](const char* what, int err) {
    throw Error("metrics file " + in_quotes(path) + ": " + what + " " + in_quotes(tmp.path) + ": " + errno_text(err) +
                " (the file is unchanged)");
  };
  size_t written = 0;
  if (int err = write_all(tmp.fd, kept.data(), kept.size(), written)) fail("cannot write", err);
  if (::fsync(tmp.fd) != 0) fail("cannot sync", errno);
  int fd = tmp.fd;
  tmp.fd = -1;
  if (::close(fd) != 0) fail("cannot close", errno);
  if (::rename(tmp.path.c_str(), path.c_str()) != 0) fail("cannot rename over it", errno);
  tmp.path.clear();
  // Make the rename durable (best effort: some file systems cannot sync a directory).
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    (void)::fsync(dfd);
    ::close(dfd);
  }
  return dropped;
}

}  // namespace kiln::run
