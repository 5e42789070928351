// The traced dependency graph, physical channel removal, cost counting and shrinking a
// model to a pruned state's shapes (models/prune/graph.h).
#include <kiln/models/prune/graph.h>

#include <algorithm>
#include <cstdio>
#include <deque>
#include <functional>
#include <numeric>
#include <set>
#include <tuple>
#include <unordered_map>

#include <kiln/core/autograd.h>
#include <kiln/core/error.h>
#include <kiln/models/nn/conv.h>
#include <kiln/models/nn/linear.h>
#include <kiln/models/nn/norm.h>
#include <kiln/models/prune/masks.h>
#include <kiln/ops/index.h>

namespace kiln::prune {
namespace {

int64_t prod(const Shape& s, size_t begin, size_t end) {
  int64_t p = 1;
  for (size_t i = begin; i < end && i < s.size(); ++i) p *= s[i];
  return p;
}

// The channel dim of a value: 1 of an (N, C, H, W) tensor, the last dim of others.
int64_t channel_dim(const Shape& s) { return s.size() == 4 ? 1 : static_cast<int64_t>(s.size()) - 1; }

// Restores a module's training mode on scope exit.
struct ModeGuard {
  nn::Module& m;
  bool was;
  explicit ModeGuard(nn::Module& mod) : m(mod), was(mod.is_training()) {}
  ~ModeGuard() { m.train(was); }
};

// Where every parameter lives: its full name and the layer that owns it.
struct ParamIndex {
  struct Entry {
    std::string name, module_prefix;
    std::shared_ptr<nn::Module> module;
    size_t order;
  };
  std::unordered_map<const TensorImpl*, Entry> by_impl;
  std::map<std::string, size_t> order;  // parameters and buffers by name: registration order

  explicit ParamIndex(nn::Module& model) {
    size_t k = 0;
    for (auto& [prefix, mod] : model.named_modules())
      for (auto& [pname, p] : mod->named_parameters(false)) {
        const std::string full = prefix.empty() ? pname : prefix + "." + pname;
        if (by_impl.count(p.impl_ptr().get())) continue;  // tied: its first name
        by_impl[p.impl_ptr().get()] = {full, prefix, mod, k};
        order.emplace(full, k++);
      }
    for (auto& [name, b] : model.named_buffers()) order.emplace(name, k++);
  }
  const Entry* find(const Tensor& t) const {
    if (!t.defined()) return nullptr;
    auto it = by_impl.find(t.impl_ptr().get());
    return it == by_impl.end() ? nullptr : &it->second;
  }
};

// The parameter a matmul operand reads, looking through the views matmul and linear wrap
// it in (weight.t(), then reshape/unsqueeze/expand to a batch of one); null otherwise.
Tensor weight_behind(Node* n) {
  while (n != nullptr) {
    if (Tensor leaf = n->leaf(); leaf.defined()) return leaf;
    const std::string& op = n->name();
    if (n->next_edges().size() != 1 ||
        !(op == "transpose" || op == "reshape" || op == "view" || op == "unsqueeze" || op == "squeeze" || op == "expand"))
      return Tensor();
    n = n->next_edges()[0].node.get();
  }
  return Tensor();
}

// An op's input as the tracer sees it.
struct Input {
  int value = -1;             // a traced value, or -1
  const ParamIndex::Entry* param = nullptr;  // a parameter leaf
  Node* node = nullptr;       // the producing node (values only)
  Shape shape;
  bool defined = false;
};

class Tracer {
 public:
  Tracer(nn::Module& model, const Tensor& output) : index_(model) {
    parent_.push_back(0);  // element 0: "blocked"
    slices_.emplace_back();
    Node* root = output.grad_fn().get();
    KILN_CHECK(root != nullptr, "DependencyGraph: the model's output does not depend on its parameters");
    const int out = value_of(root, output.sizes());
    block(out);  // the network's output keeps its channels (the classes)
    while (!queue_.empty()) {
      Node* n = queue_.front();
      queue_.pop_front();
      visit(n);
    }
  }

