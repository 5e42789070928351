// kiln_bench_sparse: the direct sparse convolution (ops/sparse.h) against the dense conv2d
// (oneDNN on the CPU) on the conv layers of kiln_train_cnn's model, side by side in one
// run: per layer and sparsity, both medians, the speedup and the sparse kernel's rate in
// GMAC/s of nonzeros (the dense kernel's in GMAC/s of all weights). Weights are random with
// a random mask of the given sparsity (what unstructured magnitude pruning leaves), the
// input N(0, 1). The last line of each table row is one JSON object per measurement.
//
// usage: kiln_bench_sparse [--width 32] [--batch 128] [--sparsity 0.8,0.9,0.95] [--reps 10]
//                          [--threads N]
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

struct Layer {
  std::string name;
  int64_t in, out, k, stride, pad, hw;  // hw: the input's height = width
};

// kiln_train_cnn's ResNet-style model (models/zoo/resnet_cnn.h) at width w, 28 x 28 input.
std::vector<Layer> layers(int64_t w) {
  return {{"block1.conv1", w, w, 3, 1, 1, 28},          {"block1.conv2", w, w, 3, 1, 1, 28},
          {"block2.conv1", w, 2 * w, 3, 2, 1, 28},      {"block2.conv2", 2 * w, 2 * w, 3, 1, 1, 14},
          {"block2.shortcut", w, 2 * w, 1, 2, 0, 28},   {"block3.conv1", 2 * w, 4 * w, 3, 2, 1, 14},
          {"block3.conv2", 4 * w, 4 * w, 3, 1, 1, 7},   {"block3.shortcut", 2 * w, 4 * w, 1, 2, 0, 14}};
}

template <class F>
double median_ms(int64_t reps, F&& f) {
  f();  // warm: caches, the allocator's blocks, oneDNN's primitive
  std::vector<double> t;
  for (int64_t r = 0; r < reps; ++r) {
    const auto t0 = Clock::now();
    f();
    t.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

struct Config {
  int64_t width = 32, batch = 128, reps = 10, threads = 0;
  std::vector<double> sparsity{0.8, 0.9, 0.95};
};

int run_bench(const Config& c) {
  if (c.threads > 0) set_num_threads(static_cast<int>(c.threads));
  NoGradGuard no_grad;
  Generator gen(0);
  std::printf("kiln_bench_sparse: kiln_train_cnn's conv layers at width %lld, batch %lld, %d threads\n",
              (long long)c.width, (long long)c.batch, num_threads());
  std::printf("%-17s %-22s %8s %10s %10s %8s %12s %12s\n", "layer", "shape", "sparsity", "dense ms", "sparse ms",
              "speedup", "dense GMAC/s", "sparse GMAC/s");
  std::vector<std::string> json;
  for (double s : c.sparsity) {
    double dense_total = 0, sparse_total = 0;
    for (const Layer& l : layers(c.width)) {
      Tensor x = randn({c.batch, l.in, l.hw, l.hw}, TensorOptions(DType::F32), &gen);
      Tensor w = randn({l.out, l.in, l.k, l.k}, TensorOptions(DType::F32), &gen);
      w = where(lt(rand({l.out, l.in, l.k, l.k}, TensorOptions(DType::F32), &gen), s), 0.0, w);
      const CsrWeight csr = to_csr(w);
      Tensor y;
      const double dense = median_ms(c.reps, [&] { y = conv2d(x, w, Tensor(), l.stride, l.pad); });
      const double sparse = median_ms(c.reps, [&] { y = sparse_conv2d(x, csr, Tensor(), l.stride, l.pad); });
      const int64_t ho = (l.hw + 2 * l.pad - l.k) / l.stride + 1;
      const double macs = static_cast<double>(c.batch) * ho * ho * l.out * l.in * l.k * l.k;
      const double nz_macs = macs * csr.density();
      dense_total += dense;
      sparse_total += sparse;
      const std::string shape = detail::str(l.in, "->", l.out, " ", l.k, "x", l.k, "/", l.stride, " @", l.hw);
      std::printf("%-17s %-22s %8.2f %10.3f %10.3f %7.2fx %12.1f %12.1f\n", l.name.c_str(), shape.c_str(),
                  1.0 - csr.density(), dense, sparse, dense / sparse, macs / dense * 1e-6, nz_macs / sparse * 1e-6);
      json.push_back(detail::str("{\"bench\":\"sparse_conv2d\",\"layer\":\"", l.name, "\",\"batch\":", c.batch,
                                 ",\"width\":", c.width, ",\"sparsity\":", 1.0 - csr.density(),
                                 ",\"dense_ms\":", dense, ",\"sparse_ms\":", sparse, ",\"threads\":", num_threads(),
                                 "}"));
    }
    std::printf("%-17s %-22s %8.2f %10.3f %10.3f %7.2fx\n", "all conv layers", "", s, dense_total, sparse_total,
                dense_total / sparse_total);
  }
  for (const std::string& j : json) std::printf("%s\n", j.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"kiln_bench_sparse: the direct sparse convolution against the dense conv2d on kiln_train_cnn's "
               "conv layers, side by side.",
               "kiln_bench_sparse"};
  Config c;
  using kiln::tools::integer_range;
  app.add_option("--width", c.width, "the model's width (its stages have w, 2w, 4w channels)")
      ->check(integer_range(1, 4096))
      ->capture_default_str();
  app.add_option("--batch", c.batch, "images per call")->check(integer_range(1, 65536))->capture_default_str();
  app.add_option("--sparsity", c.sparsity, "fractions of zero weights, comma-separated")
      ->delimiter(',')
      ->check(CLI::Range(0.0, 0.999));
  app.add_option("--reps", c.reps, "timed repetitions (the median is printed)")
      ->check(integer_range(1, 100000))
      ->capture_default_str();
  app.add_option("--threads", c.threads, "CPU threads (0: KILN_NUM_THREADS, else the physical cores)")
      ->check(integer_range(0, 4096));
  return kiln::tools::kiln_main(app, argc, argv, [&] { return run_bench(c); });
}
