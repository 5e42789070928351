// Decentralized data-parallel training (as BlueFog): every rank keeps its own copy of the
// model and, instead of all-reducing gradients, averages its parameters with its
// neighbors on a topology (distributed/topology.h) after or during each step. No step
// waits on a chain through all n ranks; the ranks' models differ by a small consensus
// distance that the averaging keeps bounded and an exact average removes.
//
// Modes (Lian et al. 2017; Nedic et al. 2017; Assran et al. 2019):
//   AdaptThenCombine  x_i <- sum_j W_ij (x_j - lr g_j): the optimizer steps, then the
//                     parameters are averaged with the neighbors (after_step).
//   Overlap           x_i <- sum_j W_ij x_j - lr g_i(x_i): the parameters' exchange starts
//                     in forward() and runs while forward and backward compute;
//                     before_step() writes the average in, then the optimizer applies the
//                     gradient taken at the old parameters (combine-then-adapt).
//   GradientTracking  the optimizer steps along y_i, a tracked estimate of the average
//                     gradient: y_i <- sum_j W_ij (y_j + g_j - g_j_prev), then the
//                     parameters are averaged as in AdaptThenCombine (DIGing, ATC form).
//                     It removes the bias that differing data puts on the others.
// Every `exact_average_every` steps (0: never) the averaging is an exact all-reduce.
//
// Like DistributedDataParallel it is a Module wrapping the model (rank 0's parameters
// and buffers are broadcast at construction). A trainer calls:
//   loss = f(ddp(x)); loss.backward(); ddp.before_step(); opt.step(); ddp.after_step();
// Buffers (BatchNorm statistics) stay local; average_exactly() averages everything.
#pragma once
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <kiln/distributed/process_group.h>
#include <kiln/distributed/topology.h>
#include <kiln/models/nn/module.h>

namespace kiln::dist {

enum class DecentralizedMode { AdaptThenCombine, Overlap, GradientTracking };
const char* decentralized_mode_name(DecentralizedMode m);
// "atc", "overlap", "gradient-tracking".
DecentralizedMode parse_decentralized_mode(const std::string& s);

struct DecentralizedOptions {
  Topology topology;  // over the group's ranks (its size must be the group's)
  DecentralizedMode mode = DecentralizedMode::AdaptThenCombine;
  int64_t exact_average_every = 0;
};

class DecentralizedDataParallel final : public nn::Module {
 public:
  DecentralizedDataParallel(std::shared_ptr<nn::Module> module, std::shared_ptr<ProcessGroup> pg,
                            DecentralizedOptions options);
  ~DecentralizedDataParallel();
  DecentralizedDataParallel(const DecentralizedDataParallel&) = delete;
  DecentralizedDataParallel& operator=(const DecentralizedDataParallel&) = delete;

  // The module's forward; in Overlap mode, in training, first starts the exchange of the
  // parameters for this step (once per step).
  Tensor forward(const Tensor& input) override;
  // After backward, before the optimizer's step (every rank, every step).
  void before_step();
  // After the optimizer's step: averages the parameters (AdaptThenCombine,
  // GradientTracking) and advances the step count the topology cycles with.
  void after_step();
  // All-reduces the parameters and floating buffers to their exact mean (every rank);
  // restarts gradient tracking. For evaluation and checkpoints.
  void average_exactly();
  // mean over ranks of sum over parameters of |x_i - mean_j x_j|^2 (every rank calls it;
  // two all-reduces).
  double consensus_distance();

  nn::Module& module() { return *module_; }
  const DecentralizedOptions& options() const { return options_; }
  int64_t step() const { return step_; }
  void set_step(int64_t step);  // for a resumed run: the step the topology continues at

  struct Stats {
    double wait_seconds = 0;  // the last step's time blocked on the exchanges
    int exchanges = 0;        // collectives of the last step
  };
  const Stats& last_stats() const { return stats_; }

 private:
  // Parameters (or their gradients) packed per dtype and device into flat buffers.
  struct Group {
    std::vector<int> params;
    std::vector<int64_t> offsets;
    Tensor flat;
  };
  void pack_params();
  void unpack_params();
  std::shared_ptr<Work> average(const Tensor& flat, int64_t step);
  bool exact_at(int64_t step) const;

  std::shared_ptr<nn::Module> module_;
  std::shared_ptr<ProcessGroup> pg_;
  DecentralizedOptions options_;
  std::vector<Tensor> params_;
  std::vector<Group> groups_;
  std::vector<std::shared_ptr<Work>> pending_;  // Overlap: this step's exchanges
  std::vector<Tensor> tracker_, prev_grad_;     // GradientTracking: y and g_prev per group
  int64_t step_ = 0;
  Stats stats_;
};

// Averages every floating tensor of `state` over the ranks, in place (a few coalesced
// all-reduces); other tensors are left alone. For optimizer state at an exact average.
void average_state(ProcessGroup& pg, std::map<std::string, Tensor>& state);

}  // namespace kiln::dist
