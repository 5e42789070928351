// Second-order gradients and the GAN pieces on CUDA against the CPU: a gradient penalty
// through conv / batch norm / leaky ReLU (create_graph through cuDNN convolutions and the
// norms' composite double backward), minibatch discrimination, one DCGAN iteration, the
// unrolled discriminator's second-order gradient, and top-k training's G step with D frozen.
#include "test_util.h"

#include <kiln/models/gan/objectives.h>
#include <kiln/models/nn/minibatch_discrimination.h>
#include <kiln/models/zoo/gan.h>
#include <kiln/optim/adam.h>

using namespace kiln;
using test::cuda0;
using V = std::vector<Tensor>;

namespace {

void close(const Tensor& gpu, const Tensor& cpu, double rtol = 1e-3, double atol = 1e-4) {
  REQUIRE(gpu.defined());
  REQUIRE(cpu.defined());
  CHECK_CLOSE_TOL(gpu.cpu(), cpu, rtol, atol);
}

// The parameter gradient of an R1-style penalty sum ||dD/dx||^2 for a conv/BN discriminator.
V penalty_grads(const V& p, const Tensor& x_in) {
  Tensor x = x_in.detach().set_requires_grad(true);
  Tensor h = leaky_relu(conv2d(x, p[0], Tensor(), 2, 1), 0.2);
  h = leaky_relu(batch_norm(conv2d(h, p[1], Tensor(), 2, 1), Tensor(), Tensor(), p[2], p[3], true, 0.1, 1e-5), 0.2);
  Tensor d = binary_cross_entropy_with_logits(sum(h, {1, 2, 3}), ones({x.size(0)}, TensorOptions(x.dtype(), x.device())));
  GradOptions go;
  go.create_graph = true;
  Tensor gx = grad({d}, {x}, {}, go)[0];
  Tensor pen = sum(mul(gx, gx));
  return grad({pen}, p);
}

// One DCGAN, built twice from the same seed: on the CPU and moved to the GPU.
struct DcganTwins {
  std::shared_ptr<nn::Module> Gc;
  std::shared_ptr<models::Discriminator> Dc;
  std::shared_ptr<nn::Module> Gg;
  std::shared_ptr<models::Discriminator> Dg;
};
DcganTwins dcgan_twins(const models::DcganOptions& o, uint64_t seed) {
  Generator g1(seed), g2(seed);
  DcganTwins t{models::dcgan_generator(o, g1), models::dcgan_discriminator(o, g1), models::dcgan_generator(o, g2),
               models::dcgan_discriminator(o, g2)};
  t.Gg->to(cuda0());
  t.Dg->to(cuda0());
  return t;
}

}  // namespace

TEST_CASE("CUDA: a gradient penalty through conv, batch norm and leaky ReLU matches the CPU", "[cuda][gan]") {
  Generator g(1);
  V cpu{mul(randn({4, 1, 4, 4}, DType::F32, &g), 0.3), mul(randn({6, 4, 4, 4}, DType::F32, &g), 0.3),
        add(mul(randn({6}, DType::F32, &g), 0.1), 1.0), mul(randn({6}, DType::F32, &g), 0.1)};
  V gpu;
  for (auto& t : cpu) {
    gpu.push_back(t.to(cuda0()).set_requires_grad(true));
    t.set_requires_grad(true);
  }
  Tensor x = randn({5, 1, 8, 8}, DType::F32, &g);
  V gc = penalty_grads(cpu, x), gg = penalty_grads(gpu, x.to(cuda0()));
  for (size_t i = 0; i < gc.size(); ++i) {
    INFO("parameter " << i);
    close(gg[i], gc[i], 2e-3, 1e-4);
  }
}

