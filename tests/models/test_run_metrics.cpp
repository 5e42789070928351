// The training-run library's metrics JSONL (models/run/metrics.h) and the shared look of
// trainers (models/run/progress.h): record formatting, whole-line appends, write errors
// (a full disk: /dev/full, and a 1 MiB tmpfs when mount is permitted), truncation on
// resume, the non-finite-loss guard, the progress line and the summary line.
#include "test_util.h"

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <kiln/models/run/metrics.h>
#include <kiln/models/run/progress.h>

using namespace kiln;
using namespace kiln::run;
using kiln::test::TempDir;
namespace fs = std::filesystem;

namespace {


std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream os;
  os << in.rdbuf();
  return os.str();
}

void write_text(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  REQUIRE(out.good());
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string l; std::getline(in, l);) out.push_back(l);
  return out;
}

// Points a standard file descriptor (stdout, stderr) at `path` for the guard's lifetime.
struct Redirect {
  int target, saved;
  Redirect(int fd, const std::string& path) : target(fd) {
    std::fflush(fd == STDOUT_FILENO ? stdout : stderr);
    saved = ::dup(fd);
    REQUIRE(saved >= 0);
    int f = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    REQUIRE(f >= 0);
    REQUIRE(::dup2(f, fd) == fd);
    ::close(f);
  }
  ~Redirect() {
    FILE* stream = target == STDOUT_FILENO ? stdout : stderr;
    std::fflush(stream);
    std::clearerr(stream);
    ::dup2(saved, target);
    ::close(saved);
  }
};

// A 1 MiB tmpfs mounted on a fresh folder, when this process may mount (root in a
// container that allows it); `ok` false otherwise.
struct SmallTmpfs {
  TempDir dir;
  bool ok = false;
  SmallTmpfs() { ok = ::mount("tmpfs", dir.path.c_str(), "tmpfs", 0, "size=1m,mode=0700") == 0; }
  ~SmallTmpfs() {
    if (ok) ::umount2(dir.path.c_str(), MNT_DETACH);
  }
};

Record step_record(int64_t step, double loss) {
  return {{"type", std::string("step")}, {"epoch", int64_t{1}}, {"step", step}, {"loss", loss}};
}

}  // namespace

TEST_CASE("format_record writes one JSON object, keys in order, non-finite numbers as null", "[run]") {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  Record r{{"type", std::string("step")}, {"step", int64_t{12}}, {"loss", 0.25},     {"ok", true},
           {"nan", nan},                  {"inf", inf},          {"ninf", -inf},     {"big", int64_t{-9007199254740993}},
           {"off", false},                {"lr", 0.1}};
  CHECK(format_record(r) ==
        R"({"type":"step","step":12,"loss":0.25,"ok":true,"nan":null,"inf":null,"ninf":null,)"
        R"("big":-9007199254740993,"off":false,"lr":0.1})");
  CHECK(format_record({}) == "{}");
  // Order is the caller's, not alphabetical.
  CHECK(format_record({{"z", int64_t{1}}, {"a", int64_t{2}}}) == R"({"z":1,"a":2})");
  // Doubles round-trip exactly.
  CHECK(format_record({{"x", 1.0 / 3.0}}) == R"({"x":0.3333333333333333})");
  // Strings are escaped (quotes, backslashes, control characters, newlines stay on the line).
  const std::string s = format_record({{"k\"ey", std::string("a\"b\\c\nd\te\x01")}});
  CHECK(s == R"({"k\"ey":"a\"b\\c\nd\te\u0001"})");
  CHECK(s.find('\n') == std::string::npos);
  // UTF-8 is kept; an invalid byte does not fail the record.
  CHECK(format_record({{"name", std::string("F\xc3\xa9")}}) == "{\"name\":\"F\xc3\xa9\"}");
  CHECK(format_record({{"bad", std::string("a\xff")}}).find('\n') == std::string::npos);
  // A key given twice is a bug in the caller.
  CHECK_KILN_ERROR(format_record({{"step", int64_t{1}}, {"step", int64_t{2}}}), "\"step\" appears twice");
}