  const ParamIndex& index() const { return index_; }
  std::vector<std::string> blocked_ops;

  // The components: (slices, blocked) per union-find root of a non-empty element.
  std::vector<std::vector<Slice>> components() {
    std::map<int64_t, std::vector<Slice>> by_root;
    std::map<int64_t, std::set<std::tuple<std::string, int64_t, int64_t>>> seen;
    const int64_t blocked_root = find(0);
    for (int64_t e = 1; e < static_cast<int64_t>(parent_.size()); ++e) {
      const int64_t r = find(e);
      if (r == blocked_root) continue;
      auto& list = by_root[r];
      for (const Slice& s : slices_[e])
        if (seen[r].insert({s.name, s.dim, s.index}).second) list.push_back(s);
    }
    std::vector<std::vector<Slice>> out;
    for (auto& [r, list] : by_root) {
      bool producer = false;
      for (const Slice& s : list) producer = producer || s.producer;
      if (producer) out.push_back(std::move(list));
    }
    return out;
  }

 private:
  struct Value {
    int64_t base, channels;
    Shape shape;
  };

  int64_t find(int64_t e) {
    while (parent_[e] != e) e = parent_[e] = parent_[parent_[e]];
    return e;
  }
  void unite(int64_t a, int64_t b) {
    a = find(a), b = find(b);
    if (a == b) return;
    if (a < b) std::swap(a, b);
    parent_[a] = b;  // the smaller root wins: "blocked" (0) stays the root of its set
  }
  int new_value(const Shape& shape) {
    const int64_t c = shape.empty() ? 0 : shape[channel_dim(shape)];
    const int64_t base = static_cast<int64_t>(parent_.size());
    for (int64_t i = 0; i < c; ++i) parent_.push_back(base + i), slices_.emplace_back();
    values_.push_back({base, c, shape});
    return static_cast<int>(values_.size()) - 1;
  }
  int value_of(Node* n, const Shape& shape) {
    auto it = value_of_node_.find(n);
    if (it != value_of_node_.end()) return it->second;
    const int v = new_value(shape);
    value_of_node_[n] = v;
    queue_.push_back(n);
    if (shape.empty()) block(v);
    return v;
  }
  int64_t elem(int v, int64_t c) const { return values_[v].base + c; }
  int64_t channels(int v) const { return values_[v].channels; }
  void block(int v) {
    for (int64_t c = 0; c < channels(v); ++c) unite(0, elem(v, c));
  }
  void couple(int a, int b) {
    if (a < 0 || b < 0) return;
    if (channels(a) != channels(b)) {
      block(a), block(b);
      return;
    }
    for (int64_t c = 0; c < channels(a); ++c) unite(elem(a, c), elem(b, c));
  }
  void attach(int v, int64_t c, Slice s) { slices_[elem(v, c)].push_back(std::move(s)); }
  void block_all(const std::vector<Input>& ins, int out, const std::string& why) {
    for (const Input& in : ins)
      if (in.value >= 0) block(in.value);
    block(out);
    if (std::find(blocked_ops.begin(), blocked_ops.end(), why) == blocked_ops.end()) blocked_ops.push_back(why);
  }

