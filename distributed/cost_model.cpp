// The alpha-beta-gamma cost model of the collectives (see cost_model.h) and the cluster
// presets kiln_comm_model tabulates.
#include <kiln/distributed/cost_model.h>

#include <algorithm>
#include <cmath>
#include <sstream>

#include <kiln/core/error.h>

namespace kiln::dist::cost {

namespace {

Link slower(const Link& a, const Link& b) { return {std::max(a.alpha, b.alpha), std::max(a.beta, b.beta)}; }

int ceil_log2(int n) {
  int k = 0;
  while ((int64_t{1} << k) < n) ++k;
  return k;
}

void check_args(int n, double bytes) {
  KILN_CHECK(n >= 1, "cost model: the number of ranks must be positive, got ", n);
  KILN_CHECK(bytes >= 0 && std::isfinite(bytes), "cost model: the message size must be a finite number of bytes >= 0");
}

// The link the nodes' ring crosses when `nodes` nodes take part.
Link nodes_ring_link(const Cluster& c, int nodes) {
  return nodes <= c.nodes_per_switch ? c.inter_node : slower(c.inter_node, c.inter_switch);
}

// The ring is pipelined (NCCL and Gloo send a step's data in segments): once a step's
// transfer takes longer than a latency, the next segment's latency hides behind it, so a
// step costs max(alpha, m beta) rather than their sum. Measured on Gloo (kiln_bench_comm)
// the sum over-predicted 1-4 MiB all-reduces by 30-40%; the max is within 10%.
double ring_over(const Link& l, double gamma, int n, double bytes) {
  if (n <= 1) return 0.0;
  const double steps = 2.0 * (n - 1);
  return steps * std::max(l.alpha, bytes / n * l.beta) + (n - 1.0) / n * bytes * gamma;
}

}  // namespace

const Link& link_between(const Cluster& c, int a, int b) {
  const int na = a / c.ranks_per_node, nb = b / c.ranks_per_node;
  if (na == nb) return c.intra_node;
  if (na / c.nodes_per_switch == nb / c.nodes_per_switch) return c.inter_node;
  return c.inter_switch;
}

Link ring_link(const Cluster& c, int n) {
  if (n <= c.ranks_per_node) return c.intra_node;
  const int nodes = (n + c.ranks_per_node - 1) / c.ranks_per_node;
  return slower(c.intra_node, nodes_ring_link(c, nodes));
}

double ring_allreduce_seconds(const Cluster& c, int n, double bytes) {
  check_args(n, bytes);
  return ring_over(ring_link(c, n), c.gamma, n, bytes);
}

double tree_allreduce_seconds(const Cluster& c, int n, double bytes) {
  check_args(n, bytes);
  if (n <= 1) return 0.0;
  const Link l = ring_link(c, n);
  return 2.0 * ceil_log2(n) * l.alpha + 2.0 * bytes * l.beta + bytes * c.gamma;
}

double hierarchical_allreduce_seconds(const Cluster& c, int n, double bytes, bool sharded) {
  check_args(n, bytes);
  const int per = std::min(c.ranks_per_node, n);
  const int nodes = (n + per - 1) / per;
  if (nodes == 1 || per == 1) return ring_allreduce_seconds(c, n, bytes);
  const Link& in = c.intra_node;
  const Link across = nodes_ring_link(c, nodes);
  if (sharded) {
    const double shard = bytes / per;
    const double rs = (per - 1) * (in.alpha + shard * in.beta) + (per - 1.0) / per * bytes * c.gamma;
    const double ag = (per - 1) * (in.alpha + shard * in.beta);
    return rs + ring_over(across, c.gamma, nodes, shard) + ag;
  }
  const double bcast = (per - 1) * in.alpha + bytes * in.beta;  // a pipelined chain
  return ring_over(in, c.gamma, per, bytes) + ring_over(across, c.gamma, nodes, bytes) + bcast;
}

double one_peer_neighbor_seconds(const Cluster& c, int n, double bytes) {
  check_args(n, bytes);
  if (n <= 1) return 0.0;
  const int m = ceil_log2(n);
  double total = 0;
  for (int k = 0; k < m; ++k) {
    const int offset = 1 << k;
    double slowest = 0;  // the step waits for its slowest pair
    for (int i = 0; i < n; ++i) {
      const Link& l = link_between(c, i, (i + offset) % n);
      slowest = std::max(slowest, l.alpha + bytes * l.beta);
    }
    total += slowest;
  }
  return total / m + 2.0 * bytes * c.gamma;
}

double neighbor_seconds(const Link& link, double gamma, int degree, double bytes) {
  KILN_CHECK(degree >= 0, "cost model: negative degree");
  return degree * (link.alpha + bytes * link.beta) + (degree + 1.0) * bytes * gamma;
}

// Assumptions (public figures, rounded; the model's point is the shape, not the digit):
// NVLink 4 through NVSwitch moves about 400 GB/s per GPU per direction in NCCL's
// all-reduce (busbw), about 1 us per ring step; an H100's 3.35 TB/s HBM reads two
// operands and writes one per reduced byte (gamma ~ 1 ps/B). One 400 Gb/s NDR InfiniBand
// NIC per GPU: 50 GB/s, ~5 us per message through NCCL; leaf switches of 8 nodes joined
// by a 2:1 oversubscribed spine (25 GB/s per GPU across it, one more hop, ~6 us).
Cluster h100_node() {
  Cluster c;
  c.name = "one DGX H100 node (8 GPUs, NVLink 4)";
  c.ranks_per_node = 8;
  c.intra_node = {1.0e-6, 1.0 / 400e9};
  c.inter_node = c.inter_switch = c.intra_node;
  c.gamma = 3.0 / 3.35e12;
  return c;
}

Cluster h100_cluster() {
  Cluster c = h100_node();
  c.name = "H100 cluster (8 GPUs per node, 400 Gb/s InfiniBand per GPU, 8 nodes per leaf switch, 2:1 spine)";
  c.nodes_per_switch = 8;
  c.inter_node = {5.0e-6, 1.0 / 50e9};
  c.inter_switch = {6.0e-6, 1.0 / 25e9};
  return c;
}

std::string describe(const Cluster& c) {
  std::ostringstream os;
  auto link = [&](const char* name, const Link& l) {
    os << "  " << name << ": alpha " << l.alpha * 1e6 << " us, " << 1.0 / l.beta / 1e9 << " GB/s\n";
  };
  os << c.name << "\n  " << c.ranks_per_node << " ranks per node";
  if (c.nodes_per_switch < (1 << 30)) os << ", " << c.nodes_per_switch << " nodes per leaf switch";
  os << "\n";
  link("in a node      ", c.intra_node);
  if (c.nodes_per_switch > 1) link("between nodes  ", c.inter_node);
  if (c.nodes_per_switch < (1 << 30)) link("across switches", c.inter_switch);
  os << "  reduction: " << c.gamma * 1e12 << " ps per byte\n";
  return os.str();
}

double seconds_of(const Cluster& c, int n, double bytes, const std::string& a) {
  if (a == "ring") return ring_allreduce_seconds(c, n, bytes);
  if (a == "tree") return tree_allreduce_seconds(c, n, bytes);
  if (a == "hierarchical") return hierarchical_allreduce_seconds(c, n, bytes, true);
  if (a == "neighbor") return one_peer_neighbor_seconds(c, n, bytes);
  throw Error("cost model: unknown collective '" + a + "' (ring, tree, hierarchical, neighbor)");
}

Choice fastest(const Cluster& c, int n, double bytes) {
  Choice ch{"", ring_allreduce_seconds(c, n, bytes), tree_allreduce_seconds(c, n, bytes),
            hierarchical_allreduce_seconds(c, n, bytes, true), one_peer_neighbor_seconds(c, n, bytes)};
  double best = ch.ring;
  ch.best = "ring";
  for (auto [name, t] : {std::pair<const char*, double>{"tree", ch.tree}, {"hierarchical", ch.hierarchical},
                         {"neighbor", ch.neighbor}})
    if (t < best) best = t, ch.best = name;
  return ch;
}

double crossover_bytes(const Cluster& c, int n, const std::string& a, const std::string& b) {
  bool a_won = false;
  for (int i = 0; i <= 34 * 4; ++i) {
    const double bytes = std::pow(2.0, i / 4.0);
    const bool a_wins = seconds_of(c, n, bytes, a) < seconds_of(c, n, bytes, b);
    if (a_wins) a_won = true;
    else if (a_won) return bytes;
  }
  return a_won ? -1.0 : 0.0;
}

}  // namespace kiln::dist::cost
