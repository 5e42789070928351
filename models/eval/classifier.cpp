#include <kiln/models/eval/classifier.h>

#include <cmath>
#include <filesystem>
#include <map>

#include <kiln/core/autograd.h>
#include <kiln/core/error.h>
#include <kiln/ops/checks.h>
#include <kiln/core/safetensors.h>
#include <kiln/models/data/fashion_mnist.h>
#include <kiln/models/prune/graph.h>
#include <kiln/models/run/checkpoint.h>
#include <kiln/models/zoo/resnet_cnn.h>
#include <kiln/ops/binary.h>
#include <kiln/ops/loss.h>
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
  SafetensorsContents contents = load_safetensors_with_metadata(file, kCPU);
  for (auto& [k, v] : contents.tensors)
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
  // A channel-pruned model (kiln_prune_cnn) records the width it was built with; its
  // layers are then given their pruned shapes.
  auto w = contents.metadata.find("width");
  if (w != contents.metadata.end()) {
    try {
      o.width = std::stoll(w->second);
    } catch (const std::exception&) {
      throw Error(kiln::detail::str("classifier: ", file, " has a bad width in its metadata: '", w->second, "'"));
    }
  }
  Generator gen(0);
  c.model = models::resnet_cnn(o, gen);
  prune::shrink_to_state(*c.model, state);
  c.model->load_state_dict(state);  // strict: a different architecture is an error naming the keys
  c.model->to(device);
  c.model->eval();
  c.checkpoint = file;
  c.num_classes = o.num_classes;
  c.width = o.width;
  c.feature_dim = fc->second.size(1);
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

Accuracy evaluate_classifier(nn::Module& model, const data::DataLoader& test) {
  const bool was_training = model.is_training();
  model.eval();
  NoGradGuard no_grad;
  Tensor loss_sum, correct;
  int64_t total = 0;
  for (int64_t b = 0; b < test.size(); ++b) {
    data::Batch batch = test.get(0, b);
    Tensor logits = model(batch.x);
    Tensor l = cross_entropy(logits, batch.y, Reduction::Sum);
    Tensor k = sum(eq(argmax(logits, 1), batch.y));
    loss_sum = loss_sum.defined() ? add(loss_sum, l) : l;
    correct = correct.defined() ? add(correct, k) : k;
    total += batch.y.size(0);
  }
  model.train(was_training);
  if (total == 0) return {NAN, NAN};
  return {loss_sum.item<double>() / static_cast<double>(total),
          static_cast<double>(correct.item<int64_t>()) / static_cast<double>(total)};
}

}  // namespace kiln::eval
