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
// Determinism and resumption: the data loader's order is a function of (seed, epoch)
// (models/data/loader.h), the model has no dropout, and the checkpoint holds the model
// ("model.*"), the optimizer ("optim.*"), the lr schedule ("sched.*") and the training
// state ("train.*": epochs done, global step, init generator seed/offset, data loader
// cursor) as 0-d tensors, plus the run's settings as metadata. --resume continues from it;
// the per-step losses then equal those of an uninterrupted run (tests/tools/).
//
// Output: a progress line on stderr (\r on a terminal, one line per update otherwise),
// one line per epoch on stderr, JSON lines in --metrics (one per step, one per epoch), and
// a final JSON summary line on stdout.
//
// Data parallel: under tools/kiln-run (or torchrun, Slurm, mpirun) every rank trains a
// replica wrapped in DistributedDataParallel (Gloo on the CPU, NCCL on GPUs, each rank on
// the GPU of its local rank) on its own shard of every epoch. --batch-size is the global
// batch, split evenly across the ranks, so the optimizer sees the same batches whatever
// the number of ranks (BatchNorm normalises over each rank's part, as PyTorch's DDP does
// without SyncBatchNorm). Rank 0 alone evaluates, logs, writes metrics and checkpoints;
// a checkpoint written by N ranks resumes on any M that divides the batch.
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

