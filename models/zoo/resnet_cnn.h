// A small ResNet-style CNN with BatchNorm for 28x28 single-channel images (Fashion-MNIST),
// the model of tools/train_cnn. Parameter and buffer names follow PyTorch's, so its
// state_dict matches the torch.nn definition in tools/resnet_cnn_torch.py key
// for key ("block2.shortcut.0.weight", "stem_bn.running_mean", ...).
//
//   stem    conv3x3 in->w, BN, ReLU                          (H, W)
//   block1  BasicBlock w->w                                  (H, W)
//   block2  BasicBlock w->2w, stride 2 (1x1 conv + BN skip)  (H/2, W/2)
//   block3  BasicBlock 2w->4w, stride 2                      (H/4, W/4)
//   head    global average pool, flatten, Linear 4w->classes
//
// 77,754 parameters with the defaults (width 16, 1 input channel, 10 classes).
#pragma once
#include <cstdint>
#include <memory>

#include <kiln/core/generator.h>
#include <kiln/core/tensor.h>
#include <kiln/models/nn/containers.h>
#include <kiln/models/nn/conv.h>
#include <kiln/models/nn/module.h>
#include <kiln/models/nn/norm.h>

namespace kiln::models {

// relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)); the shortcut is a 1x1 conv (no
// bias) + BN when the stride or the channel count changes, the identity otherwise.
class BasicBlock : public nn::Module {
 public:
  BasicBlock(int64_t in_channels, int64_t out_channels, int64_t stride);
  Tensor forward(const Tensor& x) override;

  std::shared_ptr<nn::Conv2d> conv1, conv2;
  std::shared_ptr<nn::BatchNorm2d> bn1, bn2;
  std::shared_ptr<nn::Sequential> shortcut;  // null for the identity
};

struct ResNetCNNOptions {
  int64_t width = 16;  // channels of the first stage; the stages have w, 2w, 4w
  int64_t in_channels = 1;
  int64_t num_classes = 10;
};

// Builds the model and initialises it from `gen`, in registration order: every conv
// weight kaiming_normal(fan_out, relu), the Linear with PyTorch's default init; BN
// weights 1, biases 0. The same generator state gives the same weights on CPU and CUDA.
// Throws kiln::Error for a non-positive width, channel or class count.
std::shared_ptr<nn::Sequential> resnet_cnn(const ResNetCNNOptions& options, Generator& gen);

}  // namespace kiln::models
