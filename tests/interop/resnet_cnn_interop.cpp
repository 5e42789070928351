// kiln's half of the PyTorch round trip of the model-zoo CNN (models/zoo/resnet_cnn.h),
// driven by resnet_cnn_torch.py, which defines the same architecture in torch.nn.
//
//   resnet_cnn_interop check-torch DIR [config]
//     Loads DIR/torch_model.safetensors (written by PyTorch) into kiln's model with a
//     strict load_state_dict, runs DIR/torch_io.safetensors' input "x" through it in eval
//     mode and in train mode (batch statistics; cross-entropy on "y", backward) and
//     compares the logits, the parameter gradients ("grad.<name>") and the buffers after
//     the train-mode forward ("after_train.<name>") with PyTorch's.
//   resnet_cnn_interop write-kiln DIR [config] [--seed N]
//     Builds the model from a seeded generator, takes two AdamW steps on random data (so
//     the weights and running statistics are not the initial ones) and writes its state
//     to DIR/kiln_model.safetensors; then writes a fresh input, labels and kiln's results
//     (the same names as above) to DIR/kiln_io.safetensors for PyTorch to compare.
//   config: --width N --in-channels N --classes N --batch N --height N --image-width N
//
// Tensors agree when max|kiln - torch| <= 1e-5 + 1e-4 * max|torch| (f32: the sums run in
// different orders). Exit status: 0 agree, 1 differ (or an error), 2 usage.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include <kiln/kiln.h>

#include "interop_util.h"

using namespace kiln;

namespace {

struct Config {
  models::ResNetCNNOptions model;
  int64_t batch = 8, height = 28, image_width = 28;
  uint64_t seed = 1;
};

struct Results {
  Tensor logits_eval, logits_train;
  std::map<std::string, Tensor> grads, after_train;  // by parameter / buffer name
};

// Eval forward, then a train-mode forward + cross-entropy backward (which also updates
// the running statistics, as in PyTorch).
Results run_model(nn::Module& model, const Tensor& x, const Tensor& y) {
  Results r;
  model.eval();
  {
    NoGradGuard no_grad;
    r.logits_eval = model(x).detach();
  }
  model.train();
  model.zero_grad();
  r.logits_train = model(x);
  cross_entropy(r.logits_train, y).backward();
  r.logits_train = r.logits_train.detach();
  for (auto& [name, p] : model.named_parameters()) r.grads[name] = p.grad();
  for (auto& [name, b] : model.named_buffers()) r.after_train[name] = b.clone();
  return r;
}

int check_torch(const std::string& dir, const Config& cfg) {
  const std::string model_path = dir + "/torch_model.safetensors", io_path = dir + "/torch_io.safetensors";
  Generator gen(cfg.seed);
  auto model = models::resnet_cnn(cfg.model, gen);  // weights replaced below
  model->load_state_dict(load_safetensors(model_path), /*strict=*/true);
  auto io = load_safetensors(io_path);
  Results r = run_model(*model, interop::get(io, "x", io_path), interop::get(io, "y", io_path));

  bool ok = true;
  double worst_grad = 0, worst_buf = 0;
  ok &= interop::compare("logits (eval)", r.logits_eval, interop::get(io, "logits_eval", io_path));
  ok &= interop::compare("logits (train)", r.logits_train, interop::get(io, "logits_train", io_path));
  for (auto& [name, g] : r.grads) ok &= interop::compare("grad." + name, g, interop::get(io, "grad." + name, io_path), &worst_grad);
  for (auto& [name, b] : r.after_train)
    ok &= interop::compare("after_train." + name, b, interop::get(io, "after_train." + name, io_path), &worst_buf);
  std::printf("  %zu gradients: max abs diff %.3g; %zu buffers after the train step: max abs diff %.3g\n",
              r.grads.size(), worst_grad, r.after_train.size(), worst_buf);
  std::cout << "check-torch: PyTorch's model in kiln " << (ok ? "agrees" : "DIFFERS") << "\n";
  return ok ? 0 : 1;
}

int write_kiln(const std::string& dir, const Config& cfg) {
  Generator gen(cfg.seed);
  auto model = models::resnet_cnn(cfg.model, gen);
  const int64_t c = cfg.model.in_channels, k = cfg.model.num_classes;
  const Shape image{cfg.batch, c, cfg.height, cfg.image_width};
  {
    AdamWOptions o;
    o.lr = 1e-2;
    AdamW opt(model->parameters(), o);
    model->train();
    for (int step = 0; step < 2; ++step) {
      Tensor x = randn(image, {}, &gen), y = randint(0, k, {cfg.batch}, DType::I64, &gen);
      opt.zero_grad();
      cross_entropy((*model)(x), y).backward();
      opt.step();
    }
  }
  std::map<std::string, Tensor> state;
  for (auto& [name, t] : model->state_dict()) state[name] = t.clone();  // before run_model moves the stats
  save_safetensors(dir + "/kiln_model.safetensors", state, {{"format", "pt"}});

  Tensor x = randn(image, {}, &gen), y = randint(0, k, {cfg.batch}, DType::I64, &gen);
  Results r = run_model(*model, x, y);
  std::map<std::string, Tensor> io{{"x", x}, {"y", y}, {"logits_eval", r.logits_eval},
                                   {"logits_train", r.logits_train}};
  for (auto& [name, g] : r.grads) io["grad." + name] = g;
  for (auto& [name, b] : r.after_train) io["after_train." + name] = b;
  save_safetensors(dir + "/kiln_io.safetensors", io);
  std::cout << "write-kiln: " << state.size() << " state tensors (" << model->num_parameters()
            << " parameters) and " << io.size() << " results in " << dir << "\n";
  return 0;
}

[[noreturn]] void usage() {
  std::cerr << "usage: resnet_cnn_interop check-torch|write-kiln DIR [--width N] [--in-channels N] [--classes N]\n"
               "       [--batch N] [--height N] [--image-width N] [--seed N]\n";
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> a(argv + 1, argv + argc);
  if (a.size() < 2 || a.size() % 2 != 0) usage();
  Config cfg;
  for (size_t i = 2; i < a.size(); i += 2) {
    char* end = nullptr;
    const long long v = std::strtoll(a[i + 1].c_str(), &end, 10);
    if (a[i + 1].empty() || *end != '\0' || v < 0) usage();
    if (a[i] == "--width") cfg.model.width = v;
    else if (a[i] == "--in-channels") cfg.model.in_channels = v;
    else if (a[i] == "--classes") cfg.model.num_classes = v;
    else if (a[i] == "--batch") cfg.batch = v;
    else if (a[i] == "--height") cfg.height = v;
    else if (a[i] == "--image-width") cfg.image_width = v;
    else if (a[i] == "--seed") cfg.seed = static_cast<uint64_t>(v);
    else usage();
  }
  try {
    std::filesystem::create_directories(a[1]);
    if (a[0] == "check-torch") return check_torch(a[1], cfg);
    if (a[0] == "write-kiln") return write_kiln(a[1], cfg);
  } catch (const Error& e) {
    std::cerr << "resnet_cnn_interop: " << e.what() << "\n";
    return 1;
  }
  usage();
}
