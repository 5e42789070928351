// Structured (channel) pruning: importance criteria and the choice of channels to remove
// for a MACs target, over the traced groups of models/prune/graph.h.
//
// Criteria, per channel of a group (summed over every layer the channel couples):
// - L1 (Li et al., ICLR 2017): the L1 norm of the channel's filters (the weight rows of
//   the convolutions and Linears that produce it).
// - Taylor (Molchanov et al., CVPR 2019): the first-order Taylor estimate of the loss
//   change when the channel goes, (sum over its producer parameters of g * w)^2,
//   averaged over the batches given to TaylorAccumulator.
// - Slimming (Liu et al., ICCV 2017): |gamma| of the channel's BatchNorm scales, trained
//   sparse beforehand with an L1 penalty (add_slimming_penalty after each backward).
//   Channels without a BatchNorm cannot be ranked that way and are kept.
//
// Importance is normalised within each group (divided by the group's mean), so channels
// of different layers compare on one scale. plan_channels removes channels least
// important first until the MACs fall to the target: the same fraction of every group
// (Scope::Layer, as Li et al.) or by global rank (Scope::Global), keeping at least
// `min_keep` of each group.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <kiln/models/nn/module.h>
#include <kiln/models/prune/graph.h>
#include <kiln/models/prune/masks.h>

namespace kiln::prune {

enum class Criterion { L1, Taylor, Slimming };
Criterion parse_criterion(const std::string& name);  // "l1" | "taylor" | "slimming"

using Importance = std::vector<std::vector<double>>;  // [group][channel]

Importance l1_importance(const DependencyGraph& graph, nn::Module& model);
Importance slimming_importance(const DependencyGraph& graph, nn::Module& model);

// Accumulates Taylor importance: call accumulate() after each backward (gradients set).
class TaylorAccumulator {
 public:
  TaylorAccumulator(const DependencyGraph& graph, nn::Module& model);
  void accumulate();
  int64_t batches() const { return batches_; }
  Importance importance() const;  // the mean over the batches

 private:
  const DependencyGraph& graph_;
  nn::Module& model_;
  Importance sum_;
  int64_t batches_ = 0;
};

// Adds lambda * sign(gamma) to the gradient of every BatchNorm2d weight (network
// slimming's L1 penalty on the scales).
void add_slimming_penalty(nn::Module& model, double lambda);

// MACs as a function of removed channels: per weight, its MACs per element.
class MacModel {
 public:
  MacModel(const std::shared_ptr<nn::Module>& model, const Tensor& example);
  int64_t dense() const { return dense_; }
  // The MACs after removing `remove[g]` channels from each group g.
  int64_t after(const DependencyGraph& graph, const std::vector<std::vector<int64_t>>& remove) const;

 private:
  struct Layer {
    std::string weight;
    Shape sizes;
    double macs_per_element;
  };
  std::vector<Layer> layers_;
  int64_t dense_ = 0;
};

struct ChannelPlan {
  std::vector<std::vector<int64_t>> remove;  // per group: channel indices
  int64_t macs_before = 0, macs_after = 0;
  int64_t channels_before = 0, channels_removed = 0;
};
// Channels to remove so the MACs are at most `macs_fraction` of macs_model.dense()
// (0 < macs_fraction < 1), or, with channel_fraction > 0 instead, that fraction of each
// group's channels (Scope::Layer only). Throws kiln::Error when the target cannot be
// reached while keeping min_keep (a fraction, at least one channel) of every group.
// round_to: every group keeps a multiple of it (or all its channels): convolution kernels
// (oneDNN's, cuDNN's) run much faster on channel counts that are multiples of 8 or 16.
ChannelPlan plan_channels(const DependencyGraph& graph, const Importance& importance, const MacModel& macs,
                          double macs_fraction, Scope scope, double min_keep = 0.1, double channel_fraction = 0,
                          int64_t round_to = 1);

}  // namespace kiln::prune
