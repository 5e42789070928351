// Process groups: the collectives of data-parallel training (all_reduce, broadcast,
// all_gather, reduce_scatter, barrier) over the ranks of a job. One interface, one
// backend per transport: NCCL for CUDA tensors, Gloo for CPU tensors (and for CUDA
// tensors staged through host memory), and "local" for a world of one.
//
// Every collective is asynchronous: it returns a Work whose wait() finishes it (on CUDA
// with NCCL, wait() orders the current stream after it rather than blocking the host).
// All ranks must call the same collectives in the same order; each carries a sequence
// number. A collective that does not complete within the timeout fails with a
// kiln::Error naming the op, its sequence number and the ranks that never called it, and
// the group is aborted: every later call throws at once instead of hanging. With
// debug (KILN_DIST_DEBUG=1) every collective first checks that all ranks called the same
// op with the same shapes and dtypes and reports the first rank that did not.
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include <kiln/core/device.h>
#include <kiln/core/tensor.h>
#include <kiln/distributed/env.h>
#include <kiln/distributed/store.h>
#include <kiln/distributed/topology.h>

namespace kiln::dist {

enum class ReduceOp { Sum, Avg, Max };
const char* reduce_op_name(ReduceOp op);

class Work {
 public:
  virtual ~Work() = default;
  // Finishes the collective: its results are in the output tensors afterwards (for
  // CUDA, for work queued on the current stream afterwards). Throws kiln::Error if the
  // collective failed or timed out. Calling it again is a no-op (or rethrows).
  virtual void wait() = 0;
  // True once wait() would not block.
  virtual bool is_completed() = 0;
};

struct ProcessGroupOptions {
  // How long a collective (and the rendezvous) may take before it fails.
  // Default: KILN_DIST_TIMEOUT seconds if set, else 5 minutes.
  std::chrono::milliseconds timeout = default_timeout();
  // Check every collective against the other ranks' (KILN_DIST_DEBUG=1 turns it on).
  bool debug = default_debug();
  // Ranks per node for hierarchical_allreduce: ranks [k * r, (k + 1) * r) share node k
  // (the launchers number ranks node by node). Default: $KILN_RANKS_PER_NODE if set (to
  // try the hierarchy on one machine), else $LOCAL_WORLD_SIZE, else 0 (all on one node).
  int ranks_per_node = default_ranks_per_node();

  static std::chrono::milliseconds default_timeout();
  static bool default_debug();
  static int default_ranks_per_node();
};

// How hierarchical_allreduce crosses nodes. Leader: the node's ranks reduce to their
// first rank, the leaders all-reduce, each leader broadcasts back (one link per node
// carries the inter-node traffic). Sharded: a reduce-scatter inside the node, an
// all-reduce of each shard among the ranks with the same local rank on every node, an
// all-gather inside the node (every rank's link carries 1/r of it; what NCCL and Horovod
// do). Both give every rank the same result.
enum class HierarchicalAlgorithm { Leader, Sharded };

class ProcessGroup {
 public:
  ProcessGroup(std::shared_ptr<Store> store, int rank, int size, ProcessGroupOptions options);
  virtual ~ProcessGroup();
  ProcessGroup(const ProcessGroup&) = delete;
  ProcessGroup& operator=(const ProcessGroup&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }
  virtual std::string backend_name() const = 0;
  const ProcessGroupOptions& options() const { return options_; }
  // Collectives issued so far; the next one gets this number.
  uint64_t sequence_number() const { return next_seq_; }

