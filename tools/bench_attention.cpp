// kiln_bench_attention: attention forward + backward over sequence lengths, four ways:
//   naive      the composite (matmul, mask, softmax, matmul: the (T, T) scores materialised)
//   fused      scaled_dot_product_attention (flash-attention style, O(T) memory)
//   performer  FAVOR+ with --features positive random features (ops/linear_attention.h)
//   rfa        Random Feature Attention with 2 x --features trigonometric features
// For each: the median time and the peak memory allocated beyond the inputs; the fused
// kernel's TFLOP/s (4 B H T^2 D for the forward, 2.5x that for the backward, halved when
// causal); and the crossovers: the shortest T from which fused beats naive, and from which
// Performer and RFA beat fused (each holding for every longer T measured). One JSON line
// per length with --json; a table otherwise.
//
// usage: kiln_bench_attention [--device cpu|cuda] [--t-list 256,512,...] [--batch 1]
//          [--heads 4] [--head-dim 64] [--causal] [--kinds naive,fused,performer,rfa]
//          [--features 64] [--reps N] [--threads N] [--json]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
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
  std::vector<std::string> kinds = {"naive", "fused", "performer", "rfa"};
  int64_t batch = 1, heads = 4, head_dim = 64, reps = 0, threads = 0, features = 64;
  bool causal = false, json = false;
};

struct Result {
  double ms = 0;
  int64_t peak_bytes = 0;
};

Tensor attend(const Config& c, const std::string& kind, const Tensor& q, const Tensor& k, const Tensor& v,
              const Tensor& features) {
  if (kind == "fused") {
    AttentionBackendGuard fused(AttentionBackend::Fused);  // Auto would pick the composite on CUDA
    return scaled_dot_product_attention(q, k, v, c.causal);
  }
  if (kind == "naive") return naive_attention(q, k, v, c.causal);
  if (kind == "performer") return performer_attention(q, k, v, features, c.causal);
  return rfa_attention(q, k, v, features, c.causal);
}

Result measure(const Config& c, Device device, int64_t T, const std::string& kind) {
  Generator gen(1);
  const Tensor features = gaussian_features(c.features, c.head_dim, gen);
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
      Tensor out = attend(c, kind, q, k, v, features);
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
  auto has = [&](const char* k) { return std::find(c.kinds.begin(), c.kinds.end(), k) != c.kinds.end(); };
  if (!c.json) {
    std::printf("attention forward + backward, f32, batch %lld, %lld heads, head dim %lld%s, %lld random features, "
                "%s (%d threads)\n%7s",
                (long long)c.batch, (long long)c.heads, (long long)c.head_dim, c.causal ? ", causal" : "",
                (long long)c.features, c.device.c_str(), device.is_cpu() ? num_threads() : 0, "T");
    for (const std::string& k : c.kinds) std::printf(" %11s ms %8s MiB", k.c_str(), "");
    if (has("fused")) std::printf(" %14s", "fused TFLOP/s");
    std::printf("\n");
  }
  // The crossovers: from which T on `a` is faster than `b` at every longer T measured.
  std::map<std::string, int64_t> crossover;
  auto update = [&](const std::string& name, bool faster, int64_t T) {
    auto it = crossover.emplace(name, -1).first;
    if (it->second < 0 && faster) it->second = T;
    if (it->second >= 0 && !faster) it->second = -1;
  };
  for (int64_t T : c.t_list) {
    std::map<std::string, Result> r;
    for (const std::string& k : c.kinds) r[k] = measure(c, device, T, k);
    const double flops = 3.5 * 4.0 * static_cast<double>(c.batch * c.heads * c.head_dim) * static_cast<double>(T) *
                         static_cast<double>(T) * (c.causal ? 0.5 : 1.0);
    if (has("fused") && has("naive")) update("fused < naive", r["fused"].ms < r["naive"].ms, T);
    if (has("fused") && has("performer")) update("performer < fused", r["performer"].ms < r["fused"].ms, T);
    if (has("fused") && has("rfa")) update("rfa < fused", r["rfa"].ms < r["fused"].ms, T);
    if (c.json) {
      std::printf("{\"bench\":\"attention\",\"device\":\"%s\",\"T\":%lld,\"batch\":%lld,\"heads\":%lld,\"head_dim\":%lld,"
                  "\"causal\":%s,\"features\":%lld",
                  c.device.c_str(), (long long)T, (long long)c.batch, (long long)c.heads, (long long)c.head_dim,
                  c.causal ? "true" : "false", (long long)c.features);
      for (auto& [k, x] : r) std::printf(",\"%s_ms\":%.3f,\"%s_peak_bytes\":%lld", k.c_str(), x.ms, k.c_str(), (long long)x.peak_bytes);
      if (has("fused")) std::printf(",\"fused_tflops\":%.4f", flops / (r["fused"].ms * 1e-3) / 1e12);
      std::printf("}\n");
    } else {
      std::printf("%7lld", (long long)T);
      for (const std::string& k : c.kinds) std::printf(" %14.2f %12.1f", r[k].ms, r[k].peak_bytes / 1048576.0);
      if (has("fused")) std::printf(" %14.4f", flops / (r["fused"].ms * 1e-3) / 1e12);
      std::printf("\n");
    }
    std::fflush(stdout);
  }
  if (!c.json)
    for (auto& [name, T] : crossover) {
      if (T > 0) std::printf("%s from T = %lld on\n", name.c_str(), (long long)T);
      else std::printf("%s: not at the longest T measured\n", name.c_str());
    }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"kiln_bench_attention: attention forward + backward (naive, fused, Performer, RFA): time, peak "
               "memory and crossovers over sequence lengths.",
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
  app.add_option("--kinds", c.kinds, "comma-separated: naive, fused, performer, rfa (default all)")
      ->delimiter(',')
      ->check(CLI::IsMember({"naive", "fused", "performer", "rfa"}));
  app.add_option("--features", c.features, "random features of performer (m) and rfa (2m)")
      ->check(integer_range(1, 1 << 16))
      ->capture_default_str();
  app.add_flag("--json", c.json, "JSON lines instead of the table");
  return kiln::tools::kiln_main(app, argc, argv, [&] { return run_bench(c); });
}
