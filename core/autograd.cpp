// The autograd engine, the autograd part of Tensor, and sum_to_shape.
#include <kiln/core/autograd.h>

#include <algorithm>
#include <queue>
#include <unordered_map>
#include <unordered_set>

#include <kiln/core/kernel_list.h>
#include <kiln/core/log.h>

namespace kiln {

struct AutogradMeta {
  bool requires_grad = false;
  Tensor grad;
  std::shared_ptr<Node> grad_fn;
  std::weak_ptr<Node> grad_accumulator;  // leaves: their AccumulateGrad, while a graph holds it
  std::vector<std::pair<int, std::function<void(const Tensor&)>>> hooks;
  int next_hook_id = 0;
  std::function<Tensor()> grad_destination;  // see set_grad_destination
};

namespace {

std::atomic<uint64_t> g_next_seq{0};
thread_local bool t_grad_enabled = true;
// The callbacks of the backward pass running on this thread (null outside one).
thread_local std::vector<std::function<void()>>* t_callbacks = nullptr;
thread_local uint64_t t_pass_id = 0;
std::atomic<uint64_t> g_next_pass_id{1};

// Installs a callback list for one backward pass; restores the outer one (a backward
// started from inside a hook) on exit, also when the pass throws.
class CallbackScope {
 public:
  CallbackScope() : prev_(t_callbacks), prev_id_(t_pass_id) {
    t_callbacks = &list_;
    t_pass_id = g_next_pass_id++;
  }
  ~CallbackScope() {
    t_callbacks = prev_;
    t_pass_id = prev_id_;
  }
  CallbackScope(const CallbackScope&) = delete;
  CallbackScope& operator=(const CallbackScope&) = delete;
  void run() {
    for (size_t i = 0; i < list_.size(); ++i) {  // by index: a callback may queue more
      auto fn = std::move(list_[i]);
      fn();
    }
    list_.clear();
  }

 private:
  std::vector<std::function<void()>>* prev_;
  uint64_t prev_id_;
  std::vector<std::function<void()>> list_;
};

class FunctionNode final : public Node {
 public:
  FunctionNode(const char* name, BackwardFn fn) : Node(name), fn_(std::move(fn)) {}
  std::vector<Tensor> apply(const Tensor& g) override {
    KILN_CHECK(fn_, "backward through ", name(),
               " a second time: its saved tensors were freed (pass retain_graph = true to the first backward)");
    return fn_(g);
  }
  void release() override { fn_ = nullptr; }

 private:
  BackwardFn fn_;
};

// out += g (same shape, dtype, device), through the device's add kernel.
void add_into(const Tensor& out, const Tensor& g) {
  kernel<op::accumulate>(out.device())(kernel_view(out), kernel_view(g));
}

// True while a create_graph pass runs on this thread: gradient sums must be recorded.
thread_local bool t_create_graph = false;

// a + b as a new tensor; recorded (both inputs get the gradient unchanged) when a
// create_graph pass is running, so the sum of two gradient contributions stays
// differentiable.
Tensor sum_of(const Tensor& a, const Tensor& b) {
  Tensor out;
  {
    NoGradGuard raw;
    out = a.clone();
    add_into(out, b);
  }
  if (!t_create_graph) return out;
  return record("add", {a, b}, out, [](const Tensor& g) { return std::vector<Tensor>{g, g}; }, {}, true);
}

// slot += g for the engine's gradient buffers: in place when nothing else can see the
// slot (no other handle, no view of its memory, no graph to keep: a plain backward),
// otherwise as a new tensor (sum_of).
void accumulate_slot(Tensor& slot, const Tensor& g) {
  if (!t_create_graph && slot.is_unique() && !slot.requires_grad() && slot.is_contiguous() &&
      slot.dtype() == g.dtype() && slot.sizes() == g.sizes()) {
    NoGradGuard raw;
    add_into(slot, g);
    return;
  }
  slot = sum_of(slot, g);
}

// The sink of a leaf: sums into leaf.grad and then runs the leaf's hooks.
class AccumulateGrad final : public Node {
 public:
  explicit AccumulateGrad(std::shared_ptr<TensorImpl> leaf) : Node("AccumulateGrad"), leaf_(std::move(leaf)) {}
  std::vector<Tensor> apply(const Tensor& g) override {
    Tensor leaf(leaf_);
    AutogradMeta* m = leaf.autograd_meta(true);
    Tensor dst = !m->grad.defined() && m->grad_destination ? m->grad_destination() : Tensor();
    if (dst.defined()) {  // (an undefined destination means: the default, a clone)
      KILN_CHECK(dst.sizes() == g.sizes() && dst.dtype() == g.dtype() && dst.device() == g.device(),
                 "AccumulateGrad: the gradient destination is ", describe(dst),
                 " but the gradient is ", describe(g));
      dst.copy_(g);
      m->grad = dst;
    } else if (!m->grad.defined()) {
      // The incoming tensor may be shared (an add passes one gradient to both inputs):
      // .grad gets its own storage, since later backwards accumulate into it in place.
      // (Under create_graph the clone is recorded: .grad keeps its graph.)
      m->grad = g.clone();
    } else if (t_create_graph || m->grad.requires_grad()) {
      m->grad = sum_of(m->grad, g);  // a new tensor: the old .grad may be part of a graph
    } else {
      add_into(m->grad, g);
    }
    for (auto& [id, hook] : m->hooks) hook(m->grad);
    return {};
  }
  Tensor leaf() const override { return Tensor(leaf_); }

