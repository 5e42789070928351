// The command line every trainer shares (CLI11): where the run lives and how it starts
// (--run-dir, --resume, --overwrite, --config), how it checkpoints (--save-every,
// --keep-last), what a non-finite loss does (--on-nonfinite), how often it reports
// (--log-every), plus the plumbing around them: the effective configuration written to
// <run>/config.toml, and the plot drawn from the metrics at the end. A trainer adds its own
// model and optimizer flags to the same CLI::App. Header-only: tools link CLI11, the kiln
// library does not.
#pragma once
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <string>

#include <CLI/CLI.hpp>

#include "cli.h"

#include <memory>

#include <kiln/core/device.h>
#include <kiln/core/error.h>
#include <kiln/distributed/env.h>
#include <kiln/distributed/process_group.h>
#include <kiln/distributed/topology.h>
#include <kiln/optim/entropy_sgd.h>
#include <kiln/models/run/progress.h>
#include <kiln/models/run/run_dir.h>

#ifndef KILN_SOURCE_DIR
#define KILN_SOURCE_DIR ""
#endif

namespace kiln::tools {

struct RunFlags {
  std::string run_dir;        // "" = runs/<program>-<date>-<time> (a new one each time)
  bool resume = false;        // continue the run in --run-dir from its newest checkpoint
  bool overwrite = false;     // delete the run in --run-dir first
  int64_t save_every = 0;     // also checkpoint every N optimizer steps (0: at epoch ends only)
  int64_t keep_last = 2;      // checkpoints kept
  std::string on_nonfinite = "stop";  // stop | skip
  int64_t log_every = 50;     // progress line at least every N steps (and every 2 s)
  int64_t stop_after_steps = 0;  // leave after N steps of this invocation (0: never): interruption tests
  bool plot = true;           // draw <run>/plots/metrics.png at the end
};

// Adds the run flags to `app`. --config reads flags from a file (TOML or INI, as CLI11
// writes them: <run>/config.toml of an earlier run reproduces it); the flags that control
// one invocation (--resume, --overwrite, --stop-after-steps, --config) are not part of the
// configuration a run writes.
inline void add_run_flags(CLI::App& app, RunFlags& f) {
  app.set_config("--config", "", "read flags from a TOML/INI file (e.g. the config.toml of an earlier run)");
  app.add_option("--run-dir", f.run_dir,
                 "the run's directory: config.toml, metrics.jsonl, checkpoints/, plots/ (default: a new "
                 "runs/<program>-<date>-<time>)");
  app.add_flag("--resume", f.resume, "continue the run in --run-dir from its newest checkpoint")
      ->configurable(false);
  app.add_flag("--overwrite", f.overwrite, "delete the run in --run-dir (its config, metrics, checkpoints, plots) first")
      ->configurable(false)
      ->excludes("--resume");
  app.add_option("--save-every", f.save_every, "also checkpoint every N optimizer steps (0: at the end of each epoch)")
      ->check(integer_range(0, int64_t{1} << 40));
  app.add_option("--keep-last", f.keep_last, "checkpoints to keep")->check(integer_range(1, 1000000));
  app.add_option("--on-nonfinite", f.on_nonfinite,
                 "a NaN/inf loss: stop (exit 3, keeping the last good checkpoint) or skip the step")
      ->check(CLI::IsMember({"stop", "skip"}));
  app.add_option("--log-every", f.log_every, "progress line at least every N steps (also every 2 s)")
      ->check(integer_range(1, int64_t{1} << 40));
  app.add_option("--stop-after-steps", f.stop_after_steps,
                 "leave after N optimizer steps of this invocation, as an interruption would (resume with --resume)")
      ->check(integer_range(0, int64_t{1} << 40))
      ->configurable(false);
  app.add_flag("--plot,!--no-plot", f.plot, "draw <run>/plots/metrics.png from the metrics at the end");
}

// How the ranks of a data-parallel run combine (distributed/ddp.h, distributed/decentralized.h):
// --dp ring | hierarchical | neighbor, and for neighbor --topology and --neighbor-mode.
struct DataParallelFlags {
  std::string dp = "ring";
  std::string topology = "exp2-dynamic";
  std::string neighbor_mode = "atc";
};

// Adds --dp (with neighbor when `neighbor` is true; `neighbor_note` says what the trainer
// does besides the per-step averaging) and, with neighbor, --topology and --neighbor-mode.
inline void add_dp_flags(CLI::App& app, DataParallelFlags& f, bool neighbor, const std::string& neighbor_note = "") {
  std::string help =
      "data parallel over several ranks: ring (DDP: gradients all-reduced) | hierarchical (DDP, all-reduce inside "
      "each node, then across nodes; KILN_RANKS_PER_NODE or LOCAL_WORLD_SIZE ranks per node)";
  if (neighbor)
    help += " | neighbor (decentralized: parameters averaged with the --topology neighbors every step" +
            (neighbor_note.empty() ? std::string(")") : "; " + neighbor_note + ")");
  app.add_option("--dp", f.dp, help)
      ->check(neighbor ? CLI::IsMember({"ring", "hierarchical", "neighbor"}) : CLI::IsMember({"ring", "hierarchical"}));
  if (!neighbor) return;
  app.add_option("--topology", f.topology, "--dp neighbor: exp2-dynamic (one peer per step) | exp2 | ring | torus | full")
      ->check(CLI::IsMember(dist::Topology::names()));
  app.add_option("--neighbor-mode", f.neighbor_mode,
                 "--dp neighbor: atc (step, then average) | overlap (average during forward/backward) | "
                 "gradient-tracking")
      ->check(CLI::IsMember({"atc", "overlap", "gradient-tracking"}));
}

// --topology and --neighbor-mode apply only with --dp neighbor (compared with their
// defaults, not counted: a config file written by a run sets them all).
inline void check_dp_flags(const DataParallelFlags& f) {
  const DataParallelFlags defaults;
  if (f.dp != "neighbor" && (f.topology != defaults.topology || f.neighbor_mode != defaults.neighbor_mode))
    throw CLI::ValidationError("--topology/--neighbor-mode", "apply only with --dp neighbor");
}

// --esgd-*: Entropy-SGD's inner loop (optim/entropy_sgd.h) for a trainer's --optimizer
// entropy-sgd, into `o` (whose values are the defaults); `slices` names what the L
// Langevin steps run on, one slice each.
inline void add_entropy_sgd_flags(CLI::App& app, EntropySGDOptions& o, const std::string& slices) {
  app.add_option("--esgd-inner-steps", o.inner_steps,
                 "entropy-sgd: L, the Langevin steps per step, each on the next 1/L slice of " + slices)
      ->check(integer_range(1, 1000));
  app.add_option("--esgd-gamma", o.gamma, "entropy-sgd: the scope gamma (grows by (1 + --esgd-scoping) per step)")
      ->check(positive_real());
  app.add_option("--esgd-scoping", o.scoping, "entropy-sgd: gamma's growth per step")
      ->check(positive_real(/*allow_zero=*/true));
  app.add_option("--esgd-inner-lr", o.inner_lr, "entropy-sgd: the Langevin step size eta'")
      ->check(positive_real());
  app.add_option("--esgd-noise", o.noise, "entropy-sgd: the Langevin noise scale (thermal noise epsilon)")
      ->check(positive_real(/*allow_zero=*/true));
}

// Entropy-SGD's settings in a checkpoint's metadata (a resumed run must share them).
inline std::string entropy_sgd_description(const EntropySGDOptions& o) {
  return kiln::detail::str(o.inner_steps, " gamma ", o.gamma, " scoping ", o.scoping, " lr ", o.inner_lr, " noise ",
                     o.noise);
}

// The description of a run's data parallelism for its log and summary.
inline std::string dp_description(const DataParallelFlags& f) {
  return f.dp == "neighbor" ? "neighbor " + f.topology + " " + f.neighbor_mode : f.dp;
}

inline run::StartMode start_mode(const RunFlags& f) {
  return f.resume ? run::StartMode::Resume : f.overwrite ? run::StartMode::Overwrite : run::StartMode::Fresh;
}

inline run::NonFinitePolicy nonfinite_policy(const RunFlags& f) {
  return f.on_nonfinite == "skip" ? run::NonFinitePolicy::Skip : run::NonFinitePolicy::Stop;
}

// "runs/<program>-<YYYYmmdd-HHMMSS>", with a suffix if that exists already.
inline std::string default_run_dir(const std::string& program) {
  const std::time_t now = std::time(nullptr);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", std::localtime(&now));
  std::string base = "runs/" + program + "-" + stamp, dir = base;
  for (int i = 2; std::filesystem::exists(dir); ++i) dir = base + "-" + std::to_string(i);
  return dir;
}

// Writes the effective configuration (every configurable flag, defaults included) to
// `path`, atomically; a later `--config path` reproduces the run.
inline void write_config(const CLI::App& app, const std::string& path) {
  const std::string text = app.config_to_str(/*default_also=*/true, /*write_description=*/true);
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << text;
    out.flush();
    KILN_CHECK(out.good(), "cannot write the run's configuration to ", tmp, " (disk full or not writable?)");
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  KILN_CHECK(!ec, "cannot move the run's configuration into place at ", path, ": ", ec.message());
}

// Draws <run>/plots/metrics.png with tools/plot_metrics.py (python3 with matplotlib). A
// missing python or matplotlib is a note, not an error: the metrics are there to plot later.
inline void plot_run(const std::string& program, const std::string& run_dir) {
  const std::filesystem::path script = std::filesystem::path(KILN_SOURCE_DIR) / "tools" / "plot_metrics.py";
  if (!std::filesystem::exists(script)) {
    std::fprintf(stderr, "%s: note: %s not found; plot the metrics with tools/plot_metrics.py %s\n", program.c_str(),
                 script.c_str(), run_dir.c_str());
    return;
  }
  const std::filesystem::path out = std::filesystem::path(run_dir) / "plots" / "metrics.png";
  std::filesystem::create_directories(out.parent_path());
  const std::string cmd = "python3 '" + script.string() + "' '" + run_dir + "' -o '" + out.string() + "' 2>&1";
  const int rc = std::system(cmd.c_str());
  if (rc == 0)
    std::fprintf(stderr, "%s: plot: %s\n", program.c_str(), out.c_str());
  else
    std::fprintf(stderr, "%s: note: plotting failed (exit %d; is python3-matplotlib installed?); the metrics are in %s\n",
                 program.c_str(), rc, run_dir.c_str());
}

// Where a trainer runs: its device, its rank among the data-parallel processes (one
// process when not launched by tools/kiln-run, torchrun, Slurm or mpirun) and its run
// directory (rank 0 creates and locks it; the others wait, then check it exists).
struct RunContext {
  Device device = kCPU;
  std::string device_name;
  std::shared_ptr<dist::ProcessGroup> pg;
  int world = 1, rank = 0;
  bool main_rank = true;
  std::unique_ptr<run::RunDir> dir;
};

// The device a program runs on, from its --device flag: "" (cuda when usable, else cpu),
// cpu, cuda or cuda:N; under several ranks plain "cuda" puts each rank on the GPU of its
// local rank. A missing GPU is a kiln::Error naming the program.
inline Device pick_device(const std::string& program, const std::string& device_flag, const dist::LaunchEnv& env) {
  const std::string want = device_flag.empty() ? (cuda_is_available() ? "cuda" : "cpu") : device_flag;
  KILN_CHECK(want == "cpu" || cuda_is_available(), program, ": --device ", want,
             ": no usable CUDA device (build without CUDA, or no GPU)");
  Device device(want.c_str());
  if (env.world_size > 1 && device.is_cuda() && device_flag.find(':') == std::string::npos)
    device = dist::local_device(DeviceType::CUDA, env);
  return device;
}

// device_flag: as pick_device's. global_batch must divide by
// the number of ranks. short_name names the default run directory (runs/<short>-<time>).
// Bad usage is a CLI error (exit 2); a missing GPU or an unusable run directory a
// kiln::Error (exit 1).
inline RunContext open_run(const std::string& program, const std::string& short_name, RunFlags& flags,
                           const std::string& device_flag, int64_t global_batch) {
  RunContext c;
  const dist::LaunchEnv env = dist::launch_env();
  c.device = pick_device(program, device_flag, env);
  dist::InitOptions io;
  io.device = c.device;
  c.pg = dist::init_process_group(io, env);
  c.world = c.pg->size();
  c.rank = c.pg->rank();
  c.main_rank = c.rank == 0;
  c.device_name = c.device.str();
  if (global_batch % c.world != 0)
    throw CLI::ValidationError("--batch-size", std::to_string(global_batch) + " is the global batch and must divide by the " +
                                                   std::to_string(c.world) + " ranks");
  if (flags.run_dir.empty()) {
    if (flags.resume) throw CLI::RequiredError("--resume needs --run-dir (the run to continue)");
    KILN_CHECK(c.world == 1, program, ": give --run-dir when running on several ranks (they must share it)");
    flags.run_dir = default_run_dir(short_name);
  }
  if (c.main_rank) c.dir = std::make_unique<run::RunDir>(flags.run_dir, start_mode(flags), true);
  c.pg->barrier()->wait();
  if (!c.main_rank) c.dir = std::make_unique<run::RunDir>(flags.run_dir, start_mode(flags), false);
  return c;
}

}  // namespace kiln::tools
