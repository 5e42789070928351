// The GPT model (models/zoo/gpt.h): nanoGPT's parameter names and count, the tied head,
// GPT-2's initialisation, shapes, a training step's gradients, the KV cache giving the same
// logits as the full sequence, weight-decay groups, and the errors. Its agreement with
// PyTorch is the ctest gpt_torch_roundtrip (tests/interop/gpt_torch.py).
#include "test_util.h"

namespace kiln {
namespace {

models::GPTConfig small() {
  models::GPTConfig c;
  c.n_layer = 2;
  c.n_head = 2;
  c.n_embd = 16;
  c.block_size = 12;
  c.vocab_size = 11;
  return c;
}

TEST_CASE("GPT: names, parameter count, tied head, initialisation", "[models][gpt]") {
  Generator gen(1);
  models::GPT m(small(), gen);
  const auto state = m.state_dict();
  for (const char* key : {"transformer.wte.weight", "transformer.wpe.weight", "transformer.h.0.ln_1.weight",
                          "transformer.h.0.ln_1.bias", "transformer.h.0.attn.c_attn.weight",
                          "transformer.h.0.attn.c_attn.bias", "transformer.h.0.attn.c_proj.weight",
                          "transformer.h.1.mlp.c_fc.weight", "transformer.h.1.mlp.c_proj.bias",
                          "transformer.ln_f.weight", "lm_head.weight"}) {
    INFO(key);
    CHECK(state.count(key) == 1);
  }
  CHECK(state.at("lm_head.weight").data_ptr() == state.at("transformer.wte.weight").data_ptr());
  // C = 16, V = 11, block 12, 2 layers: embeddings + per layer (2 LN + attn + mlp) + ln_f.
  const int64_t C = 16, per_layer = 2 * 2 * C + (3 * C * C + 3 * C) + (C * C + C) + (4 * C * C + 4 * C) + (4 * C * C + C);
  CHECK(m.num_parameters() == 11 * C + 12 * C + 2 * per_layer + 2 * C);
  // GPT-2's init: N(0, 0.02), residual projections N(0, 0.02 / sqrt(2 n_layer)), biases 0, LN 1.
  CHECK(std(m.transformer->wte->weight).item<double>() == Approx(0.02).epsilon(0.2));
  CHECK(sum(abs(m.get_parameter("transformer.h.0.attn.c_attn.bias"))).item<double>() == 0.0);
  CHECK(sum(m.get_parameter("transformer.h.0.ln_1.weight")).item<double>() == Approx(16.0));
  models::GPTConfig big = small();
  big.n_embd = 64;
  big.n_layer = 8;
  models::GPT m2(big, gen);
  CHECK(std(m2.get_parameter("transformer.h.3.mlp.c_proj.weight")).item<double>() ==
        Approx(0.02 / std::sqrt(16.0)).epsilon(0.1));
  // Decay groups: matrices decay, the rest (embeddings, biases, LN) do not; each once.
  const auto d = m.decay_parameters(), nd = m.no_decay_parameters();
  CHECK(d.size() == 2 * 4);
  CHECK(d.size() + nd.size() == m.parameters().size());
}

TEST_CASE("GPT: forward, loss and gradients", "[models][gpt]") {
  for (const char* attention : {"softmax", "performer", "rfa"}) {
  INFO("attention " << attention);
  Generator gen(2);
  models::GPTConfig cfg = small();
  cfg.attention = attention;
  models::GPT m(cfg, gen);
  Tensor idx = randint(0, 11, {3, 12}, DType::I64, &gen), tgt = randint(0, 11, {3, 12}, DType::I64, &gen);
  Tensor logits = m(idx);
  CHECK(logits.sizes() == Shape{3, 12, 11});
  Tensor loss = cross_entropy(logits.reshape({-1, 11}), tgt.reshape({-1}));
  CHECK(loss.item<double>() == Approx(std::log(11.0)).epsilon(0.05));  // small init: near uniform
  loss.backward();
  for (const auto& [name, p] : m.named_parameters()) {
    INFO(name);
    REQUIRE(p.grad().defined());
    CHECK(std::isfinite(sum(abs(p.grad())).item<double>()));
  }
  if (cfg.attention != "softmax") {  // the random features: a buffer in the state dict, redrawn on request
    const auto sd = m.state_dict();
    REQUIRE(sd.count("transformer.h.0.attn.features"));
    const Tensor before = sd.at("transformer.h.0.attn.features").clone();
    Generator g2(77);
    m.redraw_features(g2);
    CHECK_FALSE(test::equal(m.state_dict().at("transformer.h.0.attn.features"), before));
  }
  }
}

TEST_CASE("GPT: the KV cache gives the full sequence's logits", "[models][gpt]") {
  for (const char* attention : {"softmax", "performer", "rfa"}) {
  INFO("attention " << attention);
  Generator gen(3);
  models::GPTConfig cfg = small();
  cfg.attention = attention;
  models::GPT m(cfg, gen);
  m.eval();
  NoGradGuard no_grad;
  Tensor idx = randint(0, 11, {2, 10}, DType::I64, &gen);
  Tensor full = m(idx);
  models::KVCache cache;
  Tensor first = m.forward(idx.narrow(1, 0, 6), &cache);  // the prompt
  CHECK(cache.length() == 6);
  CHECK_CLOSE_TOL(first, full.narrow(1, 0, 6), 1e-5, 1e-5);
  for (int64_t t = 6; t < 10; ++t) {  // then one token at a time
    Tensor step = m.forward(idx.narrow(1, t, 1), &cache);
    CHECK_CLOSE_TOL(step, full.narrow(1, t, 1), 1e-5, 1e-5);
  }
  CHECK(cache.length() == 10);
  CHECK_KILN_ERROR(m.forward(randint(0, 11, {2, 3}, DType::I64, &gen), &cache), "exceeds block_size");
  }
}

TEST_CASE("GPT: generate continues the prompt from the KV cache", "[models][gpt]") {
  Generator gen(4);
  models::GPT m(small(), gen);  // block_size 12
  const std::vector<int64_t> prompt = {1, 2, 3};
  models::GenerateOptions o;
  o.max_new_tokens = 6;
  o.temperature = 0;  // greedy: each token the argmax of the full sequence's last logits
  Generator s(1);
  const std::vector<int64_t> out = models::generate(m, prompt, o, s);
  REQUIRE(out.size() == 9);
  CHECK(std::vector<int64_t>(out.begin(), out.begin() + 3) == prompt);
  {
    NoGradGuard no_grad;
    m.eval();
    for (size_t t = 3; t < out.size(); ++t) {
      Tensor logits = m(from_vector<int64_t>(std::vector<int64_t>(out.begin(), out.begin() + t)).reshape({1, -1}));
      CHECK(argmax(logits.narrow(1, static_cast<int64_t>(t) - 1, 1).reshape({-1})).item<int64_t>() == out[t]);
    }
    m.train();
  }
  CHECK(m.is_training());  // generate restores the mode
  o.max_new_tokens = 40;   // past the context: the sliding window
  o.temperature = 1.0;
  o.top_k = 3;
  Generator s1(9), s2(9);
  const std::vector<int64_t> a = models::generate(m, prompt, o, s1), b = models::generate(m, prompt, o, s2);
  CHECK(a.size() == 43);
  CHECK(a == b);  // the same generator state, the same text
  for (int64_t t : a) CHECK((t >= 0 && t < 11));
  CHECK_KILN_ERROR(models::generate(m, {}, o, s1), "prompt is empty");
  CHECK_KILN_ERROR(models::generate(m, {11}, o, s1), "outside the vocabulary");
  // A vocabulary padded beyond the tokenizer's: only ids below vocab_limit are drawn.
  o.top_k = 0;
  o.vocab_limit = 4;
  const std::vector<int64_t> limited = models::generate(m, prompt, o, s1);
  REQUIRE(limited.size() == 43);
  for (size_t i = prompt.size(); i < limited.size(); ++i) CHECK((limited[i] >= 0 && limited[i] < 4));
  o.vocab_limit = 12;
  CHECK_KILN_ERROR(models::generate(m, prompt, o, s1), "vocab_limit must be in [0, 11]");
  o.vocab_limit = 0;
  o.temperature = -1;
  CHECK_KILN_ERROR(models::generate(m, prompt, o, s1), "temperature");
}

TEST_CASE("GPT: a Hugging Face GPT-2 state dict loads with its Conv1D weights transposed", "[models][gpt]") {
  Generator gen(5);
  models::GPT a(small(), gen), b(small(), gen);
  // a's weights in HF's GPT2Model layout: no "transformer." prefix, Conv1D (in, out)
  // weights, causal-mask buffers, no lm_head.
  std::map<std::string, Tensor> hf;
  for (const auto& [k, t] : a.state_dict()) {
    if (k == "lm_head.weight") continue;
    std::string name = k.substr(std::string("transformer.").size());
    const bool conv1d = name.find("c_attn.weight") != std::string::npos || name.find("c_proj.weight") != std::string::npos ||
                        name.find("c_fc.weight") != std::string::npos;
    hf[name] = conv1d ? t.transpose(0, 1).contiguous() : t.clone();
  }
  hf["h.0.attn.bias"] = ones({1, 1, 12, 12});
  hf["h.1.attn.masked_bias"] = full({}, -1e4);
  models::load_hf_gpt2(b, hf);
  a.eval();
  b.eval();
  Tensor idx = randint(0, 11, {2, 12}, DType::I64, &gen);
  CHECK(test::equal(a(idx), b(idx)));
  hf.erase("h.1.mlp.c_fc.weight");
  CHECK_KILN_ERROR(models::load_hf_gpt2(b, hf), "no 'transformer.h.1.mlp.c_fc.weight'");
  hf["h.1.mlp.c_fc.weight"] = zeros({16, 16});
  CHECK_KILN_ERROR(models::load_hf_gpt2(b, hf), "a different configuration");
}

TEST_CASE("GPT: bad configurations and inputs", "[models][gpt]") {
  Generator gen(4);
  models::GPTConfig c = small();
  c.n_head = 3;
  CHECK_KILN_ERROR(models::GPT(c, gen), "divisible by n_head");
  c = small();
  c.dropout = 1.0;
  CHECK_KILN_ERROR(models::GPT(c, gen), "dropout");
  models::GPT m(small(), gen);
  CHECK_KILN_ERROR(m(zeros({2, 13}, DType::I64)), "exceeds block_size 12");
  CHECK_KILN_ERROR(m(full({1, 4}, 11, DType::I64)), "outside the vocabulary");
  CHECK_KILN_ERROR(m(zeros({4}, DType::I64)), "(B, T)");
}

}  // namespace
}  // namespace kiln
