// The GPT-2-style model of models/zoo/gpt.h.
#include <kiln/models/zoo/gpt.h>

#include <algorithm>
#include <cmath>
#include <set>

#include <kiln/core/autograd.h>
#include <kiln/models/nn/init.h>
#include <kiln/ops/attention.h>
#include <kiln/ops/binary.h>
#include <kiln/ops/checks.h>
#include <kiln/ops/dropout.h>
#include <kiln/ops/index.h>
#include <kiln/ops/linear_attention.h>
#include <kiln/ops/matmul.h>
#include <kiln/ops/reduce.h>
#include <kiln/ops/unary.h>

namespace kiln::models {
namespace {

void check_config(const GPTConfig& c) {
  KILN_CHECK(c.n_layer >= 1 && c.n_head >= 1 && c.n_embd >= 1 && c.block_size >= 1 && c.vocab_size >= 1,
             "GPT: n_layer, n_head, n_embd, block_size and vocab_size must be positive, got ", c.n_layer, ", ",
             c.n_head, ", ", c.n_embd, ", ", c.block_size, ", ", c.vocab_size);
  KILN_CHECK(c.n_embd % c.n_head == 0, "GPT: n_embd (", c.n_embd, ") must be divisible by n_head (", c.n_head, ")");
  KILN_CHECK(c.dropout >= 0.0 && c.dropout < 1.0, "GPT: dropout must lie in [0, 1), got ", c.dropout);
  KILN_CHECK(c.attention == "softmax" || c.attention == "performer" || c.attention == "rfa",
             "GPT: attention must be softmax, performer or rfa, got '", c.attention, "'");
  KILN_CHECK(c.n_features >= 1, "GPT: n_features must be positive, got ", c.n_features);
  KILN_CHECK(c.rfa_sigma > 0 && std::isfinite(c.rfa_sigma), "GPT: rfa_sigma must be positive, got ", c.rfa_sigma);
}

}  // namespace

CausalSelfAttention::CausalSelfAttention(const GPTConfig& c) : nn::Module("CausalSelfAttention"), config(c) {
  c_attn = register_module("c_attn", std::make_shared<nn::Linear>(c.n_embd, 3 * c.n_embd, c.bias));
  c_proj = register_module("c_proj", std::make_shared<nn::Linear>(c.n_embd, c.n_embd, c.bias));
  if (c.attention != "softmax") {
    Generator g(0);  // a valid draw, so a layer built on its own works; GPT's constructor redraws from its generator
    features = register_buffer("features", gaussian_features(c.n_features, c.n_embd / c.n_head, g));
  }
}

void CausalSelfAttention::redraw_features(Generator& gen) {
  if (!features.defined()) return;
  NoGradGuard no_grad;
  const Tensor f = gaussian_features(config.n_features, config.n_embd / config.n_head, gen);
  features.copy_(f.to(features.device()));  // in place: the buffer keeps its identity (device, name)
}

Tensor CausalSelfAttention::forward(const Tensor& x, KVCache* cache, int64_t layer) {
  const int64_t B = x.size(0), T = x.size(1), C = config.n_embd, H = config.n_head, hd = C / H;
  const std::vector<Tensor> qkv = split((*c_attn)(x), C, 2);  // 3 x (B, T, C)
  auto heads = [&](const Tensor& t) { return t.reshape({B, T, H, hd}).transpose(1, 2); };  // (B, H, T, hd)
  Tensor q = heads(qkv[0]), k = heads(qkv[1]), v = heads(qkv[2]);
  if (cache != nullptr) {
    if (static_cast<int64_t>(cache->k.size()) <= layer) {
      cache->k.resize(static_cast<size_t>(layer + 1));
      cache->v.resize(static_cast<size_t>(layer + 1));
    }
    Tensor& ck = cache->k[static_cast<size_t>(layer)];
    Tensor& cv = cache->v[static_cast<size_t>(layer)];
    if (ck.defined()) {
      k = cat({ck, k}, 2);
      v = cat({cv, v}, 2);
    }
    ck = k.detach();
    cv = v.detach();
  }
  const double p = is_training() ? config.dropout : 0.0;
  Tensor y;  // (B, H, T, hd)
  if (config.attention == "performer")
    y = performer_attention(q, k, v, features, /*causal=*/true);
  else if (config.attention == "rfa")
    y = rfa_attention(q, k, v, features, /*causal=*/true, config.rfa_sigma);
  else
    y = scaled_dot_product_attention(q, k, v, /*causal=*/true, p);
  y = y.transpose(1, 2).reshape({B, T, C});
  y = (*c_proj)(y);
  return p > 0 ? dropout(y, p, true) : y;
}

GPTMLP::GPTMLP(const GPTConfig& c) : nn::Module("MLP"), config(c) {
  c_fc = register_module("c_fc", std::make_shared<nn::Linear>(c.n_embd, 4 * c.n_embd, c.bias));
  c_fc->activation = LinearActivation::GeluTanh;  // GELU(tanh) in c_fc's op: one cuBLASLt epilogue on CUDA
  c_proj = register_module("c_proj", std::make_shared<nn::Linear>(4 * c.n_embd, c.n_embd, c.bias));
}

Tensor GPTMLP::forward(const Tensor& x) {
  Tensor y = (*c_proj)((*c_fc)(x));  // c_fc applies the GELU
  const double p = is_training() ? config.dropout : 0.0;
  return p > 0 ? dropout(y, p, true) : y;
}

GPTBlock::GPTBlock(const GPTConfig& c) : nn::Module("Block"), config(c) {
  ln_1 = register_module("ln_1", std::make_shared<nn::LayerNorm>(Shape{c.n_embd}, 1e-5, true, c.bias));
  attn = register_module("attn", std::make_shared<CausalSelfAttention>(c));
  ln_2 = register_module("ln_2", std::make_shared<nn::LayerNorm>(Shape{c.n_embd}, 1e-5, true, c.bias));
  mlp = register_module("mlp", std::make_shared<GPTMLP>(c));
}

Tensor GPTBlock::forward(const Tensor& x, KVCache* cache, int64_t layer) {
  Tensor y = add(x, attn->forward((*ln_1)(x), cache, layer));
  return add(y, (*mlp)((*ln_2)(y)));
}

GPTTrunk::GPTTrunk(const GPTConfig& c) : nn::Module("Transformer") {
  wte = register_module("wte", std::make_shared<nn::Embedding>(c.vocab_size, c.n_embd));
  wpe = register_module("wpe", std::make_shared<nn::Embedding>(c.block_size, c.n_embd));
  h = register_module("h", std::make_shared<nn::ModuleList>());
  for (int64_t i = 0; i < c.n_layer; ++i) h->push_back(std::make_shared<GPTBlock>(c));
  ln_f = register_module("ln_f", std::make_shared<nn::LayerNorm>(Shape{c.n_embd}, 1e-5, true, c.bias));
}

TiedHead::TiedHead(const Tensor& embedding) : nn::Module("Linear") {
  weight = register_parameter("weight", embedding);
}

Tensor TiedHead::forward(const Tensor& x) { return matmul(x, weight.transpose(0, 1)); }

GPT::GPT(const GPTConfig& c, Generator& gen) : nn::Module("GPT"), config((check_config(c), c)) {
  transformer = register_module("transformer", std::make_shared<GPTTrunk>(c));
  lm_head = register_module("lm_head", std::make_shared<TiedHead>(transformer->wte->weight));
  // GPT-2's initialisation, in registration order.
  const double std_proj = 0.02 / std::sqrt(2.0 * static_cast<double>(c.n_layer));
  for (const auto& [name, p] : named_parameters()) {
    const bool is_bias = name.size() >= 5 && name.compare(name.size() - 5, 5, ".bias") == 0;
    const bool is_ln = name.find(".ln_") != std::string::npos || name.find("ln_f.") != std::string::npos;
    if (is_ln) {
      if (is_bias) nn::init::zeros_(p);
      else nn::init::ones_(p);
    } else if (is_bias) {
      nn::init::zeros_(p);
    } else if (name.find("c_proj.weight") != std::string::npos) {
      nn::init::normal_(p, 0.0, std_proj, &gen);
    } else {
      nn::init::normal_(p, 0.0, 0.02, &gen);
    }
  }
  redraw_features(gen);  // random features (linear attention) after the weights: softmax's init is unchanged
}

Tensor GPT::forward(const Tensor& idx, KVCache* cache) {
  KILN_CHECK(idx.defined() && idx.dim() == 2 && (idx.dtype() == DType::I64 || idx.dtype() == DType::I32),
             "GPT: expects token ids of shape (B, T), i32 or i64, got ", describe(idx));
  const int64_t T = idx.size(1), past = cache != nullptr ? cache->length() : 0;
  KILN_CHECK(T >= 1, "GPT: expects at least one token, got ", describe(idx));
  KILN_CHECK(past + T <= config.block_size, "GPT: a sequence of ", past + T, " tokens",
             past > 0 ? " (with the cache)" : "", " exceeds block_size ", config.block_size);
  // The shared index check: on the host for CPU ids, in the embedding kernel on a GPU (no
  // hidden sync); the embedding then does not check the same ids again.
  detail::check_index_range("GPT: token ids outside the vocabulary", idx, config.vocab_size);
  const Tensor pos = arange(past, past + T, 1, TensorOptions(DType::I64, idx.device()));
  Tensor x;
  {
    detail::IndicesChecked checked;
    x = add((*transformer->wte)(idx), (*transformer->wpe)(pos));  // (B, T, C)
  }
  if (is_training() && config.dropout > 0) x = dropout(x, config.dropout, true);
  for (int64_t i = 0; i < config.n_layer; ++i) x = transformer->h->at<GPTBlock>(i)->forward(x, cache, i);
  return (*lm_head)((*transformer->ln_f)(x));
}

void GPT::redraw_features(Generator& gen) {
  for (int64_t i = 0; i < config.n_layer; ++i) transformer->h->at<GPTBlock>(i)->attn->redraw_features(gen);
}

std::vector<Tensor> GPT::decay_parameters() const {
  std::vector<Tensor> out;
  for (const auto& [name, p] : named_parameters())
    if (p.dim() >= 2 && name.find("wte") == std::string::npos && name.find("wpe") == std::string::npos &&
        name.find("lm_head") == std::string::npos)
      out.push_back(p);
  return out;
}

std::vector<Tensor> GPT::no_decay_parameters() const {
  const std::vector<Tensor> decay = decay_parameters();
  std::vector<Tensor> out;
  for (const Tensor& p : parameters()) {
    bool in_decay = false;
    for (const Tensor& d : decay) in_decay |= d.data_ptr() == p.data_ptr();
    if (!in_decay) out.push_back(p);
  }
  return out;
}

void load_hf_gpt2(GPT& model, const std::map<std::string, Tensor>& state) {
  auto ends_with = [](const std::string& k, const std::string& suffix) {
    return k.size() >= suffix.size() && k.compare(k.size() - suffix.size(), suffix.size(), suffix) == 0;
  };
  std::map<std::string, Tensor> converted;
  for (const auto& [key, t] : state) {
    if (ends_with(key, ".attn.bias") || ends_with(key, ".attn.masked_bias")) continue;  // causal-mask buffers
    std::string k = key.rfind("transformer.", 0) == 0 || key.rfind("lm_head.", 0) == 0 ? key : "transformer." + key;
    const bool conv1d = ends_with(k, "attn.c_attn.weight") || ends_with(k, "attn.c_proj.weight") ||
                        ends_with(k, "mlp.c_fc.weight") || ends_with(k, "mlp.c_proj.weight");
    KILN_CHECK(!conv1d || t.dim() == 2, "load_hf_gpt2: ", key, " is ", describe(t), ", not a 2-D Conv1D weight");
    converted[k] = conv1d ? t.transpose(0, 1).contiguous() : t;
  }
  if (!converted.count("lm_head.weight") && converted.count("transformer.wte.weight"))
    converted["lm_head.weight"] = converted["transformer.wte.weight"];  // tied
  const auto own = model.state_dict();
  for (const auto& [k, t] : own) {
    auto it = converted.find(k);
    KILN_CHECK(it != converted.end(), "load_hf_gpt2: the state has no '", k, "' (nor its HF name without the "
               "'transformer.' prefix)");
    KILN_CHECK(it->second.sizes() == t.sizes(), "load_hf_gpt2: '", k, "' is ", describe(it->second), " (after the Conv1D ",
               "transpose), the model's is ", describe(t), ": a different configuration?");
  }
  std::map<std::string, Tensor> wanted;
  for (const auto& [k, t] : own) wanted[k] = converted.at(k).to(t.dtype());
  model.load_state_dict(wanted, /*strict=*/true);
}

// ---- generation ------------------------------------------------------------------------

namespace {

// The next token from one row of logits (host values): greedy at temperature 0, else a
// draw from the tempered softmax over the top_k largest.
int64_t sample_token(std::vector<double> logits, const GenerateOptions& o, Generator& gen) {
  const int64_t V = static_cast<int64_t>(logits.size());
  if (o.temperature == 0.0)
    return static_cast<int64_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  std::vector<int64_t> order(static_cast<size_t>(V));
  for (int64_t i = 0; i < V; ++i) order[static_cast<size_t>(i)] = i;
  const int64_t k = o.top_k > 0 ? std::min(o.top_k, V) : V;
  std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int64_t a, int64_t b) {
    return logits[static_cast<size_t>(a)] > logits[static_cast<size_t>(b)] ||
           (logits[static_cast<size_t>(a)] == logits[static_cast<size_t>(b)] && a < b);
  });
  const double top = logits[static_cast<size_t>(order[0])];
  std::vector<double> w(static_cast<size_t>(k));
  double total = 0;
  for (int64_t i = 0; i < k; ++i)
    total += w[static_cast<size_t>(i)] =
        std::exp((logits[static_cast<size_t>(order[static_cast<size_t>(i)])] - top) / o.temperature);
  const double u = rand({1}, TensorOptions(DType::F64), &gen).item<double>() * total;
  double acc = 0;
  for (int64_t i = 0; i < k; ++i) {
    acc += w[static_cast<size_t>(i)];
    if (u < acc) return order[static_cast<size_t>(i)];
  }
  return order[static_cast<size_t>(k - 1)];
}

}  // namespace

