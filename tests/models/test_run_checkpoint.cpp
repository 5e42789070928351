// The run library's checkpoints and run directory (models/run/checkpoint.h, run_dir.h):
// checkpoint names, keep-last pruning, latest(), stale temporary files, FIFOs and folders
// at a checkpoint's name (an error, never a hang), and the run directory's rules: fresh,
// --resume and --overwrite, the lock against a second live run, and what --overwrite keeps.
#include "test_util.h"

#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iterator>

#include <kiln/models/run/checkpoint.h>
#include <kiln/models/run/run_dir.h>

using namespace kiln;
using namespace kiln::test;
using namespace kiln::run;
namespace fs = std::filesystem;

namespace {


void touch(const std::string& path, const std::string& text = "x") {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f << text;
  REQUIRE(f.good());
}

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

std::map<std::string, Tensor> state(float v) { return {{"w", full({2, 3}, v)}, {"b", full({3}, -v)}}; }

std::string name_of(const std::string& path) { return fs::path(path).filename().string(); }

std::vector<std::string> names(const std::vector<std::string>& paths) {
  std::vector<std::string> out;
  for (const auto& p : paths) out.push_back(name_of(p));
  return out;
}

}  // namespace

TEST_CASE("checkpoint names hold the step in 12 digits", "[run]") {
  CHECK(checkpoint_path("ckpt", 0) == "ckpt/step-000000000000.safetensors");
  CHECK(checkpoint_path("/a/b/", 1234) == "/a/b/step-000000001234.safetensors");
  CHECK(checkpoint_path("d", 999999999999) == "d/step-999999999999.safetensors");
  CHECK_KILN_ERROR(checkpoint_path("d", 1000000000000), "12 digits");
  CHECK_KILN_ERROR(checkpoint_path("d", -1), "step -1");
  CHECK_KILN_ERROR(Checkpointer("d", CheckpointOptions{0}), "keep_last");
}

TEST_CASE("Checkpointer keeps the newest keep_last checkpoints", "[run]") {
  TempDir tmp;
  const std::string dir = tmp.file("run/checkpoints");  // created by the first save
  Checkpointer ck(dir, CheckpointOptions{2});
  CHECK(ck.dir() == dir);
  CHECK(ck.list().empty());
  CHECK_FALSE(ck.latest().has_value());

  for (int64_t step = 1; step <= 5; ++step) {
    std::string p = ck.save(step * 100, state(static_cast<float>(step)), {{"step", std::to_string(step * 100)}});
    CHECK(p == checkpoint_path(dir, step * 100));
    CHECK(ck.latest() == p);
    CHECK(ck.list().size() == static_cast<size_t>(std::min<int64_t>(step, 2)));
  }
  CHECK(names(ck.list()) == std::vector<std::string>{"step-000000000400.safetensors", "step-000000000500.safetensors"});
  // The files are checksummed safetensors with the caller's metadata.
  SafetensorsContents c = load_safetensors_with_metadata(*ck.latest());
  CHECK(c.metadata == std::map<std::string, std::string>{{"step", "500"}});
  CHECK(bit_equal(c.tensors.at("w"), full({2, 3}, 5.0f)));
  CHECK(slurp(*ck.latest()).find("kiln.crc32.w") != std::string::npos);

  // Other names are not checkpoints: ignored by the listing, left alone by pruning.
  touch(dir + "/notes.txt");
  touch(dir + "/step-1.safetensors");
  touch(dir + "/step-000000000900.safetensors.tmp.123.0");
  touch(dir + "/step-00000000090x.safetensors");
  fs::create_directory(dir + "/old");
  CHECK(ck.latest() == checkpoint_path(dir, 500));

  // Saving a step older than the newest keeps the file just written.
  std::string p = ck.save(50, state(9.0f), {});
  CHECK(names(ck.list()) == std::vector<std::string>{"step-000000000050.safetensors", "step-000000000500.safetensors"});
  CHECK(fs::exists(p));
  for (const char* other : {"notes.txt", "step-1.safetensors", "step-000000000900.safetensors.tmp.123.0",
                            "step-00000000090x.safetensors", "old"})
    CHECK(fs::exists(dir + "/" + other));

  // keep_last 1: only the new one remains; saving the same step again replaces it.
  Checkpointer one(dir, CheckpointOptions{1});
  one.save(600, state(6.0f), {});
  one.save(600, state(7.0f), {});
  CHECK(names(one.list()) == std::vector<std::string>{"step-000000000600.safetensors"});
  CHECK(bit_equal(load_safetensors(*one.latest()).at("w"), full({2, 3}, 7.0f)));
}

