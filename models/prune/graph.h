// Structured pruning's dependency graph, after the idea of Torch-Pruning (Fang et al.,
// CVPR 2023): which channels must be removed together so that a network stays valid.
//
// The graph is traced, not declared: the model runs forward once on an example input, and
// the autograd graph it records is walked from the output. Every value's channels (dim 1
// of an (N, C, H, W) value, the last dim of others) become elements of a union-find;
// each op couples elements: BatchNorm, activations, pooling and additions make their
// input and output channels the same channels (so a residual stream is one set of
// channels through every block), a convolution ties its input channels to its weight's
// columns and its output channels to its weight's rows (a depthwise one ties input to
// output), a flatten maps a channel to its block of features, a Linear ties its features
// to its weight. A set of coupled elements is one prunable channel: the rows, columns
// and entries (weights, biases, BatchNorm parameters and running statistics) it owns are
// removed together. Channels that touch the network's input or output, or an op the
// tracer does not know, are left alone (blocked() says which ops).
//
// Channels whose parameter slices are alike (the same tensors and dims) form a Group: one
// layer's output channels, or a residual stream's. prune() removes channels physically:
// the parameters get their smaller shapes in place (the module's handles stay valid) and
// the layers their new channel counts; no masks remain.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <kiln/core/tensor.h>
#include <kiln/models/nn/module.h>

namespace kiln::prune {

// One slice a channel owns: index `index` along dim `dim` of the tensor `name` (a
// parameter or a buffer of the model). A producer slice makes the channel (a weight row,
// a bias or BatchNorm entry); a consumer slice reads it (a weight column).
struct Slice {
  std::string name;
  int64_t dim = 0, index = 0;
  bool producer = false;
  bool batch_norm = false;  // a BatchNorm weight entry (network slimming's scale)
};

struct Channel {
  std::vector<Slice> slices;
};

struct Group {
  std::string name;                // the first producer tensor ("block1.conv2.weight", ...)
  std::vector<Channel> channels;   // in the order of their first producer index
};

class DependencyGraph {
 public:
  // Traces `model` (run in eval mode on `example`, gradients enabled; its mode is restored).
  DependencyGraph(std::shared_ptr<nn::Module> model, const Tensor& example);

  const std::vector<Group>& groups() const { return groups_; }
  // Ops the tracer did not know, with the reason their channels stay (for messages).
  const std::vector<std::string>& blocked() const { return blocked_; }

  // Removes channels: remove[g] lists channel indices of group g (any order; an empty
  // or missing entry removes none). Every group keeps at least one channel (kiln::Error
  // otherwise). The graph is stale afterwards: trace again to prune again.
  void prune(const std::vector<std::vector<int64_t>>& remove);

 private:
  std::shared_ptr<nn::Module> model_;
  std::vector<Group> groups_;
  std::vector<std::string> blocked_;
};

// Parameters and multiply-accumulates of a model, per layer, from the shapes of one
// forward pass (Conv2d, ConvTranspose2d and Linear do the MACs; BatchNorm, activations
// and pooling are counted as none, as is usual).
struct LayerCost {
  std::string name, type;  // "block1.conv1", "Conv2d"
  int64_t params = 0;      // every parameter of the layer
  int64_t nonzero = 0;     // of them, the nonzero ones (unstructured pruning)
  int64_t macs = 0;        // per example
  int64_t nonzero_macs = 0;  // MACs with nonzero weights (what a sparse kernel does)
};
struct Cost {
  std::vector<LayerCost> layers;  // the layers that have parameters, in registration order
  int64_t params = 0, nonzero = 0, macs = 0, nonzero_macs = 0;
};
Cost count_cost(const std::shared_ptr<nn::Module>& model, const Tensor& example);

// Every call of a Conv2d, ConvTranspose2d or Linear in one traced forward pass, in forward
// order, with the shape of its input (a Linear's as (rows, in_features)).
struct LayerCall {
  std::string name;  // the layer's module path ("block1.conv1")
  std::shared_ptr<nn::Module> module;
  std::string op;    // "conv2d", "conv_transpose2d", "matmul" (a Linear without bias), "linear"
  Shape input;
};
std::vector<LayerCall> layer_calls(const std::shared_ptr<nn::Module>& model, const Tensor& example);
// A table of it (one line per layer and a total), for the terminal.
std::string format_cost(const Cost& cost);

// Gives the model's Conv2d, BatchNorm2d and Linear layers the (smaller) shapes that
// `state` holds for them, so that a physically pruned model loads into a freshly built
// one of its original configuration: build, shrink_to_state, load_state_dict. Throws
// kiln::Error when a saved shape is larger than the layer or inconsistent with it.
void shrink_to_state(nn::Module& model, const std::map<std::string, Tensor>& state);

}  // namespace kiln::prune