TEST_CASE("CUDA: minibatch discrimination forward and second-order backward match the CPU", "[cuda][gan]") {
  Generator g(2);
  Tensor x = randn({6, 5}, DType::F32, &g), T = mul(randn({5, 12}, DType::F32, &g), 0.5);
  auto run = [](const Tensor& xi, const Tensor& Ti) {
    Tensor a = xi.detach().set_requires_grad(true), b = Ti.detach().set_requires_grad(true);
    Tensor y = nn::minibatch_discrimination(a, b, 4, 3);
    GradOptions go;
    go.create_graph = true;
    V g1 = grad({sum(mul(y, y))}, {a, b}, {}, go);
    V g2 = grad({add(sum(mul(g1[0], g1[0])), sum(mul(g1[1], g1[1])))}, {a, b});
    return V{y.detach(), g1[0].detach(), g1[1].detach(), g2[0], g2[1]};
  };
  V c = run(x, T), d = run(x.to(cuda0()), T.to(cuda0()));
  for (size_t i = 0; i < c.size(); ++i) {
    INFO("output " << i);
    close(d[i], c[i], 2e-3, 1e-4);
  }
}

TEST_CASE("CUDA: one DCGAN iteration and the unrolled D match the CPU", "[cuda][gan]") {
  models::DcganOptions o;
  o.width = 8;
  o.minibatch_kernels = 4;
  auto [Gc, Dc, Gg, Dg] = dcgan_twins(o, 3);
  Generator gd(4);
  Tensor z = randn({8, o.latent_dim}, DType::F32, &gd), x = sub(mul(rand({8, 1, 28, 28}, DType::F32, &gd), 2.0), 1.0);
  Adam oc(Dc->parameters(), AdamOptions{}), og(Dg->parameters(), AdamOptions{});
  auto step = [](nn::Module& G, models::Discriminator& D, Adam& opt, const Tensor& zz, const Tensor& xx) {
    Tensor fake = G.forward(zz);
    opt.zero_grad();
    Tensor l = gan::discriminator_loss(D.run(xx).logits, D.run(fake.detach()).logits, 0.9);
    l.backward();
    opt.step();
    gan::UnrollOptions uo;
    uo.steps = 2;
    std::vector<Tensor> theta = gan::unroll_discriminator(D, opt, xx, fake, uo);
    Tensor lg = gan::generator_loss(D.run(fake, theta).logits);
    V gg = grad({lg}, G.parameters());
    return std::make_pair(l.detach(), gg);
  };
  auto [lc, gc] = step(*Gc, *Dc, oc, z, x);
  auto [lg, ggpu] = step(*Gg, *Dg, og, z.to(cuda0()), x.to(cuda0()));
  close(lg, lc, 1e-4, 1e-5);
  auto pc = Dc->parameters(), pg = Dg->parameters();
  for (size_t i = 0; i < pc.size(); ++i) close(pg[i], pc[i], 1e-3, 1e-5);
  for (size_t i = 0; i < gc.size(); ++i) {
    INFO("G parameter " << i);
    close(ggpu[i], gc[i], 5e-3, 1e-5);
  }
}

TEST_CASE("CUDA: top-k training's G loss and gradient, and the frozen-D G step, match the CPU", "[cuda][gan]") {
  models::DcganOptions o;
  o.width = 8;
  o.d_width = 12;
  auto [Gc, Dc, Gg, Dg] = dcgan_twins(o, 5);
  Generator gd(6);
  Tensor z = randn({16, o.latent_dim}, DType::F32, &gd);
  // G's step with D frozen and the top 10 of 16 samples: G's gradients, none for D.
  auto step = [](nn::Module& G, models::Discriminator& D, const Tensor& zz) {
    nn::FrozenParameters frozen(D.parameters());
    Tensor lg = gan::generator_loss(gan::top_k(D.run(G.forward(zz)).logits, 10));
    lg.backward();
    for (const Tensor& p : D.parameters()) CHECK_FALSE(p.grad().defined());
    return lg.detach();
  };
  Tensor lc = step(*Gc, *Dc, z), lgpu = step(*Gg, *Dg, z.to(cuda0()));
  close(lgpu, lc, 1e-4, 1e-5);
  auto pc = Gc->parameters(), pg = Gg->parameters();
  for (size_t i = 0; i < pc.size(); ++i) {
    INFO("G parameter " << i);
    close(pg[i].grad(), pc[i].grad(), 5e-3, 1e-5);
  }
  for (const Tensor& p : Dg->parameters()) CHECK(p.requires_grad());
}

