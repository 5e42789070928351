// The PALEO-style step-time model (see paleo.h): costing a traced forward pass, and
// measuring a CPU's product throughput, memory bandwidth and per-op dispatch.
#include <kiln/models/eval/paleo.h>

#include <algorithm>
#include <chrono>
#include <deque>
#include <functional>
#include <map>
#include <set>

#include <kiln/core/autograd.h>
#include <kiln/core/runtime.h>
#include <kiln/ops/binary.h>
#include <kiln/ops/conv.h>
#include <kiln/ops/matmul.h>
#include <kiln/ops/norm.h>
#include <kiln/ops/pool.h>
#include <kiln/ops/unary.h>

namespace kiln::eval {

namespace {

double numel_of(const Shape& s) {
  double n = 1;
  for (int64_t d : s) n *= static_cast<double>(d);
  return n;
}

// Ops that only re-describe their input (no memory traffic of their own).
bool is_view(const std::string& op) {
  static const std::set<std::string> views{"view", "reshape", "transpose", "permute", "expand", "narrow", "select",
                                           "squeeze", "unsqueeze", "flatten", "as_strided", "slice", "alias"};
  return views.count(op) > 0;
}

using Clock = std::chrono::steady_clock;

// Seconds per call of fn, repeated for about `seconds` after one warm-up call.
// Seconds per call of fn on `device`: after a warm-up call, rounds of 1, 2, 4, ... (at
// most 256) calls, each round ended by a device synchronisation (a no-op on the CPU), so a
// GPU's queued kernels are counted and its launches still overlap as in training.
double per_call(double seconds, const std::function<void()>& fn, Device device) {
  fn();
  synchronize(device);
  int64_t calls = 0, round = 1;
  const auto t0 = Clock::now();
  double elapsed = 0;
  do {
    for (int64_t i = 0; i < round; ++i) fn();
    synchronize(device);
    calls += round;
    round = std::min<int64_t>(round * 2, 256);
    elapsed = std::chrono::duration<double>(Clock::now() - t0).count();
  } while (elapsed < seconds);
  return elapsed / static_cast<double>(calls);
}

}  // namespace

ModelCost trace_cost(nn::Module& model, const Tensor& example) {
  KILN_CHECK(example.defined() && example.dim() >= 1 && example.size(0) > 0,
             "trace_cost: needs an example batch (got an empty or undefined tensor)");
  // Train mode, as training runs (BatchNorm on batch statistics); the running averages
  // the forward updates are put back.
  std::vector<Tensor> buffers = model.buffers(), kept;
  for (const Tensor& b : buffers) kept.push_back(b.detach().clone());
  const bool was_training = model.is_training();
  model.train();
  Tensor y;
  {
    EnableGradGuard grad;
    y = model(example);
  }
  {
    NoGradGuard no_grad;
    for (size_t i = 0; i < buffers.size(); ++i) buffers[i].copy_(kept[i]);
  }
  if (!was_training) model.eval();
  KILN_CHECK(y.grad_fn(), "trace_cost: the model's output records no operations (no parameter requires grad?)");

  // Every recorded op in forward (topological) order: a depth-first walk from the output
  // that emits an op after every op it consumes. An op's output shape is what its
  // consumer recorded for that input.
  std::vector<Node*> order;
  std::map<Node*, Shape> out_shape;
  out_shape[y.grad_fn().get()] = y.sizes();
  std::set<Node*> seen{y.grad_fn().get()};
  std::vector<std::pair<Node*, size_t>> stack{{y.grad_fn().get(), 0}};
  while (!stack.empty()) {
    auto& [n, k] = stack.back();
    auto& edges = n->next_edges();
    if (k == edges.size()) {
      order.push_back(n);
      stack.pop_back();
      continue;
    }
    Node* m = edges[k].node.get();
    if (m && !m->leaf().defined()) {
      if (k < n->input_meta().size() && !out_shape.count(m)) out_shape[m] = n->input_meta()[k].sizes;
      if (seen.insert(m).second) {
        ++k;
        stack.emplace_back(m, 0);  // (invalidates n and k)
        continue;
      }
    }
    ++k;
  }
  ModelCost cost;
  cost.batch = example.size(0);
  for (const Tensor& p : model.parameters()) cost.params += p.numel();
  for (Node* n : order) {
    OpCost c;
    c.op = n->name();
    const auto& in = n->input_meta();
    const Shape out = out_shape.count(n) ? out_shape[n] : (in.empty() ? Shape{} : in[0].sizes);
    for (const auto& m : in) c.inputs.push_back(m.sizes);
    c.output = out;
    c.input_grad = !n->next_edges().empty() && n->next_edges()[0].node != nullptr;
    const double out_n = numel_of(out);
    if (!is_view(c.op)) {
      // (an empty shape is an absent optional input, such as a convolution's bias, or a
      // scalar: nothing to move either way)
      for (const auto& m : in)
        if (!m.sizes.empty()) c.bytes += numel_of(m.sizes) * static_cast<double>(dtype_size(m.dtype));
      c.bytes += out_n * static_cast<double>(in.empty() ? 4 : dtype_size(in[0].dtype));
    }
    if ((c.op == "conv2d" || c.op == "conv_transpose2d") && in.size() >= 2 && in[1].sizes.size() == 4) {
      const Shape& w = in[1].sizes;
      const double per = numel_of(w) / static_cast<double>(w[0]);  // conv: per output; transposed: per input
      c.flops = 2.0 * (c.op == "conv2d" ? out_n : numel_of(in[0].sizes)) * per;
      c.product = true;
    } else if ((c.op == "matmul" || c.op == "linear") && in.size() >= 2 && !in[0].sizes.empty()) {
      // (a Linear with a bias is one fused "linear" op: the product, the bias, an activation)
      c.flops = 2.0 * out_n * static_cast<double>(in[0].sizes.back());
      c.product = true;
    } else {
      c.flops = is_view(c.op) ? 0.0 : out_n;
    }
    (c.product ? cost.product_flops : cost.other_flops) += c.flops;
    cost.bytes += c.bytes;
    cost.ops.push_back(std::move(c));
  }
  return cost;
}

StepEstimate estimate_step(const ModelCost& cost, const DeviceSpeed& d, int64_t batch, double update_bytes_per_param) {
  KILN_CHECK(cost.batch > 0 && batch > 0, "estimate_step: the batch must be positive");
  KILN_CHECK(d.flops_per_s > 0 && d.bytes_per_s > 0, "estimate_step: the device speeds must be positive");
  const double scale = static_cast<double>(batch) / static_cast<double>(cost.batch);
  const double conv_f = d.conv_flops_per_s > 0 ? d.conv_flops_per_s : d.flops_per_s;
  StepEstimate e;
  for (const OpCost& op : cost.ops) {
    double fwd = 0, bwd = 0;
    if (op.measured_s > 0) {
      fwd = op.measured_s * scale;
      bwd = op.measured_backward_s * scale;
    } else if (op.product) {
      fwd = op.flops * scale / (op.op == "matmul" || op.op == "linear" ? d.flops_per_s : conv_f);
      bwd = 2 * fwd;
    } else {
      fwd = op.bytes * scale / d.bytes_per_s;
      bwd = 2 * fwd;
    }
    // A profiled op's time includes its dispatch; the backward node's gradient
    // accumulation costs one more.
    const bool profiled = op.measured_s > 0;
    fwd += profiled ? 0.0 : d.dispatch_s;
    bwd += (profiled ? 1.0 : 2.0) * d.dispatch_s;
    e.forward_s += fwd;
    e.backward_s += bwd;
    e.op_forward_s.push_back(fwd);
    e.op_backward_s.push_back(bwd);
  }
  e.update_s = static_cast<double>(cost.params) * update_bytes_per_param / d.bytes_per_s + 4 * d.dispatch_s;
  e.compute_s = e.forward_s + e.backward_s + e.update_s;
  e.ops = static_cast<int64_t>(cost.ops.size());
  return e;
}

namespace {

// The op replayed on fresh inputs of its shapes (null when kiln cannot replay it from
// shapes alone). Stride and padding of a convolution are inferred from its sizes
// ("same"-style padding for odd kernels).
std::function<Tensor(const std::vector<Tensor>&)> replay_of(const OpCost& op) {
  const auto& in = op.inputs;
  if (op.op == "conv2d" && in.size() >= 2 && in[0].size() == 4 && in[1].size() == 4 && op.output.size() == 4 &&
      op.output[2] > 0) {
    const int64_t s = std::max<int64_t>(1, (in[0][2] + op.output[2] - 1) / op.output[2]);
    const int64_t p = std::max<int64_t>(0, ((op.output[2] - 1) * s + in[1][2] - in[0][2] + 1) / 2);
    const int64_t groups = in[0][1] / std::max<int64_t>(1, in[1][1]);
    return [s, p, groups](const std::vector<Tensor>& t) { return conv2d(t[0], t[1], Tensor(), s, p, 1, groups); };
  }
  if (op.op == "matmul" && in.size() >= 2) return [](const std::vector<Tensor>& t) { return matmul(t[0], t[1]); };
  if (op.op == "linear" && in.size() == 3)
    return [](const std::vector<Tensor>& t) { return fused_linear(t[0], t[1], t[2]); };
  if (op.op == "batch_norm" && in.size() >= 3 && in[0].size() >= 2) {
    return [c = in[0][1]](const std::vector<Tensor>& t) {
      const TensorOptions o(t[0].dtype(), t[0].device());
      return batch_norm(t[0], zeros({c}, o), ones({c}, o), t[1], t[2], /*training=*/true);
    };
  }
  if (op.op == "relu" && in.size() == 1) return [](const std::vector<Tensor>& t) { return relu(t[0]); };
  if (op.op == "add" && in.size() == 2) return [](const std::vector<Tensor>& t) { return add(t[0], t[1]); };
  if (op.op == "adaptive_avg_pool2d" && in.size() == 1 && op.output.size() == 4) {
    return [h = op.output[2], w = op.output[3]](const std::vector<Tensor>& t) {
      return adaptive_avg_pool2d(t[0], Int2{h, w});
    };
  }
  return nullptr;
}

}  // namespace

void profile_ops(ModelCost& cost, double seconds, const std::function<void()>& sync, Device device) {
  KILN_CHECK(seconds > 0, "profile_ops: the time per measurement must be positive");
  const TensorOptions o(DType::F32, device);
  struct Replayed {
    OpCost* op = nullptr;
    std::function<Tensor(const std::vector<Tensor>&)> fn;
    std::vector<Tensor> inputs;
    Tensor gy, out;
    std::vector<Tensor> wrt;  // the inputs backward computes gradients for
    double fwd = 0, bwd = 0;
  };
  std::vector<Replayed> ops;
  for (OpCost& op : cost.ops) {
    auto replay = replay_of(op);
    if (!replay) continue;
    Replayed r;
    r.op = &op;
    r.fn = std::move(replay);
    r.gy = randn(op.output, o);
    for (size_t k = 0; k < op.inputs.size(); ++k) {
      if (op.inputs[k].empty() && k > 0) continue;  // an absent optional input (a conv's bias)
      Tensor t = randn(op.inputs[k], o);
      t.set_requires_grad(k > 0 || op.input_grad);
      r.inputs.push_back(t);
      if (t.requires_grad()) r.wrt.push_back(t);
    }
    ops.push_back(std::move(r));
  }
  if (ops.empty()) return;
  EnableGradGuard recording;  // recorded as training records it

  if (device.is_cpu()) {
    // The ops in a training step's order: every forward, then every backward in reverse,
    // each timed where it runs. Between two runs of an op the others pass through the
    // caches, as in a step, and the ranks time-share the cores over whole rounds; an op
    // repeated alone would find its operands in the caches (1-2 ranks here: forward
    // under-predicted by about a fifth; 4 ranks on 2 cores: up to 37%).
    auto round = [&](bool timed) {
      for (Replayed& r : ops) {
        const auto t0 = Clock::now();
        r.out = r.fn(r.inputs);
        if (timed) r.fwd += std::chrono::duration<double>(Clock::now() - t0).count();
      }
      for (auto it = ops.rbegin(); it != ops.rend(); ++it) {
        const auto t0 = Clock::now();
        // Gradients handed on, as to the next op of a step, not accumulated in .grad.
        (void)grad({it->out}, it->wrt, {it->gy});
        if (timed) it->bwd += std::chrono::duration<double>(Clock::now() - t0).count();
        it->out = Tensor();
      }
    };
    if (sync) sync();
    round(false);  // warm-up: the allocator's blocks, the kernels' first touches
    // As long in all as timing every op alone for `seconds`, forward and backward.
    const double budget = 2 * seconds * static_cast<double>(ops.size());
    int64_t rounds = 0;
    const auto t0 = Clock::now();
    do {
      round(true);
      ++rounds;
    } while (std::chrono::duration<double>(Clock::now() - t0).count() < budget || rounds < 3);
    if (sync) sync();
    for (Replayed& r : ops) {
      r.op->measured_s = r.fwd / static_cast<double>(rounds);
      r.op->measured_backward_s = r.bwd / static_cast<double>(rounds);
    }
    return;
  }
  // A GPU: each op alone, in rounds of calls ended by one synchronisation, so that
  // launches overlap execution as in training (timing each call would add a
  // synchronisation per kernel).
  for (Replayed& r : ops) {
    if (sync) sync();
    r.op->measured_s = per_call(seconds, [&] { (void)r.fn(r.inputs); }, device);
    if (sync) sync();
    const double both = per_call(seconds, [&] {
      for (Tensor& t : r.inputs) t.set_grad(Tensor());
      r.fn(r.inputs).backward(r.gy);
    }, device);
    r.op->measured_backward_s = std::max(both - r.op->measured_s, 0.0);
  }
}

DeviceSpeed measure_device(Device device, double seconds) {
  KILN_CHECK(seconds > 0, "measure_device: the time per measurement must be positive");
  NoGradGuard no_grad;
  const TensorOptions o(DType::F32, device);
  DeviceSpeed d;
  d.name = device.is_cpu() ? "this CPU (measured)" : device.str() + " (measured)";
  // A matrix product and a 3x3 convolution of the sizes a small CNN's layers have.
  Tensor a = randn({64, 288}, o), b = randn({288, 8192}, o);
  d.flops_per_s = 2.0 * 64 * 288 * 8192 / per_call(seconds, [&] { (void)matmul(a, b); }, device);
  Tensor x = randn({32, 32, 14, 14}, o), w = randn({32, 32, 3, 3}, o);
  d.conv_flops_per_s =
      2.0 * 32 * 32 * 14 * 14 * 32 * 9 / per_call(seconds, [&] { (void)conv2d(x, w, Tensor(), 1, 1); }, device);
  // Memory: an add of tensors beyond the caches (the CPU's: 4M floats, 16 MB each, 48 MB
  // moved; a GPU's L2 of tens of MB: 64M floats, 768 MB moved).
  const int64_t n = device.is_cpu() ? int64_t{1} << 22 : int64_t{1} << 26;
  Tensor u = randn({n}, o), v = randn({n}, o);
  d.bytes_per_s = 3.0 * 4 * static_cast<double>(n) / per_call(seconds, [&] { (void)add(u, v); }, device);
  Tensor s1 = randn({8}, o), s2 = randn({8}, o);
  d.dispatch_s = per_call(seconds / 3, [&] { (void)add(s1, s2); }, device);
  return d;
}

DeviceSpeed measure_cpu(double seconds) { return measure_device(kCPU, seconds); }

}  // namespace kiln::eval
