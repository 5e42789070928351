// The GAN models of gan.h. Module order is the initialisation order and the state-dict
// naming: a seeded run draws its weights in exactly this order.
#include <kiln/models/zoo/gan.h>

#include <kiln/core/error.h>
#include <kiln/models/nn/activation.h>
#include <kiln/models/nn/conv.h>
#include <kiln/models/nn/functional.h>
#include <kiln/models/nn/init.h>
#include <kiln/models/nn/linear.h>
#include <kiln/models/nn/minibatch_discrimination.h>
#include <kiln/models/nn/norm.h>
#include <kiln/models/nn/spectral_norm.h>

namespace kiln::models {

bool Discriminator::per_sample() {
  if (mbd) return false;
  for (const auto& m : modules())
    if (m->is_training() && dynamic_cast<const nn::BatchNorm2d*>(m.get())) return false;
  return true;
}

DiscriminatorOutput Discriminator::run(const Tensor& x) {
  DiscriminatorOutput out;
  out.features = main->forward(x);
  Tensor h = mbd ? mbd->forward(out.features) : out.features;
  out.logits = head->forward(h).reshape({-1});
  return out;
}

DiscriminatorOutput Discriminator::run(const Tensor& x, std::span<const Tensor> params) {
  const size_t nm = main->parameters().size(), nb = mbd ? mbd->parameters().size() : 0;
  const size_t nh = head->parameters().size();
  KILN_CHECK(params.size() == nm + nb + nh, type_name(), ".run: expects ", nm + nb + nh, " parameters, got ",
             params.size());
  DiscriminatorOutput out;
  out.features = nn::functional_call(*main, x, params.subspan(0, nm));
  Tensor h = mbd ? nn::functional_call(*mbd, out.features, params.subspan(nm, nb)) : out.features;
  out.logits = nn::functional_call(*head, h, params.subspan(nm + nb, nh)).reshape({-1});
  return out;
}

namespace {

// DCGAN init: conv / linear weights N(0, 0.02), BN weights N(1, 0.02), biases 0.
void dcgan_init(nn::Module& m, Generator& gen) {
  for (auto& mod : m.modules()) {
    if (auto c = std::dynamic_pointer_cast<nn::Conv2d>(mod)) {
      nn::init::normal_(c->weight, 0.0, 0.02, &gen);
      if (c->bias.defined()) nn::init::zeros_(c->bias);
    } else if (auto t = std::dynamic_pointer_cast<nn::ConvTranspose2d>(mod)) {
      nn::init::normal_(t->weight, 0.0, 0.02, &gen);
      if (t->bias.defined()) nn::init::zeros_(t->bias);
    } else if (auto l = std::dynamic_pointer_cast<nn::Linear>(mod)) {
      nn::init::normal_(l->weight, 0.0, 0.02, &gen);
      if (l->bias.defined()) nn::init::zeros_(l->bias);
    } else if (auto b = std::dynamic_pointer_cast<nn::BatchNorm2d>(mod)) {
      nn::init::normal_(b->weight, 1.0, 0.02, &gen);
      nn::init::zeros_(b->bias);
    }
  }
}

// (s0, k): the first feature map's size and the number of stride-2 stages.
std::pair<int64_t, int64_t> dcgan_geometry(const DcganOptions& o) {
  KILN_CHECK(o.channels >= 1 && o.latent_dim >= 1 && o.width >= 1 && o.d_width >= 0,
             "DCGAN: channels, latent_dim and width must be >= 1 (d_width >= 0), got ", o.channels, ", ",
             o.latent_dim, ", ", o.width, ", ", o.d_width);
  KILN_CHECK(o.minibatch_kernels >= 0 && o.minibatch_kernel_dim >= 1, "DCGAN: bad minibatch-discrimination sizes ",
             o.minibatch_kernels, " x ", o.minibatch_kernel_dim);
  switch (o.image_size) {
    case 28: return {7, 2};
    case 32: return {4, 3};
    case 64: return {4, 4};
    default: break;
  }
  throw Error(detail::str("DCGAN: image_size must be 28, 32 or 64, got ", o.image_size));
}

// Reshapes (N, nz) latents to (N, nz, 1, 1) before the transposed convolutions.
class DcganGenerator : public nn::Module {
 public:
  DcganGenerator() : nn::Module("DcganGenerator") {}
  Tensor forward(const Tensor& z) override {
    KILN_CHECK(z.dim() == 2, "DcganGenerator: expects latents (N, latent_dim), got ", describe(z));
    return main->forward(z.reshape({z.size(0), z.size(1), 1, 1}));
  }
  std::shared_ptr<nn::Sequential> main;
};

int64_t d_width(const DcganOptions& o) { return o.d_width > 0 ? o.d_width : o.width; }

// The layer itself, or wrapped in spectral normalisation (u, v drawn from gen; warmed up
// once the weights have their init: warm_up_spectral_norm).
std::shared_ptr<nn::Module> maybe_sn(std::shared_ptr<nn::Module> layer, bool sn, Generator& gen) {
  if (!sn) return layer;
  return std::make_shared<nn::SpectralNorm>(std::move(layer), 1, 1e-12, &gen, 0);
}

void warm_up_spectral_norm(nn::Module& m) {
  for (auto& mod : m.modules())
    if (auto s = std::dynamic_pointer_cast<nn::SpectralNorm>(mod)) s->power_iterate(15);
}

// D's convolutional trunk: x (N, C, S, S) -> (N, ndf 2^(k-1) s0^2).
std::shared_ptr<nn::Sequential> dcgan_trunk(const DcganOptions& o, bool bn, bool sn, Generator& gen) {
  const auto [s0, k] = dcgan_geometry(o);
  auto main = std::make_shared<nn::Sequential>();
  main->push_back(maybe_sn(std::make_shared<nn::Conv2d>(o.channels, d_width(o), 4, 2, 1, 1, 1, false), sn, gen));
  main->push_back(std::make_shared<nn::LeakyReLU>(0.2));
  int64_t ch = d_width(o);
  for (int64_t i = 1; i < k; ++i) {
    main->push_back(maybe_sn(std::make_shared<nn::Conv2d>(ch, ch * 2, 4, 2, 1, 1, 1, false), sn, gen));
    ch *= 2;
    if (bn) main->push_back(std::make_shared<nn::BatchNorm2d>(ch));
    main->push_back(std::make_shared<nn::LeakyReLU>(0.2));
  }
  main->push_back(std::make_shared<nn::Flatten>());
  return main;
}

int64_t trunk_features(const DcganOptions& o) {
  const auto [s0, k] = dcgan_geometry(o);
  return d_width(o) * (int64_t{1} << (k - 1)) * s0 * s0;
}

// The head Linear(f, 1); `init` re-initialises it from gen (before a spectral norm wraps it).
void add_head(Discriminator& d, int64_t features, int64_t mb_kernels, int64_t mb_dim, Generator& gen, bool sn = false,
              bool init = false) {
  int64_t f = features;
  if (mb_kernels > 0) {
    d.mbd = d.register_module("mbd", std::make_shared<nn::MinibatchDiscrimination>(features, mb_kernels, mb_dim, 0,
                                                                                   &gen));
    f += mb_kernels;
  }
  auto head = std::make_shared<nn::Linear>(f, 1);
  if (init) head->reset_parameters(&gen);
  d.head = d.register_module("head", maybe_sn(head, sn, gen));
}

}  // namespace

std::shared_ptr<nn::Module> dcgan_generator(const DcganOptions& o, Generator& gen) {
  const auto [s0, k] = dcgan_geometry(o);
  auto g = std::make_shared<DcganGenerator>();
  auto main = std::make_shared<nn::Sequential>();
  int64_t ch = o.width * (int64_t{1} << (k - 1));
  main->push_back(std::make_shared<nn::ConvTranspose2d>(o.latent_dim, ch, s0, 1, 0, 0, 1, false));
  main->push_back(std::make_shared<nn::BatchNorm2d>(ch));
  main->push_back(std::make_shared<nn::ReLU>());
  for (int64_t i = 1; i < k; ++i) {
    main->push_back(std::make_shared<nn::ConvTranspose2d>(ch, ch / 2, 4, 2, 1, 0, 1, false));
    ch /= 2;
    main->push_back(std::make_shared<nn::BatchNorm2d>(ch));
    main->push_back(std::make_shared<nn::ReLU>());
  }
  main->push_back(std::make_shared<nn::ConvTranspose2d>(ch, o.channels, 4, 2, 1, 0, 1, false));
  main->push_back(std::make_shared<nn::Tanh>());
  g->main = g->register_module("main", main);
  dcgan_init(*g, gen);
  return g;
}

std::shared_ptr<Discriminator> dcgan_discriminator(const DcganOptions& o, Generator& gen) {
  auto d = std::make_shared<Discriminator>("DcganDiscriminator");
  d->main = d->register_module("main", dcgan_trunk(o, o.batch_norm_in_d, o.spectral_norm, gen));
  add_head(*d, trunk_features(o), o.minibatch_kernels, o.minibatch_kernel_dim, gen, o.spectral_norm);
  dcgan_init(*d, gen);
  warm_up_spectral_norm(*d);
  return d;
}

std::shared_ptr<nn::Module> dcgan_encoder(const DcganOptions& o, Generator& gen) {
  auto e = std::make_shared<nn::Sequential>();
  e->push_back("trunk", dcgan_trunk(o, true, false, gen));
  e->push_back("out", std::make_shared<nn::Linear>(trunk_features(o), o.latent_dim));
  dcgan_init(*e, gen);
  return e;
}

namespace {

void check_mlp(const MlpGanOptions& o) {
  KILN_CHECK(o.data_dim >= 1 && o.latent_dim >= 1 && o.hidden >= 1,
             "MLP GAN: data_dim, latent_dim and hidden must be >= 1, got ", o.data_dim, ", ", o.latent_dim, ", ",
             o.hidden);
  KILN_CHECK(o.minibatch_kernels >= 0 && o.minibatch_kernel_dim >= 1, "MLP GAN: bad minibatch-discrimination sizes ",
             o.minibatch_kernels, " x ", o.minibatch_kernel_dim);
}

// sn: each Linear (re-initialised first) wrapped in spectral normalisation.
std::shared_ptr<nn::Sequential> mlp(int64_t in, int64_t hidden, int64_t out, Generator& gen, bool sn = false) {
  auto s = std::make_shared<nn::Sequential>();
  auto add = [&](int64_t a, int64_t b) {
    auto l = std::make_shared<nn::Linear>(a, b);
    l->reset_parameters(&gen);
    s->push_back(maybe_sn(l, sn, gen));
  };
  add(in, hidden);
  s->push_back(std::make_shared<nn::ReLU>());
  add(hidden, hidden);
  s->push_back(std::make_shared<nn::ReLU>());
  if (out > 0) add(hidden, out);
  return s;
}

}  // namespace

std::shared_ptr<nn::Module> mlp_generator(const MlpGanOptions& o, Generator& gen) {
  check_mlp(o);
  return mlp(o.latent_dim, o.hidden, o.data_dim, gen);
}

std::shared_ptr<Discriminator> mlp_discriminator(const MlpGanOptions& o, Generator& gen) {
  check_mlp(o);
  auto d = std::make_shared<Discriminator>("MlpDiscriminator");
  d->main = d->register_module("main", mlp(o.data_dim, o.hidden, 0, gen, o.spectral_norm));
  add_head(*d, o.hidden, o.minibatch_kernels, o.minibatch_kernel_dim, gen, o.spectral_norm, true);
  warm_up_spectral_norm(*d);
  return d;
}

std::shared_ptr<nn::Module> mlp_encoder(const MlpGanOptions& o, Generator& gen) {
  check_mlp(o);
  return mlp(o.data_dim, o.hidden, o.latent_dim, gen);
}

}  // namespace kiln::models