 private:
  std::shared_ptr<TensorImpl> leaf_;
};

std::shared_ptr<Node> grad_accumulator(const Tensor& leaf) {
  AutogradMeta* m = leaf.autograd_meta(true);
  if (auto acc = m->grad_accumulator.lock()) return acc;
  auto acc = std::make_shared<AccumulateGrad>(leaf.impl_ptr());
  m->grad_accumulator = acc;
  return acc;
}

Edge edge_of(const Tensor& t) {
  if (!t.defined() || !t.requires_grad()) return {};
  if (auto fn = t.grad_fn()) return {fn, 0};
  return {grad_accumulator(t), 0};
}

}  // namespace

Node::Node(std::string name) : name_(std::move(name)), seq_(g_next_seq++) {}

bool grad_enabled() { return t_grad_enabled; }
void set_grad_enabled(bool e) { t_grad_enabled = e; }

bool any_requires_grad(std::initializer_list<Tensor> inputs) {
  if (!t_grad_enabled) return false;
  for (const Tensor& t : inputs)
    if (t.defined() && t.requires_grad()) return true;
  return false;
}
bool any_requires_grad(const std::vector<Tensor>& inputs) {
  if (!t_grad_enabled) return false;
  for (const Tensor& t : inputs)
    if (t.defined() && t.requires_grad()) return true;
  return false;
}

void Node::save_versions(const std::vector<Tensor>& saved) {
  for (const Tensor& t : saved)
    if (t.defined()) saved_.emplace_back(t.storage(), t.storage()->version());
}

void Node::check_saved_versions() const {
  for (size_t i = 0; i < saved_.size(); ++i) {
    const auto& [storage, version] = saved_[i];
    KILN_CHECK(storage->version() == version, "backward through ", name_, ": a tensor it saved for its gradient (",
               "saved tensor ", i, ") was modified by an in-place operation after the forward pass (its version is ",
               storage->version(), ", expected ", version, "); clone() it before modifying it, or modify a copy");
  }
}

void set_grad_destination(const Tensor& leaf, std::function<Tensor()> destination) {
  KILN_CHECK(leaf.defined(), "set_grad_destination: undefined tensor");
  leaf.autograd_meta(true)->grad_destination = std::move(destination);
}

Tensor record(const char* name, const std::vector<Tensor>& inputs, Tensor output, BackwardFn backward,
              const std::vector<Tensor>& saved, bool double_backward) {
  if (!any_requires_grad(inputs)) return output;
  KILN_CHECK(is_floating(output.dtype()), name, ": cannot record a gradient for a ", dtype_name(output.dtype()),
             " output (only floating tensors are differentiable)");
  auto node = std::make_shared<FunctionNode>(name, std::move(backward));
  node->save_versions(saved);
  node->set_double_backward(double_backward);
  for (const Tensor& in : inputs) {
    node->next_edges().push_back(edge_of(in));
    if (in.defined()) node->input_meta().push_back({in.sizes(), in.dtype(), in.device()});
    else node->input_meta().push_back({{}, DType::F32, kCPU});
  }
  AutogradMeta* m = output.autograd_meta(true);
  m->requires_grad = true;
  m->grad_fn = std::move(node);
  return output;
}

namespace {

// The engine. `captures`: for grad(), the edges whose incoming gradient is wanted (the
// result, in order); then no leaf's .grad is touched (AccumulateGrad nodes do not run).
std::vector<Tensor> run_engine(const std::vector<Tensor>& roots, const std::vector<Tensor>& grads, bool retain_graph,
                               bool create_graph, const std::vector<Edge>* captures) {
  KILN_CHECK(roots.size() == grads.size(), "backward: ", roots.size(), " roots but ", grads.size(), " gradients");
  // Formulas run without recording, unless the gradients must be differentiable.
  NoGradGuard no_grad;
  if (create_graph) set_grad_enabled(true);
  struct CreateGraphScope {
    bool prev;
    explicit CreateGraphScope(bool on) : prev(t_create_graph) { t_create_graph = on; }
    ~CreateGraphScope() { t_create_graph = prev; }
  } create_scope(create_graph);
  CallbackScope callbacks;
  std::vector<Tensor> captured(captures ? captures->size() : 0);
  std::unordered_map<Node*, std::vector<size_t>> capture_at;
  if (captures)
    for (size_t k = 0; k < captures->size(); ++k)
      if ((*captures)[k].node) capture_at[(*captures)[k].node.get()].push_back(k);

  // Seed gradients, per root node.
  std::unordered_map<Node*, Tensor> buffer;
  std::vector<std::shared_ptr<Node>> seeds;
  for (size_t i = 0; i < roots.size(); ++i) {
    const Tensor& r = roots[i];
    KILN_CHECK(r.defined(), "backward: root ", i, " is an undefined tensor");
    KILN_CHECK(r.requires_grad(), "backward: tensor ", i, " (", dtype_name(r.dtype()), shape_str(r.sizes()),
               ") does not require grad and has no grad_fn");
    Tensor g = grads[i];
    if (!g.defined()) {
      KILN_CHECK(r.numel() == 1, "backward: a gradient is needed for a non-scalar root of shape ",
                 shape_str(r.sizes()), " (pass one, or reduce the output to a scalar first)");
      g = ones_like(r);
    }
    KILN_CHECK(g.sizes() == r.sizes() && g.device() == r.device(), "backward: gradient of shape ",
               shape_str(g.sizes()), " on ", g.device().str(), " does not match root of shape ", shape_str(r.sizes()),
               " on ", r.device().str());
    if (g.dtype() != r.dtype()) g = g.to(r.dtype());
    std::shared_ptr<Node> node = edge_of(r).node;
    Tensor& slot = buffer[node.get()];
    if (!slot.defined()) slot = g;
    else accumulate_slot(slot, g);
    seeds.push_back(node);
  }

  // For grad(): only the nodes on a path to a captured edge run (as in PyTorch), so a
  // gradient with respect to an intermediate tensor neither runs nor frees the graph
  // that produced it. needed[n]: n is captured or leads to a captured node.
  std::unordered_map<Node*, bool> needed;
  if (captures) {
    std::vector<std::pair<Node*, size_t>> dfs;  // iterative post-order (graphs get deep)
    for (auto& s : seeds) {
      if (needed.count(s.get())) continue;
      needed[s.get()] = false;
      dfs.emplace_back(s.get(), 0);
      while (!dfs.empty()) {
        auto& [n, i] = dfs.back();
        if (i < n->next_edges().size()) {
          Node* c = n->next_edges()[i++].node.get();
          if (c && !needed.count(c)) {
            needed[c] = false;
            dfs.emplace_back(c, 0);
          }
          continue;
        }
        bool need = capture_at.count(n) > 0;
        for (Edge& e : n->next_edges()) need = need || (e.node && needed[e.node.get()]);
        needed[n] = need;
        dfs.pop_back();
      }
    }
  }
  auto follow = [&](const Edge& e) { return e.node && (!captures || needed[e.node.get()]); };

  // Count, for each reachable (and, for grad(), needed) node, how many edges lead into it.
  std::unordered_map<Node*, int> deps;
  std::unordered_set<Node*> seen;
  std::vector<Node*> stack;
  for (auto& s : seeds)
    if (seen.insert(s.get()).second) stack.push_back(s.get());
  while (!stack.empty()) {
    Node* n = stack.back();
    stack.pop_back();
    for (Edge& e : n->next_edges()) {
      if (!follow(e)) continue;
      ++deps[e.node.get()];
      if (seen.insert(e.node.get()).second) stack.push_back(e.node.get());
    }
  }

  // Run nodes whose inputs are all in, newest first among the ready ones (so the
  // leaves of the last layers complete early, as the data-parallel buckets want).
  auto later = [](const std::shared_ptr<Node>& a, const std::shared_ptr<Node>& b) {
    return a->sequence_nr() < b->sequence_nr();
  };
  std::priority_queue<std::shared_ptr<Node>, std::vector<std::shared_ptr<Node>>, decltype(later)> ready(later);
  std::unordered_set<Node*> queued;
  for (auto& s : seeds)
    if (deps[s.get()] == 0 && queued.insert(s.get()).second) ready.push(s);

  while (!ready.empty()) {
    std::shared_ptr<Node> node = ready.top();
    ready.pop();
    Tensor g;
    if (auto it = buffer.find(node.get()); it != buffer.end()) {
      g = std::move(it->second);
      buffer.erase(it);
    }
    if (auto c = capture_at.find(node.get()); c != capture_at.end())
      for (size_t k : c->second) captured[k] = g;
    const bool is_leaf_sink = dynamic_cast<AccumulateGrad*>(node.get()) != nullptr;
    bool leads_on = !captures;  // for grad(): a captured node whose inputs lead nowhere wanted is not run
    for (Edge& e : node->next_edges()) leads_on = leads_on || follow(e);
    std::vector<Tensor> in_grads;
    if (g.defined() && !(captures && is_leaf_sink) && leads_on) {
      node->check_saved_versions();
      KILN_CHECK(!create_graph || is_leaf_sink || node->double_backward(), "backward with create_graph through ",
                 node->name(), ": its backward formula is not differentiable (yet), so a higher-order gradient "
                 "through it would miss terms; see core/autograd.h (record's double_backward)");
      in_grads = node->apply(g);
    }
    auto& edges = node->next_edges();
    KILN_CHECK(in_grads.empty() || in_grads.size() == edges.size(), "backward of ", node->name(), " returned ",
               in_grads.size(), " gradients for ", edges.size(), " inputs");
    for (size_t i = 0; i < edges.size(); ++i) {
      Edge& e = edges[i];
      if (!follow(e)) continue;
      if (i < in_grads.size() && in_grads[i].defined()) {
        Tensor gi = in_grads[i];
        const Node::InputMeta& meta = node->input_meta()[i];
        KILN_CHECK(gi.sizes() == meta.sizes, "backward of ", node->name(), ": gradient ", i, " has shape ",
                   shape_str(gi.sizes()), " but the input had shape ", shape_str(meta.sizes));
        if (gi.dtype() != meta.dtype) gi = gi.to(meta.dtype);
        Tensor& slot = buffer[e.node.get()];
        if (!slot.defined()) slot = gi;
        else accumulate_slot(slot, gi);  // (the first contribution may be shared: then a new tensor)
      }
      if (--deps[e.node.get()] == 0) ready.push(e.node);
    }
    if (!retain_graph && leads_on) node->release();  // (a node not run keeps its graph)
  }
  callbacks.run();
  return captured;
}

}  // namespace

void run_backward(const std::vector<Tensor>& roots, const std::vector<Tensor>& grads, bool retain_graph,
                  bool create_graph) {
  run_engine(roots, grads, retain_graph || create_graph, create_graph, nullptr);
}

std::vector<Tensor> grad(const std::vector<Tensor>& outputs, const std::vector<Tensor>& inputs,
                         const std::vector<Tensor>& grad_outputs, const GradOptions& o) {
  KILN_CHECK(!outputs.empty(), "grad: no outputs");
  KILN_CHECK(grad_outputs.empty() || grad_outputs.size() == outputs.size(), "grad: ", outputs.size(),
             " outputs but ", grad_outputs.size(), " grad_outputs");
  std::vector<Edge> edges;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const Tensor& t = inputs[i];
    KILN_CHECK(t.defined() && t.requires_grad(), "grad: input ", i, " (", describe(t),
               ") does not require grad, so no gradient flows to it");
    edges.push_back(edge_of(t));
  }
  std::vector<Tensor> gos = grad_outputs;
  gos.resize(outputs.size());
  std::vector<Tensor> out =
      run_engine(outputs, gos, o.retain_graph.value_or(o.create_graph), o.create_graph, &edges);
  for (size_t i = 0; i < out.size(); ++i) {
    if (out[i].defined()) {
      if (out[i].dtype() != inputs[i].dtype()) out[i] = out[i].to(inputs[i].dtype());
      continue;
    }
    KILN_CHECK(o.allow_unused, "grad: input ", i, " (", describe(inputs[i]),
               ") is not reached from the outputs (pass allow_unused to get an undefined gradient for it)");
  }
  return out;
}

