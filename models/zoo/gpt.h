// A GPT-2-style decoder-only transformer (Radford et al. 2019), in the layout and with the
// parameter names of nanoGPT, so its state dicts load both ways with nanoGPT's and with a
// torch.nn GPT written the same way (tests/interop/gpt_torch.py checks logits and
// gradients in both directions):
//
//   transformer.wte (vocab, C), transformer.wpe (block_size, C)   token + position embeddings
//   transformer.h.<i>: ln_1, attn.c_attn (C -> 3C), attn.c_proj (C -> C),
//                      ln_2, mlp.c_fc (C -> 4C), mlp.c_proj (4C -> C)      pre-LN blocks
//   transformer.ln_f, lm_head (C -> vocab, no bias, tied to wte: one tensor, two names)
//
// Attention is the fused causal scaled_dot_product_attention (ops/attention.h); the MLP's
// activation is GELU with the tanh approximation. GPT-2's initialisation: Linear and
// Embedding weights N(0, 0.02), biases 0, and the residual projections (attn.c_proj,
// mlp.c_proj) N(0, 0.02 / sqrt(2 n_layer)). Dropout (embeddings, attention, residual)
// applies in training mode when config.dropout > 0.
//
// Generation keeps a KVCache: each layer's keys and values so far; forward() with a
// cache appends the new positions and attends over all of them (the causal mask is
// bottom-right aligned, so a prompt and then single tokens both work).
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <memory>
#include <vector>

#include <kiln/core/generator.h>
#include <kiln/core/tensor.h>
#include <kiln/models/nn/containers.h>
#include <kiln/models/nn/embedding.h>
#include <kiln/models/nn/linear.h>
#include <kiln/models/nn/module.h>
#include <kiln/models/nn/norm.h>

namespace kiln::models {

struct GPTConfig {
  int64_t n_layer = 4, n_head = 4, n_embd = 128;
  int64_t block_size = 64;  // the longest context
  int64_t vocab_size = 65;
  double dropout = 0.0;
  bool bias = true;  // in the Linear and LayerNorm layers
  // "softmax": exact causal attention (the fused op); "performer": FAVOR+ with n_features
  // positive orthogonal random features; "rfa": Random Feature Attention with 2 n_features
  // trigonometric features at width rfa_sigma (ops/linear_attention.h). The random features
  // are a buffer of each attention layer ("attn.features", saved with the weights),
  // redrawn by GPT::redraw_features.
  std::string attention = "softmax";
  int64_t n_features = 64;
  double rfa_sigma = 0.5;
};

// Keys and values of every layer for the positions generated so far.
struct KVCache {
  std::vector<Tensor> k, v;  // per layer, (B, n_head, T, head_dim)
  int64_t length() const { return k.empty() || !k[0].defined() ? 0 : k[0].size(2); }
  void clear() {
    k.clear();
    v.clear();
  }
};

class CausalSelfAttention : public nn::Module {
 public:
  explicit CausalSelfAttention(const GPTConfig& c);
  // x (B, T, C); with a cache, layer `layer`'s keys and values are extended by these T.
  Tensor forward(const Tensor& x, KVCache* cache, int64_t layer);
  Tensor forward(const Tensor& x) override { return forward(x, nullptr, 0); }

  // New random features (attention "performer" or "rfa"; nothing for "softmax").
  void redraw_features(Generator& gen);

  const GPTConfig config;
  std::shared_ptr<nn::Linear> c_attn, c_proj;
  Tensor features;  // (n_features, head_dim), the buffer "features"; undefined for softmax
};

class GPTMLP : public nn::Module {
 public:
  explicit GPTMLP(const GPTConfig& c);
  Tensor forward(const Tensor& x) override;

  const GPTConfig config;
  std::shared_ptr<nn::Linear> c_fc, c_proj;
};

class GPTBlock : public nn::Module {
 public:
  explicit GPTBlock(const GPTConfig& c);
  Tensor forward(const Tensor& x, KVCache* cache, int64_t layer);
  Tensor forward(const Tensor& x) override { return forward(x, nullptr, 0); }

