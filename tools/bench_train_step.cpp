// kiln_bench_train_step: times whole training steps of train_cnn's model (the model-zoo
// CNN, models/zoo/resnet_cnn.h) — forward, cross-entropy, backward and an AdamW step, as
// kiln_train_cnn takes them — and prints one JSON line with the images per second. On the
// CPU, --threads sets kiln's one thread budget (core/parallel.h: its loops, OpenBLAS and
// oneDNN together; 0 keeps the default, KILN_NUM_THREADS or the physical cores).
// tools/bench_vs_torch.py runs it next to the same model in PyTorch.
//
// The inputs are a few random (N(0,1)) 28x28 batches made before the clock starts: the
// work of a step does not depend on the values, and so the data loader is left out of
// the figure. The reported rate comes from the median step time (the machine is shared;
// the median ignores the steps another process interrupted); the mean is printed beside it.
//
// usage: kiln_bench_train_step [--steps N] [--warmup N] [--batch N] [--width N] [--threads N]
//                              [--device cpu|cuda[:N]] [--seed N]   (--help lists the defaults)
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include <kiln/kiln.h>

#include "cli.h"

namespace {

using namespace kiln;
using Clock = std::chrono::steady_clock;

struct Config {
  int64_t steps = 20, warmup = 3, batch = 128, width = 16, threads = 0;
  uint64_t seed = 0;
  std::string device = "cpu";
};

int run_bench(const Config& cfg) {
  if (cfg.device != "cpu" && !cuda_is_available()) {
    std::fprintf(stderr, "kiln_bench_train_step: --device %s: no usable CUDA device\n", cfg.device.c_str());
    return 1;
  }
  const Device device(cfg.device.c_str());
  if (cfg.threads > 0) set_num_threads(static_cast<int>(cfg.threads));
  const int threads = num_threads();

  Generator gen(cfg.seed);
  models::ResNetCNNOptions mo;
  mo.width = cfg.width;
  auto model = models::resnet_cnn(mo, gen);
  model->to(device);
  model->train();
  AdamWOptions oo;
  oo.lr = 3e-3;  // kiln_train_cnn's defaults
  oo.weight_decay = 1e-2;
  AdamW opt(model->parameters(), oo);

  constexpr int kBatches = 4;
  std::vector<Tensor> xs, ys;
  for (int i = 0; i < kBatches; ++i) {
    xs.push_back(randn({cfg.batch, 1, 28, 28}, TensorOptions(DType::F32, device), &gen));
    ys.push_back(randint(0, mo.num_classes, {cfg.batch}, TensorOptions(DType::I64, device), &gen));
  }

  std::vector<double> times;
  double last_loss = NAN;
  for (int64_t s = 0; s < cfg.warmup + cfg.steps; ++s) {
    const auto t0 = Clock::now();
    opt.zero_grad();
    Tensor loss = cross_entropy((*model)(xs[s % kBatches]), ys[s % kBatches]);
    loss.backward();
    opt.step();
    last_loss = loss.item<double>();  // the host waits for the step (a no-op wait on the CPU)
    if (s >= cfg.warmup) times.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
  }
  double total = 0;
  for (double t : times) total += t;
  std::vector<double> sorted = times;
  std::sort(sorted.begin(), sorted.end());
  const size_t n = sorted.size();
  const double median = n % 2 ? sorted[n / 2] : 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]);
  const double mean = total / static_cast<double>(n);
  std::printf(
      "{\"framework\":\"kiln\",\"device\":\"%s\",\"threads\":%d,\"batch\":%lld,\"width\":%lld,\"params\":%lld,"
      "\"steps\":%lld,\"median_step_ms\":%.3f,\"mean_step_ms\":%.3f,\"min_step_ms\":%.3f,"
      "\"images_per_second\":%.2f,\"images_per_second_mean\":%.2f,\"last_loss\":%.6f}\n",
      cfg.device.c_str(), device.is_cpu() ? threads : 0, (long long)cfg.batch, (long long)cfg.width,
      (long long)model->num_parameters(), (long long)cfg.steps, median * 1e3, mean * 1e3, sorted.front() * 1e3,
      cfg.batch / median, cfg.batch / mean, last_loss);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"kiln_bench_train_step: times training steps (forward, cross-entropy, backward, AdamW) of "
               "kiln_train_cnn's model and prints one JSON line with the images per second.",
               "kiln_bench_train_step"};
  Config c;
  using kiln::tools::integer_range;
  using kiln::tools::non_negative;
  using kiln::tools::positive;
  app.add_option("--steps", c.steps, "timed steps")->check(integer_range(1, 1 << 30))->capture_default_str();
  app.add_option("--warmup", c.warmup, "untimed steps first")->check(integer_range(0, 1 << 30))->capture_default_str();
  app.add_option("--batch", c.batch, "batch size")->check(integer_range(1, 1 << 24))->capture_default_str();
  app.add_option("--width", c.width, "model width (16: 77,754 parameters)")
      ->check(integer_range(1, 1 << 16))
      ->capture_default_str();
  app.add_option("--threads", c.threads, "CPU threads (0: KILN_NUM_THREADS, else the physical cores)")
      ->check(integer_range(0, 4096))
      ->capture_default_str();
  app.add_option("--device", c.device, "cpu or cuda[:N]")->check(kiln::tools::device_spec())->capture_default_str();
  app.add_option("--seed", c.seed, "initialisation and data seed")->check(kiln::tools::any_uint64())->capture_default_str();
  return kiln::tools::kiln_main(app, argc, argv, [&] { return run_bench(c); });
}
