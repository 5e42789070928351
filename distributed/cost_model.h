// A cost model of the data-parallel collectives (alpha-beta-gamma, Hockney 1994; Thakur
// et al. 2005), beside PALEO's model of computation: how long one step's communication
// takes for the ring all-reduce, NCCL's double binary tree, the hierarchical all-reduce
// and one-peer neighbor averaging, as functions of the number of ranks, the message size
// and each link's latency and bandwidth. kiln_bench_comm prints its predictions next to
// measured times; kiln_comm_model prints where each collective wins on a cluster.
//
// A link: a message of M bytes costs alpha + M * beta (beta = 1 / bandwidth); reducing
// M bytes costs M * gamma. Every step of the ring and of neighbor averaging has each rank
// send one message and receive one at once (full duplex). The cluster: ranks_per_node
// ranks share a node (fast link), nodes_per_switch nodes share a leaf switch (inter-node
// link), and leaf switches meet at a spine (switch link). Ranks are numbered node by node.
#pragma once
#include <string>
#include <vector>

namespace kiln::dist::cost {

struct Link {
  double alpha = 0;  // seconds per message
  double beta = 0;   // seconds per byte (1 / bandwidth)
};

struct Cluster {
  std::string name;
  int ranks_per_node = 1;
  int nodes_per_switch = 1 << 30;  // effectively one switch
  Link intra_node, inter_node, inter_switch;
  double gamma = 0;  // seconds per byte reduced (or combined) on a rank
};

// The link between ranks a and b (the slowest level they have to cross).
const Link& link_between(const Cluster& c, int a, int b);
// The slowest link a ring through ranks 0, 1, ..., n - 1, 0 crosses (its pace: every
// ring step waits for the slowest hop).
Link ring_link(const Cluster& c, int n);

// Ring all-reduce (reduce-scatter + all-gather): 2 (n - 1) steps of M / n bytes, each
// max(alpha, M / n beta) (pipelined in segments), and (n - 1) / n M gamma of reduction.
double ring_allreduce_seconds(const Cluster& c, int n, double bytes);
// NCCL's double binary tree (pipelined): 2 log2(n) latencies up and down, each rank
// moves the whole message about twice; pays the slowest link too.
double tree_allreduce_seconds(const Cluster& c, int n, double bytes);
// Hierarchical all-reduce, sharded (reduce-scatter in the node, ring all-reduce of each
// 1/L shard across the nodes, all-gather in the node) or through the node leaders
// (all-reduce in the node, ring across the leaders, broadcast in the node), as kiln's
// ProcessGroup::hierarchical_allreduce runs them.
double hierarchical_allreduce_seconds(const Cluster& c, int n, double bytes, bool sharded = true);
// One-peer exponential-graph averaging: one exchange of the whole message with one peer
// (offset 2^(t mod log2 n)) and a combine (2 M gamma); averaged over the period, since
// small offsets stay inside a node and large ones cross switches.
double one_peer_neighbor_seconds(const Cluster& c, int n, double bytes);
// Neighbor averaging with `degree` in-neighbors over `link` (the static graphs).
double neighbor_seconds(const Link& link, double gamma, int degree, double bytes);

// Presets (assumptions in cost_model.cpp, printed by kiln_comm_model).
Cluster h100_node();               // one DGX H100: 8 GPUs on NVLink 4 / NVSwitch
Cluster h100_cluster();            // 8 GPUs per node, 400 Gb/s InfiniBand per GPU, 8 nodes per leaf switch
std::string describe(const Cluster& c);

// Which collective is fastest at (n, bytes): "ring", "tree", "hierarchical" or
// "neighbor" (one-peer), with all four times.
struct Choice {
  std::string best;
  double ring, tree, hierarchical, neighbor;
};
Choice fastest(const Cluster& c, int n, double bytes);

// The smallest message (bytes, searched on a log grid from 1 B to 16 GiB) at which
// `a` stops being faster than `b` at n ranks; a negative value when it never does
// (a wins everywhere) and 0 when it never wins.
double crossover_bytes(const Cluster& c, int n, const std::string& a, const std::string& b);
double seconds_of(const Cluster& c, int n, double bytes, const std::string& algorithm);

}  // namespace kiln::dist::cost