TEST_CASE("Checkpointer removes the temporary files of killed saves", "[run]") {
  TempDir tmp;
  const std::string dir = tmp.file("checkpoints");
  Checkpointer ck(dir);
  CHECK(ck.remove_stale_temps() == 0);  // no directory yet
  ck.save(1, state(1.0f), {});
  // What save_safetensors leaves when it is killed: "<target>.tmp.<pid>.<n>".
  touch(checkpoint_path(dir, 2) + ".tmp.4242.0");
  touch(checkpoint_path(dir, 3) + ".tmp.4242.17");
  touch(dir + "/notes.txt");
  fs::create_directory(dir + "/kept.tmp.dir");  // not a file: not ours to delete
  CHECK(ck.remove_stale_temps() == 2);
  CHECK(names(ck.list()) == std::vector<std::string>{"step-000000000001.safetensors"});
  CHECK(fs::exists(dir + "/notes.txt"));
  CHECK(fs::is_directory(dir + "/kept.tmp.dir"));
  CHECK(ck.remove_stale_temps() == 0);
  CHECK(bit_equal(load_safetensors(*ck.latest()).at("b"), full({3}, -1.0f)));
}

TEST_CASE("a FIFO or a folder at a checkpoint's name is an error, not a hang", "[run]") {
  TempDir tmp;
  const std::string dir = tmp.file("checkpoints");
  Checkpointer ck(dir);
  ck.save(1, state(1.0f), {});
  const std::string fifo = checkpoint_path(dir, 2);
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  // Nothing opens the FIFO (an open for reading would block until a writer came).
  CHECK_KILN_ERROR(ck.latest(), fifo);
  CHECK_KILN_ERROR(ck.latest(), "FIFO");
  CHECK_KILN_ERROR(ck.list(), "not a regular file");
  CHECK_KILN_ERROR(ck.save(2, state(2.0f), {}), fifo);
  CHECK_KILN_ERROR(load_safetensors(fifo), "FIFO");
  fs::remove(fifo);

  const std::string folder = checkpoint_path(dir, 3);
  fs::create_directory(folder);
  CHECK_KILN_ERROR(ck.latest(), folder);
  CHECK_KILN_ERROR(ck.latest(), "a directory");
  fs::remove(folder);
  CHECK(ck.latest() == checkpoint_path(dir, 1));

  // The checkpoint directory itself must be one.
  touch(tmp.file("file"));
  CHECK_KILN_ERROR(Checkpointer(tmp.file("file")).latest(), "not a directory");
}

