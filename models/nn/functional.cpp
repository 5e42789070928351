#include <kiln/models/nn/functional.h>

#include <kiln/core/error.h>
#include <kiln/models/nn/conv.h>
#include <kiln/models/nn/containers.h>
#include <kiln/models/nn/linear.h>
#include <kiln/models/nn/minibatch_discrimination.h>
#include <kiln/models/nn/norm.h>
#include <kiln/models/nn/spectral_norm.h>
#include <kiln/ops/conv.h>
#include <kiln/ops/norm.h>

namespace kiln::nn {
namespace {

// Hands out the replacement tensors in parameters() order, checking shapes.
class Cursor {
 public:
  explicit Cursor(std::span<const Tensor> p) : p_(p) {}
  Tensor take(const Tensor& own, const Module& m) {
    if (!own.defined()) return own;
    KILN_CHECK(i_ < p_.size(), "functional_call: too few parameters for ", m.type_name(), " (", p_.size(),
               " given)");
    const Tensor& t = p_[i_++];
    KILN_CHECK(t.defined() && t.sizes() == own.sizes(), "functional_call: parameter ", i_ - 1, " for ",
               m.type_name(), " must have shape ", shape_str(own.sizes()), ", got ",
               t.defined() ? describe(t) : std::string("undefined"));
    return t;
  }
  size_t used() const { return i_; }
  std::span<const Tensor> peek(size_t n) const { return p_.subspan(i_, std::min(n, p_.size() - i_)); }

 private:
  std::span<const Tensor> p_;
  size_t i_ = 0;
};

Tensor run(Module& m, const Tensor& x, Cursor& c) {
  const std::vector<Tensor> own = m.parameters();
  // The module's own tensors: its ordinary forward (buffers and all).
  std::span<const Tensor> next = c.peek(own.size());
  bool same = next.size() == own.size();
  for (size_t i = 0; same && i < own.size(); ++i) same = next[i].is_same(own[i]);
  if (same) {
    for (const Tensor& t : own) c.take(t, m);
    return m.forward(x);
  }
  if (auto s = dynamic_cast<Sequential*>(&m)) {
    Tensor h = x;
    for (auto& child : s->children()) h = run(*child, h, c);
    return h;
  }
  if (auto l = dynamic_cast<Linear*>(&m)) {
    Tensor w = c.take(l->weight, m), b = c.take(l->bias, m);
    return linear(x, w, b);
  }
  if (auto l = dynamic_cast<Conv2d*>(&m)) {
    Tensor w = c.take(l->weight, m), b = c.take(l->bias, m);
    return conv2d(x, w, b, l->stride, l->padding, l->dilation, l->groups, l->padding_mode);
  }
  if (auto l = dynamic_cast<ConvTranspose2d*>(&m)) {
    Tensor w = c.take(l->weight, m), b = c.take(l->bias, m);
    return conv_transpose2d(x, w, b, l->stride, l->padding, l->output_padding, l->groups, l->dilation);
  }
  if (auto l = dynamic_cast<BatchNorm2d*>(&m)) {
    Tensor w = c.take(l->weight, m), b = c.take(l->bias, m);
    const bool batch_stats = l->is_training() || !l->track_running_stats;
    return batch_norm(x, batch_stats ? Tensor() : l->running_mean, batch_stats ? Tensor() : l->running_var, w, b,
                      batch_stats, 0.0, l->eps);
  }
  if (auto l = dynamic_cast<LayerNorm*>(&m)) {
    Tensor w = c.take(l->weight, m), b = c.take(l->bias, m);
    return layer_norm(x, l->normalized_shape, w, b, l->eps);
  }
  if (auto s = dynamic_cast<SpectralNorm*>(&m)) {  // the layer at W' / sigma(W'), one step from u, v (not kept)
    std::vector<Tensor> p;
    for (const Tensor& t : s->module->parameters()) p.push_back(c.take(t, m));
    p[s->weight_index()] = s->normalized(p[s->weight_index()], 1, false);
    Cursor inner(p);
    return run(*s->module, x, inner);
  }
  if (auto l = dynamic_cast<MinibatchDiscrimination*>(&m)) {
    return minibatch_discrimination(x, c.take(l->T, m), l->num_kernels, l->kernel_dim);
  }
  KILN_CHECK(own.empty(), "functional_call: ", m.type_name(),
             " has parameters and no functional form (supported: Sequential, Linear, Conv2d, ConvTranspose2d, "
             "BatchNorm2d, LayerNorm, MinibatchDiscrimination, SpectralNorm)");
  return m.forward(x);
}

}  // namespace

Tensor functional_call(Module& module, const Tensor& input, std::span<const Tensor> params) {
  const size_t want = module.parameters().size();
  KILN_CHECK(params.size() == want, "functional_call: ", module.type_name(), " has ", want, " parameters, ",
             params.size(), " were given");
  Cursor c(params);
  Tensor out = run(module, input, c);
  KILN_CHECK(c.used() == want, "functional_call: ", module.type_name(), " used ", c.used(), " of its ", want,
             " parameters (a parameter shared between layers?)");
  return out;
}

}  // namespace kiln::nn