TEST_CASE("MetricsWriter appends whole lines and keeps what was there", "[run]") {
  TempDir dir;
  const std::string path = dir.file("metrics.jsonl");
  {
    MetricsWriter w(path);
    CHECK(w.is_open());
    w.write(step_record(1, 0.5));
    w.write(step_record(2, std::nan("")));
    w.sync();
  }
  {
    MetricsWriter w(path);  // a second invocation (resume) appends
    MetricsWriter moved(std::move(w));
    CHECK_FALSE(w.is_open());
    moved.write({{"type", std::string("summary")}, {"ok", true}});
    MetricsWriter assigned;
    assigned = std::move(moved);
    assigned.write(step_record(3, 0.125));
  }
  CHECK(read_text(path) ==
        "{\"type\":\"step\",\"epoch\":1,\"step\":1,\"loss\":0.5}\n"
        "{\"type\":\"step\",\"epoch\":1,\"step\":2,\"loss\":null}\n"
        "{\"type\":\"summary\",\"ok\":true}\n"
        "{\"type\":\"step\",\"epoch\":1,\"step\":3,\"loss\":0.125}\n");
  struct stat st {};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == (0644 & ~[] { mode_t m = ::umask(0); ::umask(m); return m; }()));

  // A writer for ranks other than 0 writes nothing and never fails.
  MetricsWriter none;
  CHECK_FALSE(none.is_open());
  none.write(step_record(1, 1.0));
  none.sync();

  CHECK_KILN_ERROR(MetricsWriter(dir.file("no/such/dir/metrics.jsonl")), "no/such/dir/metrics.jsonl");
  CHECK_KILN_ERROR(MetricsWriter(dir.file("no/such/dir/metrics.jsonl")), "No such file or directory");
}

TEST_CASE("MetricsWriter: a failed write is a kiln::Error naming the file and the reason (full disk)", "[run]") {
  // /dev/full: every write fails with ENOSPC, the full-disk case without root or a mount.
  MetricsWriter w("/dev/full");
  CHECK_KILN_ERROR(w.write(step_record(1, 0.5)), "No space left on device");
  CHECK_KILN_ERROR(w.write(step_record(1, 0.5)), "/dev/full");
}

TEST_CASE("MetricsWriter on a full tmpfs: the error is raised and no torn line is left", "[run]") {
  SmallTmpfs fs1;
  if (!fs1.ok) {
    WARN("skipped: cannot mount a tmpfs here (" << std::strerror(errno) << "); /dev/full covers the error path");
    return;
  }
  const std::string path = fs1.dir.file("metrics.jsonl");
  // Records of ~3000 bytes cross page boundaries, so the write that fills the disk is cut.
  const std::string pad(3000, 'x');
  int64_t written = 0;
  std::string message;
  {
    MetricsWriter w(path);
    try {
      for (int64_t i = 1; i <= 10000; ++i) {
        w.write({{"step", i}, {"pad", pad}});
        written = i;
      }
    } catch (const Error& e) {
      message = e.what();
    }
  }
  REQUIRE_FALSE(message.empty());
  CHECK(message.find("No space left on device") != std::string::npos);
  CHECK(message.find(path) != std::string::npos);
  CHECK(written > 100);
  const std::string text = read_text(path);
  REQUIRE_FALSE(text.empty());
  CHECK(text.back() == '\n');
  CHECK(static_cast<int64_t>(lines_of(text).size()) == written);

  // Truncating on the full disk fails (no room for the temporary file) and keeps the file.
  int64_t dropped = -1;
  try {
    dropped = MetricsWriter::truncate_after(path, 5);
  } catch (const Error& e) {
    CHECK(std::string(e.what()).find("the file is unchanged") != std::string::npos);
  }
  if (dropped < 0) {
    CHECK(read_text(path) == text);
    for (const auto& name : fs1.dir.entries()) CHECK(name.find(".tmp.") == std::string::npos);
  } else {
    CHECK(dropped == written - 5);  // the smaller file fitted after all
  }
}

