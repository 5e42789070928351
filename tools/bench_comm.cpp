// kiln_bench_comm: the collectives' measured time beside the cost model's prediction
// (distributed/cost_model.h), on the ranks it runs on (under kiln-run; Gloo on the CPU).
//
// 1. Calibration, in the same run (distributed/calibrate.h): alpha and beta from shift
//    exchanges (every rank sends M bytes to rank + 1 and receives from rank - 1 at once:
//    the pattern of every ring step) at several sizes, less the combine, fitted by least
//    squares in relative error; gamma from one rank's add of M bytes.
// 2. Measured: the ring all-reduce (Gloo's), one-peer exponential-graph averaging
//    (neighbor_allreduce on exp2-dynamic) and, with KILN_RANKS_PER_NODE, the
//    hierarchical all-reduce, at each --bytes; the median over --iters rounds of the
//    slowest rank's time (every collective sampled once per round, interleaved).
// 3. Predicted by the model with the calibrated link, side by side, and the ratio.
//
// usage: kiln-run --nproc-per-node N kiln_bench_comm [--bytes B ...] [--iters N]
#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include <kiln/kiln.h>

#include "cli.h"

using namespace kiln;
namespace cost = kiln::dist::cost;

namespace {

// A message of about `bytes`: whole f32 elements, at least one.
int64_t elements(double bytes) { return std::max<int64_t>(1, static_cast<int64_t>(bytes / 4)); }
Tensor floats(double bytes) { return randn({elements(bytes)}); }

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

  // The collectives to time, sampled in the calibration's rounds (interleaved with it).
  const dist::Topology one_peer = dist::Topology::exp2_dynamic(n);
  const bool hierarchy = pg->ranks_per_node() < n;
  std::vector<Tensor> keep;
  std::vector<cost::Probe> probes;
  int64_t step = 0;
  for (double b : sizes) {
    Tensor x = keep.emplace_back(floats(b));
    probes.push_back({"ring", [&, x] { pg->all_reduce(x, dist::ReduceOp::Avg)->wait(); }, 0});
    probes.push_back({"neighbor", [&, x] { pg->neighbor_allreduce(x, one_peer, step++)->wait(); }, 0});
    if (hierarchy) probes.push_back({"hierarchical", [&, x] { pg->hierarchical_allreduce(x)->wait(); }, 0});
  }
  const cost::Calibration cal = cost::calibrate(*pg, iters, &probes);
  const cost::Cluster& here = cal.cluster;
  if (!main_rank) {
    pg->barrier()->wait();
    return 0;
  }
  std::printf("kiln_bench_comm: %d ranks (%s), %d interleaved rounds; calibrated on shift exchanges of 64 B .. "
              "4 MiB:\n", n, pg->backend_name().c_str(), iters);
  std::printf("  alpha %.1f us, bandwidth %.2f GB/s per rank and direction, gamma %.3f ns/B (add)\n",
              here.intra_node.alpha * 1e6, 1e-9 / here.intra_node.beta, here.gamma * 1e9);
  for (size_t i = 0; i < cal.bytes.size(); ++i)
    std::printf("  exchange %10s: %9.1f us measured, %9.1f us fitted\n", bytes_str(cal.bytes[i]).c_str(),
                cal.exchange_s[i] * 1e6, (here.intra_node.alpha + cal.bytes[i] * here.intra_node.beta) * 1e6);
  std::printf("\n%10s | %-32s | %-32s%s\n", "message", "ring all-reduce: meas / model",
              "one-peer neighbor: meas / model", hierarchy ? " | hierarchical: meas / model" : "");
  size_t k = 0;
  for (double b : sizes) {
    const double bytes = static_cast<double>(elements(b)) * 4;
    const double ring = probes[k++].seconds, nb = probes[k++].seconds;
    const double pr = cost::ring_allreduce_seconds(here, n, bytes), pn = cost::one_peer_neighbor_seconds(here, n, bytes);
    std::printf("%10s | %8.1f / %8.1f us (x%.2f)     | %8.1f / %8.1f us (x%.2f)    ", bytes_str(bytes).c_str(),
                ring * 1e6, pr * 1e6, ring / pr, nb * 1e6, pn * 1e6, nb / pn);
    if (hierarchy) {
      const double h = probes[k++].seconds, ph = cost::hierarchical_allreduce_seconds(here, n, bytes, true);
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
