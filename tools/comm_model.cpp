// kiln_comm_model: where each data-parallel collective wins, by the alpha-beta-gamma cost
// model of distributed/cost_model.h. For a cluster preset (or one described by flags) it
// prints the assumptions, the time of one all-reduce (ring, NCCL-style tree,
// hierarchical) and of one one-peer neighbor averaging for a grid of rank counts and
// message sizes with the fastest marked, and the message sizes where the winner changes.
//
// Neighbor averaging is not an all-reduce: after one step the ranks agree only
// approximately (exactly after log2(n) one-peer steps when n is a power of two). The
// table compares the cost of one step's communication; what that buys is measured by the
// consensus distance kiln_train_cnn --dp neighbor logs.
//
// usage: kiln_comm_model [--cluster h100-node|h100-cluster|custom] [--ranks N ...]
//          [--bytes B ...] [custom: --ranks-per-node --alpha-us --gbs --inter-alpha-us
//          --inter-gbs --gamma-ps]
#include <cstdio>
#include <string>
#include <vector>

#include <kiln/kiln.h>

#include "cli.h"

using namespace kiln;
namespace cost = kiln::dist::cost;

namespace {

std::string bytes_str(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (b >= 1024 && u < 4) b /= 1024, ++u;
  char buf[32];
  std::snprintf(buf, sizeof buf, b < 10 && b != static_cast<int>(b) ? "%.1f %s" : "%.0f %s", b, units[u]);
  return buf;
}

std::string time_str(double s) {
  char buf[32];
  if (s < 1e-3) std::snprintf(buf, sizeof buf, "%.1f us", s * 1e6);
  else if (s < 1) std::snprintf(buf, sizeof buf, "%.2f ms", s * 1e3);
  else std::snprintf(buf, sizeof buf, "%.2f s", s);
  return buf;
}

void table(const cost::Cluster& c, const std::vector<int>& ranks, const std::vector<double>& sizes) {
  std::printf("%s\n", cost::describe(c).c_str());
  std::printf("%6s %10s | %12s %12s %12s %12s | %s\n", "ranks", "message", "ring", "tree", "hierarchical",
              "one-peer", "fastest");
  for (int n : ranks) {
    for (double b : sizes) {
      const cost::Choice ch = cost::fastest(c, n, b);
      std::printf("%6d %10s | %12s %12s %12s %12s | %s\n", n, bytes_str(b).c_str(), time_str(ch.ring).c_str(),
                  time_str(ch.tree).c_str(), time_str(ch.hierarchical).c_str(), time_str(ch.neighbor).c_str(),
                  ch.best.c_str());
    }
    std::printf("\n");
  }
  std::printf("where the winner changes (the message size from which the second is faster):\n");
  for (int n : ranks) {
    for (auto [a, b] : {std::pair<const char*, const char*>{"neighbor", "ring"}, {"tree", "ring"},
                        {"neighbor", "tree"}, {"hierarchical", "ring"},
                        {"neighbor", "hierarchical"}}) {
      const double x = cost::crossover_bytes(c, n, a, b);
      if (x > 0)
        std::printf("  %5d ranks: %s beats %s below %s\n", n, a, b, bytes_str(x).c_str());
      else
        std::printf("  %5d ranks: %s %s %s at %s size from 1 B to 16 GiB\n", n, a, x < 0 ? "beats" : "never beats",
                    b, x < 0 ? "every" : "any");
    }
  }
  std::printf("\n");
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Prints where each data-parallel collective wins by kiln's alpha-beta-gamma cost model.",
               "kiln_comm_model"};
  std::string cluster = "all";
  std::vector<int> ranks;
  std::vector<double> sizes;
  int per_node = 8;
  double alpha_us = 1, gbs = 400, inter_alpha_us = 5, inter_gbs = 50, gamma_ps = 1;
  app.add_option("--cluster", cluster, "h100-node | h100-cluster | all (both) | custom (the flags below)")
      ->check(CLI::IsMember({"h100-node", "h100-cluster", "all", "custom"}))
      ->capture_default_str();
  app.add_option("--ranks", ranks, "rank counts of the table (default: 2 4 8 for a node, 16 64 256 1024 beyond)")
      ->check(tools::integer_range(1, 1 << 16));
  app.add_option("--bytes", sizes, "message sizes of the table (default 1 KiB to 1 GiB)")
      ->check(tools::positive_real());
  app.add_option("--ranks-per-node", per_node, "custom: ranks per node")->check(tools::integer_range(1, 1 << 16));
  app.add_option("--alpha-us", alpha_us, "custom: latency in a node (us)")->check(tools::positive_real(true));
  app.add_option("--gbs", gbs, "custom: bandwidth in a node (GB/s per rank)")->check(tools::positive_real());
  app.add_option("--inter-alpha-us", inter_alpha_us, "custom: latency between nodes (us)")
      ->check(tools::positive_real(true));
  app.add_option("--inter-gbs", inter_gbs, "custom: bandwidth between nodes (GB/s per rank)")
      ->check(tools::positive_real());
  app.add_option("--gamma-ps", gamma_ps, "custom: reduction cost (ps per byte)")->check(tools::positive_real(true));
  return tools::kiln_main(app, argc, argv, [&] {
    if (sizes.empty())
      for (double b = 1024; b <= double(1 << 30); b *= 32) sizes.push_back(b);
    if (cluster == "custom") {
      cost::Cluster c;
      c.name = "custom";
      c.ranks_per_node = per_node;
      c.intra_node = {alpha_us * 1e-6, 1.0 / (gbs * 1e9)};
      c.inter_node = c.inter_switch = {inter_alpha_us * 1e-6, 1.0 / (inter_gbs * 1e9)};
      c.gamma = gamma_ps * 1e-12;
      table(c, ranks.empty() ? std::vector<int>{8, 64, 1024} : ranks, sizes);
      return 0;
    }
    if (cluster == "h100-node" || cluster == "all")
      table(cost::h100_node(), ranks.empty() ? std::vector<int>{2, 4, 8} : ranks, sizes);
    if (cluster == "h100-cluster" || cluster == "all")
      table(cost::h100_cluster(), ranks.empty() ? std::vector<int>{16, 64, 256, 1024} : ranks, sizes);
    return 0;
  });
}
