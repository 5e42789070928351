// kiln_prune_cnn: prunes a kiln_train_cnn model and fine-tunes it, then measures what the
// pruning bought: parameters, MACs, test accuracy and CPU/GPU inference latency of the
// dense model and of the pruned one, side by side in one table.
//
//   kiln_prune_cnn --from runs/cnn --method l1 --macs 0.5          # channels, half the MACs
//   kiln_prune_cnn --from runs/cnn --method magnitude --sparsity 0.9 --schedule gradual
//   kiln_prune_cnn --from runs/cnn --method magnitude --sparsity 0.5 --quantize 4   # + k-means, 4 bits
//   kiln_prune_cnn --from runs/cnn --method none --quantize 3 --quantize-method inq
//   kiln_prune_cnn --evaluate runs/prune/checkpoints/step-....safetensors
//
// Methods (models/prune):
//   l1 | taylor | slimming   structured: whole channels go, found by the traced dependency
//                            graph (residual streams pruned together), and the model becomes
//                            physically smaller (new shapes, no masks). Target: --macs F
//                            (at most F of the dense MACs, default 0.5) or --sparsity S (S of
//                            every group's channels). taylor ranks on --taylor-batches
//                            batches of gradients; slimming first trains --slimming-epochs
//                            with an L1 penalty on the BatchNorm scales.
//   magnitude                unstructured (Han et al.): --sparsity of the conv/linear
//                            weights (default 0.9), --scope global|layer, kept at zero by
//                            masks through fine-tuning.
//   nm                       2:4 semi-structured masks (NVIDIA ASP), for sparse tensor cores.
//   none                     no pruning (with --quantize: quantization alone).
// Quantization (models/prune/quantize.h), after the pruning and its fine-tuning, the rest of
// Deep Compression: --quantize BITS --quantize-method kmeans (Han et al. 2016: 2^BITS shared
// values per layer, then --quantize-epochs of fine-tuning the centroids) or inq (Zhou et al.
// 2017: powers of two and zero in BITS bits, 2..5, quantized in four portions of 50, 75, 87.5
// and 100% of each layer's weights, retraining the rest between them over --quantize-epochs).
// Pruned weights stay zero and are not coded. A second table gives the storage (dense f32,
// pruned f32 nonzeros, quantized codes + codebooks) and its compression against dense f32,
// with the accuracy of each; the checkpoint holds the dequantized weights ("model.*") and the
// codes ("quant.<param>.codebook", ".index", ".bits" for k-means; ".levels", ".frozen" for INQ).
// A masked model (magnitude, nm) is also timed with the direct sparse CPU kernels
// (prune::use_sparse_kernels: per layer and batch size, where they measure faster at batch
// 128 or for one image); its speedup_b128/speedup_b1 are then the sparse kernels' over the
// dense model.
// Schedules: oneshot (prune, then fine-tune --epochs), iterative (--cycles rounds of prune
// and fine-tune, the target reached geometrically), gradual (magnitude: Zhu & Gupta's cubic
// sparsity ramp over the first 2/3 of fine-tuning, every --prune-every steps).
//
// The run (the run library, as kiln_train_cnn): --run-dir holds config.toml, metrics.jsonl
// (per step, per evaluation), prune_table.md, and the pruned model as a checkpoint
// (checkpoints/step-N.safetensors: "model.*" and metadata naming the width it was built
// from) that kiln_prune_cnn --evaluate, eval::load_classifier and the GAN metrics load
// without the original. The last stdout line is one JSON object (acc_dense, acc_pruned,
// macs_dense, macs_pruned, params_dense, params_pruned, speedup_b128, speedup_b1, seconds,
// model, ...). Fine-tuning runs data-parallel under tools/kiln-run like kiln_train_cnn:
// every rank prunes the same channels (the importance comes from identical weights or
// averaged gradients) and applies the same masks; rank 0 evaluates, measures and saves.
// A run does not resume midway (--resume is refused): pruning and fine-tuning a default
// model takes minutes, and the dense model it starts from is never changed.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <kiln/kiln.h>
#include <kiln/models/run/checkpoint.h>
#include <kiln/models/run/metrics.h>
#include <kiln/models/run/progress.h>
#include <kiln/models/run/run_dir.h>
#include <kiln/models/run/step_log.h>

#include "cli.h"
#include "run_cli.h"

