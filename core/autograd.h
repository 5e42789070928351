// The autograd engine: define-by-run reverse mode. An op whose inputs need gradients
// calls record(), which attaches to its output a Node holding the op's backward formula
// (a closure over just what the formula needs) and edges to the nodes that produced the
// inputs. Tensor::backward() runs the reachable nodes once each, in dependency order,
// summing the gradients that meet at a node, and accumulates into the leaves' .grad.
// The graph is freed as it runs (unless retain_graph). Leaf hooks fire once a leaf's
// gradient for this backward pass is final — the data-parallel layer uses them.
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <kiln/core/tensor.h>

namespace kiln {

class Node;

// Where a gradient flows: into input slot `input_nr` of `node` (null: nowhere).
struct Edge {
  std::shared_ptr<Node> node;
  int input_nr = 0;
};

// One recorded op. apply() maps the gradient of the op's output to gradients of its
// inputs (undefined where an input needs none).
class Node {
 public:
  explicit Node(std::string name);
  virtual ~Node() = default;
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;

  virtual std::vector<Tensor> apply(const Tensor& grad_output) = 0;
  // Drops what the backward formula saved (after a backward that did not retain the graph).
  virtual void release() {}

  const std::string& name() const { return name_; }
  uint64_t sequence_nr() const { return seq_; }
  // The leaf tensor whose gradient this node accumulates (a parameter), or undefined for a
  // recorded op. Graph walkers (pruning's dependency tracer) find parameters through it.
  virtual Tensor leaf() const { return Tensor(); }
  std::vector<Edge>& next_edges() { return next_; }
  // Shape, dtype and device of each input, so the engine can check formula results.
  struct InputMeta {
    Shape sizes;
    DType dtype;
    Device device;
  };
  std::vector<InputMeta>& input_meta() { return inputs_; }
  // Tensors the backward formula saved, with their storage's version at save time; the
  // engine refuses to run the formula if one was modified in place since (PyTorch's
  // "modified by an inplace operation").
  void save_versions(const std::vector<Tensor>& saved);
  void check_saved_versions() const;
  // Whether the backward formula is itself differentiable (written with recorded ops,
  // capturing its inputs undetached), so that create_graph may run through it.
  bool double_backward() const { return double_backward_; }
  void set_double_backward(bool on) { double_backward_ = on; }

 private:
  std::string name_;
  uint64_t seq_;
  std::vector<Edge> next_;
  std::vector<InputMeta> inputs_;
  std::vector<std::pair<std::shared_ptr<StorageImpl>, uint64_t>> saved_;
  bool double_backward_ = false;
};

// Backward formula: gradient of the output -> gradients of the inputs, in input order.
using BackwardFn = std::function<std::vector<Tensor>(const Tensor& grad_output)>;

// Gradient mode (per thread). With it off, ops record nothing.
bool grad_enabled();
void set_grad_enabled(bool enabled);

// Sets grad mode for a scope and restores it: NoGradGuard turns recording off,
// EnableGradGuard on (torch.enable_grad: code that takes a gradient inside a no-grad
// region, such as a gradient penalty evaluated by gradcheck's finite differences).
class GradModeGuard {
 public:
  explicit GradModeGuard(bool enabled) : prev_(grad_enabled()) { set_grad_enabled(enabled); }
  ~GradModeGuard() { set_grad_enabled(prev_); }
  GradModeGuard(const GradModeGuard&) = delete;
  GradModeGuard& operator=(const GradModeGuard&) = delete;

