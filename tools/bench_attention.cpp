// kiln_bench_attention: the fused scaled_dot_product_attention against the naive
// composite (matmul, mask, softmax, matmul: the (T, T) scores materialised), forward +
// backward, over sequence lengths: median time and the peak memory each allocates beyond
// its inputs, and the shortest T from which the fused kernel is the faster. One JSON line
// per measurement with --json; a table otherwise.
//
// usage: kiln_bench_attention [--device cpu|cuda] [--t-list 256,512,...] [--batch 1]
//          [--heads 4] [--head-dim 64] [--causal] [--reps N] [--threads N] [--json]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include <kiln/kiln.h>

#include "cli.h"

namespace {

using namespace kiln;
using Clock = std::chrono::steady_clock;

struct Config {
  std::string device;
  std::vector<int64_t> t_list;
  int64_t batch = 1, heads = 4, head_dim = 64, reps = 0, threads = 0;
  bool causal = false, json = false;
};

struct Result {
  double ms = 0;
  int64_t peak_bytes = 0;
};

Result measure(const Config& c, Device device, int64_t T, bool fused) {
  Generator gen(1);
  const TensorOptions o(DType::F32, device);
  Tensor q = randn({c.batch, c.heads, T, c.head_dim}, o, &gen).requires_grad_(true);
  Tensor k = randn({c.batch, c.heads, T, c.head_dim}, o, &gen).requires_grad_(true);
  Tensor v = randn({c.batch, c.heads, T, c.head_dim}, o, &gen).requires_grad_(true);
  Tensor g = randn({c.batch, c.heads, T, c.head_dim}, o, &gen);
  Allocator& alloc = runtime(device).allocator();
  std::vector<double> times;
  Result r;
  const int64_t reps = c.reps > 0 ? c.reps : (device.is_cpu() ? 3 : 10);
  for (int64_t i = 0; i < reps + 1; ++i) {
    synchronize(device);
    alloc.reset_peak(device);
    const int64_t base = alloc.stats(device).allocated;
    const auto t0 = Clock::now();
    {
      Tensor out = fused ? scaled_dot_product_attention(q, k, v, c.causal) : naive_attention(q, k, v, c.causal);
      out.backward(g);
      synchronize(device);
    }
    const double s = std::chrono::duration<double>(Clock::now() - t0).count();
    r.peak_bytes = std::max(r.peak_bytes, alloc.stats(device).peak_allocated - base);
    if (i > 0) times.push_back(s);  // the first call warms up (primitive caches, allocator)
    q.set_grad(Tensor());
    k.set_grad(Tensor());
    v.set_grad(Tensor());
  }
  std::sort(times.begin(), times.end());
  r.ms = 1e3 * times[times.size() / 2];
  return r;
}

int run_bench(Config c) {
  if (c.device.empty()) c.device = cuda_is_available() ? "cuda:0" : "cpu";
  if (c.device != "cpu" && !cuda_is_available()) {
    std::fprintf(stderr, "kiln_bench_attention: --device %s: no usable CUDA device\n", c.device.c_str());
    return 1;
  }
  const Device device(c.device.c_str());
  if (c.threads > 0) set_num_threads(static_cast<int>(c.threads));
  if (c.t_list.empty())
    c.t_list = device.is_cpu() ? std::vector<int64_t>{256, 512, 1024, 2048, 4096}
                               : std::vector<int64_t>{256, 512, 1024, 2048, 4096, 8192};
  if (!c.json)
    std::printf("attention forward + backward, f32, batch %lld, %lld heads, head dim %lld%s, %s (%d threads)\n"
                "%7s %12s %12s %9s %14s %14s\n",
                (long long)c.batch, (long long)c.heads, (long long)c.head_dim, c.causal ? ", causal" : "",
                c.device.c_str(), device.is_cpu() ? num_threads() : 0, "T", "fused ms", "naive ms", "speedup",
                "fused MiB", "naive MiB");
  int64_t crossover = -1;
  for (int64_t T : c.t_list) {
    const Result f = measure(c, device, T, true), n = measure(c, device, T, false);
    if (crossover < 0 && f.ms < n.ms) crossover = T;
    if (crossover >= 0 && f.ms >= n.ms) crossover = -1;  // must hold from there on
    if (c.json) {
      std::printf("{\"bench\":\"attention\",\"device\":\"%s\",\"T\":%lld,\"batch\":%lld,\"heads\":%lld,\"head_dim\":%lld,"
                  "\"causal\":%s,\"fused_ms\":%.3f,\"naive_ms\":%.3f,\"fused_peak_bytes\":%lld,\"naive_peak_bytes\":%lld}\n",
                  c.device.c_str(), (long long)T, (long long)c.batch, (long long)c.heads, (long long)c.head_dim,
                  c.causal ? "true" : "false", f.ms, n.ms, (long long)f.peak_bytes, (long long)n.peak_bytes);
    } else {
      std::printf("%7lld %12.2f %12.2f %9.2f %14.1f %14.1f\n", (long long)T, f.ms, n.ms, n.ms / f.ms,
                  f.peak_bytes / 1048576.0, n.peak_bytes / 1048576.0);
    }
    std::fflush(stdout);
  }
  if (!c.json) {
    if (crossover > 0) std::printf("fused is faster from T = %lld on\n", (long long)crossover);
    else std::printf("fused is not faster at the longest T measured\n");
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"kiln_bench_attention: fused scaled_dot_product_attention against the naive composite, forward + "
               "backward: time and peak memory over sequence lengths.",
               "kiln_bench_attention"};
  Config c;
  using kiln::tools::integer_range;
  app.add_option("--device", c.device, "cpu or cuda[:N] (default: cuda:0 when usable, else cpu)")
      ->check(kiln::tools::device_spec());
  app.add_option("--t-list", c.t_list, "comma-separated sequence lengths (default 256..4096 on CPU, ..8192 on CUDA)")
      ->delimiter(',')
      ->check(integer_range(1, 1 << 20));
  app.add_option("--batch", c.batch, "batch size")->check(integer_range(1, 4096))->capture_default_str();
  app.add_option("--heads", c.heads, "heads")->check(integer_range(1, 4096))->capture_default_str();
  app.add_option("--head-dim", c.head_dim, "head dim")->check(integer_range(1, 256))->capture_default_str();
  app.add_option("--reps", c.reps, "timed repetitions (default 3 on CPU, 10 on CUDA)")->check(integer_range(0, 10000));
  app.add_option("--threads", c.threads, "CPU threads (0: KILN_NUM_THREADS, else the physical cores)")
      ->check(integer_range(0, 4096));
  app.add_flag("--causal", c.causal, "causal mask");
  app.add_flag("--json", c.json, "JSON lines instead of the table");
  return kiln::tools::kiln_main(app, argc, argv, [&] { return run_bench(c); });
}
