// The PALEO-style step-time model (see paleo.h): costing a traced forward pass, and
// measuring a CPU's product throughput, memory bandwidth and per-op dispatch.
#include <kiln/models/eval/paleo.h>

#include <chrono>
#include <deque>
#include <functional>
#include <map>
#include <set>

#include <kiln/core/autograd.h>
#include <kiln/ops/binary.h>
#include <kiln/ops/conv.h>
#include <kiln/ops/matmul.h>

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
double per_call(double seconds, const std::function<void()>& fn) {
  fn();
  int64_t calls = 0;
  const auto t0 = Clock::now();
  double elapsed = 0;
  do {
    fn();
    ++calls;
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

  // Every recorded op, from the output back; an op's output shape is what its consumer
  // recorded for that input.
  std::vector<Node*> order;
  std::map<Node*, Shape> out_shape;
  std::deque<Node*> queue{y.grad_fn().get()};
  std::set<Node*> seen{y.grad_fn().get()};
  out_shape[y.grad_fn().get()] = y.sizes();
  while (!queue.empty()) {
    Node* n = queue.front();
    queue.pop_front();
    order.push_back(n);
    auto& edges = n->next_edges();
    for (size_t k = 0; k < edges.size(); ++k) {
      Node* m = edges[k].node.get();
      if (!m || m->leaf().defined()) continue;
      if (k < n->input_meta().size() && !out_shape.count(m)) out_shape[m] = n->input_meta()[k].sizes;
      if (seen.insert(m).second) queue.push_back(m);
    }
  }
  ModelCost cost;
  cost.batch = example.size(0);
  for (const Tensor& p : model.parameters()) cost.params += p.numel();
  for (auto it = order.rbegin(); it != order.rend(); ++it) {  // forward order (roughly)
    Node* n = *it;
    OpCost c;
    c.op = n->name();
    const auto& in = n->input_meta();
    const Shape out = out_shape.count(n) ? out_shape[n] : (in.empty() ? Shape{} : in[0].sizes);
    const double out_n = numel_of(out);
    if (!is_view(c.op)) {
      for (const auto& m : in) c.bytes += numel_of(m.sizes) * static_cast<double>(dtype_size(m.dtype));
      c.bytes += out_n * static_cast<double>(in.empty() ? 4 : dtype_size(in[0].dtype));
    }
    if ((c.op == "conv2d" || c.op == "conv_transpose2d") && in.size() >= 2 && in[1].sizes.size() == 4) {
      const Shape& w = in[1].sizes;
      const double per = numel_of(w) / static_cast<double>(w[0]);  // conv: per output; transposed: per input
      c.flops = 2.0 * (c.op == "conv2d" ? out_n : numel_of(in[0].sizes)) * per;
      c.product = true;
    } else if (c.op == "matmul" && in.size() >= 2 && !in[0].sizes.empty()) {
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
    double t = d.dispatch_s;
    if (op.product) t += op.flops * scale / (op.op == "matmul" ? d.flops_per_s : conv_f);
    else t += op.bytes * scale / d.bytes_per_s;
    e.forward_s += t;
  }
  e.backward_s = 2.0 * e.forward_s;
  e.update_s = static_cast<double>(cost.params) * update_bytes_per_param / d.bytes_per_s + 4 * d.dispatch_s;
  e.compute_s = e.forward_s + e.backward_s + e.update_s;
  e.ops = static_cast<int64_t>(cost.ops.size());
  return e;
}

DeviceSpeed measure_cpu(double seconds) {
  KILN_CHECK(seconds > 0, "measure_cpu: the time per measurement must be positive");
  NoGradGuard no_grad;
  DeviceSpeed d;
  d.name = "this CPU (measured)";
  // A matrix product and a 3x3 convolution of the sizes a small CNN's layers have.
  Tensor a = randn({64, 288}), b = randn({288, 8192});
  d.flops_per_s = 2.0 * 64 * 288 * 8192 / per_call(seconds, [&] { (void)matmul(a, b); });
  Tensor x = randn({32, 32, 14, 14}), w = randn({32, 32, 3, 3});
  d.conv_flops_per_s = 2.0 * 32 * 32 * 14 * 14 * 32 * 9 / per_call(seconds, [&] { (void)conv2d(x, w, Tensor(), 1, 1); });
  // Memory: an add of 4M-float tensors (16 MB each, beyond the caches) moves 48 MB.
  Tensor u = randn({1 << 22}), v = randn({1 << 22});
  d.bytes_per_s = 3.0 * 4 * (1 << 22) / per_call(seconds, [&] { (void)add(u, v); });
  Tensor s1 = randn({8}), s2 = randn({8});
  d.dispatch_s = per_call(seconds / 3, [&] { (void)add(s1, s2); });
  return d;
}

}  // namespace kiln::eval