  // In place on a contiguous tensor: every rank ends with the reduction of all ranks'
  // values. Avg is for floating dtypes (sum, then divide by size()).
  std::shared_ptr<Work> all_reduce(const Tensor& tensor, ReduceOp op = ReduceOp::Sum);
  // Every rank ends with `root`'s values of `tensor`.
  std::shared_ptr<Work> broadcast(const Tensor& tensor, int root = 0);
  // output holds size() * input.numel() elements of input's dtype; rank r's input lands
  // in elements [r * n, (r + 1) * n) (PyTorch's all_gather_into_tensor).
  std::shared_ptr<Work> all_gather(const Tensor& output, const Tensor& input);
  // input holds size() * output.numel() elements; rank r gets the reduction of every
  // rank's elements [r * n, (r + 1) * n) (PyTorch's reduce_scatter_tensor).
  std::shared_ptr<Work> reduce_scatter(const Tensor& output, const Tensor& input, ReduceOp op = ReduceOp::Sum);
  std::shared_ptr<Work> barrier();

  // Neighbor averaging (decentralized training): in place on a contiguous floating
  // tensor, tensor_i <- sum_j W[i][j] tensor_j with W = topology.matrix(step). Each rank
  // sends its tensor to its out-neighbors and receives its in-neighbors' (point to
  // point: ncclSend/ncclRecv in one group; Gloo's pairs), then combines them in wait(),
  // in ascending rank order, so that ranks with equal weights get bit-identical results
  // (the full topology gives every rank the same average). topology.size() must be the
  // group's size; every rank passes the same topology and step.
  std::shared_ptr<Work> neighbor_allreduce(const Tensor& tensor, const Topology& topology, int64_t step);
  // all_reduce through the node hierarchy (see HierarchicalAlgorithm; nodes from
  // options().ranks_per_node). The sub-groups (inside each node, across nodes) are made
  // on first use with this group's backend; the first stage starts now, the others in
  // wait(). One node, or one rank per node, is a plain all_reduce.
  std::shared_ptr<Work> hierarchical_allreduce(const Tensor& tensor, ReduceOp op = ReduceOp::Sum,
                                               HierarchicalAlgorithm algorithm = HierarchicalAlgorithm::Sharded);
  // The ranks per node hierarchical_allreduce uses (options().ranks_per_node, or size()).
  int ranks_per_node() const;

  // True after a collective failed; every later collective throws.
  bool aborted() const;

 protected:
  // NeighborExchange: send `input` to send_to, receive recv_from's into the rows of
  // `output` (recv_from.size() x input.numel()). HierarchicalAllReduce is run by the
  // base class over sub-groups; backends never see it.
  enum class Kind { AllReduce, Broadcast, AllGather, ReduceScatter, Barrier, NeighborExchange, HierarchicalAllReduce };
  struct Collective {
    Kind kind = Kind::Barrier;
    uint64_t seq = 0;
    ReduceOp op = ReduceOp::Sum;
    int root = 0;
    Tensor input;   // all_reduce/broadcast: the tensor itself (input and output)
    Tensor output;
    std::string desc;  // "all_reduce #12 (f32[1024] on cpu, sum)"
    std::vector<int> send_to, recv_from;  // NeighborExchange: this rank's peers
    std::string detail;                   // in the signature: "exp2-dynamic, step 3"
    HierarchicalAlgorithm algorithm = HierarchicalAlgorithm::Sharded;
  };
  // Starts `c` (already checked and numbered). Backends call fail() on an error.
  virtual std::shared_ptr<Work> run(const Collective& c) = 0;

  // The error for a failed collective: the op, its number, this rank, what happened
  // (`what`) and, from the store, the ranks that never called it. Also aborts the group
  // (later collectives throw this message). Safe to call from any thread.
  std::string fail(const Collective& c, const std::string& what);
  Store& store() { return *store_; }
  std::shared_ptr<Store> store_ptr() { return store_; }

 private:
  static Collective make_collective(Kind kind, ReduceOp op, int root, Tensor input, Tensor output);
  std::shared_ptr<Work> start(Collective c);
  std::shared_ptr<Work> run_hierarchical(const Collective& c);
  void make_node_groups();
  std::string signature(const Collective& c) const;
  void check_same_collective(const Collective& c);