  // Input i of node n: a traced value (its producer queued), a parameter, or a blocked
  // value (the network's input, a constant, a leaf that is not a parameter).
  Input input_at(Node* n, size_t i) {
    Input in;
    auto& meta = n->input_meta();
    in.shape = i < meta.size() ? meta[i].sizes : Shape{};
    Node* src = n->next_edges()[i].node.get();
    if (src == nullptr) {
      // no gradient flows there: the network's input, a constant, or an undefined input
      in.defined = !in.shape.empty();
      if (in.defined) {
        in.value = new_value(in.shape);
        block(in.value);
      }
    } else if (Tensor leaf = src->leaf(); leaf.defined()) {
      in.defined = true;
      in.param = index_.find(leaf);
      if (in.param == nullptr) {  // a leaf that is not a parameter of the model: an input that requires grad
        in.value = new_value(in.shape);
        block(in.value);
      }
    } else {
      in.defined = true;
      in.node = src;
      in.value = value_of(src, in.shape);
    }
    return in;
  }
  std::vector<Input> inputs(Node* n) {
    std::vector<Input> ins;
    for (size_t i = 0; i < n->next_edges().size(); ++i) ins.push_back(input_at(n, i));
    return ins;
  }

  static bool one_of(const std::string& s, std::initializer_list<const char*> names) {
    for (const char* n : names)
      if (s == n) return true;
    return false;
  }

  void visit(Node* n) {
    const int out = value_of_node_.at(n);
    const Shape os = values_[out].shape;
    const std::string& op = n->name();
    // A Linear without a bias is a matmul reading its weight through a transpose (look
    // through it first); with a bias, one fused "linear" node (ops/matmul.h) of the input,
    // the weight and the bias.
    if ((op == "matmul" && n->next_edges().size() == 2) || (op == "linear" && n->next_edges().size() == 3)) {
      Node* b = n->next_edges()[1].node.get();
      if (Tensor leaf = weight_behind(b); leaf.defined()) {
        const ParamIndex::Entry* w = index_.find(leaf);
        if (w && std::dynamic_pointer_cast<nn::Linear>(w->module) && leaf.dim() == 2) {
          Input a = input_at(n, 0);  // (the weight's views are not traced)
          const ParamIndex::Entry* bias = op == "linear" ? index_.find(weight_behind(n->next_edges()[2].node.get())) : nullptr;
          if (a.value < 0 || values_[a.value].shape.size() == 4 || channels(a.value) != leaf.size(1) ||
              channels(out) != leaf.size(0) || (op == "linear" && !bias)) {
            block_all({a}, out, op + " (a Linear on an unexpected shape)");
            return;
          }
          for (int64_t o = 0; o < channels(out); ++o) attach(out, o, {w->name, 0, o, true, false});
          if (bias)
            for (int64_t o = 0; o < channels(out); ++o) attach(out, o, {bias->name, 0, o, true, false});
          for (int64_t i = 0; i < channels(a.value); ++i) attach(a.value, i, {w->name, 1, i, false, false});
          return;
        }
      }
    }
    std::vector<Input> ins = inputs(n);
    if (op == "conv2d") return conv(ins, out);
    if (op == "batch_norm") return batch_norm(ins, out);
    if (one_of(op, {"neg", "abs", "exp", "log", "sqrt", "rsqrt", "sin", "cos", "relu", "leaky_relu", "sigmoid", "tanh",
                    "gelu", "gelu_tanh", "silu", "erf", "dropout", "clone", "to", "clamp"})) {
      if (ins.size() == 1 && ins[0].value >= 0 && ins[0].shape == os) return couple(ins[0].value, out);
      return block_all(ins, out, op);
    }
    if (one_of(op, {"add", "sub", "mul", "div", "maximum", "minimum", "pow", "where"})) return elementwise(ins, out, op);
    if (one_of(op, {"max_pool2d", "avg_pool2d", "adaptive_avg_pool2d"})) {
      if (ins.size() == 1 && ins[0].value >= 0 && ins[0].shape.size() == 4 && os.size() == 4) return couple(ins[0].value, out);
      return block_all(ins, out, op);
    }
    if (one_of(op, {"sum", "mean", "max", "min"})) {
      const Shape& is = ins.empty() ? Shape{} : ins[0].shape;
      const bool keeps_channels = ins.size() == 1 && ins[0].value >= 0 && is.size() == 4 && os.size() >= 2 &&
                                  os[0] == is[0] && os[1] == is[1] && (os.size() == 2 || prod(os, 2, os.size()) == 1);
      if (keeps_channels) return couple(ins[0].value, out);
      return block_all(ins, out, op);
    }
    if (one_of(op, {"view", "reshape", "squeeze", "unsqueeze"})) return reshape(ins, out, op);
    if (op == "cat") return concat(ins, out);
    block_all(ins, out, op);
  }

