// Module: the building block of models, after PyTorch's nn.Module. A module owns named
// parameters (leaf tensors that require grad), named buffers (state such as running
// statistics) and named child modules, all kept in registration order. Hierarchical
// names join the path with dots ("features.0.weight"), so state dicts use PyTorch's keys.
//
// Modules are used through std::shared_ptr (children are shared_ptrs). A layer keeps
// the Tensor handles that register_parameter() returns as members: they stay valid for
// the module's life, because every operation that changes a parameter changes it in
// place. load_state_dict() copies values into the existing tensors, and to(Device) /
// to(DType) swap the storage, dtype and geometry inside the existing TensorImpl (what
// PyTorch does with `param.data = param.data.to(...)`), so layer members, optimizers and
// hooks that hold a parameter keep seeing the converted tensor, and requires_grad, hooks
// and the .grad (converted too) survive. Do not convert a module while an autograd graph
// through it is still to be run backward.
#pragma once
#include <cstdint>
#include <functional>
#include <iosfwd>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <kiln/core/device.h>
#include <kiln/core/dtype.h>
#include <kiln/core/error.h>
#include <kiln/core/tensor.h>

namespace kiln::nn {

// What load_state_dict(strict = false) did not match (strict mode throws instead).
struct LoadStateDictResult {
  std::vector<std::string> missing_keys;     // the module has them, the dict does not
  std::vector<std::string> unexpected_keys;  // the dict has them, the module does not
};

class Module : public std::enable_shared_from_this<Module> {
 public:
  // `type_name` is the class name shown by to_string() ("Linear").
  explicit Module(std::string type_name = "Module");
  virtual ~Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  const std::string& type_name() const { return type_name_; }

  // The forward pass of a single-input module. The default throws: containers such as
  // ModuleList, and modules with other signatures (which add their own), have none.
  virtual Tensor forward(const Tensor& input);
  Tensor operator()(const Tensor& input) { return forward(input); }

  // ---- registration ----
  // Registers a leaf tensor as a parameter and sets its requires_grad (floating dtypes
  // only). Returns the same handle. Names are unique among a module's parameters,
  // buffers and children and contain no '.'.
  Tensor register_parameter(const std::string& name, Tensor tensor, bool requires_grad = true);
  // A buffer is state that is not trained. Non-persistent buffers stay out of state_dict().
  Tensor register_buffer(const std::string& name, Tensor tensor, bool persistent = true);
  template <class M>
  std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> module) {
    static_assert(std::is_base_of_v<Module, M>, "register_module: M must derive from kiln::nn::Module");
    register_module_impl(name, module);
    return module;
  }

  // ---- traversal (registration order; each tensor / module once even when shared) ----
  std::vector<Tensor> parameters(bool recurse = true) const;
  std::vector<std::pair<std::string, Tensor>> named_parameters(bool recurse = true) const;
  std::vector<Tensor> buffers(bool recurse = true) const;
  std::vector<std::pair<std::string, Tensor>> named_buffers(bool recurse = true) const;
  std::vector<std::shared_ptr<Module>> children() const;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> named_children() const;
  // Pre-order: this module first (named ""), then its descendants. Including this module
  // needs it to be owned by a shared_ptr (it throws otherwise).
  std::vector<std::shared_ptr<Module>> modules(bool include_self = true);
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> named_modules(bool include_self = true);
  // Lookup by dotted path ("features.0.weight"); throws naming the missing part.
  Tensor get_parameter(const std::string& path) const;
  Tensor get_buffer(const std::string& path) const;
  std::shared_ptr<Module> get_submodule(const std::string& path) const;
  // Calls fn on every descendant (children first) and then on this module, like
  // PyTorch's Module.apply (custom initialisation).
  void apply(const std::function<void(Module&)>& fn);

  // ---- modes ----
  virtual void train(bool on = true);  // recursive
  void eval() { train(false); }
  bool is_training() const { return training_; }

  // ---- conversion (see the file comment: the same handles, new contents) ----
  void to(Device device);
  void to(DType dtype);  // floating parameters and buffers only
  void to(Device device, DType dtype);

  int64_t num_parameters(bool only_trainable = false) const;
  // Clears every parameter's .grad (set_to_none), or fills it with zeros.
  void zero_grad(bool set_to_none = true);

  // ---- state ----
  // Parameters and persistent buffers by full name, detached but sharing storage with the
  // module (as PyTorch's state_dict). Tied tensors appear under each of their names.
  std::map<std::string, Tensor> state_dict() const;
  // Copies values in place (under NoGradGuard, across devices). Shape and dtype must
  // match. strict: every key on both sides must match, else kiln::Error listing the
  // missing and unexpected keys. Nothing is copied when it throws.
  LoadStateDictResult load_state_dict(const std::map<std::string, Tensor>& state, bool strict = true);

  // ---- printing ----
  // PyTorch's repr: "Linear(in_features=4, out_features=3, bias=true)", with children
  // on their own indented lines "(name): ...".
  std::string to_string() const;
  // The module's own settings for to_string() ("" when none).
  virtual std::string extra_repr() const { return ""; }

 protected:
  void register_module_impl(const std::string& name, std::shared_ptr<Module> module);
  // Children in registration order (containers index them).
  const std::vector<std::pair<std::string, std::shared_ptr<Module>>>& child_list() const { return children_; }

 private:
  struct BufferEntry {
    std::string name;
    Tensor tensor;
    bool persistent;
  };
  void check_new_name(const char* what, const std::string& name) const;
  // Calls fn(prefix, module) for this module and every descendant once, pre-order.
  void walk(const std::string& prefix, std::vector<const Module*>& seen,
            const std::function<void(const std::string&, const Module&)>& fn) const;
  // Every (full name, tensor) of the state, in PyTorch's order, without deduplication.
  void collect_state(const std::string& prefix, std::vector<std::pair<std::string, Tensor>>& out) const;
  void convert(std::optional<Device> device, std::optional<DType> dtype);

  std::string type_name_;
  bool training_ = true;
  std::vector<std::pair<std::string, Tensor>> params_;
  std::vector<BufferEntry> buffers_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
};

std::ostream& operator<<(std::ostream& os, const Module& m);

// Turns requires_grad off for the given parameters for a scope and back on at its end (for
// those that had it): a backward through their module then computes the gradients of its
// inputs only. A GAN's generator step needs nothing else of the discriminator (PyTorch's
// `requires_grad_(False)` idiom); the discriminator's weight gradients, and their
// data-parallel all-reduce, are skipped.
class FrozenParameters {
 public:
  explicit FrozenParameters(std::vector<Tensor> params);
  ~FrozenParameters();
  FrozenParameters(const FrozenParameters&) = delete;
  FrozenParameters& operator=(const FrozenParameters&) = delete;

 private:
  std::vector<Tensor> frozen_;  // the ones that required grad
};

namespace detail {
// Gives `t` (a handle layers, optimizers and hooks may hold) the contents of `src`:
// storage, offset, sizes, strides and dtype; requires_grad, hooks and .grad stay with `t`.
// Module::to uses it, and channel pruning to give a parameter its smaller shape.
void set_data(const Tensor& t, const Tensor& src);
// Python's repr of a float: the shortest text that reads back to the same double, with
// ".0" added to whole numbers ("0.01", "1.0", "1e-05").
std::string repr_double(double v);
}  // namespace detail

}  // namespace kiln::nn
