// kiln_train_cnn: trains a small ResNet-style CNN with BatchNorm on Fashion-MNIST, on the
// CPU or a CUDA device, with per-epoch evaluation on the 10k test set, JSON-lines metrics,
// atomic per-epoch checkpoints (safetensors) and exact resumption.
//
// Model (models/zoo/resnet_cnn.h; 77,754 parameters with the default --width 16):
//   stem   conv3x3 1->w, BN, ReLU                          28x28
//   block  BasicBlock w->w                                 28x28
//   block  BasicBlock w->2w, stride 2 (1x1 conv + BN skip) 14x14
//   block  BasicBlock 2w->4w, stride 2                       7x7
//   head   global average pool, Linear 4w->10
// BasicBlock: relu(bn2(conv2(relu(bn1(conv1(x))))) + skip(x)); BN weights start at 1 (a
// zero-initialised bn2 weight, Goyal et al. 2017, made Adam's first epoch much slower:
// the residual branches only open as fast as lr per step), convs have no bias and use kaiming_normal(fan_out, relu) drawn from
// a Generator seeded with --seed, so a run is a pure function of its flags on the CPU.
//
// The run (models/run/, tools/run_cli.h): everything goes to one directory, --run-dir
// (config.toml, metrics.jsonl, checkpoints/, plots/), which a second run refuses to reuse
// unless told --resume or --overwrite.
//
// Determinism and resumption: the data loader's order is a function of (seed, epoch)
// (models/data/loader.h), the model has no dropout, and a checkpoint holds the model
// ("model.*"), the optimizer ("optim.*"), the lr schedule ("sched.*") and the training
// state ("train.*": epochs done, global step, init generator seed/offset, data loader
// cursor, the epoch's running loss sums) as 0-d tensors, plus the run's settings as
// metadata. Checkpoints are written at the end of every epoch and, with --save-every N,
// every N steps (mid-epoch too). --resume continues from the newest; the per-step losses
// then equal those of an uninterrupted run (tests/tools/test_train_cnn_run.py), and the
// metrics are cut back to the checkpoint's step, so no step is recorded twice.
//
// Output: a progress line on stderr (\r on a terminal, one line per update otherwise),
// one line per epoch on stderr, JSON lines in <run>/metrics.jsonl (one per step, one per
// epoch), a plot of them in <run>/plots/metrics.png, and a final JSON summary line on
// stdout. Losses are read back from the device once per progress line (not every step).
// A NaN/inf loss stops the run (exit 3) before anything is checkpointed after it.
//
// Data parallel: under tools/kiln-run (or torchrun, Slurm, mpirun) every rank trains a
// replica wrapped in DistributedDataParallel (Gloo on the CPU, NCCL on GPUs, each rank on
// the GPU of its local rank) on its own shard of every epoch. --batch-size is the global
// batch, split evenly across the ranks, so the optimizer sees the same batches whatever
// the number of ranks (BatchNorm normalises over each rank's part, as PyTorch's DDP does
// without SyncBatchNorm). Rank 0 alone evaluates, logs, writes metrics and checkpoints;
// a checkpoint written by N ranks resumes on any M that divides the batch.
// --dp hierarchical all-reduces through the node hierarchy; --dp neighbor trains
// decentralized (DecentralizedDataParallel over --topology, --neighbor-mode), logs the
// consensus distance every --log-every steps and averages all ranks exactly at every
// epoch end and checkpoint.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <kiln/kiln.h>
#include <kiln/models/run/checkpoint.h>
#include <kiln/models/data/mix.h>
#include <kiln/models/eval/curvature.h>
#include <kiln/models/run/metrics.h>
#include <kiln/models/run/progress.h>
#include <kiln/models/run/run_dir.h>
#include <kiln/models/run/step_log.h>

#include "cli.h"
#include "run_cli.h"

