#include <kiln/models/eval/classifier.h>

#include <filesystem>
#include <map>

#include <kiln/core/autograd.h>
#include <kiln/core/autograd.h>
#include <kiln/core/error.h>
#include <kiln/ops/checks.h>
#include <kiln/core/safetensors.h>
#include <kiln/models/data/fashion_mnist.h>
#include <kiln/models/run/checkpoint.h>
#include <kiln/models/zoo/resnet_cnn.h>
#include <kiln/ops/binary.h>
#include <kiln/ops/index.h>
#include <kiln/ops/reduce.h>
#include <kiln/ops/softmax.h>

namespace kiln::eval {
namespace fs = std::filesystem;

Classifier load_classifier(const std::string& path, Device device) {
  std::error_code ec;
  std::string file = path;
  if (fs::is_directory(path, ec)) {
    const fs::path dir = fs::exists(fs::path(path) / "checkpoints") ? fs::path(path) / "checkpoints" : fs::path(path);
    auto latest = run::Checkpointer(dir.string()).latest();
    KILN_CHECK(latest.has_value(), "classifier: no checkpoint in ", dir.string(),
               " (pass a kiln_train_cnn run directory or a checkpoint file)");
    file = *latest;
  }
  KILN_CHECK(fs::is_regular_file(file, ec), "classifier: ", file, " is not a file");
  std::map<std::string, Tensor> state;
  for (auto& [k, v] : load_safetensors(file, kCPU))
    if (k.rfind("model.", 0) == 0) state[k.substr(6)] = v;
  auto stem = state.find("stem.weight");
  auto fc = state.find("fc.weight");
  KILN_CHECK(stem != state.end() && fc != state.end() && stem->second.dim() == 4 && fc->second.dim() == 2, "classifier: ",
             file, " holds no kiln_train_cnn model (model.stem.weight and model.fc.weight missing)");
  Classifier c;
  models::ResNetCNNOptions o;
  o.width = stem->second.size(0);
  o.in_channels = stem->second.size(1);
  o.num_classes = fc->second.size(0);
  Generator gen(0);
  c.model = models::resnet_cnn(o, gen);
  c.model->load_state_dict(state);  // strict: a different architecture is an error naming the keys
  c.model->to(device);
  c.model->eval();
  c.checkpoint = file;
  c.num_classes = o.num_classes;
  c.feature_dim = 4 * o.width;
  c.mean = data::kFashionMnistMean;
  c.std = data::kFashionMnistStd;
  return c;
}

Classified classify(const Classifier& c, const Tensor& images, double lo, double hi, int64_t batch) {
  kiln::detail::check_defined("classify", images);
  KILN_CHECK(c.model, "classify: no classifier loaded");
  KILN_CHECK(images.dim() == 4 && hi > lo && batch >= 1, "classify: expects images (N, C, H, W) and a range, got ",
             describe(images));
  NoGradGuard no_grad;
  const Device dev = c.model->parameters()[0].device();
  const auto children = c.model->children();
  std::vector<Tensor> probs, feats;
  for (int64_t s = 0; s < images.size(0); s += batch) {
    const int64_t n = std::min(batch, images.size(0) - s);
    Tensor x = images.narrow(0, s, n).to(dev);
    if (x.dtype() == DType::U8) x = div(cast(x, DType::F32), 255.0);
    else x = div(sub(cast(x, DType::F32), lo), hi - lo);
    Tensor h = div(sub(x, static_cast<double>(c.mean)), static_cast<double>(c.std));
    for (size_t i = 0; i + 1 < children.size(); ++i) h = children[i]->forward(h);
    feats.push_back(h);
    probs.push_back(softmax(children.back()->forward(h), 1));
  }
  Classified out;
  out.probs = cat(probs, 0).to(kCPU);
  out.features = cat(feats, 0).to(kCPU);
  out.predicted = argmax(out.probs, 1);
  return out;
}

}  // namespace kiln::eval