std::vector<int64_t> generate(GPT& model, const std::vector<int64_t>& prompt, const GenerateOptions& o,
                              Generator& gen) {
  KILN_CHECK(!prompt.empty(), "generate: the prompt is empty (give at least one token)");
  KILN_CHECK(o.temperature >= 0.0 && std::isfinite(o.temperature), "generate: temperature must be >= 0, got ",
             o.temperature);
  KILN_CHECK(o.top_k >= 0, "generate: top_k must be >= 0, got ", o.top_k);
  KILN_CHECK(o.max_new_tokens >= 0, "generate: max_new_tokens must be >= 0, got ", o.max_new_tokens);
  KILN_CHECK(o.vocab_limit >= 0 && o.vocab_limit <= model.config.vocab_size, "generate: vocab_limit must be in [0, ",
             model.config.vocab_size, "], got ", o.vocab_limit);
  const int64_t V = o.vocab_limit > 0 ? o.vocab_limit : model.config.vocab_size, block = model.config.block_size;
  for (size_t i = 0; i < prompt.size(); ++i)
    KILN_CHECK(prompt[i] >= 0 && prompt[i] < V, "generate: prompt token ", i, " is ", prompt[i],
               ", outside the vocabulary [0, ", V, ")");
  const bool was_training = model.is_training();
  model.eval();
  NoGradGuard no_grad;
  const Device device = model.transformer->wte->weight.device();
  std::vector<int64_t> out = prompt;
  KVCache cache;
  // Encodes `ids` (after the cache) and returns the last position's logits on the host.
  auto step = [&](const std::vector<int64_t>& ids) {
    const int64_t T = static_cast<int64_t>(ids.size());
    Tensor idx = from_vector<int64_t>(ids).reshape({1, T}).to(device);
    Tensor logits = model.forward(idx, &cache);  // (1, T, V)
    return cast(logits.narrow(1, T - 1, 1).narrow(2, 0, V), DType::F64).contiguous().to(kCPU).to_vector<double>();
  };
  // The prompt's newest block_size tokens start the cache.
  const int64_t start = std::max<int64_t>(0, static_cast<int64_t>(out.size()) - block);
  std::vector<double> logits = step(std::vector<int64_t>(out.begin() + start, out.end()));
  for (int64_t n = 0; n < o.max_new_tokens; ++n) {
    const int64_t next = sample_token(std::move(logits), o, gen);
    out.push_back(next);
    if (n + 1 == o.max_new_tokens) break;
    if (cache.length() + 1 > block) {  // full: re-encode the newest half block
      cache.clear();
      const int64_t keep = std::max<int64_t>(1, block / 2);
      logits = step(std::vector<int64_t>(out.end() - std::min<int64_t>(keep, static_cast<int64_t>(out.size())),
                                         out.end()));
    } else {
      logits = step({next});
    }
  }
  if (was_training) model.train();
  return out;
}

}  // namespace kiln::models
