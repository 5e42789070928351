// GAN models: the DCGAN generator and discriminator (Radford et al., ICLR 2016, as in
// PyTorch's examples/dcgan), parameterised by image size and width, the MLP GAN of the
// unrolled-GAN paper (Metz et al., ICLR 2017) for 2-D toy data, and the encoders of the
// mode-regularised GAN (Che et al., ICLR 2017).
//
// DCGAN generator, z (N, nz) -> image (N, C, S, S) in [-1, 1]:
//   ConvTranspose(nz -> w 2^(k-1), s0 x s0) BN ReLU,
//   k - 1 times ConvTranspose(4, stride 2, pad 1) halving the channels, BN ReLU,
//   ConvTranspose(w -> C, 4, stride 2, pad 1) Tanh;
// s0 = 7 for 28 px (k = 2), 4 for 32 px (k = 3) and 64 px (k = 4). No biases (BN follows).
// DCGAN discriminator, the mirror image: Conv(C -> w, 4, 2, 1) LeakyReLU(0.2) (no BN on
// the first layer), k - 1 times Conv(4, 2, 1) doubling the channels, BN, LeakyReLU(0.2);
// its flattened output is the feature vector (feature matching reads it), followed by an
// optional minibatch-discrimination layer and a Linear to one logit (the same map as
// PyTorch's final s0 x s0 convolution). The WGAN-GP critic drops BN (the penalty is per
// sample). With spectral normalisation every convolution and the head of D are wrapped
// in nn::SpectralNorm (their weights keep the names main.0.module.weight, ...). Init as
// the DCGAN paper: conv and linear weights N(0, 0.02), BN weights
// N(1, 0.02), biases 0.
//
// MLP GAN (Metz et al.): G z (N, nz = 256) -> 128 ReLU -> 128 ReLU -> 2; D 2 -> 128 ReLU
// -> 128 ReLU (the features) -> [minibatch discrimination] -> 1 logit. PyTorch's default
// Linear init.
#pragma once
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include <kiln/core/generator.h>
#include <kiln/core/tensor.h>
#include <kiln/models/nn/containers.h>
#include <kiln/models/nn/module.h>

namespace kiln::models {

struct DiscriminatorOutput {
  Tensor logits;    // (N): D(x) = sigmoid(logits); the critic's value for WGAN-GP
  Tensor features;  // (N, F): the last hidden layer, before minibatch discrimination
};

// A discriminator: "main" (x -> features), an optional "mbd" minibatch-discrimination
// layer and "head" (-> one logit). run(x, params) evaluates it at other parameters
// (nn::functional_call), which unrolled GANs need.
class Discriminator : public nn::Module {
 public:
  explicit Discriminator(std::string type_name) : nn::Module(std::move(type_name)) {}
  DiscriminatorOutput run(const Tensor& x);
  // params replace parameters() (in that order).
  DiscriminatorOutput run(const Tensor& x, std::span<const Tensor> params);
  Tensor forward(const Tensor& x) override { return run(x).logits; }
  // Whether each sample's output depends on that sample alone, as the modules are now:
  // no minibatch discrimination, no BatchNorm layer in training mode. Then D(cat(a, b)) is
  // cat(D(a), D(b)), and two batches can go through in one call.
  bool per_sample();

  std::shared_ptr<nn::Sequential> main;
  std::shared_ptr<nn::Module> mbd;  // null without minibatch discrimination
  std::shared_ptr<nn::Module> head;
};

struct DcganOptions {
  int64_t image_size = 28;  // 28, 32 or 64
  int64_t channels = 1;     // 1 (grey) or 3 (RGB)
  int64_t latent_dim = 100;
  int64_t width = 32;       // ngf: channels of G's last hidden layer
  int64_t d_width = 0;      // ndf: channels of D's (and E's) first hidden layer (0: width)
  bool batch_norm_in_d = true;  // false for the WGAN-GP critic and with spectral_norm
  // D's convolutions and its linear head spectrally normalised (nn::SpectralNorm; Miyato
  // et al., ICLR 2018), u and v warmed up by 15 power iterations after the init
  bool spectral_norm = false;
  int64_t minibatch_kernels = 0;  // > 0: minibatch discrimination with this many kernels in D
  int64_t minibatch_kernel_dim = 5;
};

// Throws kiln::Error for an unsupported image size or non-positive sizes.
std::shared_ptr<nn::Module> dcgan_generator(const DcganOptions& o, Generator& gen);
std::shared_ptr<Discriminator> dcgan_discriminator(const DcganOptions& o, Generator& gen);
// x (N, C, S, S) -> z (N, latent_dim): D's trunk (with BN) and a Linear, for the
// mode-regularised GAN.
std::shared_ptr<nn::Module> dcgan_encoder(const DcganOptions& o, Generator& gen);

struct MlpGanOptions {
  int64_t data_dim = 2;
  int64_t latent_dim = 256;
  int64_t hidden = 128;
  bool spectral_norm = false;  // D's linear layers spectrally normalised
  int64_t minibatch_kernels = 0;
  int64_t minibatch_kernel_dim = 5;
};
std::shared_ptr<nn::Module> mlp_generator(const MlpGanOptions& o, Generator& gen);
std::shared_ptr<Discriminator> mlp_discriminator(const MlpGanOptions& o, Generator& gen);
std::shared_ptr<nn::Module> mlp_encoder(const MlpGanOptions& o, Generator& gen);

}  // namespace kiln::models
