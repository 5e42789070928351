// Containers: Sequential (children applied in order) and ModuleList (an indexable list
// of children with no forward of its own). Children are named "0", "1", ... unless a
// name is given, so parameter names read "0.weight" as in PyTorch.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include <kiln/models/nn/module.h>

namespace kiln::nn {

// What Sequential and ModuleList share: appending and positional access.
class ModuleSequence : public Module {
 public:
  using Module::Module;

  // Appends under the name str(size()).
  template <class M> std::shared_ptr<M> push_back(std::shared_ptr<M> module) {
    return register_module(std::to_string(size()), std::move(module));
  }
  // Appends under a chosen name (PyTorch's Sequential(OrderedDict(...))).
  template <class M> std::shared_ptr<M> push_back(const std::string& name, std::shared_ptr<M> module) {
    return register_module(name, std::move(module));
  }
  template <class M> std::shared_ptr<M> add(std::shared_ptr<M> module) { return push_back(std::move(module)); }
  template <class M> std::shared_ptr<M> append(std::shared_ptr<M> module) { return push_back(std::move(module)); }

  size_t size() const { return child_list().size(); }
  bool empty() const { return child_list().empty(); }
  // The child at a position (negative counts from the end); throws when out of range.
  std::shared_ptr<Module> operator[](int64_t index) const;
  std::shared_ptr<Module> at(int64_t index) const { return (*this)[index]; }
  // The child at a position as its concrete type; throws when it is another type.
  template <class M> std::shared_ptr<M> at(int64_t index) const {
    std::shared_ptr<Module> m = (*this)[index];
    auto typed = std::dynamic_pointer_cast<M>(m);
    KILN_CHECK(typed != nullptr, type_name(), ".at: child ", index, " is a ", m->type_name(),
               ", not the requested type");
    return typed;
  }
};

class Sequential : public ModuleSequence {
 public:
  Sequential() : ModuleSequence("Sequential") {}
  template <class... Ms>
  explicit Sequential(std::shared_ptr<Ms>... modules) : ModuleSequence("Sequential") {
    (push_back(std::move(modules)), ...);
  }
  // Each child's forward on the previous one's output (the input itself when empty).
  Tensor forward(const Tensor& input) override;
};

class ModuleList : public ModuleSequence {
 public:
  ModuleList() : ModuleSequence("ModuleList") {}
  template <class... Ms>
  explicit ModuleList(std::shared_ptr<Ms>... modules) : ModuleSequence("ModuleList") {
    (push_back(std::move(modules)), ...);
  }
};

}  // namespace kiln::nn
