// A PALEO-style performance model of training (Qi, Sparks and Talwalkar, ICLR 2017): the
// time of a training step from the model's operations and a device's measured speed. One
// traced forward pass gives every operation with its input and output shapes: FLOPs
// (convolutions and matrix products 2 x MACs, everything else one per output element) and
// bytes moved (inputs read, output written). On a device that does F FLOP/s on
// convolution-shaped matrix products, B bytes/s of memory traffic and costs `dispatch`
// seconds per operation, an operation takes flops / F + bytes / B + dispatch; backward
// costs twice the forward (two products per product, about two passes of memory per
// elementwise op) unless the op was profiled (profile_ops), and the optimizer's update
// reads and writes its state once.
//
// Communication across ranks is the collectives' cost model's (distributed/cost_model.h);
// kiln_paleo composes the two into the step time and scaling efficiency of data-parallel
// training, and validates them against measured steps.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <kiln/core/tensor.h>
#include <kiln/models/nn/module.h>

namespace kiln::eval {

struct OpCost {
  std::string op;      // the autograd node's name: "conv2d", "batch_norm", "relu", ...
  double flops = 0;    // forward, for the whole example batch
  double bytes = 0;    // forward: inputs read and output written
  bool product = false;  // a convolution or matrix product (compute-bound)
  std::vector<Shape> inputs;  // the forward inputs' shapes
  Shape output;
  bool input_grad = true;  // backward computes the gradient of the first input too
  double measured_s = 0;           // profile_ops: forward alone on the device (0: not measured)
  double measured_backward_s = 0;  // profile_ops: its backward alone
};

struct ModelCost {
  std::vector<OpCost> ops;  // forward order
  int64_t batch = 0;
  int64_t params = 0;
  double product_flops = 0, other_flops = 0, bytes = 0;  // forward totals
};

// Traces one forward pass of `model` on `example` (in eval mode, with gradients recorded)
// and costs every operation. Per-example figures scale linearly with the batch.
ModelCost trace_cost(nn::Module& model, const Tensor& example);

struct DeviceSpeed {
  std::string name;
  double flops_per_s = 0;       // matrix products (matmul)
  double conv_flops_per_s = 0;  // convolutions (0: flops_per_s)
  double bytes_per_s = 0;   // elementwise memory traffic
  double dispatch_s = 0;    // fixed cost per operation (kernel launch or CPU dispatch)
};

struct StepEstimate {
  double forward_s = 0, backward_s = 0, update_s = 0, compute_s = 0;
  int64_t ops = 0;
  std::vector<double> op_forward_s, op_backward_s;  // per op of the cost, dispatch included
};
// One training step's compute at `batch` examples (cost from a trace at any batch),
// with an optimizer whose update moves `update_bytes_per_param` bytes per parameter
// (AdamW in f32: read p, g, m, v and write p, m, v = 28). Profiled ops use their measured
// times (scaled by the batch).
StepEstimate estimate_step(const ModelCost& cost, const DeviceSpeed& device, int64_t batch,
                           double update_bytes_per_param = 28);

// PALEO's per-layer refinement: replays every op of `cost` kiln can rebuild from shapes
// alone (convolutions with stride and padding inferred, matrix products and linear layers, training-mode
// batch norm, relu, add, adaptive average pooling) on fresh inputs, forward and backward,
// and records both times, which estimate_step then uses instead of the flops / F and
// bytes / B estimates and the 2 x forward rule. This is where a device's speed depends
// most on the shape (a 1-channel stem convolution runs far below a 32-channel one;
// training-mode batch norm makes several passes). On the CPU the ops run as a step runs
// them, every forward in order and then every backward in reverse (gradients handed on,
// not accumulated), in rounds for about 2 x `seconds` per op in all, each op timed where
// it runs: an op repeated alone would find its operands in the caches, and ranks sharing
// cores time-share them over whole rounds as in training. On a GPU each op runs alone in
// rounds of calls for `seconds`, one synchronisation per round, so launches overlap as in
// training. `sync`, when given, runs before and after the measurements (on a GPU, before
// each op's): data-parallel ranks pass a barrier, so that every rank measures at the same
// time, as in training. The inputs live on `device`.
void profile_ops(ModelCost& cost, double seconds = 0.05, const std::function<void()>& sync = nullptr,
                 Device device = kCPU);

// Measures this process's CPU: F from kiln's matmul on conv-shaped products, B from an
// elementwise add of tensors larger than the caches, dispatch from a tiny op. `seconds`
// bounds each measurement. Run it in every rank at once to measure what each rank gets.
DeviceSpeed measure_cpu(double seconds = 0.3);
// The same on any device (a GPU: products through cuBLAS/cuDNN, an add of 256 MB tensors,
// a kernel launch for the dispatch), synchronising it at the end of each round of calls.
DeviceSpeed measure_device(Device device, double seconds = 0.3);

}  // namespace kiln::eval