namespace {

using namespace kiln;
using Clock = std::chrono::steady_clock;
constexpr const char* kProg = "kiln_prune_cnn";

struct Config {
  std::string from, evaluate;
  std::string method = "l1";
  int quantize = 0;  // bits per weight; 0: no quantization
  std::string quantize_method = "kmeans";
  int64_t quantize_epochs = 1;
  double macs = 0, sparsity = 0;  // 0: the method's default target
  std::string scope;              // "": layer for channels, global for magnitude
  std::string schedule = "oneshot";
  int64_t epochs = 2;  // fine-tuning epochs (iterative: in all)
  int64_t cycles = 3;
  int64_t prune_every = 50;
  int64_t batch_size = 128;
  double lr = 1e-3;
  double weight_decay = 1e-2;
  std::string optimizer = "adamw";
  int64_t warmup_steps = 20;
  int64_t taylor_batches = 32;
  int64_t slimming_epochs = 1;
  double slimming_lambda = 1e-4;
  double min_keep = 0.1;
  int64_t round_to = 0;  // 0: half the smallest group, a power of two, at most 16
  uint64_t seed = 0;
  int64_t limit_train = 0, limit_test = 0, eval_batch_size = 500;
  int64_t bench_batches = 10;  // timed forward passes of batch 128 (batch 1: 10x as many)
  bool bench = true;
  std::string data_dir = data::kFashionMnistDir;
  std::string device;
  tools::RunFlags run;
};

void add_flags(CLI::App& app, Config& c) {
  app.option_defaults()->always_capture_default();
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  app.add_option("--from", c.from, "the dense model: a kiln_train_cnn run directory or checkpoint");
  app.add_option("--evaluate", c.evaluate,
                 "only evaluate a model (dense or pruned: a run directory or checkpoint) on the test set and print "
                 "its accuracy, parameters and MACs as JSON")
      ->configurable(false);
  app.add_option("--method", c.method,
                 "l1 | taylor | slimming (channels) | magnitude (weights) | nm (2:4) | none (with --quantize)")
      ->check(CLI::IsMember({"l1", "taylor", "slimming", "magnitude", "nm", "none"}));
  app.add_option("--quantize", c.quantize, "after pruning, quantize the conv/linear weights to this many bits per "
                 "weight (kmeans: 1..8; inq: 2..5); 0: no quantization")
      ->check(tools::integer_range(0, 8));
  app.add_option("--quantize-method", c.quantize_method, "kmeans (Han et al.: shared values, fine-tuned centroids) | "
                 "inq (Zhou et al.: powers of two, incremental)")
      ->check(CLI::IsMember({"kmeans", "inq"}));
  app.add_option("--quantize-epochs", c.quantize_epochs, "fine-tuning epochs after quantizing (kmeans: the "
                 "centroids; inq: split over its three retraining rounds)")
      ->check(tools::integer_range(0, 10000));
  app.add_option("--macs", c.macs, "channel methods: keep at most this fraction of the dense MACs (default 0.5)")
      ->check(tools::positive_real());
  app.add_option("--sparsity", c.sparsity,
                 "magnitude: the fraction of conv/linear weights removed (default 0.9); channel methods: the "
                 "fraction of every group's channels removed (instead of --macs)")
      ->check(tools::positive_real());
  app.add_option("--scope", c.scope, "layer (each layer/group alike) | global (one ranking over the model)")
      ->check(CLI::IsMember({"layer", "global"}));
  app.add_option("--schedule", c.schedule, "oneshot | iterative | gradual (magnitude only)")
      ->check(CLI::IsMember({"oneshot", "iterative", "gradual"}));
  app.add_option("--epochs", c.epochs, "fine-tuning epochs (iterative: over all cycles)")
      ->check(tools::integer_range(0, 10000));
  app.add_option("--cycles", c.cycles, "iterative: prune/fine-tune rounds")->check(tools::integer_range(1, 1000));
  app.add_option("--prune-every", c.prune_every, "gradual: steps between mask updates")
      ->check(tools::integer_range(1, int64_t{1} << 40));
  app.add_option("--batch-size", c.batch_size, "global fine-tuning batch, split across the ranks")
      ->check(tools::integer_range(1, int64_t{1} << 40));
  app.add_option("--lr", c.lr, "peak fine-tuning learning rate (warmup, then cosine to 0)")
      ->check(tools::positive_real());
  app.add_option("--weight-decay", c.weight_decay, "weight decay")->check(tools::positive_real(true));
  app.add_option("--optimizer", c.optimizer, "adamw | sgd (momentum 0.9, nesterov)")
      ->check(CLI::IsMember({"adamw", "sgd"}));
  app.add_option("--warmup-steps", c.warmup_steps, "linear warmup steps of each fine-tuning phase")
      ->check(tools::non_negative<int64_t>());
  app.add_option("--taylor-batches", c.taylor_batches, "taylor: batches of gradients the importance averages")
      ->check(tools::integer_range(1, 1000000));
  app.add_option("--slimming-epochs", c.slimming_epochs, "slimming: epochs of training with the L1 penalty first")
      ->check(tools::integer_range(0, 10000));
  app.add_option("--slimming-lambda", c.slimming_lambda, "slimming: the L1 penalty on the BatchNorm scales")
      ->check(tools::positive_real(true));
  app.add_option("--min-keep", c.min_keep, "channel methods: the fraction of every group's channels always kept")
      ->check(CLI::Range(1e-6, 1.0));
  app.add_option("--round-to", c.round_to, "channel methods: every group keeps a multiple of this many channels "
                 "(oneDNN's AVX-512 convolutions block channels by 16: other counts are padded up and save nothing); "
                 "0: half the smallest group's channels, a power of two, at most 16")
      ->check(tools::integer_range(0, 4096));
  app.add_option("--seed", c.seed, "seed of the fine-tuning data order")->check(tools::any_uint64());
  app.add_option("--device", c.device, "cpu | cuda | cuda:N (default cuda when a GPU is usable, else cpu)")
      ->check(tools::device_spec());
  app.add_option("--data-dir", c.data_dir, "Fashion-MNIST idx(.gz) files");
  app.add_option("--limit-train", c.limit_train, "use only the first N training images (quick tests; 0: all)")
      ->check(tools::non_negative<int64_t>());
  app.add_option("--limit-test", c.limit_test, "evaluate on only the first N test images (quick tests; 0: all)")
      ->check(tools::non_negative<int64_t>());
  app.add_option("--eval-batch-size", c.eval_batch_size, "test-set batch size")
      ->check(tools::integer_range(1, int64_t{1} << 40));
  app.add_option("--bench-batches", c.bench_batches, "timed forward passes per latency figure (batch 128; batch 1 "
                 "runs 10x as many)")->check(tools::integer_range(1, 1000000));
  app.add_flag("--bench,!--no-bench", c.bench, "measure inference latency (batch 1 and 128)");
  tools::add_run_flags(app, c.run);
}

bool structured(const std::string& m) { return m == "l1" || m == "taylor" || m == "slimming"; }

// ---------------------------------------------------------------------------------------
// Measurements
// ---------------------------------------------------------------------------------------

// Median wall time of a forward pass (eval mode, no gradients) on zeros of (batch, 1, 28, 28).
double latency_ms(nn::Module& model, Device device, int64_t batch, int64_t runs) {
  const bool was = model.is_training();
  model.eval();
  NoGradGuard no_grad;
  Tensor x = zeros({batch, 1, 28, 28}, TensorOptions(DType::F32, device));
  for (int i = 0; i < 2; ++i) (void)model(x);  // warm caches and the allocator
  synchronize(device);
  std::vector<double> t;
  for (int64_t i = 0; i < runs; ++i) {
    const auto t0 = Clock::now();
    Tensor y = model(x);
    synchronize(device);
    t.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
  }
  model.train(was);
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

struct Measured {
  double acc = NAN, loss = NAN;
  prune::Cost cost;
  double b1_ms = NAN, b128_ms = NAN;
};

Measured measure(const std::shared_ptr<nn::Sequential>& model, const data::DataLoader& test, Device device,
                 const Config& cfg, bool bench) {
  Measured m;
  const eval::Accuracy a = eval::evaluate_classifier(*model, test);
  m.acc = a.accuracy, m.loss = a.loss;
  m.cost = prune::count_cost(model, zeros({1, 1, 28, 28}, TensorOptions(DType::F32, device)));
  if (bench) {
    m.b128_ms = latency_ms(*model, device, 128, cfg.bench_batches);
    m.b1_ms = latency_ms(*model, device, 1, 10 * cfg.bench_batches);
  }
  return m;
}

// ---------------------------------------------------------------------------------------
// Evaluate-only mode
// ---------------------------------------------------------------------------------------

int evaluate_only(const Config& cfg) {
  const std::string want = cfg.device.empty() ? (cuda_is_available() ? "cuda" : "cpu") : cfg.device;
  KILN_CHECK(want == "cpu" || cuda_is_available(), kProg, ": --device ", want, ": no usable CUDA device");
  const Device device(want.c_str());
  eval::Classifier c = eval::load_classifier(cfg.evaluate, device);
  data::Dataset test = data::load_fashion_mnist(cfg.data_dir, false).head(cfg.limit_test);
  data::LoaderOptions to;
  to.batch_size = cfg.eval_batch_size;
  to.shuffle = false;
  to.device = device;
  data::DataLoader loader(test, to);
  Measured m = measure(c.model, loader, device, cfg, cfg.bench);
  std::fprintf(stderr, "%s: %s: test accuracy %.4f (loss %.4f) on %lld images; %lld params, %lld MACs per image\n",
               kProg, c.checkpoint.c_str(), m.acc, m.loss, (long long)test.size(), (long long)m.cost.params,
               (long long)m.cost.macs);
  run::print_summary({{"test_accuracy", m.acc},
                      {"test_loss", m.loss},
                      {"params", m.cost.params},
                      {"nonzero_params", m.cost.nonzero},
                      {"macs", m.cost.macs},
                      {"latency_b1_ms", m.b1_ms},
                      {"latency_b128_ms", m.b128_ms},
                      {"test_images", test.size()},
                      {"model", c.checkpoint}});
  return 0;
}

// ---------------------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------------------

// Fine-tuning state shared by the phases (each phase builds its optimizer anew, since a
// physically pruned model has new parameters).
struct Trainer {
  const Config& cfg;
  tools::RunContext& rc;
  std::shared_ptr<nn::Sequential> model;
  data::DataLoader& loader;
  const data::DataLoader& test;
  run::MetricsWriter& metrics;
  run::Progress& progress;
  int64_t step = 0;   // optimizer steps so far (all phases)
  int64_t images_since_log = 0;
  double seconds = 0;
  int64_t steps_per_epoch() const { return loader.size(); }

  data::Batch next_batch() {
    if (loader.state().batch >= loader.size()) loader.seek(loader.state().epoch + 1, 0);
    return loader.next();
  }

  std::shared_ptr<nn::Module> network() {
    if (rc.world == 1) return model;
    return std::make_shared<dist::DistributedDataParallel>(model, rc.pg);
  }

  // `steps` optimizer steps; after_backward(step) runs once the gradients are final (averaged
  // across ranks), after_step(step) after each update.
  void run(const std::string& phase, int64_t steps, const std::function<void(int64_t)>& after_backward,
           const std::function<void(int64_t)>& after_step) {
    if (steps <= 0) return;
    auto net = network();
    std::unique_ptr<Optimizer> opt;
    if (cfg.optimizer == "sgd") {
      SGDOptions o;
      o.lr = cfg.lr, o.momentum = 0.9, o.nesterov = true, o.weight_decay = cfg.weight_decay;
      opt = std::make_unique<SGD>(model->parameters(), o);
    } else {
      AdamWOptions o;
      o.lr = cfg.lr, o.weight_decay = cfg.weight_decay;
      opt = std::make_unique<AdamW>(model->parameters(), o);
    }
    CosineWithWarmup sched(*opt, std::min(cfg.warmup_steps, steps / 4), steps, 0.0);
    run::NonFiniteGuard guard(kProg, tools::nonfinite_policy(cfg.run));
    run::StepLog log(&guard, rc.main_rank ? &metrics : nullptr, {"loss"});
    model->train();
    const auto t0 = Clock::now();
    for (int64_t i = 0; i < steps; ++i) {
      data::Batch b = next_batch();
      Tensor loss = cross_entropy((*net)(b.x), b.y);
      const double lr = opt->lr();
      opt->zero_grad();
      loss.backward();
      if (after_backward) after_backward(step);
      opt->step();
      if (after_step) after_step(step);
      sched.step();
      ++step;
      images_since_log += b.y.size(0) * rc.world;
      log.push(step, loader.state().epoch + 1, {{"loss", loss}}, {{"lr", lr}});
      const bool last = i + 1 == steps;
      if (progress.due(step, last) || log.size() >= static_cast<size_t>(cfg.run.log_every)) {
        const double mean = log.flush("").mean("loss");
        if (rc.main_rank) progress.log(step, 0, 0, {{"loss", mean}, {"lr", lr}}, images_since_log);
        images_since_log = 0;
      }
    }
    log.flush("");
    if (rc.main_rank) progress.end_epoch_line();
    seconds += std::chrono::duration<double>(Clock::now() - t0).count();
    if (rc.main_rank) {
      const eval::Accuracy a = eval::evaluate_classifier(*model, test);
      std::fprintf(stderr, "%s: %s done at step %lld: test accuracy %.4f (loss %.4f)\n", kProg, phase.c_str(),
                   (long long)step, a.accuracy, a.loss);
      metrics.write({{"type", "eval"}, {"phase", phase}, {"step", step}, {"test_accuracy", a.accuracy},
                     {"test_loss", a.loss}});
    }
  }
};

std::string fmt(double v, const char* f) {
  if (!std::isfinite(v)) return "-";
  char b[64];
  std::snprintf(b, sizeof b, f, v);
  return b;
}

int prune_run(Config cfg, const CLI::App& app) {
  const auto t_start = Clock::now();
  KILN_CHECK(!cfg.from.empty(), kProg, ": --from names the dense model (a kiln_train_cnn run directory or checkpoint)");
  KILN_CHECK(!cfg.run.resume, kProg, ": --resume: a pruning run does not resume midway; start it again (--overwrite)");
  const bool channels = structured(cfg.method);
  const bool quantize = cfg.quantize > 0;
  if (quantize && cfg.quantize_method == "inq" && (cfg.quantize < 2 || cfg.quantize > 5))
    throw CLI::ValidationError("--quantize", kiln::detail::str(cfg.quantize, " bits: --quantize-method inq takes 2 to 5 "
                                                              "(one bit codes zero, the others signed powers of two)"));
  if (cfg.method == "none" && !quantize)
    throw CLI::ValidationError("--method", "none prunes nothing: give --quantize BITS (or a pruning method)");
  if (cfg.scope.empty()) cfg.scope = cfg.method == "magnitude" ? "global" : "layer";
  // targets
  if (channels) {
    KILN_CHECK(!(cfg.macs > 0 && cfg.sparsity > 0), kProg, ": give --macs or --sparsity, not both");
    if (cfg.macs == 0 && cfg.sparsity == 0) cfg.macs = 0.5;
    KILN_CHECK(cfg.macs == 0 || cfg.macs < 1.0, kProg, ": --macs ", cfg.macs, " is not below the dense model's MACs (",
               "give the fraction to keep, in (0, 1))");
    KILN_CHECK(cfg.sparsity == 0 || cfg.sparsity < 1.0, kProg, ": --sparsity ", cfg.sparsity,
               " would remove every channel (give a fraction in (0, 1))");
    KILN_CHECK(cfg.sparsity == 0 || cfg.scope == "layer", kProg, ": --sparsity with a channel method removes that "
               "fraction of every group (--scope layer); for --scope global give --macs");
    KILN_CHECK(cfg.schedule != "gradual", kProg, ": --schedule gradual is Zhu & Gupta's ramp for --method magnitude; "
               "channel methods take oneshot or iterative");
  } else {
    KILN_CHECK(cfg.macs == 0, kProg, ": --macs is a target of the channel methods (l1, taylor, slimming); --method ",
               cfg.method, " removes weights: give --sparsity");
    if (cfg.method == "magnitude") {
      if (cfg.sparsity == 0) cfg.sparsity = 0.9;
      KILN_CHECK(cfg.sparsity < 1.0, kProg, ": --sparsity ", cfg.sparsity, " would remove every weight (give a "
                 "fraction in (0, 1))");
    } else if (cfg.method == "none") {
      KILN_CHECK(cfg.sparsity == 0, kProg, ": --method none prunes nothing; --sparsity does not apply");
    } else {
      KILN_CHECK(cfg.sparsity == 0, kProg, ": --method nm prunes 2 of every 4 weights; --sparsity does not apply");
      KILN_CHECK(cfg.schedule == "oneshot", kProg, ": --method nm is one-shot (ASP: prune the trained model, then "
                 "retrain)");
    }
  }

  tools::RunContext rc = tools::open_run(kProg, "prune_cnn", cfg.run, cfg.device, cfg.batch_size);
  const Device device = rc.device;
  auto& rd = rc.dir;
  run::Checkpointer ckpt(rd->checkpoint_dir(), run::CheckpointOptions{cfg.run.keep_last});

  // ---- the dense model and the data ----
  eval::Classifier dense = eval::load_classifier(cfg.from, device);
  auto model = dense.model;
  data::Dataset train = data::load_fashion_mnist(cfg.data_dir, true).head(cfg.limit_train);
  data::Dataset test = data::load_fashion_mnist(cfg.data_dir, false).head(cfg.limit_test);
  data::LoaderOptions lo;
  lo.batch_size = cfg.batch_size / rc.world;
  lo.rank = rc.rank;
  lo.world_size = rc.world;
  lo.shuffle = true;
  lo.seed = cfg.seed;
  lo.device = device;
  data::DataLoader loader(train, lo);
  loader.seek(0, 0);
  data::LoaderOptions to;
  to.batch_size = cfg.eval_batch_size;
  to.shuffle = false;
  to.device = device;
  data::DataLoader test_loader(test, to);
  KILN_CHECK(loader.size() > 0, kProg, ": no training batches (", train.size(), " images, batch ", lo.batch_size,
             " per rank)");
  const int64_t spe = loader.size();
  const int64_t finetune_steps = cfg.method == "none" ? 0 : cfg.epochs * spe;
  const int64_t quantize_steps = quantize ? cfg.quantize_epochs * spe : 0;
  const int64_t slimming_steps = cfg.method == "slimming" ? cfg.slimming_epochs * spe : 0;

  run::MetricsWriter metrics;
  if (rc.main_rank) {
    tools::write_config(app, rd->config_path());
    metrics = run::MetricsWriter(rd->metrics_path());
  }
  const Tensor example = zeros({1, 1, 28, 28}, TensorOptions(DType::F32, device));
  if (rc.main_rank)
    std::fprintf(stderr, "%s: device %s; dense model %s (width %lld); --method %s, %s, --schedule %s, %lld fine-tuning "
                 "step(s) of batch %lld%s; run %s\n", kProg, rc.device_name.c_str(), dense.checkpoint.c_str(),
                 (long long)dense.width, cfg.method.c_str(),
                 channels ? (cfg.macs > 0 ? kiln::detail::str("--macs ", cfg.macs, " (", cfg.scope, ")")
                                          : kiln::detail::str("--sparsity ", cfg.sparsity, " of every group"))
                                .c_str()
                          : cfg.method == "nm"   ? "2:4"
                          : cfg.method == "none" ? "no pruning"
                                                 : kiln::detail::str("--sparsity ", cfg.sparsity, " (", cfg.scope, ")").c_str(),
                 cfg.schedule.c_str(), (long long)(finetune_steps + slimming_steps), (long long)cfg.batch_size,
                 rc.world > 1 ? kiln::detail::str(" on ", rc.world, " ranks").c_str() : "", rd->path().c_str());
  if (rc.main_rank && quantize)
    std::fprintf(stderr, "%s: then --quantize %d bits (%s) and %lld fine-tuning step(s)\n", kProg, cfg.quantize,
                 cfg.quantize_method.c_str(), (long long)quantize_steps);
  int64_t weights_dense = 0;  // the conv/linear weights quantization codes
  for (auto& [name, w] : prune::prunable_weights(*model)) weights_dense += w.numel();

  // ---- dense measurements (rank 0) ----
  Measured before;
  if (rc.main_rank) {
    before = measure(model, test_loader, device, cfg, false);  // timed at the end, beside the pruned model
    std::fprintf(stderr, "%s: dense: test accuracy %.4f, %lld params, %lld MACs per image\n", kProg, before.acc,
                 (long long)before.cost.params, (long long)before.cost.macs);
    metrics.write({{"type", "dense"}, {"test_accuracy", before.acc}, {"params", before.cost.params},
                   {"macs", before.cost.macs}});
  }

  run::Progress progress(kProg, finetune_steps + slimming_steps + quantize_steps, 0, cfg.run.log_every);
  Trainer tr{cfg, rc, model, loader, test_loader, metrics, progress};
  prune::Masks masks(model);
  auto mask_hooks = [&](int64_t) { masks.mask_gradients(); };
  auto mask_apply = [&](int64_t) { masks.apply(); };
  std::vector<std::string> notes;

  if (channels) {
    const prune::Scope scope = cfg.scope == "global" ? prune::Scope::Global : prune::Scope::Layer;
    if (slimming_steps > 0)
      tr.run("slimming (L1 on the BatchNorm scales)", slimming_steps,
             [&](int64_t) { prune::add_slimming_penalty(*model, cfg.slimming_lambda); }, nullptr);
    const int64_t cycles = cfg.schedule == "iterative" ? cfg.cycles : 1;
    for (int64_t k = 1; k <= cycles; ++k) {
      prune::DependencyGraph graph(model, example);
      if (rc.main_rank && k == 1 && !graph.blocked().empty()) {
        std::string ops;
        for (const auto& b : graph.blocked()) ops += (ops.empty() ? "" : ", ") + b;
        std::fprintf(stderr, "%s: note: channels next to these ops stay: %s\n", kProg, ops.c_str());
      }
      prune::Importance imp;
      if (cfg.method == "l1") {
        imp = prune::l1_importance(graph, *model);
      } else if (cfg.method == "slimming") {
        imp = prune::slimming_importance(graph, *model);
      } else {
        prune::TaylorAccumulator acc(graph, *model);
        auto net = tr.network();
        model->train();
        for (int64_t b = 0; b < cfg.taylor_batches; ++b) {
          data::Batch batch = tr.next_batch();
          model->zero_grad();
          cross_entropy((*net)(batch.x), batch.y).backward();
          acc.accumulate();
        }
        model->zero_grad();
        imp = acc.importance();
      }
      // the cycle's target: geometric steps to the final one
      const double frac = cfg.macs > 0 ? std::pow(cfg.macs, static_cast<double>(k) / static_cast<double>(cycles)) : 0;
      // (a fraction of the channels left: the same each cycle, compounding to --sparsity)
      const double chan =
          cfg.sparsity > 0 ? 1.0 - std::pow(1.0 - cfg.sparsity, 1.0 / static_cast<double>(cycles)) : 0;
      // The plan is measured against the dense model's MACs (the target is a fraction of those).
      prune::MacModel mm(model, example);
      double want = frac;
      if (frac > 0) want = frac * static_cast<double>(before.cost.macs > 0 ? before.cost.macs : mm.dense()) /
                           static_cast<double>(mm.dense());
      if (rc.world > 1) {  // rank 0 measured the dense MACs; the others count them the same way
        Tensor t = from_vector(std::vector<double>{rc.main_rank ? want : 0.0});
        rc.pg->all_reduce(t)->wait();
        want = t.to_vector<double>()[0];
      }
      KILN_CHECK(frac == 0 || want < 1.0, kProg, ": the model already has fewer MACs than the target");
      if (cfg.round_to == 0) {  // from the dense model's groups, once
        size_t smallest = SIZE_MAX;
        for (const auto& g : graph.groups()) smallest = std::min(smallest, g.channels.size());
        cfg.round_to = 1;
        while (cfg.round_to < 16 && static_cast<size_t>(cfg.round_to * 4) <= smallest) cfg.round_to *= 2;
        if (rc.main_rank)
          std::fprintf(stderr, "%s: channel counts in multiples of %lld (--round-to)\n", kProg, (long long)cfg.round_to);
      }
      prune::ChannelPlan plan = prune::plan_channels(graph, imp, mm, want, scope, cfg.min_keep, chan, cfg.round_to);
      const size_t n_groups = graph.groups().size();
      graph.prune(plan.remove);
      if (rc.main_rank)
        std::fprintf(stderr, "%s: cycle %lld/%lld: removed %lld of %lld channels in %zu groups: %lld -> %lld MACs\n",
                     kProg, (long long)k, (long long)cycles, (long long)plan.channels_removed,
                     (long long)plan.channels_before, n_groups, (long long)plan.macs_before,
                     (long long)plan.macs_after);
      const int64_t steps = finetune_steps / cycles + (k == cycles ? finetune_steps % cycles : 0);
      tr.run(kiln::detail::str("fine-tuning ", k, "/", cycles), steps, nullptr, nullptr);
    }
  } else if (cfg.method == "nm") {
    int64_t layers = 0;
    for (auto& [name, w] : prune::prunable_weights(*model))
      if (prune::nm_applicable(w, 4)) masks.set(name, prune::nm_mask(w, 2, 4)), ++layers;
      else notes.push_back(name + " (input dim " + std::to_string(w.size(1)) + " not a multiple of 4) stays dense");
    if (rc.main_rank)
      std::fprintf(stderr, "%s: 2:4 masks on %lld layers (%.1f%% of their weights zero)%s\n", kProg, (long long)layers,
                   100 * masks.sparsity(), notes.empty() ? "" : "; the others stay dense");
    tr.run("fine-tuning (2:4)", finetune_steps, mask_hooks, mask_apply);
  } else if (cfg.method == "magnitude") {
    const prune::Scope scope = cfg.scope == "global" ? prune::Scope::Global : prune::Scope::Layer;
    auto weights = prune::prunable_weights(*model);
    auto set_sparsity = [&](double s) {
      for (auto& [name, m] : prune::magnitude_masks(weights, s, scope, masks.empty() ? nullptr : &masks))
        masks.set(name, m);
    };
    if (cfg.schedule == "gradual") {
      const int64_t end = std::max<int64_t>(1, 2 * finetune_steps / 3);
      set_sparsity(prune::gradual_sparsity(0, 0.0, cfg.sparsity, 0, end));
      tr.run("gradual pruning and fine-tuning", finetune_steps, mask_hooks, [&](int64_t s) {
        if (((s + 1) % cfg.prune_every == 0 || s + 1 == end) && s + 1 <= end)  // the ramp ends exactly at `end`
          set_sparsity(prune::gradual_sparsity(s + 1, 0.0, cfg.sparsity, 0, end));
        masks.apply();
      });
      set_sparsity(cfg.sparsity);  // the final step of the ramp when the run is shorter than --prune-every
    } else {
      const int64_t cycles = cfg.schedule == "iterative" ? cfg.cycles : 1;
      for (int64_t k = 1; k <= cycles; ++k) {
        const double s = 1.0 - std::pow(1.0 - cfg.sparsity, static_cast<double>(k) / static_cast<double>(cycles));
        set_sparsity(k == cycles ? cfg.sparsity : s);
        if (rc.main_rank)
          std::fprintf(stderr, "%s: cycle %lld/%lld: %.1f%% of the conv/linear weights masked\n", kProg, (long long)k,
                       (long long)cycles, 100 * masks.sparsity());
        const int64_t steps = finetune_steps / cycles + (k == cycles ? finetune_steps % cycles : 0);
        tr.run(kiln::detail::str("fine-tuning ", k, "/", cycles), steps, mask_hooks, mask_apply);
      }
    }
  }
  const double weight_sparsity = masks.empty() ? 0.0 : masks.sparsity();

  // ---- quantization (models/prune/quantize.h), after the pruning ----
  std::optional<prune::SharedWeights> shared;
  std::optional<prune::Inq> inq;
  double acc_pruned_f32 = NAN, acc_quantized_raw = NAN;  // before quantizing; quantized before fine-tuning
  int64_t bits_pruned = 0, weights_pruned = 0, weights_coded = 0;
  std::map<std::string, int64_t> layer_bits;
  std::string qlabel;
  if (quantize) {
    const prune::Masks* pruned = masks.empty() ? nullptr : &masks;  // pruned weights stay zero, uncoded
    for (auto& [name, w] : prune::prunable_weights(*model)) weights_pruned += prune::count_nonzero(w);
    bits_pruned = prune::sparse_bits(*model);
    if (rc.main_rank) acc_pruned_f32 = eval::evaluate_classifier(*model, test_loader).accuracy;
    if (cfg.quantize_method == "kmeans") {
      qlabel = kiln::detail::str("k-means ", cfg.quantize, " bits");
      shared.emplace(model);
      shared->quantize_all(cfg.quantize, pruned);
      for (const auto& name : shared->names()) weights_coded += shared->coded(name);
      if (rc.main_rank) {
        acc_quantized_raw = eval::evaluate_classifier(*model, test_loader).accuracy;
        std::fprintf(stderr, "%s: k-means: %zu layers, %lld shared values each: test accuracy %.4f before fine-tuning "
                     "the centroids\n", kProg, shared->names().size(), (long long)(int64_t{1} << cfg.quantize),
                     acc_quantized_raw);
      }
      tr.run("fine-tuning the centroids", quantize_steps, [&](int64_t) { shared->share_gradients(); },
             [&](int64_t) { shared->apply(); });
      layer_bits = shared->layer_bits();
    } else {
      qlabel = kiln::detail::str("INQ ", cfg.quantize, " bits");
      inq.emplace(model, cfg.quantize, pruned);
      const std::vector<double> portions = prune::inq_portions();
      const auto rounds = static_cast<int64_t>(portions.size()) - 1;  // retraining after all but the last
      for (size_t r = 0; r < portions.size(); ++r) {
        inq->quantize_portion(portions[r]);
        if (rc.main_rank)
          std::fprintf(stderr, "%s: INQ: %.1f%% of the weights quantized to powers of two\n", kProg,
                       100 * inq->frozen_fraction());
        if (static_cast<int64_t>(r) < rounds) {
          const int64_t steps = quantize_steps / rounds + (static_cast<int64_t>(r) + 1 == rounds ? quantize_steps % rounds : 0);
          tr.run(kiln::detail::str("INQ retraining ", r + 1, "/", rounds), steps,
                 [&](int64_t) { inq->mask_gradients(); }, [&](int64_t) { inq->apply(); });
        }
      }
      layer_bits = inq->layer_bits();
      for (const auto& [name, b] : layer_bits) weights_coded += b / cfg.quantize;
    }
  }
  masks.make_permanent();  // the weights keep their zeros; the saved model needs no masks

  if (!rc.main_rank) {
    rc.pg->barrier()->wait();
    return 0;
  }
  // ---- the pruned model: measured, saved ----
  Measured after = measure(model, test_loader, device, cfg, false);
  // A masked model also runs the direct sparse kernels, layer by layer and batch size where
  // they measure faster (at batch 128, for one image): the same weights, its accuracy
  // measured again.
  Measured sparse;
  std::vector<prune::SparseChoice> choices;
  const bool try_sparse = !channels && cfg.method != "none" && cfg.bench && device.is_cpu();
  std::shared_ptr<nn::Sequential> sparse_model;
  if (try_sparse) {
    eval::Classifier copy = eval::load_classifier(cfg.from, device);  // the same architecture, pruned weights
    copy.model->load_state_dict(model->state_dict());
    sparse_model = copy.model;
    choices = prune::use_sparse_kernels(sparse_model, zeros({128, 1, 28, 28}), 0.5, 5);
    sparse = measure(sparse_model, test_loader, device, cfg, false);
    std::fprintf(stderr, "%s: sparse kernels by layer and batch size:\n%s", kProg,
                 prune::format_sparse_choices(choices).c_str());
  }
  // Latency side by side: the dense model (loaded again), the pruned one (and the sparse
  // kernels), in alternation, two rounds; each figure is its best round's median.
  if (cfg.bench) {
    auto dense_again = eval::load_classifier(cfg.from, device).model;
    std::vector<std::pair<nn::Module*, Measured*>> timed{{dense_again.get(), &before}, {model.get(), &after}};
    if (try_sparse) timed.push_back({sparse_model.get(), &sparse});
    for (int round = 0; round < 2; ++round)
      for (auto& [m, out] : timed) {
        const double b128 = latency_ms(*m, device, 128, cfg.bench_batches);
        const double b1 = latency_ms(*m, device, 1, 10 * cfg.bench_batches);
        out->b128_ms = round == 0 ? b128 : std::min(out->b128_ms, b128);
        out->b1_ms = round == 0 ? b1 : std::min(out->b1_ms, b1);
      }
  }
  auto meta = std::map<std::string, std::string>{{"format", "kiln_prune_cnn/1"},
                                                 {"width", std::to_string(dense.width)},
                                                 {"method", cfg.method},
                                                 {"from", dense.checkpoint}};
  if (quantize) meta["quantize"] = kiln::detail::str(cfg.quantize_method, ":", cfg.quantize);
  std::map<std::string, Tensor> state;
  run::put_state(state, "model.", model->state_dict());
  if (shared) run::put_state(state, "quant.", shared->state_dict());
  if (inq) run::put_state(state, "quant.", inq->state_dict());
  run::check_finite_state(kProg, state, tr.step, "");
  const std::string saved = ckpt.save(tr.step, state, meta);
  metrics.write({{"type", "pruned"}, {"test_accuracy", after.acc}, {"params", after.cost.params},
                 {"nonzero_params", after.cost.nonzero}, {"macs", after.cost.macs},
                 {"nonzero_macs", after.cost.nonzero_macs}});
  metrics.sync();
  rc.pg->barrier()->wait();

  // ---- the table ----
  const Measured& best = try_sparse ? sparse : after;  // what the pruning buys at inference
  const double sp128 = before.b128_ms / best.b128_ms, sp1 = before.b1_ms / best.b1_ms;
  std::ostringstream t;
  t << "| model | params | nonzero params | MACs | nonzero MACs | test accuracy | batch 1 (ms) | batch 128 (ms) | "
       "speedup at 128 |\n|---|---|---|---|---|---|---|---|---|\n";
  auto row = [&](const std::string& name, const Measured& m, double sp) {
    t << "| " << name << " | " << m.cost.params << " | " << m.cost.nonzero << " | " << m.cost.macs << " | "
      << m.cost.nonzero_macs << " | " << fmt(m.acc, "%.4f") << " | " << fmt(m.b1_ms, "%.3f") << " | "
      << fmt(m.b128_ms, "%.2f") << " | " << fmt(sp, "%.2fx") << " |\n";
  };
  row("dense", before, 1.0);
  const std::string pruned_name = cfg.method == "none" ? ""
                                  : channels            ? "pruned (physically smaller)"
                                                        : "masked (dense kernels on zeros)";
  row(quantize ? (pruned_name.empty() ? qlabel : pruned_name + " + " + qlabel) : pruned_name, after,
      before.b128_ms / after.b128_ms);
  if (try_sparse) {
    int64_t n_sparse = 0, n_sparse_b1 = 0;
    for (const auto& c : choices) n_sparse += c.sparse, n_sparse_b1 += c.sparse_b1;
    row(kiln::detail::str("sparse kernels (", n_sparse, " of ", choices.size(), " layers at batch 128, ", n_sparse_b1,
                          " at batch 1)"),
        sparse, sp128);
    if (std::abs(sparse.acc - after.acc) > 1e-3)
      notes.push_back(kiln::detail::str("the sparse kernels' accuracy ", sparse.acc, " differs from the masked "
                                        "model's ", after.acc));
  } else if (!channels && cfg.method != "none") {
    notes.push_back("no sparse-kernel figures: they are CPU kernels (and need --bench)");
  }
  for (const auto& n : notes) t << "\nnote: " << n;
  t << "\n";
  // Storage: every parameter f32 (dense); the nonzero conv/linear weights f32 (pruned, without
  // the positions); the codes (bits x stored weights, + each layer's f32 codebook for k-means).
  const int64_t bits_dense = 32 * before.cost.params;
  const int64_t bits_quantized = quantize ? prune::quantized_bits(*model, layer_bits) : 0;
  const double ratio = quantize ? static_cast<double>(bits_dense) / static_cast<double>(bits_quantized) : NAN;
  if (quantize) {
    int64_t code_bits = 0;
    for (const auto& [name, b] : layer_bits) code_bits += b;
    auto bytes = [](int64_t bits) { return (bits + 7) / 8; };
    t << "\n| model | conv/linear weights stored | bits per stored weight | size (bytes) | compression vs dense f32 "
         "| test accuracy |\n|---|---|---|---|---|---|\n";
    t << "| dense f32 | " << weights_dense << " | 32 | " << bytes(bits_dense) << " | 1.00x | " << fmt(before.acc, "%.4f")
      << " |\n";
    if (cfg.method != "none")
      t << "| pruned, --method " << cfg.method << " (f32 " << (channels ? "weights" : "nonzeros") << ") | " << weights_pruned << " | 32 | " << bytes(bits_pruned) << " | "
        << fmt(static_cast<double>(bits_dense) / static_cast<double>(bits_pruned), "%.2fx") << " | "
        << fmt(acc_pruned_f32, "%.4f") << " |\n";
    t << "| " << (cfg.method == "none" ? "" : "pruned + ") << qlabel
      << (cfg.quantize_method == "kmeans" ? " (fine-tuned centroids)" : " (4 incremental portions)") << " | "
      << weights_coded << " | " << fmt(static_cast<double>(code_bits) / static_cast<double>(weights_coded), "%.2f")
      << " | " << bytes(bits_quantized) << " | " << fmt(ratio, "%.2fx") << " | " << fmt(after.acc, "%.4f") << " |\n";
    t << "\nnote: sizes count values and codes, not positions (a sparse format adds them); biases and BatchNorm "
         "stay f32";
    if (cfg.quantize_method == "kmeans")
      t << "; bits per stored weight include the f32 codebooks; before fine-tuning the centroids: test accuracy "
        << fmt(acc_quantized_raw, "%.4f");
    t << "\n";
  }
  {
    std::ofstream f(rd->path() + "/prune_table.md");
    f << "# " << kProg << " --method " << cfg.method << " (" << cfg.schedule << ")"
      << (quantize ? kiln::detail::str(" --quantize ", cfg.quantize, " (", cfg.quantize_method, ")") : "") << "\n\n"
      << t.str();
  }
  std::fprintf(stderr, "\n%s\n%s: accuracy %.4f -> %.4f (%+.2f points); MACs %lld -> %lld (%.1f%% removed); "
               "params %lld -> %lld; saved %s\n", t.str().c_str(), kProg, before.acc, after.acc,
               100 * (after.acc - before.acc), (long long)before.cost.macs, (long long)after.cost.macs,
               100.0 * (1.0 - static_cast<double>(after.cost.macs) / static_cast<double>(before.cost.macs)),
               (long long)before.cost.params, (long long)after.cost.params, saved.c_str());
  if (cfg.run.plot) tools::plot_run(kProg, rd->path());
  const double total_s = std::chrono::duration<double>(Clock::now() - t_start).count();
  run::print_summary({{"acc_dense", before.acc},
                      {"acc_pruned", after.acc},
                      {"macs_dense", before.cost.macs},
                      {"macs_pruned", channels ? after.cost.macs : after.cost.nonzero_macs},  // masked: the nonzero ones
                      {"nonzero_macs_pruned", after.cost.nonzero_macs},
                      {"params_dense", before.cost.params},
                      {"params_pruned", after.cost.params},
                      {"nonzero_params_pruned", after.cost.nonzero},
                      {"weight_sparsity", weight_sparsity},
                      {"latency_b1_ms_dense", before.b1_ms},
                      {"latency_b1_ms_pruned", after.b1_ms},
                      {"latency_b128_ms_dense", before.b128_ms},
                      {"latency_b128_ms_pruned", after.b128_ms},
                      {"latency_b1_ms_sparse", try_sparse ? sparse.b1_ms : NAN},
                      {"latency_b128_ms_sparse", try_sparse ? sparse.b128_ms : NAN},
                      {"acc_sparse_kernels", try_sparse ? sparse.acc : NAN},
                      {"speedup_b128", sp128},
                      {"speedup_b1", sp1},
                      {"method", cfg.method},
                      {"schedule", cfg.schedule},
                      {"quantize_bits", int64_t{cfg.quantize}},
                      {"quantize_method", quantize ? cfg.quantize_method : std::string()},
                      {"acc_before_quantization", acc_pruned_f32},
                      {"acc_quantized_before_finetune", acc_quantized_raw},
                      {"bytes_dense", (bits_dense + 7) / 8},
                      {"bytes_pruned", quantize ? (bits_pruned + 7) / 8 : int64_t{0}},
                      {"bytes_quantized", quantize ? (bits_quantized + 7) / 8 : int64_t{0}},
                      {"compression_ratio", ratio},
                      {"finetune_steps", tr.step},
                      {"finetune_seconds", tr.seconds},
                      {"seconds", total_s},
                      {"device", rc.device_name},
                      {"world_size", int64_t{rc.world}},
                      {"model", saved},
                      {"run_dir", rd->path()}});
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Prunes a kiln_train_cnn model (channels: l1, taylor, slimming; weights: magnitude, 2:4), fine-tunes "
               "it and measures accuracy, MACs and latency against the dense model.",
               "kiln_prune_cnn"};
  Config cfg;
  add_flags(app, cfg);
  return tools::kiln_main(app, argc, argv, [&] {
    try {
      if (!cfg.evaluate.empty()) return evaluate_only(cfg);
      return prune_run(cfg, app);
    } catch (const run::NonFiniteLoss& e) {
      std::fflush(stdout);
      std::fprintf(stderr, "\n%s: %s\n", kProg, e.what());
      return 3;
    }
  });
}
