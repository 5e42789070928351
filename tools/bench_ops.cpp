// kiln_bench_ops: times single operators, forward and forward + backward, at the shapes
// kiln_train_cnn's model and a small GPT use, and prints one JSON line per measurement
// (op, pass, shape, median milliseconds). tools/bench_ops_vs_torch.py runs the same list
// in PyTorch and prints the two side by side; the list there must match this one.
//
// A forward + backward measurement runs the op on inputs that require gradients, then
// backward() with a fixed random output gradient, and clears the input gradients after
// the clock stops.
//
// usage: kiln_bench_ops [--threads N] [--reps N] [--only NAME,...] [--device cpu|cuda]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include <kiln/kiln.h>

#include "cli.h"

namespace {

using namespace kiln;
using Clock = std::chrono::steady_clock;

struct Bench {
  std::string name, shape;
  std::vector<Shape> inputs;                               // N(0, 1) inputs; the first ones get gradients
  int grads;                                               // how many inputs need gradients in fwd+bwd
  std::function<Tensor(const std::vector<Tensor>&)> run;  // the op
};

std::vector<Bench> benches() {
  const int64_t B = 128;
  std::vector<Bench> v;
  v.push_back({"conv3x3", "x 128x16x28x28, w 16x16x3x3, pad 1", {{B, 16, 28, 28}, {16, 16, 3, 3}}, 2,
               [](const std::vector<Tensor>& t) { return conv2d(t[0], t[1], Tensor(), 1, 1); }});
  v.push_back({"conv3x3_s2", "x 128x16x28x28, w 32x16x3x3, stride 2, pad 1", {{B, 16, 28, 28}, {32, 16, 3, 3}}, 2,
               [](const std::vector<Tensor>& t) { return conv2d(t[0], t[1], Tensor(), 2, 1); }});
  v.push_back({"conv1x1_s2", "x 128x16x28x28, w 32x16x1x1, stride 2", {{B, 16, 28, 28}, {32, 16, 1, 1}}, 2,
               [](const std::vector<Tensor>& t) { return conv2d(t[0], t[1], Tensor(), 2, 0); }});
  // The 28 x 28 DCGAN generator's first and last layers (models/zoo/gan.h, width 32, batch 64).
  v.push_back({"convT_dcgan_in", "z 64x100x1x1, w 100x64x7x7", {{64, 100, 1, 1}, {100, 64, 7, 7}}, 2,
               [](const std::vector<Tensor>& t) { return conv_transpose2d(t[0], t[1]); }});
  v.push_back({"convT_dcgan_out", "x 64x32x14x14, w 32x1x4x4, stride 2, pad 1", {{64, 32, 14, 14}, {32, 1, 4, 4}}, 2,
               [](const std::vector<Tensor>& t) { return conv_transpose2d(t[0], t[1], Tensor(), 2, 1); }});
  v.push_back({"batch_norm", "x 128x16x28x28, training", {{B, 16, 28, 28}, {16}, {16}}, 3,
               [](const std::vector<Tensor>& t) { return batch_norm(t[0], Tensor(), Tensor(), t[1], t[2], true); }});
  v.push_back({"max_pool2d", "x 128x16x28x28, 2x2", {{B, 16, 28, 28}}, 1,
               [](const std::vector<Tensor>& t) { return max_pool2d(t[0], 2); }});
  v.push_back({"avg_pool2d", "x 128x16x28x28, 2x2", {{B, 16, 28, 28}}, 1,
               [](const std::vector<Tensor>& t) { return avg_pool2d(t[0], 2); }});
  v.push_back({"relu", "x 128x16x28x28", {{B, 16, 28, 28}}, 1, [](const std::vector<Tensor>& t) { return relu(t[0]); }});
  v.push_back({"leaky_relu", "x 128x16x28x28, slope 0.2", {{B, 16, 28, 28}}, 1,
               [](const std::vector<Tensor>& t) { return leaky_relu(t[0], 0.2); }});
  v.push_back({"add", "128x16x28x28 + 128x16x28x28", {{B, 16, 28, 28}, {B, 16, 28, 28}}, 2,
               [](const std::vector<Tensor>& t) { return add(t[0], t[1]); }});
  v.push_back({"gelu_tanh", "x 4096x512", {{4096, 512}}, 1, [](const std::vector<Tensor>& t) { return gelu_tanh(t[0]); }});
  v.push_back({"softmax", "x 4096x256, last dim", {{4096, 256}}, 1,
               [](const std::vector<Tensor>& t) { return softmax(t[0], -1); }});
  v.push_back({"layer_norm", "x 4096x256", {{4096, 256}, {256}, {256}}, 3,
               [](const std::vector<Tensor>& t) { return layer_norm(t[0], {256}, t[1], t[2]); }});
  v.push_back({"matmul", "512x512 @ 512x512", {{512, 512}, {512, 512}}, 2,
               [](const std::vector<Tensor>& t) { return matmul(t[0], t[1]); }});
  v.push_back({"linear_gpt", "4096x128 @ 128x512", {{4096, 128}, {128, 512}}, 2,
               [](const std::vector<Tensor>& t) { return matmul(t[0], t[1]); }});
  return v;
}

double median_ms(std::vector<double> t) {
  std::sort(t.begin(), t.end());
  const size_t n = t.size();
  return 1e3 * (n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]));
}

