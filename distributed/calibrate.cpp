// Calibration of the collectives' cost model on live ranks (see calibrate.h).
#include <kiln/distributed/calibrate.h>

#include <algorithm>
#include <chrono>

#include <kiln/core/autograd.h>
#include <kiln/ops/binary.h>

namespace kiln::dist::cost {

namespace {

using Clock = std::chrono::steady_clock;

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// One sample: an untimed call (the first call after another kind of collective runs
// slower: measured, a ring all-reduce after exchanges took twice as long), then 10
// back-to-back calls, the slowest rank's time per call.
constexpr int kBatch = 10;
double sample(ProcessGroup& pg, const std::function<void()>& fn) {
  fn();
  pg.barrier()->wait();
  const auto t0 = Clock::now();
  for (int k = 0; k < kBatch; ++k) fn();
  Tensor t = full({1}, std::chrono::duration<double>(Clock::now() - t0).count() / kBatch, TensorOptions(DType::F64));
  pg.all_reduce(t, ReduceOp::Max)->wait();
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

Topology shift(int n) {
  std::vector<std::vector<double>> w(n, std::vector<double>(n, 0.0));
  for (int i = 0; i < n; ++i) w[i][i] = 0.5, w[i][(i + n - 1) % n] += 0.5;
  return Topology::from_matrix(w, "shift");
}

}  // namespace

Calibration calibrate(ProcessGroup& pg, int rounds, std::vector<Probe>* probes) {
  const int n = pg.size();
  KILN_CHECK(n >= 2, "cost::calibrate: needs 2 or more ranks to exchange messages (this group has ", n, ")");
  KILN_CHECK(rounds >= 1, "cost::calibrate: rounds must be positive");
  NoGradGuard no_grad;
  Calibration cal;
  cal.bytes = {64, 4096, 65536, 262144, 1 << 20, 4 << 20};
  const Topology topo = shift(n);
  std::vector<Tensor> xs;
  std::vector<Probe> all;
  for (double b : cal.bytes) {
    Tensor x = randn({static_cast<int64_t>(b / 4)});
    xs.push_back(x);
    all.push_back({"exchange", [&pg, &topo, x] { pg.neighbor_allreduce(x, topo, 0)->wait(); }, 0});
  }
  if (probes)
    for (auto& p : *probes) all.push_back(p);
  std::vector<std::vector<double>> samples(all.size());
  for (auto& p : all)
    for (int i = 0; i < 3; ++i) p.fn();  // warm-up (Gloo connects its pairs lazily)
  for (int r = 0; r < rounds; ++r)
    for (size_t k = 0; k < all.size(); ++k) samples[k].push_back(sample(pg, all[k].fn));
  if (probes)
    for (size_t k = 0; k < probes->size(); ++k) (*probes)[k].seconds = median(samples[cal.bytes.size() + k]);

  double gamma_sum = 0;
  int gamma_n = 0;
  for (size_t i = 0; i < cal.bytes.size(); ++i) {
    Tensor x = xs[i].clone(), y = randn({xs[i].numel()});
    const double combine = local_timed(rounds, [&] {
      Tensor acc = mul(x, Scalar(0.5));
      acc.add_(y, Scalar(0.5));
      x.copy_(acc);
    });
    cal.exchange_s.push_back(std::max(median(samples[i]) - combine, 1e-9));
    if (cal.bytes[i] >= 65536) gamma_sum += local_timed(rounds, [&] { x.add_(y); }) / cal.bytes[i], ++gamma_n;
  }
  // t = alpha + b beta, least squares in relative error (weights 1 / t^2): the sizes span
  // five orders of magnitude, and each should be fitted about as well.
  double s1 = 0, sb = 0, sbb = 0, st = 0, sbt = 0;
  for (size_t i = 0; i < cal.bytes.size(); ++i) {
    const double w = 1.0 / (cal.exchange_s[i] * cal.exchange_s[i]), b = cal.bytes[i], t = cal.exchange_s[i];
    s1 += w, sb += w * b, sbb += w * b * b, st += w * t, sbt += w * b * t;
  }
  const double det = s1 * sbb - sb * sb;
  Link link;
  link.beta = std::max((s1 * sbt - sb * st) / det, 1e-15);
  link.alpha = std::max((sbb * st - sb * sbt) / det, 0.0);
  cal.cluster.name = detail::str("these ", n, " ranks (calibrated)");
  cal.cluster.ranks_per_node = pg.ranks_per_node();
  cal.cluster.intra_node = cal.cluster.inter_node = cal.cluster.inter_switch = link;
  cal.cluster.gamma = gamma_sum / gamma_n;
  return cal;
}

}  // namespace kiln::dist::cost
