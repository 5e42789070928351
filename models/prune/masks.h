// Unstructured pruning: masks as first-class training state, magnitude criteria (Han et
// al. 2015), N:M semi-structured masks (NVIDIA's ASP recipe) and the gradual cubic
// schedule of Zhu & Gupta (2017).
//
// A mask multiplies a parameter. Masks keeps one per pruned parameter, by the parameter's
// dotted name: apply() zeroes the pruned weights (after every optimizer step) and
// mask_gradients() their gradients (after backward, before the step), so neither weight
// decay nor momentum or Adam state can revive a pruned weight. Under data parallelism the
// gradients are already averaged when backward returns, and every rank applies the same
// masks, so the replicas stay identical. state_dict()/load_state_dict() put the masks in a
// checkpoint (a trainer stores them under a prefix, as "mask.<param>").
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <kiln/core/tensor.h>
#include <kiln/models/nn/module.h>

namespace kiln::prune {

class Masks {
 public:
  explicit Masks(std::shared_ptr<nn::Module> model);

  // Sets (or replaces) the mask of parameter `name`: same shape as it, values 0 or 1 (any
  // dtype; stored in the parameter's dtype and device). Zeroes the pruned weights now.
  void set(const std::string& name, const Tensor& mask);
  bool has(const std::string& name) const { return masks_.count(name) > 0; }
  const Tensor& get(const std::string& name) const;
  std::vector<std::string> names() const;
  bool empty() const { return masks_.empty(); }

  void apply();           // w *= mask, for every masked parameter (no autograd)
  void mask_gradients();  // grad *= mask where a gradient is defined
  // Drops the masks: the weights keep their zeros and train freely from now on.
  void make_permanent() { masks_.clear(); }

  // Pruned (zero) mask entries over all masked parameters, and per parameter.
  double sparsity() const;
  double sparsity(const std::string& name) const;

  // The masks by parameter name (aliases, in the parameter's dtype).
  std::map<std::string, Tensor> state_dict() const;
  // Replaces every mask by those of `state` (names must be parameters of the model, with
  // their shapes); throws kiln::Error naming the entry otherwise, before changing anything.
  void load_state_dict(const std::map<std::string, Tensor>& state);

 private:
  struct Entry {
    Tensor param;  // the model's handle (found once, when the mask is set)
    Tensor mask;
  };
  std::shared_ptr<nn::Module> model_;
  std::map<std::string, Entry> masks_;
};

// The nonzero entries of a tensor (any device and dtype; one host read).
int64_t count_nonzero(const Tensor& t);

// The weights that unstructured pruning considers: every Conv2d, ConvTranspose2d and
// Linear weight, by name, in registration order (biases and norms are left dense, as in
// Han et al.).
std::vector<std::pair<std::string, Tensor>> prunable_weights(nn::Module& model);

enum class Scope { Layer, Global };

// Magnitude masks that zero `sparsity` (in [0, 1)) of the weights: of each tensor
// (Layer) or of all of them together, ranked by |w| over every tensor at once (Global).
// Ties break by position, so the result is deterministic. Weights that `current` already
// masks count as zeros (they stay pruned: sparsity only grows).
std::map<std::string, Tensor> magnitude_masks(const std::vector<std::pair<std::string, Tensor>>& weights,
                                              double sparsity, Scope scope, const Masks* current = nullptr);

// An N:M mask (keep the n largest |w| of every m consecutive weights along the input
// dimension: dim 1 of a (out, in) Linear weight, the input channels of a (O, C, kh, kw)
// convolution weight at each kernel position), as sparse tensor cores want it (2:4).
// Throws kiln::Error when that dimension is not a multiple of m.
Tensor nm_mask(const Tensor& weight, int64_t n, int64_t m);
// Whether `weight` can take an N:M mask (its input dimension is a multiple of m).
bool nm_applicable(const Tensor& weight, int64_t m);

// Zhu & Gupta's gradual schedule: the sparsity at `step` rising from `initial` at `begin`
// to `final` at `end` as s_f + (s_i - s_f) (1 - (t - t0) / (t1 - t0))^3, constant outside.
double gradual_sparsity(int64_t step, double initial, double final, int64_t begin, int64_t end);

}  // namespace kiln::prune
