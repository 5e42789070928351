// kiln_generate: text from a kiln_train_gpt checkpoint. The checkpoint's metadata holds the
// model's shape and the tokenizer, so nothing else is needed:
//
//   kiln_generate --checkpoint runs/train_gpt-.../checkpoints --prompt "In the beginning" --max-tokens 300
//
// --checkpoint is a checkpoint file or a directory (a run directory or its checkpoints/:
// the newest checkpoint in it). The prompt is encoded with the checkpoint's tokenizer (a
// character it does not know is an error naming it), encoded once into the KV cache, and
// each new token costs one position (models/zoo/gpt.h: generate). The prompt and the
// generated text are printed on stdout.
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <string>

#include <kiln/kiln.h>
#include <kiln/models/run/checkpoint.h>

#include "cli.h"

namespace {

using namespace kiln;
constexpr const char* kProg = "kiln_generate";

std::string find_checkpoint(const std::string& where) {
  namespace fs = std::filesystem;
  std::error_code ec;
  KILN_CHECK(fs::exists(where, ec), "--checkpoint ", where, " does not exist");
  if (!fs::is_directory(where, ec)) return where;
  for (const fs::path& dir : {fs::path(where) / "checkpoints", fs::path(where)}) {
    if (!fs::is_directory(dir, ec)) continue;
    if (auto p = run::Checkpointer(dir.string()).latest()) return *p;
  }
  throw Error(std::string("no checkpoint in ") + where + " (nor in its checkpoints/)");
}

int64_t meta_int(const std::map<std::string, std::string>& m, const std::string& key, const std::string& path) {
  auto it = m.find(key);
  KILN_CHECK(it != m.end(), path, " is not a kiln_train_gpt checkpoint (no '", key, "' in its metadata)");
  try {
    return std::stoll(it->second);
  } catch (const std::exception&) {
    throw Error(path + ": metadata '" + key + "' is '" + it->second + "', not an integer");
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Generates text from a kiln_train_gpt checkpoint.", kProg};
  std::string checkpoint, prompt = "\n", device;
  int64_t max_tokens = 200, top_k = 0;
  double temperature = 0.8;
  uint64_t seed = 0;
  app.add_option("--checkpoint", checkpoint, "a checkpoint file, or a run directory (its newest checkpoint)")->required();
  app.add_option("--prompt", prompt, "the text to continue")->capture_default_str();
  app.add_option("--max-tokens", max_tokens, "tokens to generate")
      ->check(kiln::tools::non_negative<int64_t>())
      ->capture_default_str();
  app.add_option("--temperature", temperature, "sampling temperature (0: always the likeliest token)")
      ->check(kiln::tools::positive_real(/*allow_zero=*/true))
      ->capture_default_str();
  app.add_option("--top-k", top_k, "sample among the k likeliest tokens (0: all)")
      ->check(kiln::tools::non_negative<int64_t>())
      ->capture_default_str();
  app.add_option("--seed", seed, "seed of the sampling")->check(kiln::tools::any_uint64())->capture_default_str();
  app.add_option("--device", device, "cpu | cuda | cuda:N (default cuda when a GPU is usable, else cpu)")
      ->check(kiln::tools::device_spec());
  return kiln::tools::kiln_main(app, argc, argv, [&] {
    const std::string path = find_checkpoint(checkpoint);
    SafetensorsContents ck = load_safetensors_with_metadata(path);
    const auto& m = ck.metadata;
    auto fmt = m.find("format");
    KILN_CHECK(fmt != m.end() && fmt->second.rfind("kiln_train_gpt/", 0) == 0, path,
               " is not a kiln_train_gpt checkpoint (format '", fmt == m.end() ? "" : fmt->second, "')");
    models::GPTConfig c;
    c.n_layer = meta_int(m, "n_layer", path);
    c.n_head = meta_int(m, "n_head", path);
    c.n_embd = meta_int(m, "n_embd", path);
    c.block_size = meta_int(m, "block_size", path);
    c.vocab_size = meta_int(m, "vocab_size", path);
    c.bias = meta_int(m, "bias", path) != 0;
    if (auto a = m.find("attention"); a != m.end()) c.attention = a->second;
    if (m.count("n_features")) c.n_features = meta_int(m, "n_features", path);
    if (auto r = m.find("rfa_sigma"); r != m.end()) c.rfa_sigma = std::stod(r->second);
    auto tk = m.find("tokenizer");
    KILN_CHECK(tk != m.end(), path, " has no tokenizer in its metadata");
    const std::unique_ptr<data::Tokenizer> tokenizer = data::tokenizer_from_description(tk->second);
    Generator gen(seed);
    models::GPT model(c, gen);
    model.load_state_dict(run::sub_state(ck.tensors, "model."));
    const Device dev(device.empty() ? (cuda_is_available() ? "cuda" : "cpu") : device.c_str());
    KILN_CHECK(dev.is_cpu() || cuda_is_available(), "--device ", device, ": no usable CUDA device");
    model.to(dev);
    const std::vector<int64_t> ids = tokenizer->encode(prompt);
    models::GenerateOptions o;
    o.max_new_tokens = max_tokens;
    o.temperature = temperature;
    if (m.count("tokenizer_vocab_size")) o.vocab_limit = meta_int(m, "tokenizer_vocab_size", path);
    o.top_k = top_k;
    Generator sample_gen(seed);
    const std::string text = tokenizer->decode(models::generate(model, ids, o, sample_gen));
    std::fwrite(text.data(), 1, text.size(), stdout);
    std::fputc('\n', stdout);
    return 0;
  });
}