TEST_CASE("MetricsWriter::truncate_after drops the torn last line and later steps, keeps step-less records",
          "[run]") {
  TempDir dir;
  const std::string path = dir.file("metrics.jsonl");
  CHECK(MetricsWriter::truncate_after(path, 10) == 0);  // missing file: nothing to do
  CHECK(dir.entries().empty());

  write_text(path,
             "{\"type\":\"config\",\"lr\":0.1}\n"
             "{\"type\":\"step\",\"step\":1,\"loss\":1.5}\n"
             "{\"type\":\"step\",\"step\":2,\"loss\":1.25}\n"
             "{\"type\":\"epoch\",\"epoch\":1,\"step\":2,\"test_accuracy\":0.5}\n"
             "not json at all\n"
             "{\"type\":\"step\",\"step\":3,\"loss\":1.0}\n"
             "{\"type\":\"note\",\"text\":\"no step here\"}\n"
             "{\"type\":\"step\",\"step\":4,\"loss\":0.75}\n"
             "[1,2,3]\n"
             "{\"type\":\"step\",\"step\":5,\"lo");  // torn by a crash
  ::chmod(path.c_str(), 0600);
  CHECK(MetricsWriter::truncate_after(path, 2) == 5);  // garbage, step 3, step 4, the array, the torn line
  CHECK(read_text(path) ==
        "{\"type\":\"config\",\"lr\":0.1}\n"
        "{\"type\":\"step\",\"step\":1,\"loss\":1.5}\n"
        "{\"type\":\"step\",\"step\":2,\"loss\":1.25}\n"
        "{\"type\":\"epoch\",\"epoch\":1,\"step\":2,\"test_accuracy\":0.5}\n"
        "{\"type\":\"note\",\"text\":\"no step here\"}\n");
  struct stat st {};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);                                      // mode kept
  CHECK(dir.entries() == std::vector<std::string>{"metrics.jsonl"});      // no temp file left

  // Nothing to drop: the file is left alone (same inode, same bytes).
  const ino_t inode = st.st_ino;
  CHECK(MetricsWriter::truncate_after(path, 2) == 0);
  REQUIRE(::stat(path.c_str(), &st) == 0);
  CHECK(st.st_ino == inode);

  // A torn line glued to the next record by an append after a crash is dropped as well.
  write_text(path,
             "{\"step\":1}\n"
             "{\"step\":2,\"lo{\"step\":2,\"loss\":1}\n"
             "{\"step\":3}\n");
  CHECK(MetricsWriter::truncate_after(path, 3) == 1);
  CHECK(read_text(path) == "{\"step\":1}\n{\"step\":3}\n");

  // Step 0 keeps only step-less records; blank lines go without being counted.
  write_text(path, "{\"run\":\"x\"}\n\n{\"step\":1}\n");
  CHECK(MetricsWriter::truncate_after(path, 0) == 1);
  CHECK(read_text(path) == "{\"run\":\"x\"}\n");

  // Appending after truncation continues cleanly.
  {
    MetricsWriter w(path);
    w.write(step_record(1, 0.5));
  }
  CHECK(lines_of(read_text(path)).size() == 2);
}

TEST_CASE("MetricsWriter::truncate_after leaves the file unchanged when it cannot rewrite it", "[run]") {
  TempDir dir;
  const std::string path = dir.file("metrics.jsonl");
  const std::string text = "{\"step\":1}\n{\"step\":2}\n";
  write_text(path, text);
  ::chmod(dir.path.c_str(), 0555);
  // root may write into a read-only folder anyway; then this case cannot be shown here.
  const bool writable = ::access(dir.path.c_str(), W_OK) == 0;
  if (writable) {
    ::chmod(dir.path.c_str(), 0755);
    WARN("skipped: the folder stays writable for this user (root)");
    return;
  }
  CHECK_KILN_ERROR(MetricsWriter::truncate_after(path, 1), "the file is unchanged");
  ::chmod(dir.path.c_str(), 0755);
  CHECK(read_text(path) == text);
  CHECK(dir.entries() == std::vector<std::string>{"metrics.jsonl"});
}

TEST_CASE("MetricsWriter::truncate_after does not block on a FIFO", "[run]") {
  TempDir dir;
  const std::string path = dir.file("metrics.jsonl");
  REQUIRE(::mkfifo(path.c_str(), 0644) == 0);
  CHECK(MetricsWriter::truncate_after(path, 1) == 0);
}

TEST_CASE("format_duration", "[run]") {
  CHECK(format_duration(0) == "0:00");
  CHECK(format_duration(59.4) == "0:59");
  CHECK(format_duration(59.6) == "1:00");
  CHECK(format_duration(62) == "1:02");
  CHECK(format_duration(3599) == "59:59");
  CHECK(format_duration(3723) == "1:02:03");
  CHECK(format_duration(100 * 3600.0) == "100:00:00");
  CHECK(format_duration(-1) == "?");
  CHECK(format_duration(std::nan("")) == "?");
  CHECK(format_duration(std::numeric_limits<double>::infinity()) == "?");
  CHECK(format_duration(1e300) == "?");
}

TEST_CASE("NonFiniteGuard: stop", "[run]") {
  NonFiniteGuard g("kiln_train_x", NonFinitePolicy::Stop);
  CHECK(g.check(0.5, 1, 1, ""));
  std::string msg;
  try {
    g.check(std::nan(""), 123, 2, "/runs/a/checkpoints/step-000000000100.safetensors");
  } catch (const NonFiniteLoss& e) {
    msg = e.what();
  }
  CHECK(msg.find("kiln_train_x: loss is nan at step 123 (epoch 2); stopping") != std::string::npos);
  CHECK(msg.find("/runs/a/checkpoints/step-000000000100.safetensors") != std::string::npos);
  CHECK(msg.find("--resume") != std::string::npos);
  CHECK(msg.find("--on-nonfinite skip") != std::string::npos);
  CHECK_THROWS_WITH(g.check(std::numeric_limits<double>::infinity(), 7, 1, ""),
                    Catch::Contains("loss is inf at step 7 (epoch 1)") && Catch::Contains("No checkpoint was saved"));
  CHECK_THROWS_WITH(g.check(-std::numeric_limits<double>::infinity(), 8, 1, ""), Catch::Contains("loss is -inf"));
  CHECK_THROWS_AS(g.check(std::nan(""), 9, 1, ""), kiln::Error);  // NonFiniteLoss is a kiln::Error
  CHECK(g.skipped() == 0);
}