namespace {

using namespace kiln;
using Clock = std::chrono::steady_clock;


// ---------------------------------------------------------------------------------------
// Flags
// ---------------------------------------------------------------------------------------

struct Config {
  int64_t epochs = 3;
  int64_t batch_size = 128;
  double lr = 0;  // 0: the optimizer's default below
  std::string optimizer = "adamw";
  double mixup = 0, cutmix = 0;  // > 0: Mixup / CutMix with Beta(alpha, alpha)
  int64_t restart_every = 0;
  double grad_noise = 0, grad_noise_gamma = 0.55;
  double sam_rho = 0;    // --optimizer sam|asam: 0 = 0.05 for SAM, 0.5 for ASAM
  std::string sam_base = "sgd";
  double asam_eta = 0.01;
  double prox_lambda = 1e-4, prox_p = 1;  // --optimizer proxadam: the L_p penalty on the weights
  EntropySGDOptions esgd{.inner_steps = 8};  // --optimizer entropy-sgd (Chaudhari et al. 2017)
  int64_t hessian_every = 0;     // > 0: the loss Hessian's top eigenvalue every N steps
  int64_t hessian_iterations = 20;
  int64_t noise_scale_every = 0;  // > 0: McCandlish et al.'s gradient noise scale every N steps
  int64_t ov_every = 0;           // > 0: Zhang et al.'s optimization variance every N steps
  double ov_lr = 0.1;
  bool fisher_at_init = false;
  std::string schedule = "cosine";
  double weight_decay = -1;  // < 0: the optimizer's default below
  int64_t warmup_steps = 50;
  uint64_t seed = 0;
  int64_t width = 16;
  bool augment = false;
  int64_t stop_after = 0;  // stop after this many epochs in this invocation (0: never)
  int64_t limit_train = 0;
  int64_t limit_test = 0;
  int64_t eval_batch_size = 500;
  std::string data_dir = data::kFashionMnistDir;
  std::string device;  // "" = cuda when available, else cpu
  tools::DataParallelFlags par;  // --dp, --topology, --neighbor-mode (with several ranks)
  int64_t exact_average_every = 0;
  tools::RunFlags run;
};

void add_flags(CLI::App& app, Config& c) {
  app.option_defaults()->always_capture_default();  // config.toml lists every value, defaults too
  // A flag given twice takes its last value (as argparse does), so a command line can
  // override what --config or an earlier flag set.
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  app.add_option("--epochs", c.epochs, "epochs in the whole run")->check(tools::integer_range(1, int64_t{1} << 40));
  app.add_option("--batch-size", c.batch_size, "global training batch size, split across the ranks")
      ->check(tools::integer_range(1, int64_t{1} << 40));
  app.add_option("--lr", c.lr,
                 "peak learning rate (0: the optimizer's default: 0.1 for sgd and srsgd, 3e-3 for adam, adamw, "
                 "adams and proxadam, 3 for lars, 2e-2 for lamb, 10 for apollo and entropy-sgd)")
      ->check(tools::positive_real(/*allow_zero=*/true));
  app.add_option("--optimizer", c.optimizer,
                 "sgd (momentum 0.9, nesterov) | adam | adamw | lars | lamb | adams | srsgd | apollo | proxadam "
                 "(ProxGen: Adam with the proximal step of --prox-lambda * |w|^--prox-p on the weights) | sam | "
                 "asam (sharpness-aware minimisation around --sam-base, two forward/backward passes per step) | "
                 "entropy-sgd (Langevin inner loop over --esgd-inner-steps slices of each batch, then nesterov SGD); "
                 "formulas in optim/research.h, optim/proximal.h, optim/sam.h and optim/entropy_sgd.h")
      ->check(CLI::IsMember(
          {"sgd", "adam", "adamw", "lars", "lamb", "adams", "srsgd", "apollo", "proxadam", "sam", "asam", "entropy-sgd"}));
  app.add_option("--mixup", c.mixup,
                 "Mixup (Zhang et al. 2018) with lam ~ Beta(ALPHA, ALPHA) and the mixed loss (0: off; they use 0.2-1)")
      ->check(tools::positive_real(/*allow_zero=*/true));
  app.add_option("--cutmix", c.cutmix, "CutMix (Yun et al. 2019) with lam ~ Beta(ALPHA, ALPHA) (0: off; they use 1)")
      ->check(tools::positive_real(/*allow_zero=*/true));
  app.add_option("--restart-every", c.restart_every, "srsgd: steps between momentum restarts (0: one epoch)")
      ->check(tools::non_negative<int64_t>());
  app.add_option("--grad-noise", c.grad_noise,
                 "annealed Gaussian gradient noise of variance ETA / (1 + t)^gamma (Neelakantan et al. 2015; "
                 "0: off; they use 0.01, 0.3 or 1)")
      ->check(tools::positive_real(/*allow_zero=*/true));
  app.add_option("--grad-noise-gamma", c.grad_noise_gamma, "--grad-noise's decay exponent gamma")
      ->check(tools::positive_real());
  app.add_option("--sam-rho", c.sam_rho,
                 "sam/asam: the neighbourhood radius rho (0: 0.05 for sam as Foret et al. 2021, 0.5 for asam as "
                 "Kwon et al. 2021)")
      ->check(tools::positive_real(/*allow_zero=*/true));
  app.add_option("--sam-base", c.sam_base, "sam/asam: the optimizer SAM wraps: sgd | adam | adamw")
      ->check(CLI::IsMember({"sgd", "adam", "adamw"}));
  app.add_option("--asam-eta", c.asam_eta, "asam: eta in T = |w| + eta")->check(tools::positive_real(true));
  app.add_option("--prox-lambda", c.prox_lambda, "proxadam: the penalty weight lambda (on conv/linear weights only)")
      ->check(tools::positive_real(/*allow_zero=*/true));
  app.add_option("--prox-p", c.prox_p, "proxadam: the penalty |w|^p: 0 (count), 0.5, 2/3 (or 0.6667) or 1 (L1)")
      ->transform(CLI::Validator(
          [](std::string& v) -> std::string {
            // "2/3" and its decimals down to 0.6667 mean exactly 2/3 (as written to config.toml)
            char* end = nullptr;
            const double x = v == "2/3" ? 2.0 / 3.0 : std::strtod(v.c_str(), &end);
            if (v != "2/3" && (end == v.c_str() || *end != '\0')) return "must be 0, 0.5, 2/3 (or 0.6667) or 1";
            if (std::abs(x - 2.0 / 3.0) < 5e-5) {
              v = "0.66666666666666663";
              return {};
            }
            if (x == 0 || x == 0.5 || x == 1) return {};
            return "must be 0, 0.5, 2/3 (or 0.6667) or 1";
          },
          "P"));
  tools::add_entropy_sgd_flags(app, c.esgd, "each batch");
  app.add_option("--hessian-every", c.hessian_every,
                 "every N steps, the top eigenvalue of the loss Hessian on that step's batch (power iteration on "
                 "Hessian-vector products; rank 0's share) beside 2/lr, in metrics.jsonl (0: off)")
      ->check(tools::non_negative<int64_t>());
  app.add_option("--noise-scale-every", c.noise_scale_every,
                 "every N steps, the gradient noise scale tr(S)/|G|^2 (McCandlish et al. 2018, the critical batch "
                 "size's estimate) from 4 micro-batches of that step's batch (rank 0's share), in metrics.jsonl")
      ->check(tools::non_negative<int64_t>());
  app.add_option("--ov-every", c.ov_every,
                 "every N steps, the optimization variance (Zhang et al. 2021): the variance of the test-batch "
                 "predictions after one gradient step (--ov-lr) on each of 4 micro-batches of that step's batch, "
                 "relative to their mean square (rank 0), in metrics.jsonl")
      ->check(tools::non_negative<int64_t>());
  app.add_option("--ov-lr", c.ov_lr, "--ov-every: the learning rate of the one plain gradient step")
      ->check(tools::positive_real());
  app.add_flag("--fisher-at-init", c.fisher_at_init,
               "before training, the top eigenvalue lambda_0 of the cross-entropy Fisher on the first batch and "
               "2 / lambda_0, the lazy/catapult learning-rate boundary of Lewkowycz et al. 2020 (metrics.jsonl)");
  app.add_option("--hessian-iterations", c.hessian_iterations, "--hessian-every: at most N Hessian-vector products")
      ->check(tools::integer_range(1, 100000));
  app.add_option("--weight-decay", c.weight_decay,
                 "weight decay (negative: the optimizer's default: 0 for adam, 1e-2 for adamw and lamb, 5e-4 for "
                 "the others)");
  app.add_option("--schedule", c.schedule, "cosine (linear warmup + cosine) | knee | constant")
      ->check(CLI::IsMember({"cosine", "knee", "constant"}));
  app.add_option("--warmup-steps", c.warmup_steps, "linear warmup steps")->check(tools::non_negative<int64_t>());
  app.add_option("--seed", c.seed, "seed of the initialisation and the data order")->check(tools::any_uint64());
  app.add_option("--width", c.width, "channels of the first stage (stages w, 2w, 4w)")
      ->check(tools::integer_range(1, 4096));
  app.add_flag("--augment", c.augment, "random crop (pad 2) + horizontal flip of the training images");
  app.add_option("--device", c.device, "cpu | cuda | cuda:N (default cuda when a GPU is usable, else cpu)")
      ->check(tools::device_spec());
  app.add_option("--data-dir", c.data_dir, "Fashion-MNIST idx(.gz) files");
  app.add_option("--limit-train", c.limit_train, "use only the first N training images (quick tests; 0: all)")
      ->check(tools::non_negative<int64_t>());
  app.add_option("--limit-test", c.limit_test, "evaluate on only the first N test images (quick tests; 0: all)")
      ->check(tools::non_negative<int64_t>());
  app.add_option("--eval-batch-size", c.eval_batch_size, "test-set batch size")
      ->check(tools::integer_range(1, int64_t{1} << 40));
  app.add_option("--stop-after", c.stop_after, "stop after N epochs of this invocation (an interruption at an epoch end)")
      ->check(tools::non_negative<int64_t>())
      ->configurable(false);
  tools::add_dp_flags(app, c.par, /*neighbor=*/true,
                      "exactly, with BN statistics and optimizer state, at every epoch end and checkpoint");
  app.add_option("--exact-average-every", c.exact_average_every,
                 "--dp neighbor: an exact all-reduce of the parameters every N steps instead (0: only at epoch ends)")
      ->check(tools::non_negative<int64_t>());
  tools::add_run_flags(app, c.run);
}

// ---------------------------------------------------------------------------------------
// Model
// ---------------------------------------------------------------------------------------

// Optimizers
// ---------------------------------------------------------------------------------------

struct OptimizerDefaults {
  double lr, weight_decay;
};
OptimizerDefaults optimizer_defaults(const std::string& kind) {
  if (kind == "sgd") return {0.1, 5e-4};
  if (kind == "adam") return {3e-3, 0.0};
  if (kind == "adamw") return {3e-3, 1e-2};
  if (kind == "lars") return {3.0, 5e-4};
  if (kind == "lamb") return {2e-2, 1e-2};
  if (kind == "adams") return {3e-3, 5e-4};
  if (kind == "srsgd") return {0.1, 5e-4};
  if (kind == "apollo") return {10.0, 2.5e-4};  // lr picked on a quick run; L2 decay as Ma 2020 on CIFAR
  if (kind == "proxadam") return {3e-3, 0.0};
  if (kind == "entropy-sgd") return {10.0, 5e-4};  // the outer nesterov SGD; lr picked on a quick run
  throw Error("kiln_train_cnn: no optimizer " + kind);
}

// LARS and LAMB adapt the weights' steps layer by layer; biases and BatchNorm's scales and
// shifts (the 1-d params) are left unadapted and undecayed, as You et al. do.
std::vector<ParamGroup> layerwise_groups(nn::Module& m, double wd) {
  ParamGroup weights, others;
  for (const Tensor& p : m.parameters()) (p.dim() >= 2 ? weights : others).params.push_back(p);
  weights.options = {{"weight_decay", wd}};
  others.options = {{"weight_decay", 0.0}, {"adapt", 0.0}};
  std::vector<ParamGroup> g{weights};
  if (!others.params.empty()) g.push_back(others);
  return g;
}

std::unique_ptr<Optimizer> make_optimizer(const std::string& kind, nn::Module& m, double lr, double wd,
                                          const Config& c, int64_t steps_per_epoch) {
  if (kind == "sgd") {
    SGDOptions o;
    o.lr = lr;
    o.momentum = 0.9;
    o.nesterov = true;
    o.weight_decay = wd;
    return std::make_unique<SGD>(m.parameters(), o);
  }
  if (kind == "adam") return std::make_unique<Adam>(m.parameters(), AdamOptions{.lr = lr, .weight_decay = wd});
  if (kind == "adamw") return std::make_unique<AdamW>(m.parameters(), AdamWOptions{.lr = lr, .weight_decay = wd});
  if (kind == "lars") return std::make_unique<LARS>(layerwise_groups(m, wd), LARSOptions{.lr = lr});
  if (kind == "lamb") return std::make_unique<LAMB>(layerwise_groups(m, wd), LAMBOptions{.lr = lr});
  if (kind == "adams") return std::make_unique<AdamS>(m.parameters(), AdamSOptions{.lr = lr, .weight_decay = wd});
  if (kind == "srsgd") {
    SRSGDOptions o;
    o.lr = lr;
    o.weight_decay = wd;
    o.restart_every = c.restart_every > 0 ? c.restart_every : steps_per_epoch;
    return std::make_unique<SRSGD>(m.parameters(), o);
  }
  if (kind == "apollo") {
    // The run's lr schedule warms up (--warmup-steps), so Apollo's own warmup is off.
    return std::make_unique<Apollo>(m.parameters(), ApolloOptions{.lr = lr, .weight_decay = wd, .warmup = 0});
  }
  if (kind == "proxadam") {
    // The penalty applies to conv/linear weights; biases and BatchNorm's scales and shifts
    // take plain Adam steps (lambda 0).
    std::vector<ParamGroup> g = layerwise_groups(m, wd);
    g[0].options = {{"weight_decay", wd}, {"lambda", c.prox_lambda}};
    if (g.size() > 1) g[1].options = {{"weight_decay", 0.0}, {"lambda", 0.0}};
    return std::make_unique<ProxAdam>(g, ProxAdamOptions{.lr = lr, .p = c.prox_p});
  }
  throw Error("kiln_train_cnn: no optimizer " + kind);
}

// ---------------------------------------------------------------------------------------
// Model
// ---------------------------------------------------------------------------------------

// The model lives in the model zoo (models/zoo/resnet_cnn.h).
std::shared_ptr<nn::Sequential> make_model(int64_t w, Generator& gen) {
  models::ResNetCNNOptions o;
  o.width = w;
  o.in_channels = 1;
  o.num_classes = data::kFashionMnistClasses;
  return models::resnet_cnn(o, gen);
}

// ---------------------------------------------------------------------------------------
// Checkpoints
// ---------------------------------------------------------------------------------------

// The settings a resumed run must share with the run that wrote the checkpoint (the
// others, such as --epochs, may change).
std::map<std::string, std::string> run_metadata(const Config& c, double lr, double wd) {
  std::ostringstream lr_s, wd_s;
  lr_s.precision(17);
  wd_s.precision(17);
  lr_s << lr;
  wd_s << wd;
  return {{"format", "kiln_train_cnn/2"},
          {"batch_size", std::to_string(c.batch_size)},
          {"lr", lr_s.str()},
          {"weight_decay", wd_s.str()},
          {"optimizer", c.optimizer},
          {"grad_noise", detail::str(c.grad_noise, " ", c.grad_noise_gamma)},
          {"restart_every", std::to_string(c.restart_every)},
          {"mix", detail::str(c.mixup, " ", c.cutmix)},
          {"sam", c.optimizer == "sam" || c.optimizer == "asam"
                      ? detail::str(c.sam_base, " rho ", c.sam_rho, " eta ", c.asam_eta)
                      : std::string()},
          {"prox", c.optimizer == "proxadam" ? detail::str(c.prox_lambda, " p ", c.prox_p) : std::string()},
          {"entropy_sgd", c.optimizer == "entropy-sgd"
                              ? tools::entropy_sgd_description(c.esgd)
                              : std::string()},
          {"schedule", c.schedule},
          {"warmup_steps", std::to_string(c.warmup_steps)},
          {"seed", std::to_string(c.seed)},
          {"width", std::to_string(c.width)},
          {"augment", c.augment ? "1" : "0"},
          {"limit_train", std::to_string(c.limit_train)}};
}

using run::f64_scalar;
using run::get_i64;
using run::i64_scalar;

// Where training stands: enough to continue exactly, mid-epoch too.
struct TrainState {
  int64_t epochs_done = 0;
  int64_t step = 0;  // global optimizer steps taken (skipped steps included)
  // The running sums of the epoch in progress, over this rank's batches.
  double epoch_loss_sum = 0;
  int64_t epoch_loss_n = 0, epoch_images = 0;
};

std::map<std::string, Tensor> checkpoint_tensors(const nn::Module& model, const Optimizer& opt,
                                                 const LRScheduler& sched, const TrainState& ts, const Generator& gen,
                                                 const data::DataLoader& loader) {
  std::map<std::string, Tensor> t;
  run::put_state(t, "model.", model.state_dict());
  run::put_state(t, "optim.", opt.state_dict());
  run::put_state(t, "sched.", sched.state_dict());
  t["train.epoch"] = i64_scalar(ts.epochs_done);
  t["train.step"] = i64_scalar(ts.step);
  t["train.epoch_loss_sum"] = f64_scalar(ts.epoch_loss_sum);
  t["train.epoch_loss_n"] = i64_scalar(ts.epoch_loss_n);
  t["train.epoch_images"] = i64_scalar(ts.epoch_images);
  t["train.rng_seed"] = i64_scalar(static_cast<int64_t>(gen.seed()));
  t["train.rng_offset"] = i64_scalar(static_cast<int64_t>(gen.offset()));
  t["train.loader_epoch"] = i64_scalar(loader.state().epoch);
  t["train.loader_batch"] = i64_scalar(loader.state().batch);
  return t;
}

// ---------------------------------------------------------------------------------------
// Evaluation
// ---------------------------------------------------------------------------------------

// The exact zeros among the conv/linear weights (the params of >= 2 dims).
struct WeightZeros {
  std::vector<Tensor> weights;
  int64_t zeros = 0, total = 0;
  double fraction() const { return total > 0 ? double(zeros) / double(total) : 0.0; }
};
WeightZeros weight_zeros(nn::Module& m) {
  WeightZeros z;
  NoGradGuard no_grad;
  for (const Tensor& p : m.parameters()) {
    if (p.dim() < 2) continue;
    z.weights.push_back(p);
    z.total += p.numel();
    z.zeros += sum(eq(p, 0.0).to(DType::I64)).item<int64_t>();
  }
  return z;
}

using EvalResult = eval::Accuracy;

EvalResult evaluate(nn::Module& model, const data::DataLoader& test) { return eval::evaluate_classifier(model, test); }

// ---------------------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------------------

int train(Config cfg, const CLI::App& app) {
  const auto t_start = Clock::now();
  // ---- device, ranks, run directory ----
  tools::RunContext rc = tools::open_run("kiln_train_cnn", "train_cnn", cfg.run, cfg.device, cfg.batch_size);
  const Device device = rc.device;
  const std::string dev_name = rc.device_name;
  auto pg = rc.pg;
  const int world = rc.world, rank = rc.rank;
  const bool main_rank = rc.main_rank;
  auto& rd = rc.dir;
  run::Checkpointer ckpt(rd->checkpoint_dir(), run::CheckpointOptions{cfg.run.keep_last});

  // ---- data ----
  data::Dataset train = data::load_fashion_mnist(cfg.data_dir, true).head(cfg.limit_train);
  data::Dataset test = data::load_fashion_mnist(cfg.data_dir, false).head(cfg.limit_test);
  data::LoaderOptions lo;
  lo.batch_size = cfg.batch_size / world;
  lo.rank = rank;
  lo.world_size = world;
  lo.shuffle = true;
  lo.seed = cfg.seed;
  lo.drop_last = false;
  lo.augment = cfg.augment;
  lo.crop_padding = 2;
  lo.device = device;
  data::DataLoader loader(train, lo);
  data::LoaderOptions to;
  to.batch_size = cfg.eval_batch_size;
  to.shuffle = false;
  to.device = device;
  data::DataLoader test_loader(test, to);
  const int64_t steps_per_epoch = loader.size();
  int64_t total_steps = 0;
  KILN_CHECK(steps_per_epoch > 0, "kiln_train_cnn: no training batches (", train.size(), " images, batch ",
             lo.batch_size, " per rank)");
  KILN_CHECK(!__builtin_mul_overflow(steps_per_epoch, cfg.epochs, &total_steps), "kiln_train_cnn: --epochs ",
             cfg.epochs, " x ", steps_per_epoch, " steps per epoch is more steps than an int64 counts");

  // ---- model ----
  Generator gen(cfg.seed);
  auto model = make_model(cfg.width, gen);
  model->to(device);
  model->train();
  const int64_t n_params = model->num_parameters();

  // ---- optimizer and schedule ----
  // sam/asam wrap --sam-base; the base's lr and weight-decay defaults apply.
  // entropy-sgd wraps nesterov SGD, with its own lr and weight-decay defaults.
  const bool use_sam = cfg.optimizer == "sam" || cfg.optimizer == "asam";
  const bool use_esgd = cfg.optimizer == "entropy-sgd";
  const std::string base = use_sam ? cfg.sam_base : use_esgd ? "sgd" : cfg.optimizer;
  const OptimizerDefaults def = optimizer_defaults(use_esgd ? cfg.optimizer : base);
  const double lr = cfg.lr > 0 ? cfg.lr : def.lr;
  const double wd = cfg.weight_decay >= 0 ? cfg.weight_decay : def.weight_decay;
  std::unique_ptr<Optimizer> opt = make_optimizer(base, *model, lr, wd, cfg, steps_per_epoch);
  std::unique_ptr<SAM> sam;
  if (use_sam) {
    const bool adaptive = cfg.optimizer == "asam";
    const double rho = cfg.sam_rho > 0 ? cfg.sam_rho : adaptive ? 0.5 : 0.05;
    sam = std::make_unique<SAM>(*opt, SamOptions{rho, adaptive, cfg.asam_eta});
  }
  std::unique_ptr<EntropySGD> esgd;
  if (use_esgd) {
    EntropySGDOptions o = cfg.esgd;
    o.seed = cfg.seed;  // the same Langevin noise on every rank
    esgd = std::make_unique<EntropySGD>(*opt, o);
  }
  const int64_t warmup = std::min(cfg.warmup_steps, total_steps);
  std::unique_ptr<LRScheduler> sched;
  if (cfg.schedule == "cosine")
    sched = std::make_unique<CosineWithWarmup>(*opt, warmup, total_steps, 0.0);
  else if (cfg.schedule == "knee")
    sched = std::make_unique<KneeSchedule>(*opt, total_steps, (total_steps - warmup) / 2, warmup, 0.0);
  else
    sched = std::make_unique<StepLR>(*opt, total_steps + 1, 1.0);  // constant (after no warmup)

  // ---- resume ----
  const auto meta = run_metadata(cfg, lr, wd);
  TrainState ts;
  std::string last_ckpt;
  if (cfg.run.resume) {
    run::ResumePoint ck = run::load_resume_point("kiln_train_cnn", ckpt, meta);
    last_ckpt = ck.path;
    model->load_state_dict(run::sub_state(ck.tensors, "model."));
    opt->load_state_dict(run::sub_state(ck.tensors, "optim."));
    if (esgd) {  // one Entropy-SGD step per training step: its scoping continues at ts.step
      std::map<std::string, Tensor> s = run::sub_state(ck.tensors, "optim.");
      s["entropy_sgd.step"] = f64_scalar(static_cast<double>(get_i64(ck.tensors, "train.step", ck.path)));
      esgd->load_state_dict(s);
    }
    sched->load_state_dict(run::sub_state(ck.tensors, "sched."));
    ts.epochs_done = get_i64(ck.tensors, "train.epoch", last_ckpt);
    ts.step = get_i64(ck.tensors, "train.step", last_ckpt);
    ts.epoch_loss_sum = run::get_f64(ck.tensors, "train.epoch_loss_sum", last_ckpt);
    ts.epoch_loss_n = get_i64(ck.tensors, "train.epoch_loss_n", last_ckpt);
    ts.epoch_images = get_i64(ck.tensors, "train.epoch_images", last_ckpt);
    gen.set_state(static_cast<uint64_t>(get_i64(ck.tensors, "train.rng_seed", last_ckpt)),
                  static_cast<uint64_t>(get_i64(ck.tensors, "train.rng_offset", last_ckpt)));
    loader.seek(get_i64(ck.tensors, "train.loader_epoch", last_ckpt),
                get_i64(ck.tensors, "train.loader_batch", last_ckpt));
    auto ep = ck.metadata.find("epochs");
    if (main_rank && ep != ck.metadata.end() && ep->second != std::to_string(cfg.epochs))
      std::fprintf(stderr,
                   "kiln_train_cnn: note: the checkpoint's run had --epochs %s, this one %lld; the lr schedule "
                   "continues at step %lld of the new length\n",
                   ep->second.c_str(), (long long)cfg.epochs, (long long)ts.step);
    auto ws = ck.metadata.find("world_size");
    if (main_rank)
      std::fprintf(stderr, "kiln_train_cnn: resumed from %s at epoch %lld, step %lld (written by %s rank(s), now %d)\n",
                   last_ckpt.c_str(), (long long)ts.epochs_done, (long long)ts.step,
                   ws == ck.metadata.end() ? "1" : ws->second.c_str(), world);
  } else {
    loader.seek(0, 0);
  }
  if (ts.epochs_done >= cfg.epochs && main_rank)
    std::fprintf(stderr, "kiln_train_cnn: the checkpoint already has %lld epochs (--epochs %lld): nothing to do\n",
                 (long long)ts.epochs_done, (long long)cfg.epochs);

  // ---- metrics and configuration (rank 0) ----
  run::MetricsWriter metrics;
  if (main_rank) {
    tools::write_config(app, rd->config_path());
    if (cfg.run.resume) {
      const int64_t dropped = run::MetricsWriter::truncate_after(rd->metrics_path(), ts.step);
      if (dropped > 0)
        std::fprintf(stderr, "kiln_train_cnn: dropped %lld metrics record(s) written after step %lld (the "
                     "checkpoint's), which this run trains again\n", (long long)dropped, (long long)ts.step);
    }
    metrics = run::MetricsWriter(rd->metrics_path());
  }

  // Every replica starts from rank 0's state (DDP broadcasts it); gradients are averaged
  // across the ranks during backward. The network the steps run: the model, or the model
  // wrapped data-parallel (a Module too).
  // --dp neighbor: each rank keeps its own parameters, averaged with its neighbors every
  // step; at every epoch end and checkpoint all ranks average exactly (parameters,
  // BatchNorm statistics and optimizer state), so evaluation and checkpoints see one
  // model and a resumed run continues exactly.
  std::shared_ptr<nn::Module> net = model;
  std::shared_ptr<dist::DistributedDataParallel> ddp;
  std::shared_ptr<dist::DecentralizedDataParallel> dec;
  if (world > 1 && cfg.par.dp == "neighbor") {
    dist::DecentralizedOptions o;
    o.topology = dist::Topology::named(cfg.par.topology, world);
    o.mode = dist::parse_decentralized_mode(cfg.par.neighbor_mode);
    o.exact_average_every = cfg.exact_average_every;
    dec = std::make_shared<dist::DecentralizedDataParallel>(model, pg, o);
    dec->set_step(ts.step);
    net = dec;
    // Adam's family divides by a second-moment estimate; each rank's comes from its own
    // share of the batch, noisier than the ring's all-reduced gradient, so where the noise
    // dominates its steps are up to sqrt(world) smaller (README, "Beyond the ring").
    const bool adaptive = base == "adam" || base == "adamw" || base == "adams" || base == "proxadam";
    if (main_rank && adaptive && cfg.lr <= 0)
      std::fprintf(stderr,
                   "kiln_train_cnn: note: --dp neighbor with %s: each rank's second-moment estimate sees 1/%d of the "
                   "batch, so its steps are up to %.3g x smaller than the ring's; --lr %.3g (%.3g x the default, the "
                   "square root of the ranks) compensates (on 4 ranks it matched the ring's accuracy)\n",
                   base.c_str(), world, std::sqrt(double(world)), lr * std::sqrt(double(world)),
                   std::sqrt(double(world)));
  } else if (world > 1) {
    dist::DDPOptions o;
    o.hierarchical = cfg.par.dp == "hierarchical";
    ddp = std::make_shared<dist::DistributedDataParallel>(model, pg, o);
    net = ddp;
  }
  const std::string dp_desc =
      world == 1 ? "none"
      : dec      ? detail::str(tools::dp_description(cfg.par),
                               cfg.exact_average_every > 0 ? detail::str(" exact every ", cfg.exact_average_every) : "")
      : ddp && cfg.par.dp == "hierarchical" ? detail::str("hierarchical, ", pg->ranks_per_node(), " ranks per node")
                                        : std::string("ring");
  double comm_wait_s = 0;  // time blocked on gradient all-reduces or neighbor exchanges
  int64_t comm_steps = 0;
  // Every rank: the exact average that ends an epoch or precedes a checkpoint (--dp neighbor).
  auto reach_consensus = [&] {
    if (!dec) return;
    dec->average_exactly();
    std::map<std::string, Tensor> sd = opt->state_dict();
    dist::average_state(*pg, sd);
    opt->load_state_dict(sd);
  };

  if (main_rank)
    std::fprintf(stderr,
                 "kiln_train_cnn: device %s, %lld params, %lld train / %lld test images, %lld steps/epoch, "
                 "%s lr %g wd %g, %s schedule, batch %lld%s%s; run %s\n",
                 dev_name.c_str(), (long long)n_params, (long long)train.size(), (long long)test.size(),
                 (long long)steps_per_epoch, cfg.optimizer.c_str(), lr, wd, cfg.schedule.c_str(),
                 (long long)cfg.batch_size,
                 world > 1 ? detail::str(" (", world, " ranks x ", cfg.batch_size / world, ", ", pg->backend_name(),
                                         ")").c_str()
                           : "",
                 world > 1 ? (", data parallel: " + dp_desc).c_str() : "", rd->path().c_str());

  // ---- training ----
  run::Progress progress("kiln_train_cnn", total_steps, ts.step, cfg.run.log_every);
  run::NonFiniteGuard guard("kiln_train_cnn", tools::nonfinite_policy(cfg.run));
  const bool skip_policy = cfg.run.on_nonfinite == "skip";
  double train_seconds = 0;
  int64_t train_images = 0, images_since_log = 0;
  double last_train_loss = NAN;
  EvalResult last_eval{NAN, NAN};
  int64_t epochs_this_run = 0, steps_this_run = 0;
  bool interrupted = false;

  // Per-step losses stay on the device until a progress line, a checkpoint or the epoch's
  // end reads them back in one go (run::StepLog: one host synchronisation, not one per step).
  run::StepLog steps(skip_policy ? nullptr : &guard, &metrics, {"loss"});
  auto flush = [&]() -> double {  // returns the mean of the flushed losses (NaN when none)
    const run::StepLog::Summary s = steps.flush(last_ckpt);
    if (s.steps == 0) return NAN;
    ts.epoch_loss_sum += s.sum_finite[0];
    ts.epoch_loss_n += s.count_finite[0];
    return s.mean("loss");
  };
  auto save = [&](bool epoch_end) {
    if (!main_rank) return;
    metrics.sync();  // every record up to this step is on disk before the checkpoint names it
    auto m = meta;
    m["epochs"] = std::to_string(cfg.epochs);
    m["data_parallel"] = dp_desc;  // for the record: a checkpoint is one (averaged) model either way
    m["world_size"] = std::to_string(world);  // for the record: any number of ranks may resume it
    std::map<std::string, Tensor> state = checkpoint_tensors(*model, *opt, *sched, ts, gen, loader);
    run::check_finite_state("kiln_train_cnn", state, ts.step, last_ckpt);  // never checkpoint a diverged state
    last_ckpt = ckpt.save(ts.step, state, m);
    (void)epoch_end;
  };

  // The instruments below run train-mode forwards on the plain model (no DDP hooks run:
  // grad() does not accumulate into .grad); `Saved` puts the BatchNorm running averages
  // (and, for --ov-every, the params) back afterwards.
  struct Saved {
    std::vector<Tensor> live, copy;
    explicit Saved(std::vector<Tensor> t) : live(std::move(t)) {
      for (const Tensor& x : live) copy.push_back(x.detach().clone());
    }
    void restore() {
      NoGradGuard no_grad;
      for (size_t i = 0; i < live.size(); ++i) live[i].copy_(copy[i]);
    }
  };
  // The gradient of micro-batch i (b samples) of `batch`, zeros for params it does not reach.
  auto micro_batch_grad = [&](const data::Batch& batch, int64_t i, int64_t b) {
    std::vector<Tensor> params = model->parameters();
    GradOptions go;
    go.allow_unused = true;
    std::vector<Tensor> g =
        grad({cross_entropy((*model)(batch.x.narrow(0, i * b, b)), batch.y.narrow(0, i * b, b))}, params, {}, go);
    for (size_t j = 0; j < g.size(); ++j)
      if (!g[j].defined()) g[j] = zeros_like(params[j]);
    return g;
  };

  // --hessian-every: in train mode (the training loss's curvature, BatchNorm on batch
  // statistics).
  auto measure_hessian = [&](const data::Batch& batch, double step_lr, int64_t epoch) {
    Saved kept(model->buffers());
    eval::PowerIterationOptions po;
    po.max_iterations = cfg.hessian_iterations;
    po.tolerance = 1e-3;
    po.seed = cfg.seed + static_cast<uint64_t>(ts.step);
    eval::TopEigen e = eval::hessian_top_eigenvalue([&] { return cross_entropy((*model)(batch.x), batch.y); },
                                                    model->parameters(), po);
    kept.restore();
    metrics.write({{"type", "hessian"}, {"step", ts.step}, {"epoch", epoch}, {"lambda_max", e.eigenvalue},
                   {"two_over_lr", 2.0 / step_lr}, {"iterations", e.iterations}, {"converged", e.converged},
                   {"seconds", e.seconds}});
    std::fprintf(stderr, "step %lld: Hessian top eigenvalue %.5g (2/lr = %.5g; %lld products%s, %.2f s)\n",
                 (long long)ts.step, e.eigenvalue, 2.0 / step_lr, (long long)e.iterations,
                 e.converged ? "" : ", not converged", e.seconds);
  };

  // --noise-scale-every: the gradients of 4 equal micro-batches of the step's batch.
  auto measure_noise_scale = [&](const data::Batch& batch, int64_t epoch) {
    const int64_t k = 4, b = batch.y.size(0) / k;
    if (b < 1) return;
    Saved kept(model->buffers());
    std::vector<std::vector<Tensor>> grads;
    for (int64_t i = 0; i < k; ++i) grads.push_back(micro_batch_grad(batch, i, b));
    kept.restore();
    const eval::NoiseScale ns = eval::gradient_noise_scale(grads, b);
    metrics.write({{"type", "noise_scale"}, {"step", ts.step}, {"epoch", epoch}, {"b_simple", ns.simple_noise_scale},
                   {"trace_sigma", ns.trace_sigma}, {"grad_norm_sq", ns.grad_norm_sq}, {"micro_batch", b}});
    std::fprintf(stderr, "step %lld: gradient noise scale %.4g (tr S %.4g, |G|^2 %.4g; 4 x %lld samples)\n",
                 (long long)ts.step, ns.simple_noise_scale, ns.trace_sigma, ns.grad_norm_sq, (long long)b);
  };

  // --ov-every: 4 one-step models (params moved by -ov_lr * the gradient of one micro-batch
  // each, in place and put back), their softmax on the first test batch in eval mode.
  auto measure_ov = [&](const data::Batch& batch, int64_t epoch) {
    const int64_t k = 4, b = batch.y.size(0) / k;
    if (b < 1) return;
    const data::Batch probe = test_loader.get(0, 0);
    std::vector<Tensor> params = model->parameters();
    Saved kept(model->buffers()), kept_params(params);
    std::vector<Tensor> probs;
    for (int64_t i = 0; i < k; ++i) {
      std::vector<Tensor> g = micro_batch_grad(batch, i, b);
      kept.restore();
      NoGradGuard no_grad;
      for (size_t j = 0; j < params.size(); ++j) params[j].sub_(g[j], cfg.ov_lr);
      model->eval();
      probs.push_back(softmax((*model)(probe.x), 1));
      model->train();
      kept_params.restore();
    }
    const double ov = eval::optimization_variance(probs);
    metrics.write({{"type", "optimization_variance"}, {"step", ts.step}, {"epoch", epoch}, {"ov", ov},
                   {"ov_lr", cfg.ov_lr}, {"probe_images", probe.y.size(0)}});
    std::fprintf(stderr, "step %lld: optimization variance %.4g (4 steps of lr %g, %lld test images)\n",
                 (long long)ts.step, ov, cfg.ov_lr, (long long)probe.y.size(0));
  };

  // --fisher-at-init: on rank 0's first batch, train-mode outputs (running averages put back).
  if (cfg.fisher_at_init && main_rank && ts.step == 0) {
    const data::Batch first = loader.get(0, 0);
    Saved kept(model->buffers());
    eval::PowerIterationOptions po;
    po.max_iterations = cfg.hessian_iterations;
    po.tolerance = 1e-3;
    po.seed = cfg.seed;
    eval::TopEigen e = eval::fisher_top_eigenvalue([&] { return (*model)(first.x); }, model->parameters(),
                                                   eval::FisherLoss::CrossEntropy, po);
    kept.restore();
    metrics.write({{"type", "fisher_at_init"}, {"step", int64_t{0}}, {"lambda_0", e.eigenvalue},
                   {"catapult_lr", 2.0 / e.eigenvalue}, {"iterations", e.iterations}, {"converged", e.converged},
                   {"seconds", e.seconds}});
    std::fprintf(stderr, "Fisher at initialisation: top eigenvalue %.5g, 2/lambda_0 = %.5g (%lld products%s, %.2f s)\n",
                 e.eigenvalue, 2.0 / e.eigenvalue, (long long)e.iterations, e.converged ? "" : ", not converged",
                 e.seconds);
  }

  const auto t_train = Clock::now();
  while (ts.epochs_done < cfg.epochs && !interrupted) {
    if (cfg.stop_after > 0 && epochs_this_run >= cfg.stop_after) break;
    const int64_t epoch = ts.epochs_done;
    if (loader.state().epoch != epoch || loader.state().batch >= steps_per_epoch) loader.seek(epoch, 0);
    if (loader.state().batch == 0) ts.epoch_loss_sum = 0, ts.epoch_loss_n = 0, ts.epoch_images = 0;
    const auto t_epoch = Clock::now();
    while (loader.state().batch < steps_per_epoch) {
      data::Batch batch = loader.next();
      const bool last = loader.state().batch >= steps_per_epoch;
      // --mixup / --cutmix: drawn from a generator of (seed, rank, step), so a resumed run
      // mixes as the uninterrupted one did.
      data::MixedBatch mixed{batch.x, batch.y, batch.y, 1.0};
      if (cfg.mixup > 0 || cfg.cutmix > 0) {
        const uint64_t ms = cfg.seed * 1000003ull + static_cast<uint64_t>(rank) + 0x6d6978ull;
        Generator mg(ms);
        mg.set_state(ms, static_cast<uint64_t>(ts.step) << 24);
        mixed = cfg.mixup > 0 ? data::mixup(batch.x, batch.y, cfg.mixup, mg)
                              : data::cutmix(batch.x, batch.y, cfg.cutmix, mg);
      }
      const double step_lr = opt->lr();
      Tensor loss;
      if (esgd) {
        // Entropy-SGD: its L Langevin steps each on the next slice of the batch (fresh
        // samples every inner step, as the paper draws a new minibatch), then the outer
        // step, all inside esgd->step; the step's loss is the mean of the L losses.
        const int64_t n = mixed.x.size(0), parts = std::min(cfg.esgd.inner_steps, n);
        int64_t l = 0;
        const double mean_loss = esgd->step([&] {
          const int64_t k = l++ % parts, b0 = k * n / parts, b1 = (k + 1) * n / parts;
          data::MixedBatch part{mixed.x.narrow(0, b0, b1 - b0), mixed.y_a.narrow(0, b0, b1 - b0),
                                mixed.y_b.narrow(0, b0, b1 - b0), mixed.lam};
          Tensor li = data::mixed_cross_entropy((*net)(part.x), part);
          li.backward();
          return li;
        });
        loss = scalar_tensor(mean_loss, TensorOptions(DType::F32, device));
      } else {
        loss = data::mixed_cross_entropy((*net)(mixed.x), mixed);
        opt->zero_grad();
        loss.backward();
      }
      bool take_step = !esgd;  // (Entropy-SGD has stepped)
      if (skip_policy && take_step) {  // the policy that must look before stepping reads every loss
        const double l = loss.item<double>();
        take_step = guard.check(l, ts.step + 1, epoch + 1, last_ckpt);
      }
      // --grad-noise: the same noise on every rank (seeded by the step), on the gradient
      // the step uses (for SAM, the one taken at w + e(w)).
      auto add_noise = [&] {
        if (cfg.grad_noise > 0) add_gradient_noise_(model->parameters(), ts.step, cfg.grad_noise, cfg.grad_noise_gamma, cfg.seed);
      };
      // --dp neighbor: every rank exchanges every step, even one that skips its update.
      if (dec) dec->before_step();
      Tensor sharpness;  // SAM: L(w + e(w)) - L(w), Foret et al.'s sharpness on this batch
      if (take_step && sam) {  // SAM's second pass, at w + e(w) (BatchNorm sees both batches)
        sam->first_step();
        Tensor perturbed = data::mixed_cross_entropy((*net)(mixed.x), mixed);
        perturbed.backward();
        sharpness = sub(perturbed.detach(), loss.detach());
        add_noise();
        sam->second_step();
      } else if (take_step) {
        add_noise();
        opt->step();
      }
      if (dec) dec->after_step();
      if (dec || ddp) {
        comm_wait_s += dec ? dec->last_stats().wait_seconds : ddp->last_stats().wait_seconds;
        ++comm_steps;
      }
      sched->step();
      ++ts.step;
      if (dec && (ts.step % cfg.run.log_every == 0 || last)) {  // every rank: two all-reduces
        const double d = dec->consensus_distance();
        if (main_rank)
          metrics.write({{"type", "consensus"}, {"step", ts.step}, {"epoch", epoch + 1}, {"distance", d},
                         {"comm_wait_s", dec->last_stats().wait_seconds}});
      }
      if (cfg.hessian_every > 0 && ts.step % cfg.hessian_every == 0 && main_rank) {
        flush();
        measure_hessian(batch, step_lr, epoch + 1);
      }
      if (cfg.noise_scale_every > 0 && ts.step % cfg.noise_scale_every == 0 && main_rank) {
        flush();
        measure_noise_scale(batch, epoch + 1);
      }
      if (cfg.ov_every > 0 && ts.step % cfg.ov_every == 0 && main_rank) {
        flush();
        measure_ov(batch, epoch + 1);
      }
      ++steps_this_run;
      const int64_t images = batch.y.size(0) * world;  // this step, all ranks
      ts.epoch_images += images;
      images_since_log += images;
      std::vector<std::pair<std::string, Tensor>> values{{"loss", loss}};
      if (sam) values.emplace_back("sam_sharpness", sharpness);  // null on a skipped step
      steps.push(ts.step, epoch + 1, std::move(values), {{"lr", step_lr}});
      if (main_rank && progress.due(ts.step, last)) {
        const double mean = flush();
        progress.log(ts.step, epoch + 1, cfg.epochs, mean, step_lr, images_since_log);
        images_since_log = 0;
      }
      if (!main_rank && (last || steps.size() >= static_cast<size_t>(cfg.run.log_every))) flush();
      if (cfg.run.save_every > 0 && ts.step % cfg.run.save_every == 0 && !last) {
        flush();
        reach_consensus();
        save(false);
      }
      if (cfg.run.stop_after_steps > 0 && steps_this_run >= cfg.run.stop_after_steps) {
        flush();
        interrupted = true;  // as if killed here: nothing is saved
        break;
      }
    }
    if (interrupted) break;
    flush();
    if (main_rank) progress.end_epoch_line();
    const double epoch_train_s = std::chrono::duration<double>(Clock::now() - t_epoch).count();
    train_seconds += epoch_train_s;
    train_images += ts.epoch_images;
    // The epoch's training loss over all ranks (the progress line shows rank 0's).
    Tensor sums =  // on the run's device: NCCL takes device tensors
        from_vector(std::vector<double>{ts.epoch_loss_sum, static_cast<double>(ts.epoch_loss_n)}).to(device);
    pg->all_reduce(sums)->wait();
    std::vector<double> sv = sums.to_vector<double>();
    last_train_loss = sv[0] / std::max(sv[1], 1.0);

    ts.epochs_done = epoch + 1;
    ++epochs_this_run;
    reach_consensus();
    if (!main_rank) {
      pg->barrier()->wait();  // while rank 0 evaluates and checkpoints
      continue;
    }
    const auto t_eval = Clock::now();
    last_eval = evaluate(*model, test_loader);
    const double eval_s = std::chrono::duration<double>(Clock::now() - t_eval).count();
    const double ips = static_cast<double>(ts.epoch_images) / std::max(epoch_train_s, 1e-9);
    std::fprintf(stderr,
                 "epoch %lld/%lld: train_loss %.4f  test_loss %.4f  test_accuracy %.4f  (train %.1f s, %.0f img/s; "
                 "eval %.1f s)\n",
                 (long long)ts.epochs_done, (long long)cfg.epochs, last_train_loss, last_eval.loss,
                 last_eval.accuracy, epoch_train_s, ips, eval_s);
    metrics.write({{"type", "epoch"}, {"epoch", ts.epochs_done}, {"step", ts.step}, {"train_loss", last_train_loss},
                   {"test_loss", last_eval.loss}, {"test_accuracy", last_eval.accuracy},
                   {"train_seconds", epoch_train_s}, {"eval_seconds", eval_s}, {"images_per_second", ips}});
    if (cfg.optimizer == "proxadam") {  // the proximal steps' exact zeros in the conv/linear weights
      const WeightZeros z = weight_zeros(*model);
      metrics.write({{"type", "sparsity"}, {"epoch", ts.epochs_done}, {"step", ts.step},
                     {"weight_sparsity", z.fraction()}, {"zero_weights", z.zeros}, {"weights", z.total},
                     {"penalty", cfg.prox_lambda * lp_penalty_value(z.weights, cfg.prox_p)}});
      std::fprintf(stderr, "epoch %lld: %.2f%% of the conv/linear weights are exactly 0 (%lld of %lld)\n",
                   (long long)ts.epochs_done, 100 * z.fraction(), (long long)z.zeros, (long long)z.total);
    }
    ts.epoch_loss_sum = 0, ts.epoch_loss_n = 0, ts.epoch_images = 0;  // the next epoch starts clean
    save(true);
    pg->barrier()->wait();
  }
  (void)t_train;

  if (!main_rank) return 0;
  if (interrupted)
    std::fprintf(stderr, "kiln_train_cnn: stopped after %lld steps (--stop-after-steps); resume with --resume "
                 "--run-dir %s\n", (long long)steps_this_run, rd->path().c_str());
  if (cfg.run.plot && !interrupted) tools::plot_run("kiln_train_cnn", rd->path());
  const double total_s = std::chrono::duration<double>(Clock::now() - t_start).count();
  run::print_summary({{"test_accuracy", last_eval.accuracy},
                      {"test_loss", last_eval.loss},
                      {"train_loss", last_train_loss},
                      {"epochs", ts.epochs_done},
                      {"epochs_this_run", epochs_this_run},
                      {"steps", ts.step},
                      {"steps_this_run", steps_this_run},
                      {"skipped_steps", guard.skipped()},
                      {"seconds", total_s},
                      {"train_seconds", train_seconds},
                      {"images_per_second", static_cast<double>(train_images) / std::max(train_seconds, 1e-9)},
                      {"device", dev_name},
                      {"params", n_params},
                      {"optimizer", cfg.optimizer},
                      {"lr", lr},
                      {"batch_size", cfg.batch_size},
                      {"train_images", train.size()},
                      {"world_size", int64_t{world}},
                      {"data_parallel", dp_desc},
                      {"comm_wait_seconds_per_step", comm_steps > 0 ? comm_wait_s / static_cast<double>(comm_steps) : 0.0},
                      {"run_dir", rd->path()},
                      {"interrupted", interrupted}});
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Trains a small ResNet-style CNN with BatchNorm on Fashion-MNIST (data parallel under tools/kiln-run).",
               "kiln_train_cnn"};
  Config cfg;
  add_flags(app, cfg);
  // Exit status: 0 done (or --help), 1 an error, 2 a bad command line, 3 a non-finite loss.
  return tools::kiln_main(app, argc, argv, [&] {
    if (cfg.mixup > 0 && cfg.cutmix > 0)
      throw CLI::ValidationError("--mixup/--cutmix", "take one of them (each replaces the batch)");
    if (cfg.par.dp == "neighbor" && (cfg.optimizer == "sam" || cfg.optimizer == "asam"))
      throw CLI::ValidationError("--dp neighbor", "does not combine with --optimizer " + cfg.optimizer +
                                                      " (SAM's second pass needs the gradients of one shared model)");
    if (cfg.optimizer == "entropy-sgd") {
      if (cfg.par.dp == "neighbor")
        throw CLI::ValidationError("--dp neighbor", "does not combine with --optimizer entropy-sgd (its inner "
                                                    "loop needs the gradients of one shared model)");
      if (cfg.run.on_nonfinite == "skip")
        throw CLI::ValidationError("--on-nonfinite skip", "does not combine with --optimizer entropy-sgd (its step "
                                                          "is taken inside the inner loop; use stop or warn)");
      if (cfg.grad_noise > 0)
        throw CLI::ValidationError("--grad-noise", "does not combine with --optimizer entropy-sgd (it has its own "
                                                   "Langevin noise, --esgd-noise)");
    }
    // (compared with the defaults, not counted: a config file written by a run sets them all)
    tools::check_dp_flags(cfg.par);
    if (cfg.par.dp != "neighbor" && cfg.exact_average_every != Config{}.exact_average_every)
      throw CLI::ValidationError("--exact-average-every", "applies only with --dp neighbor");
    try {
      return train(cfg, app);
    } catch (const run::NonFiniteLoss& e) {
      std::fflush(stdout);
      std::fprintf(stderr, "\nkiln_train_cnn: %s\n", e.what());
      return 3;
    }
  });
}
