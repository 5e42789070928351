// kiln's half of the PyTorch round trip of the GPT model (models/zoo/gpt.h), driven by
// gpt_torch.py, which writes the same architecture in torch.nn with nanoGPT's names.
//
//   gpt_interop check-torch DIR [config]
//     Loads DIR/torch_model.safetensors (PyTorch's weights) with a strict
//     load_state_dict, runs DIR/torch_io.safetensors' tokens "idx" through it (eval mode),
//     takes the cross-entropy against "targets" backward, and compares the logits, the
//     loss and every parameter gradient ("grad.<name>") with PyTorch's.
//   gpt_interop write-kiln DIR [config]
//     Builds the model from a seeded generator and writes its weights to
//     DIR/kiln_model.safetensors, and random tokens, targets and kiln's results (the same
//     names) to DIR/kiln_io.safetensors for PyTorch to compare.
//   config: --layers N --heads N --embd N --block N --vocab N --batch N --seq N --seed N --no-bias
//
// Exit status: 0 agree, 1 differ (or an error), 2 usage.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <map>
#include <string>

#include <kiln/kiln.h>

#include "interop_util.h"

using namespace kiln;

namespace {

struct Config {
  models::GPTConfig model;
  int64_t batch = 3, seq = 16;
  uint64_t seed = 1;
};

struct Results {
  Tensor logits, loss;
  std::map<std::string, Tensor> grads;
};

Results run_model(models::GPT& model, const Tensor& idx, const Tensor& targets) {
  Results r;
  model.eval();  // no dropout: both sides deterministic
  model.zero_grad();
  Tensor logits = model(idx);
  const int64_t V = model.config.vocab_size;
  Tensor loss = cross_entropy(logits.reshape({-1, V}), targets.reshape({-1}));
  loss.backward();
  r.logits = logits.detach();
  r.loss = loss.detach();
  for (auto& [name, p] : model.named_parameters()) r.grads[name] = p.grad();
  return r;
}

int check_torch(const std::string& dir, const Config& cfg) {
  const std::string model_path = dir + "/torch_model.safetensors", io_path = dir + "/torch_io.safetensors";
  Generator gen(cfg.seed);
  models::GPT model(cfg.model, gen);
  model.load_state_dict(load_safetensors(model_path), /*strict=*/true);
  auto io = load_safetensors(io_path);
  Results r = run_model(model, interop::get(io, "idx", io_path), interop::get(io, "targets", io_path));
  bool ok = interop::compare("logits", r.logits, interop::get(io, "logits", io_path));
  ok &= interop::compare("loss", r.loss, interop::get(io, "loss", io_path));
  double worst = 0;
  for (auto& [name, g] : r.grads) ok &= interop::compare("grad." + name, g, interop::get(io, "grad." + name, io_path), &worst);
  std::printf("  %zu gradients: max abs diff %.3g\n", r.grads.size(), worst);
  std::cout << "check-torch: PyTorch's GPT in kiln " << (ok ? "agrees" : "DIFFERS") << "\n";
  return ok ? 0 : 1;
}

int write_kiln(const std::string& dir, const Config& cfg) {
  Generator gen(cfg.seed);
  models::GPT model(cfg.model, gen);
  std::map<std::string, Tensor> state;
  for (auto& [name, t] : model.state_dict()) state[name] = t.clone();  // tied: both names, as nanoGPT
  save_safetensors(dir + "/kiln_model.safetensors", state, {{"format", "pt"}});
  Tensor idx = randint(0, cfg.model.vocab_size, {cfg.batch, cfg.seq}, DType::I64, &gen);
  Tensor targets = randint(0, cfg.model.vocab_size, {cfg.batch, cfg.seq}, DType::I64, &gen);
  Results r = run_model(model, idx, targets);
  std::map<std::string, Tensor> io{{"idx", idx}, {"targets", targets}, {"logits", r.logits}, {"loss", r.loss}};
  for (auto& [name, g] : r.grads) io["grad." + name] = g;
  save_safetensors(dir + "/kiln_io.safetensors", io);
  std::cout << "write-kiln: wrote " << state.size() << " tensors and kiln's results to " << dir << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << "usage: gpt_interop check-torch|write-kiln DIR [--layers N --heads N --embd N --block N --vocab N "
                 "--batch N --seq N --seed N --no-bias]\n";
    return 2;
  }
  const std::string mode = argv[1], dir = argv[2];
  Config cfg;
  for (int i = 3; i < argc; ++i) {
    const std::string f = argv[i];
    if (f == "--no-bias") {
      cfg.model.bias = false;
      continue;
    }
    if (i + 1 >= argc) {
      std::cerr << "gpt_interop: " << f << " needs a value\n";
      return 2;
    }
    const int64_t v = std::atoll(argv[++i]);
    if (f == "--layers") cfg.model.n_layer = v;
    else if (f == "--heads") cfg.model.n_head = v;
    else if (f == "--embd") cfg.model.n_embd = v;
    else if (f == "--block") cfg.model.block_size = v;
    else if (f == "--vocab") cfg.model.vocab_size = v;
    else if (f == "--batch") cfg.batch = v;
    else if (f == "--seq") cfg.seq = v;
    else if (f == "--seed") cfg.seed = static_cast<uint64_t>(v);
    else {
      std::cerr << "gpt_interop: unknown flag " << f << "\n";
      return 2;
    }
  }
  try {
    if (mode == "check-torch") return check_torch(dir, cfg);
    if (mode == "write-kiln") return write_kiln(dir, cfg);
    std::cerr << "gpt_interop: unknown mode " << mode << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "gpt_interop: " << e.what() << "\n";
    return 1;
  }
}