std::vector<Tensor> composite_backward(const std::function<Tensor(const std::vector<Tensor>&)>& composite,
                                       const std::vector<Tensor>& inputs, const Tensor& g) {
  std::vector<Tensor> out(inputs.size()), wrt;
  std::vector<size_t> at;
  for (size_t i = 0; i < inputs.size(); ++i)
    if (inputs[i].defined() && inputs[i].requires_grad()) {
      wrt.push_back(inputs[i]);
      at.push_back(i);
    }
  if (wrt.empty()) return out;
  Tensor y;
  {
    EnableGradGuard recording;
    y = composite(inputs);
  }
  GradOptions o;
  o.create_graph = true;
  o.allow_unused = true;
  std::vector<Tensor> gs = grad({y}, wrt, {g}, o);
  for (size_t k = 0; k < at.size(); ++k) out[at[k]] = gs[k];
  return out;
}

uint64_t backward_pass_id() { return t_pass_id; }

void queue_callback(std::function<void()> fn) {
  KILN_CHECK(t_callbacks != nullptr,
             "queue_callback: no backward pass is running on this thread (call it from a hook or a backward formula)");
  KILN_CHECK(fn, "queue_callback: empty callback");
  t_callbacks->push_back(std::move(fn));
}

namespace detail {

Tensor sum_to_shape_raw(const Tensor& g, const Shape& shape);

Tensor sum_to_shape(const Tensor& g, const Shape& shape) {
  if (g.sizes() == shape) return g;
  Tensor out;
  {
    NoGradGuard raw;  // the sums below are raw kernels; the adjoint is recorded once at the end
    out = sum_to_shape_raw(g, shape);
  }
  if (!any_requires_grad({g})) return out;
  return record(
      "sum_to_shape", {g}, out, [in = g.sizes()](const Tensor& gg) { return std::vector<Tensor>{gg.expand(in)}; }, {},
      true);
}

Tensor sum_to_shape_raw(const Tensor& g, const Shape& shape) {
  if (g.sizes() == shape) return g;
  KILN_CHECK(g.dim() >= static_cast<int64_t>(shape.size()), "sum_to_shape: cannot reduce ", shape_str(g.sizes()),
             " to ", shape_str(shape));
  Tensor cur = g.contiguous();
  auto reduce_dim = [&](const Tensor& t, int64_t d) {  // sum over dim d, keeping it as size 1
    int64_t outer = 1, inner = 1;
    for (int64_t i = 0; i < d; ++i) outer *= t.size(i);
    for (int64_t i = d + 1; i < t.dim(); ++i) inner *= t.size(i);
    Shape s = t.sizes();
    s[d] = 1;
    Tensor out = empty(s, TensorOptions(t.dtype(), t.device()));
    if (out.numel() == 0) return out;
    if (t.size(d) == 0) return out.fill_(0);
    kernel<op::reduce>(t.device())(kernel_view(t), kernel_view(out), ReduceParams{ReduceOp::Sum, outer, t.size(d), inner});
    return out;
  };
  int64_t lead = cur.dim() - static_cast<int64_t>(shape.size());
  if (lead > 0) {  // fold the leading dims into one and sum it away
    Shape rest(cur.sizes().begin() + lead, cur.sizes().end());
    Shape s{shape_numel(Shape(cur.sizes().begin(), cur.sizes().begin() + lead))};
    s.insert(s.end(), rest.begin(), rest.end());
    cur = reduce_dim(cur.view(s), 0).view(rest);
  }
  for (int64_t d = 0; d < cur.dim(); ++d)
    if (shape[d] == 1 && cur.size(d) != 1) cur = reduce_dim(cur, d);
  KILN_CHECK(cur.sizes() == shape, "sum_to_shape: cannot reduce ", shape_str(g.sizes()), " to ", shape_str(shape));
  return cur;
}

}  // namespace detail