TEST_CASE("NonFiniteGuard: skip, up to max_skips in a row", "[run]") {
  NonFiniteGuard g("kiln_train_x", NonFinitePolicy::Skip, 3);
  const double nan = std::nan("");
  CHECK_FALSE(g.check(nan, 1, 1, "ck"));
  CHECK_FALSE(g.check(nan, 2, 1, "ck"));
  CHECK(g.check(1.0, 3, 1, "ck"));  // a finite loss resets the run of skips
  CHECK_FALSE(g.check(nan, 4, 1, "ck"));
  CHECK_FALSE(g.check(nan, 5, 1, "ck"));
  CHECK_FALSE(g.check(nan, 6, 1, "ck"));
  CHECK(g.skipped() == 5);
  std::string msg;
  try {
    g.check(nan, 7, 2, "/runs/a/checkpoints/step-000000000006.safetensors");
  } catch (const NonFiniteLoss& e) {
    msg = e.what();
  }
  CHECK(msg.find("kiln_train_x: loss is nan at step 7 (epoch 2); stopping") != std::string::npos);
  CHECK(msg.find("4 non-finite losses in a row") != std::string::npos);
  CHECK(msg.find("at most 3 in a row") != std::string::npos);
  CHECK(msg.find("step-000000000006.safetensors") != std::string::npos);
  CHECK(g.skipped() == 5);

  NonFiniteGuard none("p", NonFinitePolicy::Skip, 0);  // skip none: the first one stops
  CHECK_THROWS_AS(none.check(nan, 1, 1, ""), NonFiniteLoss);
  CHECK_KILN_ERROR(NonFiniteGuard("p", NonFinitePolicy::Skip, -1), ">= 0");
}

TEST_CASE("Progress: when to log and the line it prints", "[run]") {
  Progress p("kiln_train_x", 100, 10, 5, 1e9);
  CHECK_FALSE(p.due(11));
  CHECK_FALSE(p.due(14));
  CHECK(p.due(15));
  CHECK(p.due(12, /*force=*/true));
  CHECK(p.due(100));  // the last step
  CHECK(p.program() == "kiln_train_x");

  TempDir dir;
  const std::string err_path = dir.file("stderr.txt");
  {
    Redirect r(STDERR_FILENO, err_path);
    Progress q("kiln_train_x", 100, 10, 5, 1e9);  // stderr is a file: one line per log
    q.log(12, 1, 3, 0.43214, 0.003, 64);
    CHECK_FALSE(q.due(13));
    CHECK(q.due(17));
    q.end_epoch_line();  // nothing to finish off a terminal
    q.log(20, 2, 3, std::nan(""), 0.001, 64);
  }
  const auto lines = lines_of(read_text(err_path));
  REQUIRE(lines.size() == 2);
  CHECK(lines[0].rfind("step 12/100  epoch 1/3  loss 0.4321  lr 0.003  ", 0) == 0);
  CHECK(lines[0].find(" img/s  ETA ") != std::string::npos);
  CHECK(lines[0].find('\r') == std::string::npos);
  CHECK(lines[1].rfind("step 20/100  epoch 2/3  loss nan  lr 0.001  ", 0) == 0);

  CHECK_KILN_ERROR(Progress("p", 10, 11), "start step");
  CHECK_KILN_ERROR(Progress("p", 10, 0, 0), ">= 1");
}

TEST_CASE("print_summary writes one JSON line on stdout, and fails loudly when it cannot", "[run]") {
  TempDir dir;
  const std::string out_path = dir.file("stdout.txt");
  {
    Redirect r(STDOUT_FILENO, out_path);
    print_summary({{"type", std::string("summary")}, {"test_accuracy", 0.9}, {"steps", int64_t{512}}});
  }
  CHECK(read_text(out_path) == "{\"type\":\"summary\",\"test_accuracy\":0.9,\"steps\":512}\n");

  bool threw = false;
  std::string msg;
  {
    Redirect r(STDOUT_FILENO, "/dev/full");
    try {
      print_summary({{"type", std::string("summary")}});
    } catch (const Error& e) {
      threw = true;
      msg = e.what();
    }
  }
  CHECK(threw);
  CHECK(msg.find("No space left on device") != std::string::npos);
}
