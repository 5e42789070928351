// kiln_demo: a short tour of the tensor runtime on one device (cuda:0 when usable, else
// the CPU): build configuration, tensors and views, broadcasting, a reduction, softmax,
// matmul, a backward pass, the allocator's memory statistics and a small timing.
// Everything it prints is computed, not canned: it is also a quick check that an
// installation works.
//
// usage: kiln_demo [--device cpu|cuda|cuda:N]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include <kiln/kiln.h>
#if KILN_CUDA
#include <kiln/cuda/device.h>  // unavailable_reason(): why no GPU could be used
#endif

#include "cli.h"

namespace {

using kiln::Tensor;

void section(const char* title) { std::printf("\n== %s\n", title); }

void show(const char* expr, const Tensor& t) { std::cout << expr << " = " << t << "\n"; }

std::string mib(int64_t bytes) {
  char buf[64];
  double b = static_cast<double>(bytes);
  if (bytes < 1024) std::snprintf(buf, sizeof buf, "%lld B", static_cast<long long>(bytes));
  else if (bytes < 1024 * 1024) std::snprintf(buf, sizeof buf, "%.1f KiB", b / 1024.0);
  else std::snprintf(buf, sizeof buf, "%.1f MiB", b / (1024.0 * 1024.0));
  return buf;
}

// Median wall time of `reps` calls of f after one warm-up call, synchronising with the
// device around each call so that queued GPU work is counted.
template <class F>
double median_seconds(kiln::Device dev, int reps, F&& f) {
  f();
  kiln::synchronize(dev);
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    f();
    kiln::synchronize(dev);
    t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

int run(const std::string& device_arg) {
  std::printf("kiln_demo: a short tour of kiln's tensor runtime\n");
  section("build");
  std::printf("kiln %s, CUDA backend compiled in: %s\n", KILN_VERSION, KILN_CUDA ? "yes" : "no (KILN_CUDA=OFF)");
  int ncuda = kiln::cuda_device_count();
  if (KILN_CUDA) {
    std::printf("CUDA devices found: %d\n", ncuda);
#if KILN_CUDA
    if (ncuda == 0) std::printf("  why: %s\n", kiln::cuda::unavailable_reason());
#endif
  }

  kiln::Device dev = kiln::kCPU;
  if (device_arg.empty()) {
    if (ncuda > 0) dev = kiln::cuda_device(0);
    else if (KILN_CUDA) std::printf("no usable CUDA device — running on CPU\n");
    else std::printf("no CUDA backend in this build — running on CPU\n");
  } else {
    dev = kiln::Device(device_arg);
    kiln::runtime(dev);  // throws kiln::DeviceError with the reason when unusable
  }
  std::printf("device: %s (backend \"%s\")\n", dev.str().c_str(), kiln::runtime(dev).name());
  auto& alloc = kiln::runtime(dev).allocator();
  alloc.reset_peak(dev);
  kiln::MemoryStats before = alloc.stats(dev);

  section("tensors");
  Tensor a = kiln::arange(0, 12, 1, kiln::TensorOptions(kiln::DType::F32, dev)).reshape({3, 4});
  show("a = arange(12).reshape({3, 4})", a);
  kiln::manual_seed(42);
  show("randn({2, 3}) (Philox, seed 42: the same numbers on CPU and CUDA)", kiln::randn({2, 3}, dev));

  section("views share storage, no copies");
  Tensor at = a.t();
  std::printf("a.t(): shape %s, strides %s, contiguous: %s, shares a's storage: %s\n",
              kiln::shape_str(at.sizes()).c_str(), kiln::shape_str(at.strides()).c_str(),
              at.is_contiguous() ? "yes" : "no", at.shares_storage(a) ? "yes" : "no");
  Tensor col = a.slice(1, 1, 3);
  show("a.slice(1, 1, 3)", col);
  Tensor row = a[1];
  row.fill_(-1);
  show("after a[1].fill_(-1), a", a);

  section("broadcasting arithmetic");
  Tensor b = kiln::from_vector<float>({10, 20, 30, 40}, {4}, dev);
  Tensor c = kiln::from_vector<float>({1, 2, 3}, {3, 1}, dev);
  show("a + b, b = [10, 20, 30, 40] (shape [4])", a + b);
  show("a * c, c = [[1], [2], [3]] (shape [3, 1])", a * c);
  show("(a > 5) as a mask, where(a > 5, a, 0)", kiln::where(kiln::gt(a, 5), a, 0.0));

  section("reductions");
  show("sum(a)", kiln::sum(a));
  show("sum(a, dim 1)", kiln::sum(a, {1}));
  show("max(a, dim 0)", kiln::max(a, {0}));
  show("argmax(a, dim 1)", kiln::argmax(a, 1));

  section("softmax over the last dim");
  Tensor s = kiln::softmax(a, -1);
  show("softmax(a, -1)", s);
  show("its row sums", kiln::sum(s, {1}));

  section("matmul");
  Tensor w = kiln::ones({4, 2}, dev);
  show("a @ ones({4, 2})", kiln::matmul(a, w));
  Tensor ab = kiln::from_vector<float>({1, 2, 3, 4}, {2, 2}, dev);
  show("[[1, 2], [3, 4]] @ its transpose (a view)", kiln::matmul(ab, ab.t()));

  section("autograd");
  {
    Tensor x = kiln::from_vector<float>({1, 2, 3}, {3}, dev).requires_grad_();
    Tensor loss = kiln::sum(x * x * 0.5 + kiln::exp(x - 3.0));
    loss.backward();
    show("x", x);
    show("loss = sum(x * x / 2 + exp(x - 3))", loss);
    show("x.grad (= x + exp(x - 3))", x.grad());
  }

  section("memory");
  kiln::MemoryStats now = alloc.stats(dev);
  std::printf("%s allocator: %s in live tensors, peak %s, reserved %s, %lld allocations so far\n",
              dev.str().c_str(), mib(now.allocated).c_str(), mib(now.peak_allocated).c_str(),
              mib(now.reserved).c_str(), static_cast<long long>(now.num_allocs - before.num_allocs));

  section("timing (median of 5 after a warm-up, synchronised)");
  {
    const int64_t n = dev.is_cuda() ? 2048 : 512;
    Tensor x = kiln::randn({n, n}, dev), y = kiln::randn({n, n}, dev);
    double t = median_seconds(dev, 5, [&] { kiln::matmul(x, y); });
    std::printf("matmul f32 %lldx%lld @ %lldx%lld: %8.3f ms  %8.1f GFLOP/s\n", static_cast<long long>(n),
                static_cast<long long>(n), static_cast<long long>(n), static_cast<long long>(n), t * 1e3,
                2.0 * n * n * n / t * 1e-9);
    const int64_t m = int64_t{1} << (dev.is_cuda() ? 26 : 22);
    Tensor g = kiln::randn({m}, dev);
    t = median_seconds(dev, 5, [&] { kiln::gelu(g); });
    std::printf("gelu f32 on %lld elements:  %8.3f ms  %8.1f GB/s (read + write)\n", static_cast<long long>(m),
                t * 1e3, 8.0 * static_cast<double>(m) / t * 1e-9);
    now = alloc.stats(dev);
    std::printf("peak memory during the demo: %s\n", mib(now.peak_allocated).c_str());
  }
  if (dev.is_cpu())
    std::printf("(the CPU backend is a single-threaded reference, except matmul, which is OpenBLAS)\n");
  std::printf("\nkiln_demo: OK\n");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"kiln_demo: a short tour of kiln's tensor runtime on one device, and a quick check that an "
               "installation works.",
               "kiln_demo"};
  std::string device_arg;
  app.add_option("--device", device_arg, "default: cuda:0 when usable, else cpu")->check(kiln::tools::device_spec());
  return kiln::tools::kiln_main(app, argc, argv, [&] { return run(device_arg); });
}