TEST_CASE("CUDA: a spectrally normalised D's hinge loss, gradients and power iteration match the CPU", "[cuda][gan]") {
  models::DcganOptions o;
  o.width = 8;
  o.spectral_norm = true;
  o.batch_norm_in_d = false;
  auto [Gc, Dc, Gg, Dg] = dcgan_twins(o, 7);
  Generator gd(8);
  Tensor z = randn({8, o.latent_dim}, DType::F32, &gd), x = sub(mul(rand({8, 1, 28, 28}, DType::F32, &gd), 2.0), 1.0);
  auto step = [](nn::Module& G, models::Discriminator& D, const Tensor& zz, const Tensor& xx) {
    Tensor l = gan::hinge_discriminator_loss(D.run(xx).logits, D.run(G.forward(zz).detach()).logits);
    l.backward();
    return l.detach();
  };
  close(step(*Gg, *Dg, z.to(cuda0()), x.to(cuda0())), step(*Gc, *Dc, z, x), 1e-4, 1e-5);
  auto pc = Dc->parameters(), pg = Dg->parameters();
  for (size_t i = 0; i < pc.size(); ++i) {
    INFO("D parameter " << i);
    close(pg[i].grad(), pc[i].grad(), 5e-3, 1e-5);
  }
  // The power iteration's u and v after the warm-up and two forwards.
  auto bc = Dc->named_buffers(), bg = Dg->named_buffers();
  REQUIRE(bc.size() == 6);
  for (size_t i = 0; i < bc.size(); ++i) {
    INFO(bc[i].first);
    close(bg[i].second, bc[i].second, 1e-3, 1e-5);
  }
}

TEST_CASE("CUDA: the relativistic losses' D and G gradients match the CPU", "[cuda][gan]") {
  models::DcganOptions o;
  o.width = 8;
  o.minibatch_kernels = 4;
  auto [Gc, Dc, Gg, Dg] = dcgan_twins(o, 9);
  Generator gd(10);
  Tensor z = randn({8, o.latent_dim}, DType::F32, &gd), x = sub(mul(rand({8, 1, 28, 28}, DType::F32, &gd), 2.0), 1.0);
  // D's relativistic loss (smoothed real target), then G's with D frozen and D's real logits
  // as constants, as kiln_train_gan --relativistic takes them.
  auto step = [](nn::Module& G, models::Discriminator& D, const Tensor& zz, const Tensor& xx) {
    Tensor fake = G.forward(zz);
    Tensor ld = gan::relativistic_discriminator_loss(D.run(xx).logits, D.run(fake.detach()).logits, 0.9);
    ld.backward();
    nn::FrozenParameters frozen(D.parameters());
    Tensor real_now;
    {
      NoGradGuard no_grad;
      real_now = D.run(xx).logits;
    }
    Tensor lg = gan::relativistic_generator_loss(real_now, D.run(fake).logits);
    lg.backward();
    return std::pair{ld.detach(), lg.detach()};
  };
  auto [ldg, lgg] = step(*Gg, *Dg, z.to(cuda0()), x.to(cuda0()));
  auto [ldc, lgc] = step(*Gc, *Dc, z, x);
  close(ldg, ldc, 1e-4, 1e-5);
  close(lgg, lgc, 1e-4, 1e-5);
  for (auto [mc, mg] : {std::pair<nn::Module*, nn::Module*>{Dc.get(), Dg.get()}, {Gc.get(), Gg.get()}}) {
    auto pc = mc->parameters(), pg = mg->parameters();
    for (size_t i = 0; i < pc.size(); ++i) {
      INFO("parameter " << i);
      close(pg[i].grad(), pc[i].grad(), 5e-3, 1e-5);
    }
  }
}
