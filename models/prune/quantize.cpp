// k-means weight sharing, incremental network quantization and size accounting
// (models/prune/quantize.h). Clustering, rounding and partitioning read each layer to the
// host once per call (exact and deterministic, as the mask selection in masks.cpp); the
// per-step hooks are gathers and scatter-adds on the parameter's device.
#include <kiln/models/prune/quantize.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include <kiln/core/autograd.h>
#include <kiln/core/error.h>
#include <kiln/ops/binary.h>
#include <kiln/ops/index.h>

namespace kiln::prune {

// ---------------------------------------------------------------------------------------
// k-means
// ---------------------------------------------------------------------------------------

std::vector<float> linear_centroids(float lo, float hi, int64_t k) {
  KILN_CHECK(k >= 1, "linear_centroids: k must be at least 1, got ", k);
  KILN_CHECK(std::isfinite(lo) && std::isfinite(hi) && lo <= hi, "linear_centroids: needs finite lo <= hi, got ", lo,
             " and ", hi);
  std::vector<float> c(static_cast<size_t>(k), lo);
  for (int64_t i = 1; i < k; ++i)
    c[i] = static_cast<float>(static_cast<double>(lo) + static_cast<double>(i) * (static_cast<double>(hi) - lo) /
                                                            static_cast<double>(k - 1));
  if (k > 1) c[k - 1] = hi;
  return c;
}

KMeans kmeans_1d(const std::vector<float>& values, int64_t k, const std::vector<uint8_t>& include, int64_t max_iter) {
  KILN_CHECK(k >= 1, "kmeans_1d: k must be at least 1, got ", k);
  KILN_CHECK(max_iter >= 1, "kmeans_1d: max_iter must be at least 1, got ", max_iter);
  KILN_CHECK(include.empty() || include.size() == values.size(), "kmeans_1d: ", include.size(), " include flags for ",
             values.size(), " values");
  const auto in = [&](size_t i) { return include.empty() || include[i] != 0; };
  float lo = std::numeric_limits<float>::infinity(), hi = -lo;
  int64_t n = 0;
  for (size_t i = 0; i < values.size(); ++i)
    if (in(i)) {
      KILN_CHECK(std::isfinite(values[i]), "kmeans_1d: value ", i, " is not finite (", values[i], ")");
      lo = std::min(lo, values[i]), hi = std::max(hi, values[i]), ++n;
    }
  KILN_CHECK(n > 0, "kmeans_1d: nothing to cluster (", values.size(), " values, none included)");
  KMeans r;
  r.centroids = linear_centroids(lo, hi, k);
  r.index.assign(values.size(), -1);
  std::vector<double> sum(static_cast<size_t>(k));
  std::vector<int64_t> count(static_cast<size_t>(k));
  std::vector<float> mid(static_cast<size_t>(k > 1 ? k - 1 : 0));
  bool first = true;
  while (r.iterations < max_iter) {
    // Assignment: the centroids stay sorted (a Voronoi cell's mean lies inside the cell,
    // an empty cluster keeps its place), so the nearest is found among the midpoints.
    // v <= mid[j] goes to the lower centroid: ties go down.
    for (int64_t j = 0; j + 1 < k; ++j)
      mid[j] = static_cast<float>(0.5 * (static_cast<double>(r.centroids[j]) + r.centroids[j + 1]));
    bool changed = first;
    for (size_t i = 0; i < values.size(); ++i) {
      if (!in(i)) continue;
      const auto j = static_cast<int32_t>(std::lower_bound(mid.begin(), mid.end(), values[i]) - mid.begin());
      if (j != r.index[i]) r.index[i] = j, changed = true;
    }
    first = false;
    if (!changed) {
      r.converged = true;
      break;
    }
    ++r.iterations;
    // Update: each centroid to the mean of its values.
    std::fill(sum.begin(), sum.end(), 0.0);
    std::fill(count.begin(), count.end(), 0);
    for (size_t i = 0; i < values.size(); ++i)
      if (r.index[i] >= 0) sum[r.index[i]] += values[i], ++count[r.index[i]];
    for (int64_t j = 0; j < k; ++j)
      if (count[j] > 0) r.centroids[j] = static_cast<float>(sum[j] / static_cast<double>(count[j]));
  }
  return r;
}

// ---------------------------------------------------------------------------------------
// SharedWeights
// ---------------------------------------------------------------------------------------

SharedWeights::SharedWeights(std::shared_ptr<nn::Module> model) : model_(std::move(model)) {
  KILN_CHECK(model_ != nullptr, "prune::SharedWeights: the model is null");
}

SharedWeights::Layer& SharedWeights::layer(const std::string& name) {
  auto it = layers_.find(name);
  KILN_CHECK(it != layers_.end(), "prune::SharedWeights: '", name, "' is not quantized");
  return it->second;
}
const SharedWeights::Layer& SharedWeights::layer(const std::string& name) const {
  auto it = layers_.find(name);
  KILN_CHECK(it != layers_.end(), "prune::SharedWeights: '", name, "' is not quantized");
  return it->second;
}

std::vector<std::string> SharedWeights::names() const {
  std::vector<std::string> n;
  for (const auto& [k, v] : layers_) n.push_back(k);
  return n;
}

namespace {
void check_kmeans_bits(const char* who, const std::string& name, int bits) {
  KILN_CHECK(bits >= 1 && bits <= 8, who, ": '", name, "': k-means takes 1 to 8 bits per weight (2 to 256 shared "
             "values), got ", bits);
}
}  // namespace

void SharedWeights::quantize(const std::string& name, int bits, const Masks* masks, int64_t max_iter) {
  check_kmeans_bits("prune::SharedWeights::quantize", name, bits);
  Tensor p = model_->get_parameter(name);
  KILN_CHECK(p.numel() > 0, "prune::SharedWeights::quantize: '", name, "' is empty (", describe(p), ")");
  std::vector<float> w = p.to_vector<float>();
  std::vector<uint8_t> include(w.size(), 1);
  if (masks && masks->has(name)) {
    std::vector<float> m = masks->get(name).to_vector<float>();
    for (size_t i = 0; i < w.size(); ++i) include[i] = m[i] != 0.0f;
  }
  const int64_t k = int64_t{1} << bits;
  KILN_CHECK(std::any_of(include.begin(), include.end(), [](uint8_t f) { return f != 0; }),
             "prune::SharedWeights::quantize: every weight of '", name, "' is pruned: nothing to cluster");
  KMeans km = kmeans_1d(w, k, include, max_iter);
  std::vector<int64_t> idx(km.index.begin(), km.index.end());
  set(name, from_vector(km.centroids), from_vector(idx, p.sizes()), bits);
}

void SharedWeights::quantize_all(int bits, const Masks* masks, int64_t max_iter) {
  auto weights = prunable_weights(*model_);
  KILN_CHECK(!weights.empty(), "prune::SharedWeights::quantize_all: the model has no Conv2d, ConvTranspose2d or "
             "Linear weight");
  check_kmeans_bits("prune::SharedWeights::quantize_all", weights.front().first, bits);
  for (auto& [name, w] : weights) quantize(name, bits, masks, max_iter);
}

void SharedWeights::set(const std::string& name, const Tensor& codebook, const Tensor& index, int bits) {
  check_kmeans_bits("prune::SharedWeights::set", name, bits);
  Tensor p = model_->get_parameter(name);
  KILN_CHECK(codebook.defined() && codebook.dim() == 1 && codebook.numel() >= 1 &&
                 codebook.numel() <= (int64_t{1} << bits),
             "prune::SharedWeights::set: '", name, "': the codebook must be 1-D with 1 to 2^", bits, " values, got ",
             codebook.defined() ? describe(codebook) : std::string("an undefined tensor"));
  KILN_CHECK(index.defined() && index.sizes() == p.sizes(), "prune::SharedWeights::set: '", name,
             "': the index must have the parameter's shape ", shape_str(p.sizes()), ", got ",
             index.defined() ? describe(index) : std::string("an undefined tensor"));
  const int64_t k = codebook.numel();
  std::vector<int64_t> idx = index.to_vector<int64_t>();
  std::vector<double> count(static_cast<size_t>(k + 1), 0.0);
  Layer l;
  for (int64_t& i : idx) {
    KILN_CHECK(i >= -1 && i < k, "prune::SharedWeights::set: '", name, "': index value ", i, " outside [-1, ", k, ")");
    if (i < 0) i = k;  // the zero slot
    else count[i] += 1, ++l.coded;
  }
  std::vector<double> cb = codebook.to_vector<double>(), has(count.size()), inv(count.size());
  for (int64_t j = 0; j < k; ++j) {
    KILN_CHECK(std::isfinite(cb[j]), "prune::SharedWeights::set: '", name, "': codebook value ", j, " is ", cb[j]);
    has[j] = count[j] > 0, inv[j] = count[j] > 0 ? 1.0 / count[j] : 0.0;
  }
  cb.push_back(0.0);  // the zero slot: has 0, never updated
  const TensorOptions opt(p.dtype(), p.device());
  l.param = p;
  l.bits = bits;
  l.k = k;
  l.flat_index = from_vector(idx).to(p.device());
  l.codebook = from_vector(cb).to(p.device(), p.dtype());
  l.has_weights = from_vector(has).to(p.device(), p.dtype());
  l.inv_count = from_vector(inv).to(p.device(), p.dtype());
  layers_[name] = l;
  write(layers_[name]);
}

void SharedWeights::write(Layer& l) {
  NoGradGuard no_grad;
  l.param.copy_(index_select(l.codebook, 0, l.flat_index).reshape(l.param.sizes()));
}

int SharedWeights::bits(const std::string& name) const { return layer(name).bits; }
Tensor SharedWeights::codebook(const std::string& name) const {
  const Layer& l = layer(name);
  return l.codebook.narrow(0, 0, l.k).clone();
}
Tensor SharedWeights::index(const std::string& name) const {
  const Layer& l = layer(name);
  std::vector<int64_t> idx = l.flat_index.to_vector<int64_t>();
  for (int64_t& i : idx)
    if (i == l.k) i = -1;  // the zero slot reads as -1
  return from_vector(idx, l.param.sizes());
}
int64_t SharedWeights::coded(const std::string& name) const { return layer(name).coded; }

namespace {
// (k + 1): the gradients of the layer's weights summed by centroid, the zero slot zeroed.
Tensor cluster_sums(const Tensor& flat_index, const Tensor& values, int64_t slots) {
  Tensor z = zeros({slots}, TensorOptions(values.dtype(), values.device()));
  return scatter_add(z, 0, flat_index, values.reshape({values.numel()}));
}
}  // namespace

Tensor SharedWeights::centroid_gradient(const std::string& name) const {
  const Layer& l = layer(name);
  Tensor g = l.param.grad();
  KILN_CHECK(g.defined(), "prune::SharedWeights::centroid_gradient: '", name, "' has no gradient (run backward first)");
  NoGradGuard no_grad;
  return cluster_sums(l.flat_index, g, l.k + 1).narrow(0, 0, l.k).clone();
}

void SharedWeights::share_gradients() {
  NoGradGuard no_grad;
  for (auto& [name, l] : layers_) {
    Tensor g = l.param.grad();
    if (!g.defined()) continue;
    Tensor cg = mul(cluster_sums(l.flat_index, g, l.k + 1), l.has_weights);  // the zero slot: 0
    g.copy_(index_select(cg, 0, l.flat_index).reshape(g.sizes()));
  }
}

void SharedWeights::apply() {
  NoGradGuard no_grad;
  for (auto& [name, l] : layers_) {
    Tensor mean = mul(cluster_sums(l.flat_index, l.param.detach(), l.k + 1), l.inv_count);
    // empty centroids (and the zero slot) keep their value
    l.codebook = add(mul(mean, l.has_weights), mul(l.codebook, sub(1.0, l.has_weights)));
    write(l);
  }
}

void SharedWeights::sgd_step(double lr) {
  KILN_CHECK(std::isfinite(lr) && lr >= 0, "prune::SharedWeights::sgd_step: the learning rate must be finite and >= 0, "
             "got ", lr);
  NoGradGuard no_grad;
  for (auto& [name, l] : layers_) {
    Tensor g = l.param.grad();
    if (!g.defined()) continue;
    Tensor cg = mul(cluster_sums(l.flat_index, g, l.k + 1), l.has_weights);
    l.codebook = sub(l.codebook, mul(cg, lr));
    write(l);
  }
}

std::map<std::string, int64_t> SharedWeights::layer_bits() const {
  std::map<std::string, int64_t> out;
  for (const auto& [name, l] : layers_) out[name] = l.bits * l.coded + 32 * l.k;
  return out;
}

std::map<std::string, Tensor> SharedWeights::state_dict() const {
  std::map<std::string, Tensor> out;
  for (const auto& [name, l] : layers_) {
    out[name + ".codebook"] = codebook(name).to(kCPU, DType::F32);
    out[name + ".index"] = index(name).to(kCPU, DType::I32);
    out[name + ".bits"] = scalar_tensor(int64_t{l.bits}, DType::I64);
  }
  return out;
}

void SharedWeights::load_state_dict(const std::map<std::string, Tensor>& state) {
  std::map<std::string, std::map<std::string, Tensor>> by_param;
  for (const auto& [key, t] : state) {
    const auto dot = key.rfind('.');
    const std::string what = dot == std::string::npos ? "" : key.substr(dot + 1);
    KILN_CHECK(what == "codebook" || what == "index" || what == "bits", "prune::SharedWeights::load_state_dict: '", key,
               "' is not a <param>.codebook, .index or .bits entry");
    by_param[key.substr(0, dot)][what] = t;
  }
  for (const auto& [name, e] : by_param)
    KILN_CHECK(e.size() == 3, "prune::SharedWeights::load_state_dict: '", name, "' lacks its codebook, index or bits");
  layers_.clear();
  for (auto& [name, e] : by_param) set(name, e["codebook"], e["index"], e["bits"].item<int>());
}

// ---------------------------------------------------------------------------------------
// INQ
// ---------------------------------------------------------------------------------------

std::vector<float> InqLevels::magnitudes() const {
  std::vector<float> m;
  for (int n = n2; n <= n1; ++n) m.push_back(std::ldexp(1.0f, n));
  return m;
}

std::vector<float> InqLevels::values() const {
  std::vector<float> m = magnitudes(), v;
  for (auto it = m.rbegin(); it != m.rend(); ++it) v.push_back(-*it);
  v.push_back(0.0f);
  v.insert(v.end(), m.begin(), m.end());
  return v;
}

InqLevels inq_levels(double max_abs, int bits) {
  KILN_CHECK(bits >= 2 && bits <= 5, "inq_levels: INQ takes 2 to 5 bits per weight (one of them codes zero), got ",
             bits);
  KILN_CHECK(std::isfinite(max_abs) && max_abs > 0, "inq_levels: the layer's max |w| must be positive and finite, got ",
             max_abs, " (an all-zero layer has no levels)");
  InqLevels l;
  l.bits = bits;
  const double t = 4.0 * max_abs / 3.0;
  int n1 = static_cast<int>(std::floor(std::log2(t)));
  while (std::ldexp(1.0, n1 + 1) <= t) ++n1;  // floor exactly, whatever log2 rounded to
  while (std::ldexp(1.0, n1) > t) --n1;
  l.n1 = n1;
  l.n2 = n1 + 1 - (1 << (bits - 1)) / 2;
  return l;
}

float inq_round(float w, const InqLevels& levels) {
  const double a = std::fabs(static_cast<double>(w));
  double alpha = 0;
  for (int n = levels.n2; n <= levels.n1; ++n) {
    const double beta = std::ldexp(1.0, n);
    if ((alpha + beta) / 2 <= a && a < 1.5 * beta) return static_cast<float>(std::copysign(beta, w));
    alpha = beta;
  }
  // below 2^n2 / 2: zero. (At or above 3/2 2^n1 only for a weight larger than the layer's
  // s; it takes the top level.)
  return a >= 1.5 * std::ldexp(1.0, levels.n1) ? static_cast<float>(std::copysign(std::ldexp(1.0, levels.n1), w)) : 0.0f;
}

std::vector<double> inq_portions() { return {0.5, 0.75, 0.875, 1.0}; }

Inq::Inq(std::shared_ptr<nn::Module> model, int bits, const Masks* masks) : model_(std::move(model)), bits_(bits) {
  KILN_CHECK(model_ != nullptr, "prune::Inq: the model is null");
  KILN_CHECK(bits >= 2 && bits <= 5, "prune::Inq: INQ takes 2 to 5 bits per weight (one of them codes zero), got ",
             bits);
  auto weights = prunable_weights(*model_);
  KILN_CHECK(!weights.empty(), "prune::Inq: the model has no Conv2d, ConvTranspose2d or Linear weight");
  for (auto& [name, p] : weights) {
    KILN_CHECK(p.numel() > 0, "prune::Inq: '", name, "' is empty (", describe(p), ")");
    Layer l;
    l.param = p;
    std::vector<float> w = p.to_vector<float>();
    l.pruned.assign(w.size(), 0);
    if (masks && masks->has(name)) {
      std::vector<float> m = masks->get(name).to_vector<float>();
      for (size_t i = 0; i < w.size(); ++i) l.pruned[i] = m[i] == 0.0f;
    }
    double s = 0;
    for (size_t i = 0; i < w.size(); ++i)
      if (!l.pruned[i]) s = std::max(s, std::fabs(static_cast<double>(w[i])));
    KILN_CHECK(s > 0 && std::isfinite(s), "prune::Inq: '", name, "' has max |w| = ", s,
               " over its unpruned weights: no power-of-two levels (all zero, all pruned or not finite)");
    l.levels = inq_levels(s, bits);
    l.frozen = l.pruned;
    l.qvalue.assign(w.size(), 0.0f);
    for (uint8_t f : l.pruned) l.unpruned += f == 0;
    layers_.emplace_back(name, std::move(l));
  }
  quantize_portion(0.0);  // freezes the pruned zeros (and writes them)
}

void Inq::quantize_portion(double portion) {
  KILN_CHECK(std::isfinite(portion) && portion >= 0.0 && portion <= 1.0, "prune::Inq::quantize_portion: the portion "
             "must be in [0, 1], got ", portion);
  KILN_CHECK(portion >= portion_, "prune::Inq::quantize_portion: portions accumulate: ", portion, " is below the last, ",
             portion_);
  for (auto& [name, l] : layers_) {
    const int64_t target = portion >= 1.0 ? l.unpruned
                                          : std::llround(portion * static_cast<double>(l.unpruned));
    std::vector<float> w = l.param.to_vector<float>();
    std::vector<size_t> free;
    for (size_t i = 0; i < w.size(); ++i)
      if (!l.frozen[i]) free.push_back(i);
    const auto more = static_cast<size_t>(std::clamp<int64_t>(target - l.frozen_unpruned, 0, free.size()));
    // the largest |w| first, ties by position
    std::stable_sort(free.begin(), free.end(), [&](size_t a, size_t b) { return std::fabs(w[a]) > std::fabs(w[b]); });
    for (size_t j = 0; j < more; ++j) {
      const size_t i = free[j];
      l.frozen[i] = 1;
      l.qvalue[i] = inq_round(w[i], l.levels);
    }
    l.frozen_unpruned += static_cast<int64_t>(more);
    std::vector<float> keep(w.size());
    for (size_t i = 0; i < w.size(); ++i) keep[i] = l.frozen[i] ? 0.0f : 1.0f;
    l.keep = from_vector(keep, l.param.sizes()).to(l.param.device(), l.param.dtype());
    l.qvalues = from_vector(l.qvalue, l.param.sizes()).to(l.param.device(), l.param.dtype());
  }
  portion_ = portion;
  apply();
}

void Inq::mask_gradients() {
  NoGradGuard no_grad;
  for (auto& [name, l] : layers_) {
    Tensor g = l.param.grad();
    if (g.defined()) mul_(g, l.keep);
  }
}

void Inq::apply() {
  NoGradGuard no_grad;
  for (auto& [name, l] : layers_) {
    mul_(l.param, l.keep);
    add_(l.param, l.qvalues);
  }
}

std::vector<std::string> Inq::names() const {
  std::vector<std::string> n;
  for (const auto& [k, v] : layers_) n.push_back(k);
  return n;
}

const InqLevels& Inq::levels(const std::string& name) const {
  for (const auto& [k, l] : layers_)
    if (k == name) return l.levels;
  throw Error(kiln::detail::str("prune::Inq: '", name, "' is not quantized"));
}

Tensor Inq::frozen(const std::string& name) const {
  for (const auto& [k, l] : layers_)
    if (k == name) {
      NoGradGuard no_grad;
      return sub(1.0, l.keep);
    }
  throw Error(kiln::detail::str("prune::Inq: '", name, "' is not quantized"));
}

double Inq::frozen_fraction() const {
  double f = 0, n = 0;
  for (const auto& [k, l] : layers_) f += static_cast<double>(l.frozen_unpruned), n += static_cast<double>(l.unpruned);
  return n > 0 ? f / n : 0.0;
}

std::map<std::string, int64_t> Inq::layer_bits() const {
  std::map<std::string, int64_t> out;
  for (const auto& [name, l] : layers_) out[name] = bits_ * l.unpruned;
  return out;
}

std::map<std::string, Tensor> Inq::state_dict() const {
  std::map<std::string, Tensor> out;
  for (const auto& [name, l] : layers_) {
    out[name + ".levels"] = from_vector(std::vector<int64_t>{bits_, l.levels.n1, l.levels.n2});
    out[name + ".frozen"] = frozen(name).to(kCPU, DType::U8);
  }
  return out;
}

// ---------------------------------------------------------------------------------------
// Sizes
// ---------------------------------------------------------------------------------------

int64_t dense_bits(const nn::Module& model) {
  int64_t n = 0;
  for (const auto& [name, p] : model.named_parameters()) n += p.numel();
  return 32 * n;
}

int64_t sparse_bits(nn::Module& model) {
  std::map<std::string, int64_t> nonzero;
  for (auto& [name, w] : prunable_weights(model)) nonzero[name] = 32 * count_nonzero(w);
  return quantized_bits(model, nonzero);
}

int64_t quantized_bits(const nn::Module& model, const std::map<std::string, int64_t>& layer_bits) {
  int64_t bits = 0;
  size_t found = 0;
  for (const auto& [name, p] : model.named_parameters()) {
    auto it = layer_bits.find(name);
    if (it != layer_bits.end()) bits += it->second, ++found;
    else bits += 32 * p.numel();
  }
  KILN_CHECK(found == layer_bits.size(), "prune::quantized_bits: ", layer_bits.size() - found,
             " of the layers given are not parameters of the model");
  return bits;
}

}  // namespace kiln::prune