namespace {

using namespace kiln;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// ---------------------------------------------------------------------------------------
// Flags
// ---------------------------------------------------------------------------------------

struct Config {
  int64_t epochs = 3;
  int64_t batch_size = 128;
  std::optional<double> lr;  // default depends on the optimizer
  std::string optimizer = "adamw";
  std::string schedule = "cosine";
  double weight_decay = -1;  // < 0: the optimizer's default below
  int64_t warmup_steps = 50;
  uint64_t seed = 0;
  int64_t width = 16;
  bool augment = false;
  std::string checkpoint_dir;
  bool resume = false;
  int64_t stop_after = 0;  // stop after this many epochs in this invocation (0: never)
  std::string metrics;
  int64_t limit_train = 0;
  int64_t limit_test = 0;
  int64_t eval_batch_size = 500;
  std::string data_dir = data::kFashionMnistDir;
  std::string device;  // "" = cuda when available, else cpu
  double log_every_s = 2.0;
  int64_t log_every_steps = 50;
};

const char* kUsage =
    "usage: kiln_train_cnn [options]\n"
    "       tools/kiln-run --nproc-per-node N kiln_train_cnn [options]   (data parallel)\n"
    "Trains a small ResNet-style CNN with BatchNorm on Fashion-MNIST.\n"
    "\n"
    "  --epochs N            epochs in the whole run (default 3)\n"
    "  --batch-size N        global training batch size, split across the ranks (default 128)\n"
    "  --lr X                peak learning rate (default 3e-3 for adam/adamw, 0.1 for sgd)\n"
    "  --optimizer NAME      sgd (momentum 0.9, nesterov) | adam | adamw (default adamw)\n"
    "  --weight-decay X      (default 5e-4 for sgd, 0 for adam, 1e-2 for adamw)\n"
    "  --schedule NAME       cosine (linear warmup + cosine) | knee | constant (default cosine)\n"
    "  --warmup-steps N      linear warmup steps (default 50)\n"
    "  --seed N              seed of the initialisation and the data order (default 0)\n"
    "  --width N             channels of the first stage (default 16; stages w, 2w, 4w)\n"
    "  --augment             random crop (pad 2) + horizontal flip of the training images\n"
    "  --device cpu|cuda     (default cuda when a GPU is usable, else cpu)\n"
    "  --data-dir DIR        Fashion-MNIST idx(.gz) files (default /usr/share/datasets/fashion-mnist)\n"
    "  --limit-train N       use only the first N training images (quick tests)\n"
    "  --limit-test N        evaluate on only the first N test images (quick tests)\n"
    "  --eval-batch-size N   test-set batch size (default 500)\n"
    "  --checkpoint-dir DIR  write DIR/checkpoint.safetensors after each epoch\n"
    "  --resume              continue from DIR/checkpoint.safetensors (needs --checkpoint-dir)\n"
    "  --stop-after N        stop after N epochs of this invocation (simulates an interruption)\n"
    "  --metrics FILE        JSON lines: one per step, one per epoch (appended when resuming)\n"
    "  --log-every N         progress line at least every N steps (default 50; also every 2 s)\n"
    "  --help                this text\n";

[[noreturn]] void usage_error(const std::string& msg) {
  std::fprintf(stderr, "kiln_train_cnn: %s\n(run with --help for the options)\n", msg.c_str());
  std::exit(2);
}

int64_t parse_int(const std::string& flag, const std::string& v, int64_t min) {
  char* end = nullptr;
  errno = 0;
  long long x = std::strtoll(v.c_str(), &end, 10);
  if (v.empty() || *end != '\0' || errno != 0) usage_error(flag + ": expected an integer, got '" + v + "'");
  if (x < min) usage_error(flag + ": must be >= " + std::to_string(min) + ", got " + v);
  return x;
}

double parse_double(const std::string& flag, const std::string& v, bool positive) {
  char* end = nullptr;
  errno = 0;
  double x = std::strtod(v.c_str(), &end);
  if (v.empty() || *end != '\0' || errno != 0 || !std::isfinite(x))
    usage_error(flag + ": expected a number, got '" + v + "'");
  if (positive ? !(x > 0) : !(x >= 0)) usage_error(flag + ": must be " + (positive ? "> 0" : ">= 0") + ", got " + v);
  return x;
}

Config parse_args(int argc, char** argv) {
  Config c;
  std::vector<std::string> args(argv + 1, argv + argc);
  for (size_t i = 0; i < args.size(); ++i) {
    std::string flag = args[i], value;
    bool has_inline = false;
    if (flag.rfind("--", 0) != 0) usage_error("unexpected argument '" + flag + "'");
    if (auto eq = flag.find('='); eq != std::string::npos) {
      value = flag.substr(eq + 1);
      flag = flag.substr(0, eq);
      has_inline = true;
    }
    auto boolean = [&] {
      if (has_inline) usage_error(flag + " takes no value");
    };
    auto next = [&]() -> std::string {
      if (has_inline) return value;
      if (i + 1 >= args.size()) usage_error(flag + " needs a value");
      return args[++i];
    };
    if (flag == "--help" || flag == "-h") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    } else if (flag == "--epochs") {
      c.epochs = parse_int(flag, next(), 1);
    } else if (flag == "--batch-size") {
      c.batch_size = parse_int(flag, next(), 1);
    } else if (flag == "--lr") {
      c.lr = parse_double(flag, next(), true);
    } else if (flag == "--optimizer") {
      c.optimizer = next();
      if (c.optimizer != "sgd" && c.optimizer != "adam" && c.optimizer != "adamw")
        usage_error("--optimizer: expected sgd, adam or adamw, got '" + c.optimizer + "'");
    } else if (flag == "--weight-decay") {
      c.weight_decay = parse_double(flag, next(), false);
    } else if (flag == "--schedule") {
      c.schedule = next();
      if (c.schedule != "cosine" && c.schedule != "knee" && c.schedule != "constant")
        usage_error("--schedule: expected cosine, knee or constant, got '" + c.schedule + "'");
    } else if (flag == "--warmup-steps") {
      c.warmup_steps = parse_int(flag, next(), 0);
    } else if (flag == "--seed") {
      c.seed = static_cast<uint64_t>(parse_int(flag, next(), 0));
    } else if (flag == "--width") {
      c.width = parse_int(flag, next(), 1);
    } else if (flag == "--augment") {
      boolean();
      c.augment = true;
    } else if (flag == "--device") {
      c.device = next();
      if (c.device != "cpu" && c.device != "cuda" && c.device.rfind("cuda:", 0) != 0)
        usage_error("--device: expected cpu or cuda (or cuda:N), got '" + c.device + "'");
    } else if (flag == "--data-dir") {
      c.data_dir = next();
    } else if (flag == "--limit-train") {
      c.limit_train = parse_int(flag, next(), 1);
    } else if (flag == "--limit-test") {
      c.limit_test = parse_int(flag, next(), 1);
    } else if (flag == "--eval-batch-size") {
      c.eval_batch_size = parse_int(flag, next(), 1);
    } else if (flag == "--checkpoint-dir") {
      c.checkpoint_dir = next();
      if (c.checkpoint_dir.empty()) usage_error("--checkpoint-dir: empty path");
    } else if (flag == "--resume") {
      boolean();
      c.resume = true;
    } else if (flag == "--stop-after") {
      c.stop_after = parse_int(flag, next(), 1);
    } else if (flag == "--metrics") {
      c.metrics = next();
      if (c.metrics.empty()) usage_error("--metrics: empty path");
    } else if (flag == "--log-every") {
      c.log_every_steps = parse_int(flag, next(), 1);
    } else {
      usage_error("unknown option '" + flag + "'");
    }
  }
  if (c.resume && c.checkpoint_dir.empty()) usage_error("--resume needs --checkpoint-dir");
  return c;
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
// others, such as --epochs or --metrics, may change).
std::map<std::string, std::string> run_metadata(const Config& c, double lr, double wd) {
  std::ostringstream lr_s, wd_s;
  lr_s.precision(17);
  wd_s.precision(17);
  lr_s << lr;
  wd_s << wd;
  return {{"format", "kiln_train_cnn/1"},
          {"batch_size", std::to_string(c.batch_size)},
          {"lr", lr_s.str()},
          {"weight_decay", wd_s.str()},
          {"optimizer", c.optimizer},
          {"schedule", c.schedule},
          {"warmup_steps", std::to_string(c.warmup_steps)},
          {"seed", std::to_string(c.seed)},
          {"width", std::to_string(c.width)},
          {"augment", c.augment ? "1" : "0"},
          {"limit_train", std::to_string(c.limit_train)}};
}

Tensor i64_scalar(int64_t v) { return scalar_tensor(v, DType::I64); }

struct TrainState {
  int64_t epochs_done = 0;
  int64_t step = 0;  // global optimizer steps taken
};

void save_checkpoint(const std::string& path, const nn::Module& model, const Optimizer& opt,
                     const LRScheduler& sched, const TrainState& ts, const Generator& gen,
                     const data::DataLoader& loader, std::map<std::string, std::string> meta, int64_t epochs) {
  std::map<std::string, Tensor> t;
  for (auto& [k, v] : model.state_dict()) t["model." + k] = v;
  for (auto& [k, v] : opt.state_dict()) t["optim." + k] = v;
  for (auto& [k, v] : sched.state_dict()) t["sched." + k] = v;
  t["train.epoch"] = i64_scalar(ts.epochs_done);
  t["train.step"] = i64_scalar(ts.step);
  t["train.rng_seed"] = i64_scalar(static_cast<int64_t>(gen.seed()));
  t["train.rng_offset"] = i64_scalar(static_cast<int64_t>(gen.offset()));
  t["train.loader_epoch"] = i64_scalar(loader.state().epoch);
  t["train.loader_batch"] = i64_scalar(loader.state().batch);
  meta["epochs"] = std::to_string(epochs);
  save_safetensors(path, t, meta);
}

std::map<std::string, Tensor> strip_prefix(const std::map<std::string, Tensor>& all, const std::string& prefix) {
  std::map<std::string, Tensor> out;
  for (auto& [k, v] : all)
    if (k.rfind(prefix, 0) == 0) out[k.substr(prefix.size())] = v;
  return out;
}

int64_t get_i64(const std::map<std::string, Tensor>& t, const std::string& name, const std::string& path) {
  auto it = t.find(name);
  KILN_CHECK(it != t.end(), "kiln_train_cnn: checkpoint ", path, " has no '", name, "'");
  KILN_CHECK(it->second.numel() == 1 && it->second.dtype() == DType::I64, "kiln_train_cnn: checkpoint ", path,
             ": '", name, "' is not a one-element i64 tensor");
  return it->second.item<int64_t>();
}

// ---------------------------------------------------------------------------------------
// Output helpers
// ---------------------------------------------------------------------------------------

std::string fmt_double(double v) {
  if (!std::isfinite(v)) return "null";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

std::string fmt_duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  int64_t t = static_cast<int64_t>(s + 0.5);
  char buf[32];
  if (t >= 3600)
    std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", (long long)(t / 3600), (long long)(t / 60 % 60),
                  (long long)(t % 60));
  else
    std::snprintf(buf, sizeof buf, "%lld:%02lld", (long long)(t / 60), (long long)(t % 60));
  return buf;
}

