// DistributedDataParallel: data-parallel training of one Module replicated on every
// rank. At construction it broadcasts rank 0's parameters and buffers, so every replica
// starts equal. It groups the gradients into buckets (in reverse registration order,
// since backward produces the last layers' gradients first; the first bucket small so
// communication starts early, the others about 25 MiB) and, from the parameters'
// gradient hooks, all-reduces each bucket as soon as all its gradients are in, while
// backward goes on with the earlier layers. At the end of backward it launches what is
// left and waits; each parameter's .grad is then a view of its slice of the bucket,
// holding the average, so the optimizer step that follows sees the same gradients on
// every rank (and nothing is copied back). While .grad is unset (the default
// zero_grad(set_to_none = true)), backward writes each gradient straight into its bucket
// slice (PyTorch's gradient_as_bucket_view): one copy per gradient, no clone.
//
// The wrapper is itself a Module (the wrapped one is its child "module", as in PyTorch),
// so a trainer holds a std::shared_ptr<nn::Module> and calls it the same way whether or
// not it runs data-parallel.
//
//   auto pg = kiln::dist::init_process_group();
//   kiln::dist::DistributedDataParallel ddp(model, pg);
//   loss = cross_entropy(ddp(x), y); loss.backward(); opt.step();
#pragma once
#include <memory>
#include <string>
#include <vector>

#include <kiln/distributed/process_group.h>
#include <kiln/models/nn/module.h>

namespace kiln::dist {

struct DDPOptions {
  double bucket_cap_mb = 25.0;       // MiB of gradients per bucket
  double first_bucket_cap_mb = 1.0;  // the first bucket (the last layers), launched earliest
  // Broadcast rank 0's buffers (BatchNorm running statistics) before each forward in
  // training mode, as PyTorch does, so the replicas' buffers stay equal.
  bool broadcast_buffers = true;
  // Parameters may get no gradient in a step (a branch not taken). Off: a missing
  // gradient counts as zeros and .grad receives the average anyway. On: one more small
  // all-reduce per step finds the parameters no rank used; their .grad is left alone,
  // so the optimizer skips them as it would in a single process.
  bool find_unused_parameters = false;
  // All-reduce the buckets through the node hierarchy (ProcessGroup::hierarchical_allreduce;
  // its later stages run when the bucket is waited for, at the end of backward) instead
  // of one all-reduce over every rank.
  bool hierarchical = false;
  HierarchicalAlgorithm hierarchical_algorithm = HierarchicalAlgorithm::Sharded;
};

// Rank 0's parameters and buffers of `module` on every rank (what the data-parallel
// wrappers do at construction, so that every replica starts equal).
void broadcast_module(ProcessGroup& pg, nn::Module& module);

class DistributedDataParallel final : public nn::Module {
 public:
  DistributedDataParallel(std::shared_ptr<nn::Module> module, std::shared_ptr<ProcessGroup> pg,
                          DDPOptions options = {});
  ~DistributedDataParallel();
  DistributedDataParallel(const DistributedDataParallel&) = delete;
  DistributedDataParallel& operator=(const DistributedDataParallel&) = delete;

  Tensor forward(const Tensor& input) override;

  nn::Module& module() { return *module_; }
  const std::shared_ptr<nn::Module>& module_ptr() const { return module_; }
  ProcessGroup& process_group() { return *pg_; }

  // While a NoSync lives, backward passes only accumulate into .grad on each rank; the
  // first backward after it all-reduces the accumulated gradients (gradient accumulation
  // without communication on the accumulation steps).
  class NoSync {
   public:
    explicit NoSync(DistributedDataParallel& d) : d_(&d) { d.sync_ = false; }
    ~NoSync() {
      if (d_) d_->sync_ = true;
    }
    NoSync(NoSync&& o) noexcept : d_(o.d_) { o.d_ = nullptr; }
    NoSync(const NoSync&) = delete;
    NoSync& operator=(const NoSync&) = delete;
    NoSync& operator=(NoSync&&) = delete;

   private:
    DistributedDataParallel* d_;
  };
  [[nodiscard]] NoSync no_sync() { return NoSync(*this); }

  // The parameter names of each bucket, in launch order.
  std::vector<std::vector<std::string>> bucket_names() const;
  // What the last synchronized backward did (for benchmarks and tests).
  struct Stats {
    int buckets = 0;
    int launched_during_backward = 0;  // launched from a hook, before backward ended
    int unused_parameters = 0;          // got no gradient on this rank
    double wait_seconds = 0;            // spent waiting for the all-reduces after backward
  };
  const Stats& last_stats() const { return stats_; }

 private:
  struct Bucket {
    std::vector<int> params;      // indices into params_
    std::vector<int64_t> offsets;  // element offset of each in flat
    Tensor flat;                   // the bucket's gradients, contiguous
    int pending = 0;
    bool launched = false;
    std::shared_ptr<Work> work;
  };
  void on_grad(int index, const Tensor& grad);
  void launch_ready();
  void launch(Bucket& b);
  void finalize();

  std::shared_ptr<nn::Module> module_;
  std::shared_ptr<ProcessGroup> pg_;
  DDPOptions options_;
  std::vector<std::string> names_;
  std::vector<Tensor> params_;
  std::vector<int> hook_ids_;
  std::vector<int> bucket_of_;  // param index -> bucket
  std::vector<int> slot_of_;    // param index -> position in its bucket
  std::vector<Bucket> buckets_;
  std::vector<char> ready_;
  size_t next_bucket_ = 0;
  bool sync_ = true;
  bool in_backward_ = false;
  uint64_t pass_ = 0;  // the backward pass the buckets are filling for
  Stats stats_;
};

}  // namespace kiln::dist