  void conv(const std::vector<Input>& ins, int out) {
    auto mod = ins.size() >= 2 && ins[1].param ? std::dynamic_pointer_cast<nn::Conv2d>(ins[1].param->module) : nullptr;
    if (!mod || ins[0].value < 0) return block_all(ins, out, "conv2d (its weight is not a Conv2d's)");
    const int x = ins[0].value;
    const std::string& w = ins[1].param->name;
    const int64_t cin = channels(x), cout = channels(out), g = mod->groups;
    for (int64_t o = 0; o < cout; ++o) attach(out, o, {w, 0, o, true, false});
    if (ins.size() >= 3 && ins[2].param)
      for (int64_t o = 0; o < cout; ++o) attach(out, o, {ins[2].param->name, 0, o, true, false});
    const int64_t per_in = mod->weight.size(1);
    if (g == 1) {
      for (int64_t c = 0; c < cin; ++c) attach(x, c, {w, 1, c, false, false});
    } else if (per_in == 1 && g == cin) {  // depthwise (multiplier m): input k makes outputs k*m .. k*m+m-1
      const int64_t m = cout / cin;
      for (int64_t k = 0; k < cin; ++k)
        for (int64_t j = 0; j < m; ++j) unite(elem(x, k), elem(out, k * m + j));
    } else {  // grouped: the same column of every group goes, and the same row of every group
      const int64_t per_out = cout / g;
      for (int64_t k = 0; k < g; ++k) {
        for (int64_t i = 0; i < per_in; ++i) {
          attach(x, k * per_in + i, {w, 1, i, false, false});
          unite(elem(x, k * per_in + i), elem(x, i));
        }
        for (int64_t j = 0; j < per_out; ++j) unite(elem(out, k * per_out + j), elem(out, j));
      }
    }
  }

  void batch_norm(const std::vector<Input>& ins, int out) {
    auto mod =
        ins.size() == 3 && ins[1].param ? std::dynamic_pointer_cast<nn::BatchNorm2d>(ins[1].param->module) : nullptr;
    if (!mod || ins[0].value < 0 || !ins[2].param || !mod->track_running_stats)
      return block_all(ins, out, "batch_norm (without affine parameters or running statistics)");
    couple(ins[0].value, out);
    const std::string& p = ins[1].param->module_prefix;
    const std::string pre = p.empty() ? "" : p + ".";
    for (int64_t c = 0; c < channels(out); ++c) {
      attach(out, c, {ins[1].param->name, 0, c, true, true});
      attach(out, c, {ins[2].param->name, 0, c, true, false});
      attach(out, c, {pre + "running_mean", 0, c, true, false});
      attach(out, c, {pre + "running_var", 0, c, true, false});
    }
  }

  void elementwise(const std::vector<Input>& ins, int out, const std::string& op) {
    const Shape& os = values_[out].shape;
    const int64_t cd = channel_dim(os), C = channels(out);
    for (const Input& in : ins) {
      if (!in.defined) continue;
      const int64_t j = cd - static_cast<int64_t>(os.size() - in.shape.size());  // the channel dim, aligned right
      if (j < 0 || in.shape[j] == 1) continue;  // broadcast along the channels: nothing to prune there
      if (in.shape[j] != C) return block_all(ins, out, op + " (mismatched channels)");
      if (in.param) {
        for (int64_t c = 0; c < C; ++c) attach(out, c, {in.param->name, j, c, true, false});
      } else if (in.value >= 0 && channel_dim(in.shape) == j) {
        couple(in.value, out);
      } else {
        return block_all(ins, out, op + " (a per-channel operand that is not a parameter)");
      }
    }
  }