 private:
  bool prev_;
};
class NoGradGuard : public GradModeGuard {
 public:
  NoGradGuard() : GradModeGuard(false) {}
};
class EnableGradGuard : public GradModeGuard {
 public:
  EnableGradGuard() : GradModeGuard(true) {}
};

// True when grad mode is on and some input requires grad: the op must then record.
bool any_requires_grad(std::initializer_list<Tensor> inputs);
bool any_requires_grad(const std::vector<Tensor>& inputs);

// Attaches a node named `name` with `backward` to `output` when any_requires_grad(inputs);
// returns output either way. The closure must capture only what the formula needs, and
// `saved` names the tensors it captures (inputs or the output): modifying one of them in
// place before backward then raises an error naming the op instead of giving wrong
// gradients.
//
// double_backward: the formula is differentiable again — it uses recorded ops only and
// captures the inputs it reads undetached (outputs stay detached: they would make a
// cycle; a formula that needs the output recomputes it from the inputs when grad mode is
// on, which it is exactly when a create_graph pass runs it). Only such nodes may be
// crossed by backward(create_graph = true) / grad(..., create_graph = true); any other
// raises an error naming the op, rather than giving a second derivative with terms missing.
Tensor record(const char* name, const std::vector<Tensor>& inputs, Tensor output, BackwardFn backward,
              const std::vector<Tensor>& saved = {}, bool double_backward = false);

// Where a leaf's first gradient of a backward pass goes when its .grad is undefined: into
// the tensor `destination()` returns (the leaf's shape, dtype and device), which becomes
// .grad, instead of into a fresh clone. The data-parallel wrapper points it at the leaf's
// slice of a gradient bucket, so gradients are written once, straight into the bucket.
// An empty function restores the default; a function returning an undefined tensor
// chooses the default for that pass.
void set_grad_destination(const Tensor& leaf, std::function<Tensor()> destination);

// Runs backward from `roots` with the given output gradients (undefined: ones, for a
// one-element root). Used by Tensor::backward. create_graph: the formulas run with grad
// mode on, so the gradients (and the .grad of the leaves) are themselves differentiable.
void run_backward(const std::vector<Tensor>& roots, const std::vector<Tensor>& grads, bool retain_graph,
                  bool create_graph = false);

// The gradients of `outputs` (weighted by grad_outputs: undefined or missing means ones,
// for one-element outputs) with respect to `inputs`, as PyTorch's torch.autograd.grad:
// nothing is accumulated into any .grad. With create_graph the results are differentiable
// (second-order gradients, gradient penalties, Hessian-vector products); retain_graph
// defaults to create_graph. An input the outputs do not depend on is an error unless
// allow_unused (its gradient is then undefined).
struct GradOptions {
  bool create_graph = false;
  std::optional<bool> retain_graph;
  bool allow_unused = false;
};
std::vector<Tensor> grad(const std::vector<Tensor>& outputs, const std::vector<Tensor>& inputs,
                         const std::vector<Tensor>& grad_outputs = {}, const GradOptions& options = {});

// The gradients of composite(inputs), weighted by g, as differentiable tensors
// (create_graph): how an op whose first-order backward is one fused kernel gets its
// second derivative. `composite` recomputes the op's forward from recorded,
// double-differentiable ops; its gradients come from the engine. Inputs that are
// undefined or do not require grad get an undefined gradient. Backward formulas call it
// when grad_enabled(), i.e. in a create_graph pass (and mark their node double_backward).
std::vector<Tensor> composite_backward(const std::function<Tensor(const std::vector<Tensor>&)>& composite,
                                       const std::vector<Tensor>& inputs, const Tensor& g);

// Queues `fn` to run once the backward pass now running on this thread has processed
// every node (after the last leaf hook). Only valid inside a backward pass, i.e. from a
// hook or a backward formula; the data-parallel layer uses it to launch the buckets that
// are still open and to wait for its all-reduces. Callbacks run in the order queued and
// may queue more.
void queue_callback(std::function<void()> fn);
// A number that identifies the backward pass now running on this thread (0 outside one);
// each pass gets a new one. Lets a hook tell a new pass from one that threw midway.
uint64_t backward_pass_id();

namespace detail {
// Sums `g` over broadcast dims down to `shape` (the backward of expand/broadcasting).
Tensor sum_to_shape(const Tensor& g, const Shape& shape);
}  // namespace detail

}  // namespace kiln
