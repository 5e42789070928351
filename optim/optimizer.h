// The Optimizer base: parameter groups with named hyper-parameters, per-parameter state,
// step()/zero_grad(), and a PyTorch-style state dict flattened into named tensors (so a
// safetensors file can hold it). Steps run under NoGradGuard and update the parameters
// in place through the backends' fused multi-tensor kernels (optim/fused.h); the step
// counts live on the host, so a step never waits for the device.
//
// State dict names (every value a tensor):
//   param_groups.<g>.<option>   0-d f64: each hyper-parameter ("lr", "weight_decay", ...;
//                               flags as 0 or 1)
//   param_groups.<g>.params     1-d i64: the global indices of the group's params
//   state.<i>.step              0-d f64: steps taken by param i (optimizers that count)
//   state.<i>.<buffer>          param i's state buffer ("exp_avg", "momentum_buffer", ...)
// Params are numbered across groups in order, as in PyTorch. A param that has never been
// updated has no state.* entries.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <kiln/core/tensor.h>

namespace kiln {

// The dtype of optimizer state for params of `param_dtype`: f32 for f16, bf16 and f32,
// f64 for f64 (half-precision params keep f32 moments; the update math is f32).
DType optim_state_dtype(DType param_dtype);

// Params sharing hyper-parameters. Given to a constructor or add_param_group, `options`
// lists only overrides of the optimizer's defaults (unknown names are an error); inside
// an optimizer it holds every hyper-parameter.
struct ParamGroup {
  std::vector<Tensor> params;
  std::map<std::string, double> options;
  // The value of a hyper-parameter; throws kiln::Error for a name the group lacks.
  double get(const std::string& name) const;
  double lr() const { return get("lr"); }
};

class Optimizer {
 public:
  // A param's state: the steps taken (for optimizers that count them) and its buffers.
  struct ParamState {
    int64_t step = 0;
    std::map<std::string, Tensor> buffers;
    bool empty() const { return step == 0 && buffers.empty(); }
  };

  virtual ~Optimizer() = default;
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  virtual const char* name() const = 0;

  // One update of every param that has a gradient (params without one are skipped, as in
  // PyTorch). Validates the hyper-parameters and the gradients (shape, dtype, device)
  // first; the update runs under NoGradGuard, in place.
  void step();
  // Drops every param's gradient (set_to_none, PyTorch's default) or zeroes it in place.
  void zero_grad(bool set_to_none = true);

  // Adds params with `group.options` overriding the defaults. Params must be defined,
  // floating, contiguous leaves, and appear in one group only.
  void add_param_group(const ParamGroup& group);
  const std::vector<ParamGroup>& param_groups() const { return groups_; }
  size_t num_groups() const { return groups_.size(); }
  size_t num_params() const { return params_.size(); }
  // Param by global index (groups in order).
  const Tensor& param(size_t index) const;
  // Sets a hyper-parameter of group g (validated at the next step()).
  void set_option(size_t group, const std::string& name, double value);
  double option(size_t group, const std::string& name) const;
  double lr(size_t group = 0) const { return option(group, "lr"); }
  void set_lr(double lr);  // every group
  void set_lr(size_t group, double lr) { set_option(group, "lr", lr); }
  const std::map<std::string, double>& defaults() const { return defaults_; }

  // Param i's state (empty until its first update).
  const ParamState& state(size_t index) const;

  // The state dict described at the top of this file. The state.<i>.<buffer> tensors
  // alias the optimizer's buffers (no copy): save or clone them before stepping again.
  std::map<std::string, Tensor> state_dict() const;
  // Loads a state dict produced by an optimizer of the same kind over params of the same
  // shapes, grouped the same way. Checks every name, shape and dtype first and throws
  // kiln::Error naming the entry on a mismatch (nothing is changed then); buffers are
  // copied onto each param's device.
  void load_state_dict(const std::map<std::string, Tensor>& dict);

 protected:
  explicit Optimizer(std::map<std::string, double> defaults);
  // Derived constructors call this last (virtual calls are not dispatched in a base ctor).
  void add_param_groups(const std::vector<ParamGroup>& groups);

  // Throws kiln::Error (naming the optimizer and the group) for invalid hyper-parameters.
  virtual void check_options(const std::map<std::string, double>& options, size_t group) const = 0;
  // Every buffer name this optimizer may hold, and those a param with state must have.
  virtual std::vector<std::string> state_names() const = 0;
  virtual std::vector<std::string> required_state_names() const = 0;
  // Whether params carry a step count (state.<i>.step).
  virtual bool counts_steps() const = 0;
  // Updates the params of group g at the global `indices`; each has a gradient that
  // step() checked (contiguous copies in `grads`, one per index). Runs under NoGradGuard.
  virtual void update(size_t group, const std::vector<size_t>& indices, const std::vector<Tensor>& grads) = 0;

  ParamState& mutable_state(size_t index) { return state_.at(index); }
  // The buffer `name` of param i, created as zeros (state dtype, param's device) when absent.
  Tensor& buffer_or_zeros(size_t index, const std::string& name);

 private:
  std::map<std::string, double> defaults_;
  std::vector<ParamGroup> groups_;
  std::vector<Tensor> params_;        // all params, global order
  std::vector<size_t> group_begin_;   // global index of each group's first param
  std::vector<ParamState> state_;     // by global index
};

}  // namespace kiln