TEST_CASE("RunDir: fresh, resume and overwrite", "[run]") {
  TempDir tmp;
  const std::string run = tmp.file("runs/a");

  SECTION("a fresh run creates the directory; a second fresh run is refused") {
    CHECK_FALSE(RunDir::holds_run(run));
    {
      RunDir d(run, StartMode::Fresh);
      CHECK(fs::is_directory(run));
      CHECK(d.path() == run);
      CHECK(d.config_path() == run + "/config.toml");
      CHECK(d.metrics_path() == run + "/metrics.jsonl");
      CHECK(d.checkpoint_dir() == run + "/checkpoints");
      CHECK(d.plots_dir() == run + "/plots");
      CHECK(d.logs_dir() == run + "/logs");
      CHECK(slurp(run + "/run.lock") == std::to_string(::getpid()) + "\n");
      CHECK_FALSE(RunDir::holds_run(run));  // the lock alone is not a run
      touch(d.config_path(), "epochs = 3\n");
    }
    CHECK(RunDir::holds_run(run));
    CHECK_KILN_ERROR(RunDir(run, StartMode::Fresh), run);
    CHECK_KILN_ERROR(RunDir(run, StartMode::Fresh), "--resume");
    CHECK_KILN_ERROR(RunDir(run, StartMode::Fresh), "--overwrite");
    CHECK_KILN_ERROR(RunDir(run, StartMode::Fresh), "config.toml");
    CHECK(slurp(run + "/config.toml") == "epochs = 3\n");  // nothing was touched
    RunDir resumed(run, StartMode::Resume);
    CHECK(slurp(resumed.config_path()) == "epochs = 3\n");
  }
  SECTION("each of config.toml, metrics.jsonl and checkpoints/ is a run") {
    for (const char* what : {"config.toml", "metrics.jsonl", "checkpoints"}) {
      INFO(what);
      TempDir t;
      if (std::string(what) == "checkpoints") fs::create_directory(t.path / what);
      else touch(t.file(what));
      CHECK(RunDir::holds_run(t.path.string()));
      CHECK_KILN_ERROR(RunDir(t.path.string(), StartMode::Fresh), what);
      RunDir r(t.path.string(), StartMode::Resume);
    }
  }
  SECTION("a fresh run may use an existing directory that holds no run") {
    fs::create_directories(run);
    touch(run + "/README.txt");
    RunDir d(run, StartMode::Fresh);
    CHECK(slurp(run + "/README.txt") == "x");
  }
  SECTION("--resume needs a run") {
    CHECK_KILN_ERROR(RunDir(run, StartMode::Resume), run);
    CHECK_KILN_ERROR(RunDir(run, StartMode::Resume), "--resume");
    CHECK_FALSE(fs::exists(run));  // nothing was created
    fs::create_directories(run);
    CHECK_KILN_ERROR(RunDir(run, StartMode::Resume), run);
    CHECK_KILN_ERROR(RunDir(run, StartMode::Resume), "holds no run");
  }
  SECTION("--overwrite deletes the run's files and nothing else") {
    touch(run + "/config.toml");
    touch(run + "/metrics.jsonl", "{\"step\":1}\n");
    Checkpointer(run + "/checkpoints").save(1, state(1.0f), {});
    touch(run + "/plots/loss.png");
    touch(run + "/logs/rank0.log");
    touch(run + "/notes.txt", "mine");
    touch(run + "/data/train.bin", "data");
    // A symbolic link is deleted, never what it points to.
    touch(tmp.file("elsewhere/keep.png"), "keep");
    fs::remove_all(run + "/plots");
    fs::create_directory_symlink(tmp.file("elsewhere"), run + "/plots");
    {
      RunDir d(run, StartMode::Overwrite);
      CHECK_FALSE(RunDir::holds_run(run));
      for (const char* gone : {"config.toml", "metrics.jsonl", "checkpoints", "plots", "logs"})
        CHECK_FALSE(fs::exists(fs::symlink_status(run + "/" + gone)));
      CHECK(slurp(run + "/notes.txt") == "mine");
      CHECK(slurp(run + "/data/train.bin") == "data");
      CHECK(slurp(tmp.file("elsewhere/keep.png")) == "keep");
    }
    // A log that is open (kiln-run --log-dir opens the ranks' logs before the trainer
    // starts) is the new run's: kept, while the old ones go.
    touch(run + "/config.toml");
    touch(run + "/logs/rank_0.log", "new run");
    touch(run + "/logs/rank_3.log", "old run");
    touch(run + "/logs/old/rank_1.log", "old run");
    {
      std::ofstream open_log(run + "/logs/rank_0.log", std::ios::app);
      REQUIRE(open_log.good());
      RunDir d(run, StartMode::Overwrite);
      CHECK(slurp(run + "/logs/rank_0.log") == "new run");
      CHECK_FALSE(fs::exists(run + "/logs/rank_3.log"));
      CHECK_FALSE(fs::exists(run + "/logs/old"));
      CHECK_FALSE(fs::exists(run + "/config.toml"));
    }
    // On a directory without a run it is a fresh start.
    RunDir again(tmp.file("runs/b"), StartMode::Overwrite);
    CHECK(fs::is_directory(tmp.file("runs/b")));
  }
  SECTION("the path must be a directory") {
    touch(tmp.file("plain"));
    CHECK_KILN_ERROR(RunDir(tmp.file("plain"), StartMode::Fresh), "not a directory");
  }
}

