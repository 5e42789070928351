// kiln_bench_comm: the collectives' measured time beside the cost model's prediction
// (distributed/cost_model.h), on the ranks it runs on (under kiln-run; Gloo on the CPU).
//
// 1. Calibration, in the same run: alpha and beta from the shift exchange (every rank
//    sends M bytes to rank + 1 and receives from rank - 1 at once: the pattern of every
//    ring step) at several sizes, less the combine,
//    fitted by least squares in relative error; gamma from one rank's add of M bytes (the
//    reduction's work).
// 2. Measured: the ring all-reduce (Gloo's), one-peer exponential-graph averaging
//    (neighbor_allreduce on exp2-dynamic) and, with KILN_RANKS_PER_NODE, the
//    hierarchical all-reduce, at each --bytes; the median over --iters rounds of the
//    slowest rank's time (every collective sampled once per round, interleaved).
// 3. Predicted by the model with the calibrated link, side by side, and the ratio.
//
// usage: kiln-run --nproc-per-node N kiln_bench_comm [--bytes B ...] [--iters N]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include <kiln/kiln.h>

#include "cli.h"

using namespace kiln;
namespace cost = kiln::dist::cost;
using Clock = std::chrono::steady_clock;

namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// One sample of fn(): kBatch back-to-back calls, the slowest rank's time per call.
// Back-to-back calls are what training does, and they spread the barrier's release skew.
constexpr int kBatch = 10;
// One untimed call first: the first call after another kind of collective runs slower
// (measured: a ring all-reduce after exchanges took twice as long), which is switching,
// not the collective.
double sample(dist::ProcessGroup& pg, const std::function<void()>& fn) {
  fn();
  pg.barrier()->wait();
  const auto t0 = Clock::now();
  for (int k = 0; k < kBatch; ++k) fn();
  Tensor t = full({1}, std::chrono::duration<double>(Clock::now() - t0).count() / kBatch, TensorOptions(DType::F64));
  pg.all_reduce(t, dist::ReduceOp::Max)->wait();
  return t.item<double>();
}

double local_timed(int iters, const std::function<void()>& fn) {
  fn();
  std::vector<double> ts;
  for (int i = 0; i < iters; ++i) {
    const auto t0 = Clock::now();
    fn();
    ts.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
  }
  return median(ts);
}

// Every rank sends to rank + 1 and receives from rank - 1 (mod n): the pattern of every
// step of the ring all-reduce.
dist::Topology shift(int n) {
  std::vector<std::vector<double>> w(n, std::vector<double>(n, 0.0));
  for (int i = 0; i < n; ++i) w[i][i] = 0.5, w[i][(i + n - 1) % n] += 0.5;
  return dist::Topology::from_matrix(w, "shift");
}

Tensor floats(double bytes) { return randn({std::max<int64_t>(1, static_cast<int64_t>(bytes / 4))}); }

std::string bytes_str(double b) {
  char buf[32];
  if (b >= 1 << 20) std::snprintf(buf, sizeof buf, "%.2f MiB", b / (1 << 20));
  else std::snprintf(buf, sizeof buf, "%.1f KiB", b / 1024);
  return buf;
}

