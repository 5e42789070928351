// Masks, magnitude and N:M mask selection, the cubic schedule (models/prune/masks.h).
// Mask selection ranks weights on the host: it runs once per pruning step, and an exact,
// deterministic ranking (ties by position) matters more there than speed.
#include <kiln/models/prune/masks.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include <kiln/core/autograd.h>
#include <kiln/core/error.h>
#include <kiln/models/nn/conv.h>
#include <kiln/models/nn/linear.h>
#include <kiln/ops/binary.h>
#include <kiln/ops/reduce.h>

namespace kiln::prune {

Masks::Masks(std::shared_ptr<nn::Module> model) : model_(std::move(model)) {
  KILN_CHECK(model_ != nullptr, "prune::Masks: the model is null");
}

void Masks::set(const std::string& name, const Tensor& mask) {
  Tensor p = model_->get_parameter(name);
  KILN_CHECK(mask.defined() && mask.sizes() == p.sizes(), "prune::Masks: the mask of '", name, "' must have its shape ",
             shape_str(p.sizes()), ", got ", mask.defined() ? describe(mask) : std::string("an undefined tensor"));
  Tensor m = mask.detach().to(p.device(), p.dtype()).clone();  // the Masks' own copy
  masks_[name] = {p, m};
  NoGradGuard no_grad;
  mul_(p, m);
}

const Tensor& Masks::get(const std::string& name) const {
  auto it = masks_.find(name);
  KILN_CHECK(it != masks_.end(), "prune::Masks: '", name, "' has no mask");
  return it->second.mask;
}

std::map<std::string, Tensor> Masks::state_dict() const {
  std::map<std::string, Tensor> out;
  for (const auto& [name, e] : masks_) out[name] = e.mask;
  return out;
}

std::vector<std::string> Masks::names() const {
  std::vector<std::string> n;
  for (const auto& [k, v] : masks_) n.push_back(k);
  return n;
}

void Masks::apply() {
  NoGradGuard no_grad;
  for (auto& [name, e] : masks_) mul_(e.param, e.mask);
}

void Masks::mask_gradients() {
  NoGradGuard no_grad;
  for (auto& [name, e] : masks_) {
    Tensor g = e.param.grad();
    if (g.defined()) mul_(g, e.mask);
  }
}

double Masks::sparsity() const {
  double zeros = 0, total = 0;
  for (const auto& [name, e] : masks_) {
    zeros += static_cast<double>(e.mask.numel() - count_nonzero(e.mask));
    total += static_cast<double>(e.mask.numel());
  }
  return total > 0 ? zeros / total : 0.0;
}

double Masks::sparsity(const std::string& name) const {
  const Tensor& m = get(name);
  return m.numel() > 0 ? 1.0 - static_cast<double>(count_nonzero(m)) / static_cast<double>(m.numel()) : 0.0;
}

int64_t count_nonzero(const Tensor& t) {
  if (t.numel() == 0) return 0;
  return sum(ne(t.detach(), 0.0)).item<int64_t>();
}

void Masks::load_state_dict(const std::map<std::string, Tensor>& state) {
  for (const auto& [name, m] : state) {
    Tensor p;
    try {
      p = model_->get_parameter(name);
    } catch (const Error&) {
      throw Error(kiln::detail::str("prune::Masks: the saved mask '", name, "' names no parameter of the model"));
    }
    KILN_CHECK(m.sizes() == p.sizes(), "prune::Masks: the saved mask '", name, "' has shape ", shape_str(m.sizes()),
               " but the parameter has ", shape_str(p.sizes()));
  }
  masks_.clear();
  for (const auto& [name, m] : state) set(name, m);
}

std::vector<std::pair<std::string, Tensor>> prunable_weights(nn::Module& model) {
  std::vector<std::pair<std::string, Tensor>> out;
  for (auto& [prefix, mod] : model.named_modules()) {
    Tensor w;
    if (auto c = std::dynamic_pointer_cast<nn::Conv2d>(mod)) w = c->weight;
    else if (auto t = std::dynamic_pointer_cast<nn::ConvTranspose2d>(mod)) w = t->weight;
    else if (auto l = std::dynamic_pointer_cast<nn::Linear>(mod)) w = l->weight;
    if (w.defined()) out.emplace_back(prefix.empty() ? "weight" : prefix + ".weight", w);
  }
  return out;
}

namespace {

// |w| on the host, with the weights `current` masks set to -1 (they rank first: pruned).
std::vector<float> magnitudes(const std::string& name, const Tensor& w, const Masks* current) {
  std::vector<float> v = w.to_vector<float>();
  for (float& x : v) x = std::fabs(x);
  if (current && current->has(name)) {
    std::vector<float> m = current->get(name).to_vector<float>();
    for (size_t i = 0; i < v.size(); ++i)
      if (m[i] == 0.0f) v[i] = -1.0f;
  }
  return v;
}

// Zeroes in `keep` the k entries of `mag` ranked lowest (ties by position).
void drop_lowest(const std::vector<const float*>& mag, const std::vector<size_t>& sizes, int64_t k,
                 std::vector<std::vector<float>>& keep) {
  std::vector<std::pair<size_t, size_t>> order;  // (tensor, index)
  for (size_t t = 0; t < sizes.size(); ++t)
    for (size_t i = 0; i < sizes[t]; ++i) order.emplace_back(t, i);
  const auto less = [&](const std::pair<size_t, size_t>& a, const std::pair<size_t, size_t>& b) {
    const float x = mag[a.first][a.second], y = mag[b.first][b.second];
    return x != y ? x < y : a < b;
  };
  k = std::min<int64_t>(k, static_cast<int64_t>(order.size()));
  if (k <= 0) return;
  std::nth_element(order.begin(), order.begin() + (k - 1), order.end(), less);
  for (int64_t j = 0; j < k; ++j) keep[order[j].first][order[j].second] = 0.0f;
}

}  // namespace

std::map<std::string, Tensor> magnitude_masks(const std::vector<std::pair<std::string, Tensor>>& weights,
                                              double sparsity, Scope scope, const Masks* current) {
  KILN_CHECK(sparsity >= 0.0 && sparsity < 1.0, "magnitude_masks: the sparsity must be in [0, 1), got ", sparsity);
  KILN_CHECK(!weights.empty(), "magnitude_masks: no weights to prune");
  std::vector<std::vector<float>> mags, keep;
  std::vector<size_t> sizes;
  int64_t total = 0;
  for (const auto& [name, w] : weights) {
    mags.push_back(magnitudes(name, w, current));
    keep.emplace_back(mags.back().size(), 1.0f);
    sizes.push_back(mags.back().size());
    total += w.numel();
  }
  if (scope == Scope::Global) {
    std::vector<const float*> ptr;
    for (auto& m : mags) ptr.push_back(m.data());
    drop_lowest(ptr, sizes, static_cast<int64_t>(std::floor(sparsity * static_cast<double>(total))), keep);
  } else {
    for (size_t t = 0; t < weights.size(); ++t) {
      std::vector<std::vector<float>> one{std::move(keep[t])};
      drop_lowest({mags[t].data()}, {sizes[t]}, static_cast<int64_t>(std::floor(sparsity * static_cast<double>(sizes[t]))),
                  one);
      keep[t] = std::move(one[0]);
    }
  }
  std::map<std::string, Tensor> out;
  for (size_t t = 0; t < weights.size(); ++t)
    out[weights[t].first] = from_vector(keep[t], weights[t].second.sizes());
  return out;
}

bool nm_applicable(const Tensor& w, int64_t m) { return m > 0 && w.dim() >= 2 && w.size(1) % m == 0; }

Tensor nm_mask(const Tensor& weight, int64_t n, int64_t m) {
  KILN_CHECK(m >= 1 && n >= 0 && n <= m, "nm_mask: needs 0 <= n <= m, got ", n, ":", m);
  KILN_CHECK(weight.dim() == 2 || weight.dim() == 4, "nm_mask: expects a Linear (out, in) or a convolution (O, C, kh, kw) "
             "weight, got ", describe(weight));
  KILN_CHECK(nm_applicable(weight, m), "nm_mask: the input dimension of ", describe(weight), " is not a multiple of ", m);
  const int64_t O = weight.size(0), C = weight.size(1), K = weight.dim() == 4 ? weight.size(2) * weight.size(3) : 1;
  std::vector<float> v = weight.to_vector<float>(), keep(v.size(), 0.0f);
  std::vector<int64_t> idx(static_cast<size_t>(m));
  for (int64_t o = 0; o < O; ++o)
    for (int64_t k = 0; k < K; ++k)
      for (int64_t c0 = 0; c0 < C; c0 += m) {
        // the group's entries: (o, c0 + j, k) at (o * C + c) * K + k
        for (int64_t j = 0; j < m; ++j) idx[j] = (o * C + c0 + j) * K + k;
        std::stable_sort(idx.begin(), idx.end(), [&](int64_t a, int64_t b) { return std::fabs(v[a]) > std::fabs(v[b]); });
        for (int64_t j = 0; j < n; ++j) keep[idx[j]] = 1.0f;
      }
  return from_vector(keep, weight.sizes());
}

double gradual_sparsity(int64_t step, double initial, double final, int64_t begin, int64_t end) {
  if (step <= begin) return initial;
  if (step >= end || end <= begin) return final;
  const double r = 1.0 - static_cast<double>(step - begin) / static_cast<double>(end - begin);
  return final + (initial - final) * r * r * r;
}

}  // namespace kiln::prune