TEST_CASE("RunDir: a second live run on the same directory fails, naming the holder", "[run]") {
  TempDir tmp;
  const std::string run = tmp.file("run");
  const std::string pid = std::to_string(::getpid());
  {
    RunDir first(run, StartMode::Fresh);
    touch(first.config_path());
    // flock locks belong to an open file description: a second one conflicts even in
    // the same process.
    CHECK_KILN_ERROR(RunDir(run, StartMode::Resume), "in use by another live run (pid " + pid);
    CHECK_KILN_ERROR(RunDir(run, StartMode::Overwrite), run + "/run.lock");
    CHECK_KILN_ERROR(RunDir(run, StartMode::Fresh), "another live run");  // the lock comes first
    CHECK(fs::exists(first.config_path()));  // --overwrite deleted nothing
    // Other ranks take no lock.
    RunDir rank1(run, StartMode::Resume, /*main_rank=*/false);
    CHECK(rank1.checkpoint_dir() == run + "/checkpoints");
  }
  // Released with its holder; a lock file left by a dead process is no obstacle.
  touch(run + "/run.lock", "999999999\n");
  RunDir resumed(run, StartMode::Resume);
  CHECK(slurp(run + "/run.lock") == pid + "\n");
}

TEST_CASE("RunDir: a lock held by another process names its pid", "[run]") {
  TempDir tmp;
  const std::string run = tmp.file("run");
  int to_child[2], to_parent[2];
  REQUIRE(::pipe(to_child) == 0);
  REQUIRE(::pipe(to_parent) == 0);
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {  // holds the run until the parent writes a byte
    ::alarm(30);
    char c = 0;
    try {
      RunDir d(run, StartMode::Fresh);
      c = 1;
      (void)!::write(to_parent[1], &c, 1);
      (void)!::read(to_child[0], &c, 1);
    } catch (...) {
      (void)!::write(to_parent[1], &c, 1);
      ::_exit(1);
    }
    ::_exit(0);
  }
  char c = 0;
  REQUIRE(::read(to_parent[0], &c, 1) == 1);
  CHECK(c == 1);
  CHECK_KILN_ERROR(RunDir(run, StartMode::Resume), "(pid " + std::to_string(pid) + ", holding");
  (void)!::write(to_child[1], &c, 1);
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  for (int fd : {to_child[0], to_child[1], to_parent[0], to_parent[1]}) ::close(fd);
  // The child is gone, and with it the lock (its pid stays in the file).
  touch(run + "/metrics.jsonl");
  RunDir after(run, StartMode::Resume);
}

TEST_CASE("RunDir removes stale temporary files at start; other ranks write nothing", "[run]") {
  TempDir tmp;
  const std::string run = tmp.file("run");
  Checkpointer(run + "/checkpoints").save(10, state(1.0f), {});
  touch(run + "/config.toml");
  const std::string ck_tmp = checkpoint_path(run + "/checkpoints", 20) + ".tmp.31337.0";
  const std::string metrics_tmp = run + "/metrics.jsonl.tmp.31337.2";
  const std::string config_tmp = run + "/config.toml.tmp.31337.0";
  const std::string unrelated = run + "/mine.tmp.txt";
  for (const auto& p : {ck_tmp, metrics_tmp, config_tmp, unrelated}) touch(p);

  // Ranks other than 0: no lock file, no deletions; the directory must exist.
  {
    RunDir rank1(run, StartMode::Resume, /*main_rank=*/false);
    CHECK_FALSE(fs::exists(run + "/run.lock"));
    CHECK(fs::exists(ck_tmp));
    CHECK(fs::exists(metrics_tmp));
  }
  CHECK_KILN_ERROR(RunDir(tmp.file("missing"), StartMode::Fresh, /*main_rank=*/false), tmp.file("missing"));
  CHECK_FALSE(fs::exists(tmp.file("missing")));

  RunDir d(run, StartMode::Resume);
  CHECK_FALSE(fs::exists(ck_tmp));
  CHECK_FALSE(fs::exists(metrics_tmp));
  CHECK_FALSE(fs::exists(config_tmp));
  CHECK(fs::exists(unrelated));
  CHECK(Checkpointer(d.checkpoint_dir()).latest() == checkpoint_path(run + "/checkpoints", 10));
}