  void reshape(const std::vector<Input>& ins, int out, const std::string& op) {
    if (ins.size() != 1 || ins[0].value < 0) return block_all(ins, out, op);
    const Shape& is = ins[0].shape;
    const Shape& os = values_[out].shape;
    if (is.empty() || os.empty()) return block_all(ins, out, op);
    const size_t ci = static_cast<size_t>(channel_dim(is)), co = static_cast<size_t>(channel_dim(os));
    const int64_t inner_i = prod(is, ci + 1, is.size()), inner_o = prod(os, co + 1, os.size());
    if (prod(is, 0, ci) != prod(os, 0, co) || inner_i == 0 || inner_o == 0) return block_all(ins, out, op);
    const int x = ins[0].value;
    if (inner_i % inner_o == 0) {  // each input channel becomes inner_i / inner_o output channels
      const int64_t r = inner_i / inner_o;
      for (int64_t f = 0; f < channels(out); ++f) unite(elem(x, f / r), elem(out, f));
    } else if (inner_o % inner_i == 0) {  // several input channels merge into one
      const int64_t r = inner_o / inner_i;
      for (int64_t c = 0; c < channels(x); ++c) unite(elem(x, c), elem(out, c / r));
    } else {
      block_all(ins, out, op);
    }
  }

  void concat(const std::vector<Input>& ins, int out) {
    const int64_t C = channels(out);
    int64_t total = 0;
    bool all_values = true, same = true;
    for (const Input& in : ins) {
      all_values = all_values && in.value >= 0;
      if (in.value >= 0) total += channels(in.value), same = same && channels(in.value) == C;
    }
    if (!all_values) return block_all(ins, out, "cat");
    if (total == C && ins.size() > 1 && !same) {  // along the channels
      int64_t off = 0;
      for (const Input& in : ins) {
        for (int64_t c = 0; c < channels(in.value); ++c) unite(elem(in.value, c), elem(out, off + c));
        off += channels(in.value);
      }
    } else if (same) {  // along another dim
      for (const Input& in : ins) couple(in.value, out);
    } else {
      block_all(ins, out, "cat");
    }
  }