// ---- the autograd part of Tensor -------------------------------------------------

AutogradMeta* Tensor::autograd_meta(bool create) const {
  auto& m = impl_ptr()->autograd;
  if (!m && create) m = std::make_shared<AutogradMeta>();
  return m.get();
}

bool Tensor::requires_grad() const {
  AutogradMeta* m = autograd_meta(false);
  return m && m->requires_grad;
}

Tensor& Tensor::set_requires_grad(bool r) {
  AutogradMeta* m = autograd_meta(r);
  if (!m) return *this;
  KILN_CHECK(!m->grad_fn, "set_requires_grad: only leaf tensors can change requires_grad (this one was made by ",
             m->grad_fn->name(), "; use detach())");
  KILN_CHECK(!r || is_floating(dtype()), "set_requires_grad: only floating tensors can require gradients, got ",
             dtype_name(dtype()), shape_str(sizes()));
  m->requires_grad = r;
  return *this;
}

bool Tensor::is_leaf() const {
  AutogradMeta* m = autograd_meta(false);
  return !m || !m->grad_fn;
}

Tensor Tensor::grad() const {
  AutogradMeta* m = autograd_meta(false);
  return m ? m->grad : Tensor();
}

void Tensor::set_grad(const Tensor& g) {
  if (g.defined())
    KILN_CHECK(g.sizes() == sizes() && g.dtype() == dtype() && g.device() == device(), "set_grad: gradient ",
               dtype_name(g.dtype()), shape_str(g.sizes()), " on ", g.device().str(), " does not match tensor ",
               dtype_name(dtype()), shape_str(sizes()), " on ", device().str());
  AutogradMeta* m = autograd_meta(g.defined());
  if (m) m->grad = g;
}

std::shared_ptr<Node> Tensor::grad_fn() const {
  AutogradMeta* m = autograd_meta(false);
  return m ? m->grad_fn : nullptr;
}

void Tensor::backward(const Tensor& grad, bool retain_graph, bool create_graph) const {
  run_backward({*this}, {grad}, retain_graph, create_graph);
}

Tensor Tensor::detach() const { return as_strided_raw(sizes(), strides(), offset()); }

int Tensor::register_hook(std::function<void(const Tensor&)> hook) {
  KILN_CHECK(is_leaf() && requires_grad(), "register_hook: hooks run when a leaf's gradient is final; this tensor ",
             is_leaf() ? "does not require grad" : "is not a leaf");
  AutogradMeta* m = autograd_meta(true);
  int id = m->next_hook_id++;
  m->hooks.emplace_back(id, std::move(hook));
  return id;
}

void Tensor::remove_hook(int id) {
  AutogradMeta* m = autograd_meta(false);
  if (!m) return;
  std::erase_if(m->hooks, [id](const auto& h) { return h.first == id; });
}

}  // namespace kiln