struct EvalResult {
  double loss = 0, accuracy = 0;
};

EvalResult evaluate(nn::Module& model, const data::DataLoader& test) {
  model.eval();
  NoGradGuard no_grad;
  double loss_sum = 0;
  int64_t correct = 0, total = 0;
  for (int64_t b = 0; b < test.size(); ++b) {
    data::Batch batch = test.get(0, b);
    Tensor logits = model(batch.x);
    loss_sum += cross_entropy(logits, batch.y, Reduction::Sum).item<double>();
    std::vector<int64_t> pred = argmax(logits, 1).to_vector<int64_t>();
    std::vector<int64_t> y = batch.y.to_vector<int64_t>();
    for (size_t i = 0; i < y.size(); ++i) correct += pred[i] == y[i];
    total += static_cast<int64_t>(y.size());
  }
  model.train();
  return {loss_sum / static_cast<double>(total), static_cast<double>(correct) / static_cast<double>(total)};
}

int run(const Config& cfg) {
  const auto t_start = Clock::now();
  // ---- device ----
  std::string dev_name = cfg.device.empty() ? (cuda_is_available() ? "cuda" : "cpu") : cfg.device;
  if (dev_name != "cpu" && !cuda_is_available()) {
    std::fprintf(stderr, "kiln_train_cnn: --device %s: no usable CUDA device (build without CUDA, or no GPU)\n",
                 dev_name.c_str());
    return 1;
  }
  Device device(dev_name.c_str());

  // ---- ranks ----
  const dist::LaunchEnv env = dist::launch_env();
  if (env.world_size > 1 && device.is_cuda() && cfg.device.find(':') == std::string::npos)
    device = dist::local_device(DeviceType::CUDA, env);  // each rank on the GPU of its local rank
  dist::InitOptions io;
  io.device = device;
  auto pg = dist::init_process_group(io, env);
  const int world = pg->size(), rank = pg->rank();
  const bool main_rank = rank == 0;
  if (cfg.batch_size % world != 0) {
    if (main_rank)
      std::fprintf(stderr, "kiln_train_cnn: --batch-size %lld is the global batch and must divide by the %d ranks\n",
                   (long long)cfg.batch_size, world);
    return 2;
  }
  dev_name = device.str();

  // ---- data ----
  data::Dataset train = data::load_fashion_mnist(cfg.data_dir, true);
  data::Dataset test = data::load_fashion_mnist(cfg.data_dir, false);
  if (cfg.limit_train > 0 && cfg.limit_train < train.size()) {
    train.images = train.images.narrow(0, 0, cfg.limit_train).contiguous();
    train.labels = train.labels.narrow(0, 0, cfg.limit_train).contiguous();
  }
  if (cfg.limit_test > 0 && cfg.limit_test < test.size()) {
    test.images = test.images.narrow(0, 0, cfg.limit_test).contiguous();
    test.labels = test.labels.narrow(0, 0, cfg.limit_test).contiguous();
  }
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
  const int64_t total_steps = steps_per_epoch * cfg.epochs;

  // ---- model ----
  Generator gen(cfg.seed);
  auto model = make_model(cfg.width, gen);
  model->to(device);
  model->train();
  const int64_t n_params = model->num_parameters();

  // ---- optimizer and schedule ----
  const bool sgd = cfg.optimizer == "sgd";
  const double lr = cfg.lr.value_or(sgd ? 0.1 : 3e-3);
  const double wd = cfg.weight_decay >= 0 ? cfg.weight_decay : (sgd ? 5e-4 : cfg.optimizer == "adam" ? 0.0 : 1e-2);
  std::unique_ptr<Optimizer> opt;
  if (sgd) {
    SGDOptions o;
    o.lr = lr;
    o.momentum = 0.9;
    o.nesterov = true;
    o.weight_decay = wd;
    opt = std::make_unique<SGD>(model->parameters(), o);
  } else if (cfg.optimizer == "adam") {
    AdamOptions o;
    o.lr = lr;
    o.weight_decay = wd;
    opt = std::make_unique<Adam>(model->parameters(), o);
  } else {
    AdamWOptions o;
    o.lr = lr;
    o.weight_decay = wd;
    opt = std::make_unique<AdamW>(model->parameters(), o);
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
  const std::string ckpt_path =
      cfg.checkpoint_dir.empty() ? "" : (std::filesystem::path(cfg.checkpoint_dir) / "checkpoint.safetensors").string();
  TrainState ts;
  if (cfg.resume) {
    if (!std::filesystem::exists(ckpt_path)) {
      std::fprintf(stderr, "kiln_train_cnn: --resume: no checkpoint at %s\n", ckpt_path.c_str());
      return 1;
    }
    SafetensorsContents ck = load_safetensors_with_metadata(ckpt_path, kCPU);
    for (auto& [k, v] : meta) {
      if (k == "epochs") continue;
      auto it = ck.metadata.find(k);
      std::string have = it == ck.metadata.end() ? "<missing>" : it->second;
      if (have != v) {
        std::fprintf(stderr, "kiln_train_cnn: --resume: checkpoint %s was written with %s=%s, this run has %s\n",
                     ckpt_path.c_str(), k.c_str(), have.c_str(), v.c_str());
        return 1;
      }
    }
    model->load_state_dict(strip_prefix(ck.tensors, "model."));
    opt->load_state_dict(strip_prefix(ck.tensors, "optim."));
    sched->load_state_dict(strip_prefix(ck.tensors, "sched."));
    ts.epochs_done = get_i64(ck.tensors, "train.epoch", ckpt_path);
    ts.step = get_i64(ck.tensors, "train.step", ckpt_path);
    gen.set_state(static_cast<uint64_t>(get_i64(ck.tensors, "train.rng_seed", ckpt_path)),
                  static_cast<uint64_t>(get_i64(ck.tensors, "train.rng_offset", ckpt_path)));
    loader.seek(get_i64(ck.tensors, "train.loader_epoch", ckpt_path),
                get_i64(ck.tensors, "train.loader_batch", ckpt_path));
    auto ep = ck.metadata.find("epochs");
    if (ep != ck.metadata.end() && ep->second != std::to_string(cfg.epochs))
      std::fprintf(stderr,
                   "kiln_train_cnn: note: the checkpoint's run had --epochs %s, this one %lld; the lr schedule "
                   "continues at step %lld of the new length\n",
                   ep->second.c_str(), (long long)cfg.epochs, (long long)ts.step);
    auto ws = ck.metadata.find("world_size");
    if (main_rank)
      std::fprintf(stderr, "kiln_train_cnn: resumed from %s at epoch %lld, step %lld (written by %s rank(s), now %d)\n",
                   ckpt_path.c_str(), (long long)ts.epochs_done, (long long)ts.step,
                   ws == ck.metadata.end() ? "1" : ws->second.c_str(), world);
  }
  if (ts.epochs_done >= cfg.epochs && main_rank) {
    std::fprintf(stderr, "kiln_train_cnn: the checkpoint already has %lld epochs (--epochs %lld): nothing to do\n",
                 (long long)ts.epochs_done, (long long)cfg.epochs);
  }
  if (!cfg.checkpoint_dir.empty() && main_rank) std::filesystem::create_directories(cfg.checkpoint_dir);

  // Every replica starts from rank 0's state (DDP broadcasts it); gradients are averaged
  // across the ranks during backward.
  // The network the steps run: the model, or the model wrapped data-parallel (a Module too).
  std::shared_ptr<nn::Module> net = model;
  if (world > 1) net = std::make_shared<dist::DistributedDataParallel>(model, pg);

  std::ofstream metrics;
  if (!cfg.metrics.empty() && main_rank) {
    metrics.open(cfg.metrics, cfg.resume ? std::ios::app : std::ios::trunc);
    if (!metrics) {
      std::fprintf(stderr, "kiln_train_cnn: cannot open --metrics file %s: %s\n", cfg.metrics.c_str(),
                   std::strerror(errno));
      return 1;
    }
  }

  if (main_rank)
    std::fprintf(stderr,
                 "kiln_train_cnn: device %s, %lld params, %lld train / %lld test images, %lld steps/epoch, "
                 "%s lr %g wd %g, %s schedule, batch %lld%s\n",
                 dev_name.c_str(), (long long)n_params, (long long)train.size(), (long long)test.size(),
                 (long long)steps_per_epoch, cfg.optimizer.c_str(), lr, wd, cfg.schedule.c_str(),
                 (long long)cfg.batch_size,
                 world > 1 ? detail::str(" (", world, " ranks x ", cfg.batch_size / world, ", ", pg->backend_name(),
                                         ")").c_str()
                           : "");

  // ---- training ----
  const bool tty = isatty(STDERR_FILENO) != 0;
  double train_seconds = 0;
  int64_t train_images = 0;
  double last_train_loss = NAN;
  EvalResult last_eval{NAN, NAN};
  int64_t epochs_this_run = 0;
  const int64_t steps_at_start = ts.step;
  auto t_train_start = Clock::now();

  while (ts.epochs_done < cfg.epochs) {
    if (cfg.stop_after > 0 && epochs_this_run >= cfg.stop_after) break;
    const int64_t epoch = ts.epochs_done;
    loader.seek(epoch, 0);
    double loss_sum = 0;
    int64_t loss_n = 0, epoch_images = 0;
    const auto t_epoch = Clock::now();
    auto t_last_log = t_epoch;
    int64_t last_log_step = 0;
    for (int64_t b = 0; b < steps_per_epoch; ++b) {
      data::Batch batch = loader.next();
      Tensor logits = (*net)(batch.x);
      Tensor loss = cross_entropy(logits, batch.y);
      const double step_lr = opt->lr();
      opt->zero_grad();
      loss.backward();
      opt->step();
      sched->step();
      ++ts.step;
      const double l = loss.item<double>();
      const int64_t bs = batch.y.size(0) * world;  // images this step, all ranks
      loss_sum += l;
      ++loss_n;
      epoch_images += bs;
      if (metrics) {
        metrics << "{\"type\":\"step\",\"epoch\":" << epoch + 1 << ",\"step\":" << ts.step
                << ",\"loss\":" << fmt_double(l) << ",\"lr\":" << fmt_double(step_lr) << "}\n";
      }
      const double since_log = seconds_since(t_last_log);
      const bool last = b + 1 == steps_per_epoch;
      if (main_rank && (since_log >= cfg.log_every_s || b + 1 - last_log_step >= cfg.log_every_steps || last)) {
        const double el = seconds_since(t_epoch);
        const double ips = epoch_images / std::max(el, 1e-9);
        const int64_t done_run = ts.step - steps_at_start;
        const double run_el = train_seconds + el;
        const int64_t left = total_steps - ts.step;
        const double eta = done_run > 0 ? run_el / static_cast<double>(done_run) * static_cast<double>(left) : NAN;
        std::fprintf(stderr, "%sstep %lld/%lld  epoch %lld/%lld  loss %.4f  lr %.3g  %.0f img/s  ETA %s%s",
                     tty ? "\r" : "", (long long)ts.step, (long long)total_steps, (long long)(epoch + 1),
                     (long long)cfg.epochs, loss_sum / loss_n, step_lr, ips, fmt_duration(eta).c_str(),
                     tty ? "   " : "\n");
        std::fflush(stderr);
        t_last_log = Clock::now();
        last_log_step = b + 1;
      }
    }
    if (tty && main_rank) std::fputc('\n', stderr);
    const double epoch_train_s = seconds_since(t_epoch);
    train_seconds += epoch_train_s;
    train_images += epoch_images;
    // The epoch's training loss over all ranks (the progress line shows rank 0's).
    Tensor sums = from_vector(std::vector<double>{loss_sum, static_cast<double>(loss_n)});
    pg->all_reduce(sums)->wait();
    std::vector<double> sv = sums.to_vector<double>();
    last_train_loss = sv[0] / std::max(sv[1], 1.0);

    ts.epochs_done = epoch + 1;
    ++epochs_this_run;
    if (!main_rank) {
      pg->barrier()->wait();  // while rank 0 evaluates and checkpoints
      continue;
    }
    const auto t_eval = Clock::now();
    last_eval = evaluate(*model, test_loader);
    const double eval_s = seconds_since(t_eval);

    std::fprintf(stderr,
                 "epoch %lld/%lld: train_loss %.4f  test_loss %.4f  test_accuracy %.4f  (train %.1f s, %.0f img/s; "
                 "eval %.1f s)\n",
                 (long long)ts.epochs_done, (long long)cfg.epochs, last_train_loss, last_eval.loss,
                 last_eval.accuracy, epoch_train_s, epoch_images / std::max(epoch_train_s, 1e-9), eval_s);
    if (metrics) {
      metrics << "{\"type\":\"epoch\",\"epoch\":" << ts.epochs_done << ",\"step\":" << ts.step
              << ",\"train_loss\":" << fmt_double(last_train_loss) << ",\"test_loss\":" << fmt_double(last_eval.loss)
              << ",\"test_accuracy\":" << fmt_double(last_eval.accuracy)
              << ",\"train_seconds\":" << fmt_double(epoch_train_s) << ",\"eval_seconds\":" << fmt_double(eval_s)
              << ",\"images_per_second\":" << fmt_double(epoch_images / std::max(epoch_train_s, 1e-9)) << "}\n";
      metrics.flush();
    }
    if (!ckpt_path.empty()) {
      auto m = meta;
      m["world_size"] = std::to_string(world);  // for the record: any number of ranks may resume it
      save_checkpoint(ckpt_path, *model, *opt, *sched, ts, gen, loader, m, cfg.epochs);
    }
    pg->barrier()->wait();
  }
  (void)t_train_start;

  if (!main_rank) return 0;
  const double total_s = seconds_since(t_start);
  const double ips = train_images / std::max(train_seconds, 1e-9);
  std::printf(
      "{\"test_accuracy\":%s,\"test_loss\":%s,\"train_loss\":%s,\"epochs\":%lld,\"epochs_this_run\":%lld,"
      "\"steps\":%lld,\"seconds\":%s,\"train_seconds\":%s,\"images_per_second\":%s,\"device\":\"%s\","
      "\"params\":%lld,\"optimizer\":\"%s\",\"lr\":%s,\"batch_size\":%lld,\"train_images\":%lld,"
      "\"world_size\":%d}\n",
      fmt_double(last_eval.accuracy).c_str(), fmt_double(last_eval.loss).c_str(), fmt_double(last_train_loss).c_str(),
      (long long)ts.epochs_done, (long long)epochs_this_run, (long long)ts.step, fmt_double(total_s).c_str(),
      fmt_double(train_seconds).c_str(), fmt_double(ips).c_str(), dev_name.c_str(), (long long)n_params,
      cfg.optimizer.c_str(), fmt_double(lr).c_str(), (long long)cfg.batch_size, (long long)train.size(), world);
  std::fflush(stdout);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Config cfg = parse_args(argc, argv);
  try {
    return run(cfg);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "\nkiln_train_cnn: error: %s\n", e.what());
    return 1;
  }
}
