// The ResNet-style BatchNorm CNN of tools/train_cnn (see resnet_cnn.h). The module
// order and the initialisation order are part of its contract: a seeded run draws its
// weights in exactly this order, and checkpoints name the tensors after it.
#include <kiln/models/zoo/resnet_cnn.h>

#include <kiln/core/error.h>
#include <kiln/models/nn/activation.h>
#include <kiln/models/nn/init.h>
#include <kiln/models/nn/linear.h>
#include <kiln/models/nn/pool.h>
#include <kiln/ops/binary.h>
#include <kiln/ops/unary.h>

namespace kiln::models {

BasicBlock::BasicBlock(int64_t in, int64_t out, int64_t stride) : nn::Module("BasicBlock") {
  conv1 = register_module("conv1", std::make_shared<nn::Conv2d>(in, out, 3, stride, 1, 1, 1, false));
  bn1 = register_module("bn1", std::make_shared<nn::BatchNorm2d>(out));
  conv2 = register_module("conv2", std::make_shared<nn::Conv2d>(out, out, 3, 1, 1, 1, 1, false));
  bn2 = register_module("bn2", std::make_shared<nn::BatchNorm2d>(out));
  if (stride != 1 || in != out) {
    auto sc = std::make_shared<nn::Sequential>();
    sc->push_back(std::make_shared<nn::Conv2d>(in, out, 1, stride, 0, 1, 1, false));
    sc->push_back(std::make_shared<nn::BatchNorm2d>(out));
    shortcut = register_module("shortcut", sc);
  }
}

Tensor BasicBlock::forward(const Tensor& x) {
  Tensor y = relu((*bn1)((*conv1)(x)));
  y = (*bn2)((*conv2)(y));
  Tensor skip = shortcut ? (*shortcut)(x) : x;
  return relu(y + skip);
}

std::shared_ptr<nn::Sequential> resnet_cnn(const ResNetCNNOptions& o, Generator& gen) {
  KILN_CHECK(o.width > 0 && o.in_channels > 0 && o.num_classes > 0,
             "resnet_cnn: width, in_channels and num_classes must be positive, got width ", o.width,
             ", in_channels ", o.in_channels, ", num_classes ", o.num_classes);
  const int64_t w = o.width;
  auto m = std::make_shared<nn::Sequential>();
  m->push_back("stem", std::make_shared<nn::Conv2d>(o.in_channels, w, 3, 1, 1, 1, 1, false));
  m->push_back("stem_bn", std::make_shared<nn::BatchNorm2d>(w));
  m->push_back("stem_relu", std::make_shared<nn::ReLU>());
  m->push_back("block1", std::make_shared<BasicBlock>(w, w, 1));
  m->push_back("block2", std::make_shared<BasicBlock>(w, 2 * w, 2));
  m->push_back("block3", std::make_shared<BasicBlock>(2 * w, 4 * w, 2));
  m->push_back("pool", std::make_shared<nn::AdaptiveAvgPool2d>(1));
  m->push_back("flatten", std::make_shared<nn::Flatten>());
  m->push_back("fc", std::make_shared<nn::Linear>(4 * w, o.num_classes));
  // Seeded initialisation, in registration order (pre-order over the modules).
  for (auto& mod : m->modules()) {
    if (auto c = std::dynamic_pointer_cast<nn::Conv2d>(mod)) {
      nn::init::kaiming_normal_(c->weight, 0.0, nn::init::FanMode::FanOut, nn::init::Nonlinearity::ReLU, &gen);
    } else if (auto l = std::dynamic_pointer_cast<nn::Linear>(mod)) {
      l->reset_parameters(&gen);
    }
  }
  return m;
}

}  // namespace kiln::models
