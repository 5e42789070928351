// The collectives' cost model (distributed/cost_model.h) on cases worked by hand.
#include "test_util.h"

#include <kiln/distributed/cost_model.h>

using namespace kiln;
namespace cost = kiln::dist::cost;

namespace {

// One node of n ranks on a link of alpha 10 us and 1 GB/s, no reduction cost.
cost::Cluster flat(int per_node = 1 << 20) {
  cost::Cluster c;
  c.name = "flat";
  c.ranks_per_node = per_node;
  c.intra_node = c.inter_node = c.inter_switch = {10e-6, 1e-9};
  return c;
}

}  // namespace

TEST_CASE("cost model: ring, tree and one-peer on one link, by hand", "[distributed][cost]") {
  const cost::Cluster c = flat();
  // Ring, 4 ranks, 4 MB: 6 steps of max(10 us, 1 MB x 1 ns) = 6 ms.
  CHECK(cost::ring_allreduce_seconds(c, 4, 4e6) == Approx(6e-3));
  // Latency-bound: 4 kB -> 6 steps of max(10 us, 1 us) = 60 us.
  CHECK(cost::ring_allreduce_seconds(c, 4, 4e3) == Approx(60e-6));
  // Tree, 8 ranks: 2 log2(8) = 6 latencies + 2 M beta.
  CHECK(cost::tree_allreduce_seconds(c, 8, 1e6) == Approx(60e-6 + 2e-3));
  // One peer: one message of M.
  CHECK(cost::one_peer_neighbor_seconds(c, 8, 1e6) == Approx(10e-6 + 1e-3));
  CHECK(cost::one_peer_neighbor_seconds(c, 1, 1e6) == 0.0);
  CHECK(cost::ring_allreduce_seconds(c, 1, 1e6) == 0.0);
  // A static graph of degree 3: three messages, four tensors combined.
  cost::Cluster g = c;
  g.gamma = 1e-10;
  CHECK(cost::neighbor_seconds(g.intra_node, g.gamma, 3, 1e6) == Approx(3 * (10e-6 + 1e-3) + 4 * 1e6 * 1e-10));
  // Reduction work: (n - 1) / n M gamma for the ring, 2 M gamma for one peer's combine.
  CHECK(cost::ring_allreduce_seconds(g, 4, 4e6) == Approx(6e-3 + 0.75 * 4e6 * 1e-10));
  CHECK(cost::one_peer_neighbor_seconds(g, 4, 4e6) == Approx(10e-6 + 4e-3 + 2 * 4e6 * 1e-10));
}

TEST_CASE("cost model: the hierarchy and its links", "[distributed][cost]") {
  cost::Cluster c = flat(4);
  c.nodes_per_switch = 2;
  c.inter_node = {50e-6, 1e-8};     // 100 MB/s between nodes
  c.inter_switch = {100e-6, 2e-8};  // 50 MB/s across switches
  CHECK(&cost::link_between(c, 0, 3) == &c.intra_node);
  CHECK(&cost::link_between(c, 3, 4) == &c.inter_node);   // node 0 -> node 1, same switch
  CHECK(&cost::link_between(c, 7, 8) == &c.inter_switch);  // node 1 -> node 2, next switch
  // A ring over 2 nodes is paced by the inter-node link.
  CHECK(cost::ring_link(c, 8).beta == 1e-8);
  CHECK(cost::ring_link(c, 16).beta == 2e-8);
  CHECK(cost::ring_link(c, 4).beta == 1e-9);
  // Sharded hierarchical, 8 ranks = 2 nodes x 4, M = 8 MB: reduce-scatter and all-gather
  // in the node, 3 steps of 10 us + 2 MB x 1 ns each; across the 2 nodes a ring of the
  // 2 MB shard: 2 steps of max(50 us, 1 MB x 10 ns).
  const double in_node = 3 * (10e-6 + 2e6 * 1e-9);
  CHECK(cost::hierarchical_allreduce_seconds(c, 8, 8e6, true) == Approx(2 * in_node + 2 * 1e-2));
  // Through the leaders: a ring all-reduce of 8 MB in the node, a ring of 8 MB across,
  // a broadcast chain in the node.
  const double leader = 6 * std::max(10e-6, 2e6 * 1e-9) + 2 * std::max(50e-6, 4e6 * 1e-8) + (3 * 10e-6 + 8e6 * 1e-9);
  CHECK(cost::hierarchical_allreduce_seconds(c, 8, 8e6, false) == Approx(leader));
  // One node: the hierarchy is the ring.
  CHECK(cost::hierarchical_allreduce_seconds(c, 4, 8e6) == cost::ring_allreduce_seconds(c, 4, 8e6));
  // One peer on 16 ranks (4 nodes over 2 switches): offsets 1, 2, 4, 8; offsets 1 and 2
  // cross a switch for some rank (7 -> 8), so do 4 and 8; every step waits for it.
  CHECK(cost::one_peer_neighbor_seconds(c, 16, 1e6) == Approx(100e-6 + 1e6 * 2e-8));
}

TEST_CASE("cost model: the winners at the extremes, crossovers, errors", "[distributed][cost]") {
  const cost::Cluster big = cost::h100_cluster();
  // Tiny messages on 1024 ranks are latency-bound: one peer's single message wins; huge
  // ones are bandwidth-bound: the hierarchy moves 1/8 of the data across the slow links.
  CHECK(cost::fastest(big, 1024, 1024).best == "neighbor");
  CHECK(cost::fastest(big, 1024, 4e9).best == "hierarchical");
  // So one peer stops beating the hierarchy at some size in between, and it is stable.
  const double x = cost::crossover_bytes(big, 1024, "neighbor", "hierarchical");
  CHECK(x > 1e6);
  CHECK(x < 4e9);
  CHECK(cost::seconds_of(big, 1024, x * 1.5, "neighbor") > cost::seconds_of(big, 1024, x * 1.5, "hierarchical"));
  CHECK(cost::seconds_of(big, 1024, x / 1.5, "neighbor") < cost::seconds_of(big, 1024, x / 1.5, "hierarchical"));
  // On one node the tree's log-latency beats the ring for small messages only.
  const cost::Cluster node = cost::h100_node();
  CHECK(cost::fastest(node, 8, 1e9).ring < cost::fastest(node, 8, 1e9).tree);
  CHECK(cost::fastest(node, 8, 1e3).tree < cost::fastest(node, 8, 1e3).ring);
  CHECK(cost::describe(big).find("8 nodes per leaf switch") != std::string::npos);
  REQUIRE_KILN_ERROR(cost::seconds_of(big, 8, 1e3, "butterfly"), "unknown collective 'butterfly'");
  REQUIRE_KILN_ERROR(cost::ring_allreduce_seconds(big, 0, 1e3), "number of ranks");
  REQUIRE_KILN_ERROR(cost::ring_allreduce_seconds(big, 8, -1), "message size");
}
