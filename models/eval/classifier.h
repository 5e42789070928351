// The image classifier GAN metrics read (MODE score, Inception-style score, Fréchet
// distance, class coverage): the ResNet-style CNN that kiln_train_cnn trains, loaded from
// its run directory (the newest checkpoint) or a checkpoint file. Its width is read from
// the checkpoint's shapes.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include <kiln/core/device.h>
#include <kiln/core/tensor.h>
#include <kiln/models/data/loader.h>
#include <kiln/models/nn/containers.h>

namespace kiln::eval {

struct Classifier {
  std::shared_ptr<nn::Sequential> model;  // eval mode
  std::string checkpoint;                 // the file it came from
  int64_t num_classes = 10;
  int64_t width = 16;       // the configuration it was built from (models::ResNetCNNOptions)
  int64_t feature_dim = 0;  // the penultimate layer's width
  float mean = 0, std = 1;  // the input normalisation it was trained with
};

// path: a kiln_train_cnn run directory or one of its checkpoints (.safetensors holding
// "model.*"), or a model kiln_prune_cnn saved (its smaller layers are rebuilt from the
// shapes, the metadata's "width" naming the configuration it was pruned from). Throws
// kiln::Error naming the path when it holds no such model.
Classifier load_classifier(const std::string& path, Device device = kCPU);

struct Classified {
  Tensor probs;      // (N, K) f32 softmax
  Tensor features;   // (N, feature_dim) f32, the penultimate layer
  Tensor predicted;  // (N) i64 argmax
};
// images (N, C, H, W) with values in [lo, hi] (u8 images: 0..255), mapped to [0, 1] and
// normalised as in training; evaluated in batches of `batch` without gradients.
Classified classify(const Classifier& c, const Tensor& images, double lo = -1.0, double hi = 1.0,
                    int64_t batch = 500);

// Mean cross-entropy and accuracy of a classifier over every batch of `test` (eval mode
// and no gradients while it runs; the module's mode is restored). NaN for an empty set.
struct Accuracy {
  double loss = 0, accuracy = 0;
};
Accuracy evaluate_classifier(nn::Module& model, const data::DataLoader& test);

}  // namespace kiln::eval