  const GPTConfig config;
  std::shared_ptr<nn::LayerNorm> ln_1, ln_2;
  std::shared_ptr<CausalSelfAttention> attn;
  std::shared_ptr<GPTMLP> mlp;
};

// The `transformer` child: wte, wpe, h, ln_f.
class GPTTrunk : public nn::Module {
 public:
  explicit GPTTrunk(const GPTConfig& c);

  std::shared_ptr<nn::Embedding> wte, wpe;
  std::shared_ptr<nn::ModuleList> h;
  std::shared_ptr<nn::LayerNorm> ln_f;
};

// lm_head: logits = x wte^T, its weight the token embedding itself (tied).
class TiedHead : public nn::Module {
 public:
  explicit TiedHead(const Tensor& embedding);
  Tensor forward(const Tensor& x) override;
  Tensor weight;
};

class GPT : public nn::Module {
 public:
  // Builds and initialises the model from `gen` (GPT-2's rule above). Throws kiln::Error
  // for a non-positive size, n_embd not divisible by n_head, or dropout outside [0, 1).
  GPT(const GPTConfig& config, Generator& gen);

  // idx (B, T) i64 token ids -> logits (B, T, vocab). With a cache the positions continue
  // after cache->length(). Throws kiln::Error when the sequence (with the cache) is
  // longer than block_size or an id lies outside the vocabulary.
  Tensor forward(const Tensor& idx, KVCache* cache);
  Tensor forward(const Tensor& idx) override { return forward(idx, nullptr); }

  // Parameters by weight decay, as GPT-2 / nanoGPT train: 2-D matrices decay; biases,
  // LayerNorm weights and the embeddings do not. Each parameter appears once (the tied
  // embedding under "no decay").
  std::vector<Tensor> decay_parameters() const;
  // Draws new random features for every attention layer (Performer's feature redrawing);
  // a no-op for softmax attention.
  void redraw_features(Generator& gen);
  std::vector<Tensor> no_decay_parameters() const;

  const GPTConfig config;
  std::shared_ptr<GPTTrunk> transformer;
  std::shared_ptr<TiedHead> lm_head;
};

// Loads a Hugging Face GPT-2 state dict (GPT2Model's or GPT2LMHeadModel's safetensors, e.g.
// the hub's gpt2/model.safetensors read with load_safetensors) into `model`: keys with or
// without the "transformer." prefix, HF's Conv1D weights (attn.c_attn, attn.c_proj,
// mlp.c_fc, mlp.c_proj, stored (in, out)) transposed into Linear's (out, in), the
// causal-mask buffers (".attn.bias", ".attn.masked_bias") skipped, lm_head optional (tied).
// Every parameter of the model must be found with the right shape, or kiln::Error names
// the key; nothing is copied then. nanoGPT / kiln state dicts load with load_state_dict.
void load_hf_gpt2(GPT& model, const std::map<std::string, Tensor>& state);

// Sampling text from a GPT: each new token is drawn from softmax(logits / temperature)
// restricted to the top_k most likely tokens (top_k 0: all; temperature 0: the most likely
// token, greedily). The prompt is encoded once into a KVCache and each new token then costs
// one position. When the context reaches block_size, the newest block_size / 2 tokens are
// encoded again into a fresh cache and generation goes on from them (a sliding window
// that re-encodes every block_size / 2 tokens instead of at every token, as a model with
// learned absolute positions needs). Runs in eval mode under no-grad and restores the
// model's training mode. Throws kiln::Error for an empty prompt, a token outside the
// vocabulary, a negative temperature or top_k.
struct GenerateOptions {
  int64_t max_new_tokens = 200;
  double temperature = 1.0;
  int64_t top_k = 0;
  // Draw only ids below this (0: the model's whole vocabulary): for a model whose vocabulary
  // was padded beyond its tokenizer's (kiln_train_gpt --vocab-size), whose extra rows are
  // never a target and never decode.
  int64_t vocab_limit = 0;
};
std::vector<int64_t> generate(GPT& model, const std::vector<int64_t>& prompt, const GenerateOptions& options,
                              Generator& gen);

}  // namespace kiln::models