  ParamIndex index_;
  std::vector<int64_t> parent_;
  std::vector<std::vector<Slice>> slices_;  // per element
  std::vector<Value> values_;
  std::unordered_map<Node*, int> value_of_node_;
  std::deque<Node*> queue_;
};

Tensor traced_output(nn::Module& model, const Tensor& example) {
  ModeGuard mode(model);
  model.eval();
  EnableGradGuard grad;
  return model(example);
}

Tensor tensor_named(nn::Module& model, const std::string& name) {
  try {
    return model.get_parameter(name);
  } catch (const Error&) {
    return model.get_buffer(name);
  }
}

// The layers' channel counts from their (new) tensor shapes.
void update_layers(nn::Module& model, const std::map<const nn::Module*, int64_t>& depthwise_multiplier) {
  for (auto& mod : model.modules()) {
    if (auto c = std::dynamic_pointer_cast<nn::Conv2d>(mod)) {
      auto it = depthwise_multiplier.find(c.get());
      c->out_channels = c->weight.size(0);
      if (it != depthwise_multiplier.end()) {
        c->in_channels = c->groups = c->out_channels / it->second;
      } else {
        c->in_channels = c->weight.size(1) * c->groups;
      }
    } else if (auto b = std::dynamic_pointer_cast<nn::BatchNorm2d>(mod)) {
      b->num_features = b->weight.defined() ? b->weight.size(0) : b->running_mean.size(0);
    } else if (auto l = std::dynamic_pointer_cast<nn::Linear>(mod)) {
      l->out_features = l->weight.size(0);
      l->in_features = l->weight.size(1);
    }
  }
}

std::map<const nn::Module*, int64_t> depthwise_convs(nn::Module& model) {
  std::map<const nn::Module*, int64_t> m;
  for (auto& mod : model.modules())
    if (auto c = std::dynamic_pointer_cast<nn::Conv2d>(mod))
      if (c->groups > 1 && c->groups == c->in_channels) m[c.get()] = c->out_channels / c->in_channels;
  return m;
}

}  // namespace

DependencyGraph::DependencyGraph(std::shared_ptr<nn::Module> model, const Tensor& example) : model_(std::move(model)) {
  KILN_CHECK(model_ != nullptr, "DependencyGraph: the model is null");
  Tensor y = traced_output(*model_, example);
  Tracer t(*model_, y);
  blocked_ = t.blocked_ops;
  // Group the channels by the tensors and dims they own.
  std::map<std::vector<std::tuple<std::string, int64_t, bool>>, size_t> group_of;
  for (auto& slices : t.components()) {
    const auto& order = t.index().order;
    auto rank = [&](const std::string& n) {
      auto it = order.find(n);
      return it == order.end() ? order.size() : it->second;
    };
    std::sort(slices.begin(), slices.end(), [&](const Slice& a, const Slice& b) {
      return std::make_tuple(!a.producer, rank(a.name), a.dim, a.index) < std::make_tuple(!b.producer, rank(b.name), b.dim, b.index);
    });
    std::vector<std::tuple<std::string, int64_t, bool>> key;
    for (const Slice& s : slices) key.emplace_back(s.name, s.dim, s.producer);
    key.erase(std::unique(key.begin(), key.end()), key.end());
    auto [it, fresh] = group_of.emplace(key, groups_.size());
    if (fresh) groups_.push_back({slices.front().name, {}});
    groups_[it->second].channels.push_back({std::move(slices)});
  }
  for (Group& g : groups_)
    std::stable_sort(g.channels.begin(), g.channels.end(),
                     [](const Channel& a, const Channel& b) { return a.slices.front().index < b.slices.front().index; });
}

void DependencyGraph::prune(const std::vector<std::vector<int64_t>>& remove) {
  KILN_CHECK(remove.size() <= groups_.size(), "DependencyGraph::prune: ", remove.size(), " lists for ", groups_.size(),
             " groups");
  std::map<std::pair<std::string, int64_t>, std::set<int64_t>> drop;
  for (size_t g = 0; g < remove.size(); ++g) {
    std::set<int64_t> ids(remove[g].begin(), remove[g].end());
    const int64_t n = static_cast<int64_t>(groups_[g].channels.size());
    for (int64_t c : ids)
      KILN_CHECK(c >= 0 && c < n, "DependencyGraph::prune: group ", g, " (", groups_[g].name, ") has ", n,
                 " channels; cannot remove channel ", c);
    KILN_CHECK(static_cast<int64_t>(ids.size()) < n, "DependencyGraph::prune: removing all ", n, " channels of group ",
               g, " (", groups_[g].name, ") would cut the network");
    for (int64_t c : ids)
      for (const Slice& s : groups_[g].channels[c].slices) drop[{s.name, s.dim}].insert(s.index);
  }
  const auto depthwise = depthwise_convs(*model_);
  NoGradGuard no_grad;
  for (const auto& [key, idx] : drop) {
    Tensor t = tensor_named(*model_, key.first);
    std::vector<int64_t> keep;
    for (int64_t i = 0; i < t.size(key.second); ++i)
      if (!idx.count(i)) keep.push_back(i);
    Tensor smaller = index_select(t.detach(), key.second, from_vector(keep).to(t.device())).contiguous();
    nn::detail::set_data(t, smaller);
    if (t.requires_grad()) t.set_grad(Tensor());
  }
  update_layers(*model_, depthwise);
  groups_.clear();  // stale
}

std::vector<LayerCall> layer_calls(const std::shared_ptr<nn::Module>& model, const Tensor& example) {
  KILN_CHECK(model != nullptr && example.defined() && example.dim() >= 1 && example.size(0) > 0,
             "layer_calls: needs a model and an example batch");
  Tensor y = traced_output(*model, example);
  ParamIndex index(*model);
  std::vector<LayerCall> calls;
  std::deque<Node*> queue;
  std::set<Node*> seen;
  if (y.grad_fn()) queue.push_back(y.grad_fn().get()), seen.insert(y.grad_fn().get());
  while (!queue.empty()) {
    Node* n = queue.front();
    queue.pop_front();
    auto& edges = n->next_edges();
    const std::string& op = n->name();
    if ((op == "conv2d" || op == "conv_transpose2d" || op == "matmul" || op == "linear") && edges.size() >= 2 &&
        edges[1].node) {
      if (const ParamIndex::Entry* w = index.find(weight_behind(edges[1].node.get()))) {
        Shape in = n->input_meta()[0].sizes;
        const bool dense = op == "matmul" || op == "linear";
        if (dense && in.size() == 3 && in[0] == 1) in.erase(in.begin());  // a Linear's (1, M, K) view
        calls.push_back({w->module_prefix, w->module, op, in});
      }
    }
    for (auto& e : edges)
      if (e.node && !e.node->leaf().defined() && seen.insert(e.node.get()).second) queue.push_back(e.node.get());
  }
  std::reverse(calls.begin(), calls.end());  // found from the output back: forward order
  return calls;
}

Cost count_cost(const std::shared_ptr<nn::Module>& model, const Tensor& example) {
  const int64_t batch = example.defined() && example.dim() >= 1 ? example.size(0) : 1;
  std::map<std::string, std::pair<int64_t, int64_t>> macs;  // by layer prefix: (macs, nonzero macs)
  for (const LayerCall& call : layer_calls(model, example)) {
    Tensor wt = call.module->get_parameter("weight");
    const Shape& xs = call.input;
    int64_t per_weight = 0;  // MACs per weight element, per example
    if (call.op == "matmul" || call.op == "linear") {
      per_weight = prod(xs, 0, xs.size() - 1) / batch;
    } else if (xs.size() == 4) {
      if (auto c = std::dynamic_pointer_cast<nn::Conv2d>(call.module)) {
        const int64_t ho = (xs[2] + 2 * c->padding.h - c->dilation.h * (c->kernel_size.h - 1) - 1) / c->stride.h + 1;
        const int64_t wo = (xs[3] + 2 * c->padding.w - c->dilation.w * (c->kernel_size.w - 1) - 1) / c->stride.w + 1;
        per_weight = ho * wo * (xs[0] / batch);  // every weight meets every output position
      } else {
        per_weight = xs[2] * xs[3] * (xs[0] / batch);  // a transposed convolution: every input position
      }
    }
    auto& m = macs[call.name];
    m.first += wt.numel() * per_weight;
    m.second += count_nonzero(wt) * per_weight;
  }
  Cost cost;
  for (auto& [prefix, mod] : model->named_modules()) {
    auto own = mod->named_parameters(false);
    if (own.empty()) continue;
    LayerCost l;
    l.name = prefix;
    l.type = mod->type_name();
    for (auto& [n, p] : own) l.params += p.numel(), l.nonzero += count_nonzero(p);
    auto it = macs.find(prefix);
    if (it != macs.end()) l.macs = it->second.first, l.nonzero_macs = it->second.second;
    cost.params += l.params, cost.nonzero += l.nonzero, cost.macs += l.macs, cost.nonzero_macs += l.nonzero_macs;
    cost.layers.push_back(std::move(l));
  }
  return cost;
}

std::string format_cost(const Cost& c) {
  std::string s;
  char line[256];
  std::snprintf(line, sizeof line, "%-28s %-12s %12s %12s %14s %14s\n", "layer", "type", "params", "nonzero", "MACs",
                "nonzero MACs");
  s += line;
  for (const LayerCost& l : c.layers) {
    std::snprintf(line, sizeof line, "%-28s %-12s %12lld %12lld %14lld %14lld\n", l.name.c_str(), l.type.c_str(),
                  (long long)l.params, (long long)l.nonzero, (long long)l.macs, (long long)l.nonzero_macs);
    s += line;
  }
  std::snprintf(line, sizeof line, "%-28s %-12s %12lld %12lld %14lld %14lld\n", "total", "", (long long)c.params,
                (long long)c.nonzero, (long long)c.macs, (long long)c.nonzero_macs);
  s += line;
  return s;
}

void shrink_to_state(nn::Module& model, const std::map<std::string, Tensor>& state) {
  auto saved = [&](const std::string& prefix, const char* name) -> const Tensor* {
    auto it = state.find(prefix.empty() ? name : prefix + "." + name);
    return it == state.end() ? nullptr : &it->second;
  };
  auto resize = [](Tensor& t, const Shape& s, const std::string& what) {
    if (!t.defined() || t.sizes() == s) return;
    KILN_CHECK(s.size() == t.sizes().size(), "shrink_to_state: '", what, "' is saved with shape ", shape_str(s),
               " but the model has ", shape_str(t.sizes()));
    for (size_t i = 0; i < s.size(); ++i)
      KILN_CHECK(s[i] <= t.size(static_cast<int64_t>(i)), "shrink_to_state: '", what, "' is saved with shape ",
                 shape_str(s), ", larger than the model's ", shape_str(t.sizes()));
    NoGradGuard no_grad;
    nn::detail::set_data(t, zeros(s, TensorOptions(t.dtype(), t.device())));
    if (t.requires_grad()) t.set_grad(Tensor());
  };
  const auto depthwise = depthwise_convs(model);
  for (auto& [prefix, mod] : model.named_modules()) {
    const std::string pre = prefix.empty() ? "" : prefix + ".";
    if (auto c = std::dynamic_pointer_cast<nn::Conv2d>(mod)) {
      if (const Tensor* w = saved(prefix, "weight")) {
        KILN_CHECK(w->dim() == 4 && w->size(2) == c->kernel_size.h && w->size(3) == c->kernel_size.w,
                   "shrink_to_state: '", pre, "weight' is saved with shape ", shape_str(w->sizes()),
                   ", not a weight of this convolution (", shape_str(c->weight.sizes()), ")");
        resize(c->weight, w->sizes(), pre + "weight");
        if (c->bias.defined()) resize(c->bias, {w->size(0)}, pre + "bias");
      }
    } else if (auto b = std::dynamic_pointer_cast<nn::BatchNorm2d>(mod)) {
      const Tensor* r = saved(prefix, "running_mean");
      if (!r) r = saved(prefix, "weight");
      if (r) {
        KILN_CHECK(r->dim() == 1, "shrink_to_state: '", pre, "' holds a ", shape_str(r->sizes()), " BatchNorm tensor");
        const Shape s{r->size(0)};
        resize(b->weight, s, pre + "weight");
        resize(b->bias, s, pre + "bias");
        resize(b->running_mean, s, pre + "running_mean");
        resize(b->running_var, s, pre + "running_var");
      }
    } else if (auto l = std::dynamic_pointer_cast<nn::Linear>(mod)) {
      if (const Tensor* w = saved(prefix, "weight")) {
        KILN_CHECK(w->dim() == 2, "shrink_to_state: '", pre, "weight' is saved with shape ", shape_str(w->sizes()));
        resize(l->weight, w->sizes(), pre + "weight");
        if (l->bias.defined()) resize(l->bias, {w->size(0)}, pre + "bias");
      }
    }
  }
  update_layers(model, depthwise);
}

}  // namespace kiln::prune