  std::shared_ptr<Store> store_;
  int rank_, size_;
  ProcessGroupOptions options_;
  uint64_t next_seq_ = 0;
  // The latest collective this rank entered, published to the store ("seq/<rank>") by a
  // background thread, so that the collectives themselves never wait for the store.
  void publish_loop();
  std::mutex publish_mu_;
  std::condition_variable publish_cv_;
  int64_t entered_seq_ = -1;
  bool publish_stop_ = false;
  std::thread publisher_;
  mutable std::mutex abort_mu_;
  std::string abort_reason_;
  // hierarchical_allreduce's sub-groups: this rank's node, and the ranks of its local
  // rank on every node.
  std::shared_ptr<ProcessGroup> intra_node_, cross_node_;
};

// Broadcasts `tensors` from `root` in a few large collectives instead of one each:
// groups them by dtype and device, packs each group into one flat buffer of at most
// `cap_bytes`, broadcasts and unpacks. Runs under NoGradGuard, so parameters can be
// overwritten. Synchronous.
void broadcast_coalesced(ProcessGroup& pg, const std::vector<Tensor>& tensors, int root = 0,
                         size_t cap_bytes = size_t(64) << 20);
// The same for an all-reduce: every rank ends with the reduction of `tensors` (avg and
// sum need floating tensors for avg, as all_reduce does).
void all_reduce_coalesced(ProcessGroup& pg, const std::vector<Tensor>& tensors, ReduceOp op = ReduceOp::Sum,
                          size_t cap_bytes = size_t(64) << 20);

// ---- creating process groups ----------------------------------------------------

using ProcessGroupFactory = std::function<std::shared_ptr<ProcessGroup>(
    std::shared_ptr<Store> store, int rank, int size, const ProcessGroupOptions& options)>;

// The built-in backends ("local", "gloo", and "nccl" in a CUDA build) are registered on
// first use of the registry, by name, from distributed/process_group.cpp (no static
// initialisers: a static link works). Other backends may be added (or replace one) here.
void register_process_group_backend(const std::string& name, ProcessGroupFactory factory);
bool has_process_group_backend(const std::string& name);
// The built-in factories (distributed/process_group_gloo.cpp, distributed/nccl/).
std::shared_ptr<ProcessGroup> make_gloo_process_group(std::shared_ptr<Store> store, int rank, int size,
                                                      const ProcessGroupOptions& options);
std::shared_ptr<ProcessGroup> make_nccl_process_group(std::shared_ptr<Store> store, int rank, int size,
                                                      const ProcessGroupOptions& options);
std::shared_ptr<ProcessGroup> new_process_group(const std::string& backend, std::shared_ptr<Store> store, int rank,
                                                 int size, const ProcessGroupOptions& options = {});

struct InitOptions {
  // "auto": "local" for a world of one; else "nccl" for a CUDA device (if kiln was built
  // with it and there are at least as many GPUs as ranks on the node), "gloo" otherwise.
  // Or name one: "nccl", "gloo", "local".
  std::string backend = "auto";
  Device device = kCPU;  // where the tensors passed to the collectives live
  // "env://": a TCP store at MASTER_ADDR:MASTER_PORT served by rank 0;
  // "tcp://host:port": the same at that address; "file:///path": a FileStore there.
  // Default: $KILN_INIT_METHOD when set, else "env://".
  std::string init_method = default_init_method();
  static std::string default_init_method();
  ProcessGroupOptions options;
};

// Meets the other ranks of the job described by `env` (default: the launcher's
// environment) through a store and returns the process group. Throws kiln::Error naming
// the ranks that never arrived when the rendezvous times out.
std::shared_ptr<ProcessGroup> init_process_group(const InitOptions& options = {});
std::shared_ptr<ProcessGroup> init_process_group(const InitOptions& options, const LaunchEnv& env);

// The device a rank should use for `type`: cuda:(local_rank mod the number of GPUs),
// so that several ranks share the one GPU of a test machine; the CPU for the CPU.
Device local_device(DeviceType type, const LaunchEnv& env);

}  // namespace kiln::dist