struct Config {
  int64_t threads = 0, reps = 20;
  std::vector<std::string> only;
  std::string device = "cpu";
};

int run_benches(const Config& cfg) {
  if (cfg.device != "cpu" && !cuda_is_available()) {
    std::fprintf(stderr, "kiln_bench_ops: --device %s: no usable CUDA device\n", cfg.device.c_str());
    return 1;
  }
  const Device device(cfg.device.c_str());
  if (cfg.threads > 0) set_num_threads(static_cast<int>(cfg.threads));
  Generator gen(0);
  for (const Bench& b : benches()) {
    if (!cfg.only.empty() && std::find(cfg.only.begin(), cfg.only.end(), b.name) == cfg.only.end()) continue;
    std::vector<Tensor> in;
    for (const Shape& s : b.inputs) in.push_back(randn(s, TensorOptions(DType::F32, device), &gen));
    Tensor probe = b.run(in);
    Tensor g = randn(probe.sizes(), TensorOptions(DType::F32, device), &gen);
    for (const char* pass : {"forward", "forward+backward"}) {
      const bool bwd = std::string(pass) != "forward";
      std::vector<Tensor> xs = in;
      if (bwd)
        for (int i = 0; i < b.grads; ++i) xs[i] = in[i].detach().requires_grad_(true);
      std::vector<double> times;
      for (int64_t r = 0; r < cfg.reps + 2; ++r) {
        const auto t0 = Clock::now();
        {
          GradModeGuard record_only_for_backward(bwd);
          Tensor y = b.run(xs);
          if (bwd) y.backward(g);
          synchronize(device);
        }
        if (r >= 2) times.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
        if (bwd)
          for (int i = 0; i < b.grads; ++i) xs[i].set_grad(Tensor());
      }
      std::printf("{\"framework\":\"kiln\",\"device\":\"%s\",\"threads\":%d,\"op\":\"%s\",\"pass\":\"%s\","
                  "\"shape\":\"%s\",\"median_ms\":%.4f}\n",
                  cfg.device.c_str(), device.is_cpu() ? num_threads() : 0, b.name.c_str(), pass, b.shape.c_str(),
                  median_ms(times));
      std::fflush(stdout);
    }
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"kiln_bench_ops: times single operators (forward, forward + backward) at the shapes of "
               "kiln_train_cnn's model and a small GPT; one JSON line per measurement.",
               "kiln_bench_ops"};
  Config c;
  using kiln::tools::integer_range;
  app.add_option("--threads", c.threads, "CPU threads (0: KILN_NUM_THREADS, else the physical cores)")
      ->check(integer_range(0, 4096))
      ->capture_default_str();
  app.add_option("--reps", c.reps, "timed repetitions (the median is printed)")
      ->check(integer_range(1, 1 << 20))
      ->capture_default_str();
  app.add_option("--only", c.only, "comma-separated op names (default: all)")->delimiter(',');
  app.add_option("--device", c.device, "cpu or cuda[:N]")->check(kiln::tools::device_spec())->capture_default_str();
  return kiln::tools::kiln_main(app, argc, argv, [&] { return run_benches(c); });
}