int run_bench(std::vector<double> sizes, int iters) {
  auto pg = dist::init_process_group({});
  const int n = pg->size();
  KILN_CHECK(n >= 2, "kiln_bench_comm: run it on 2 or more ranks (kiln-run --nproc-per-node N)");
  const bool main_rank = pg->rank() == 0;
  if (sizes.empty()) sizes = {4096, 65536, 77754.0 * 4, 1 << 20, 4 << 20};

  // ---- calibration ----
  // Every collective below is sampled in turn, round after round (interleaved), so that
  // a slow spell of the machine falls on all of them alike.
  struct Experiment {
    std::string kind;  // exchange | ring | neighbor | hierarchical
    double bytes;
    std::function<void()> fn;
    std::vector<double> samples;
  };
  std::vector<Experiment> ex;
  const dist::Topology pair = shift(n), one_peer = dist::Topology::exp2_dynamic(n);
  const std::vector<double> cal_bytes{64, 4096, 65536, 262144, 1 << 20, 4 << 20};
  std::vector<Tensor> keep;
  int64_t step = 0;
  for (double b : cal_bytes) {
    Tensor x = keep.emplace_back(floats(b));
    ex.push_back({"exchange", b, [&, x] { pg->neighbor_allreduce(x, pair, 0)->wait(); }, {}});
  }
  const bool hierarchy = pg->ranks_per_node() < n;
  for (double b : sizes) {
    Tensor x = keep.emplace_back(floats(b));
    ex.push_back({"ring", b, [&, x] { pg->all_reduce(x, dist::ReduceOp::Avg)->wait(); }, {}});
    ex.push_back({"neighbor", b, [&, x] { pg->neighbor_allreduce(x, one_peer, step++)->wait(); }, {}});
    if (hierarchy) ex.push_back({"hierarchical", b, [&, x] { pg->hierarchical_allreduce(x)->wait(); }, {}});
  }
  for (auto& e : ex)
    for (int i = 0; i < 3; ++i) e.fn();  // warm-up (Gloo connects its pairs lazily)
  for (int round = 0; round < iters; ++round)
    for (auto& e : ex) e.samples.push_back(sample(*pg, e.fn));
  auto measured = [&](const std::string& kind, double b) {
    for (auto& e : ex)
      if (e.kind == kind && e.bytes == b) return median(e.samples);
    return 0.0;
  };

  // The calibration: the exchange less the combine neighbor_allreduce does after it
  // (local), fitted by least squares in relative error (weights 1 / t^2: the sizes span
  // five orders of magnitude, and each should be fitted about as well); gamma from one
  // rank's add of M bytes (the reduction's work).
  std::vector<double> cal_s;
  double gamma_sum = 0;
  int gamma_n = 0;
  for (double b : cal_bytes) {
    Tensor x = floats(b), y = floats(b);
    const double combine = local_timed(iters, [&] {
      Tensor acc = mul(x, Scalar(0.5));
      acc.add_(y, Scalar(0.5));
      x.copy_(acc);
    });
    cal_s.push_back(std::max(measured("exchange", b) - combine, 1e-9));
    if (b >= 65536) gamma_sum += local_timed(iters, [&] { x.add_(y); }) / b, ++gamma_n;
  }
  double s1 = 0, sb = 0, sbb = 0, st = 0, sbt = 0;
  for (size_t i = 0; i < cal_bytes.size(); ++i) {
    const double w = 1.0 / (cal_s[i] * cal_s[i]), b = cal_bytes[i], t = cal_s[i];
    s1 += w, sb += w * b, sbb += w * b * b, st += w * t, sbt += w * b * t;
  }
  const double det = s1 * sbb - sb * sb;
  const double beta = std::max((s1 * sbt - sb * st) / det, 1e-15);
  const double alpha = std::max((sbb * st - sb * sbt) / det, 0.0);
  const double gamma = gamma_sum / gamma_n;

  cost::Cluster here;
  here.name = "this machine (calibrated)";
  here.ranks_per_node = pg->ranks_per_node();
  here.intra_node = here.inter_node = here.inter_switch = {alpha, beta};
  here.gamma = gamma;
  if (!main_rank) {
    pg->barrier()->wait();
    return 0;
  }
  std::printf("kiln_bench_comm: %d ranks (%s), %d interleaved rounds; calibrated on shift exchanges of 64 B .. "
              "4 MiB:\n", n, pg->backend_name().c_str(), iters);
  std::printf("  alpha %.1f us, bandwidth %.2f GB/s per rank and direction, gamma %.3f ns/B (add)\n", alpha * 1e6,
              1e-9 / beta, gamma * 1e9);
  for (size_t i = 0; i < cal_bytes.size(); ++i)
    std::printf("  exchange %10s: %9.1f us measured, %9.1f us fitted\n", bytes_str(cal_bytes[i]).c_str(),
                cal_s[i] * 1e6, (alpha + cal_bytes[i] * beta) * 1e6);
  std::printf("\n%10s | %-32s | %-32s%s\n", "message", "ring all-reduce: meas / model",
              "one-peer neighbor: meas / model", hierarchy ? " | hierarchical: meas / model" : "");
  for (double b : sizes) {
    const double bytes = static_cast<double>(std::max<int64_t>(1, static_cast<int64_t>(b / 4))) * 4;
    const double ring = measured("ring", b), nb = measured("neighbor", b);
    const double pr = cost::ring_allreduce_seconds(here, n, bytes), pn = cost::one_peer_neighbor_seconds(here, n, bytes);
    std::printf("%10s | %8.1f / %8.1f us (x%.2f)     | %8.1f / %8.1f us (x%.2f)    ", bytes_str(bytes).c_str(),
                ring * 1e6, pr * 1e6, ring / pr, nb * 1e6, pn * 1e6, nb / pn);
    if (hierarchy) {
      const double h = measured("hierarchical", b), ph = cost::hierarchical_allreduce_seconds(here, n, bytes, true);
      std::printf(" | %8.1f / %8.1f us (x%.2f)", h * 1e6, ph * 1e6, h / ph);
    }
    std::printf("\n");
  }
  std::printf("\n(x: measured / predicted. The model knows alpha, beta and gamma above and nothing else.)\n");
  pg->barrier()->wait();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Times the ring all-reduce, one-peer neighbor averaging and the hierarchical all-reduce beside the "
               "cost model's prediction (run under kiln-run).",
               "kiln_bench_comm"};
  std::vector<double> sizes;
  int iters = 30;
  app.add_option("--bytes", sizes, "message sizes (default 4 KiB, 64 KiB, 304 KiB = kiln_train_cnn's gradients, "
                                   "1 MiB, 4 MiB)")
      ->check(tools::positive_real());
  app.add_option("--iters", iters, "rounds: samples of each collective, interleaved (median)")->check(tools::integer_range(1, 100000))
      ->capture_default_str();
  return tools::kiln_main(app, argc, argv, [&] { return run_bench(sizes, iters); });
}
