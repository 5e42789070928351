// The formulas of GAN training and its stabilisers (models/gan/objectives.h), each against
// values worked out by hand, and the unrolled discriminator against real Adam steps and
// finite differences.
#include <cmath>

#include <kiln/models/gan/objectives.h>
#include <kiln/models/zoo/gan.h>
#include <kiln/optim/adam.h>

#include "test_util.h"

using namespace kiln;
using V = std::vector<Tensor>;

namespace {
double softplus(double x) { return std::log1p(std::exp(x)); }
// BCE on a logit x with target y: -y log s(x) - (1 - y) log(1 - s(x)).
double bce(double x, double y) { return y * softplus(-x) + (1 - y) * softplus(x); }
}  // namespace

TEST_CASE("GAN losses: BCE with one-sided label smoothing, non-saturating G loss", "[models][gan][objectives]") {
  Tensor r = from_vector<double>({2.0, -1.0}), f = from_vector<double>({0.5, -3.0});
  const double want = (bce(2.0, 0.9) + bce(-1.0, 0.9)) / 2 + (bce(0.5, 0) + bce(-3.0, 0)) / 2;
  CHECK(gan::discriminator_loss(r, f, 0.9).item<double>() == Approx(want));
  // Smoothing moves only the real targets: the fake term is the same at s = 1.
  const double want1 = (bce(2.0, 1) + bce(-1.0, 1)) / 2 + (bce(0.5, 0) + bce(-3.0, 0)) / 2;
  CHECK(gan::discriminator_loss(r, f).item<double>() == Approx(want1));
  CHECK(gan::generator_loss(f).item<double>() == Approx((softplus(-0.5) + softplus(3.0)) / 2));
  REQUIRE_KILN_ERROR(gan::discriminator_loss(r, f, 0.0), "real_target");
  REQUIRE_KILN_ERROR(gan::generator_loss(r.reshape({2, 1})), "logits (N)");
  // The minimax G loss: mean log(1 - D(G(z))) = -mean softplus(logit).
  CHECK(gan::minimax_generator_loss(f).item<double>() == Approx(-(softplus(0.5) + softplus(-3.0)) / 2));
  REQUIRE_KILN_ERROR(gan::minimax_generator_loss(r.reshape({2, 1})), "logits (N)");
}

TEST_CASE("relativistic average GAN losses: each side against the other's mean", "[models][gan][objectives]") {
  Tensor r = from_vector<double>({2.0, -1.0}), f = from_vector<double>({0.5, -3.0});
  // mean D(x) = 0.5, mean D(G(z)) = -1.25.
  const double want_d = (bce(3.25, 0.9) + bce(0.25, 0.9)) / 2 + (bce(0.0, 0) + bce(-3.5, 0)) / 2;
  CHECK(gan::relativistic_discriminator_loss(r, f, 0.9).item<double>() == Approx(want_d));
  const double want_g = (bce(0.0, 1) + bce(-3.5, 1)) / 2 + (bce(3.25, 0) + bce(0.25, 0)) / 2;
  CHECK(gan::relativistic_generator_loss(r, f).item<double>() == Approx(want_g));
  // Not the plain losses: the other side's mean moves each logit.
  CHECK(gan::relativistic_discriminator_loss(r, f).item<double>() != Approx(gan::discriminator_loss(r, f).item<double>()));
  // G's loss reaches G's samples through both terms (the real term through mean D(G(z))):
  // d/df_j = (s(f_j - m_r) - 1) / N - mean_i s(r_i - m_f) / N.
  Tensor fg = f.detach().set_requires_grad(true);
  gan::relativistic_generator_loss(r, fg).backward();
  auto sig = [](double x) { return 1 / (1 + std::exp(-x)); };
  const double real_term = (sig(3.25) + sig(0.25)) / 2;
  const std::vector<double> g = test::values(fg.grad());
  CHECK(g[0] == Approx((sig(0.0) - 1) / 2 - real_term / 2));
  CHECK(g[1] == Approx((sig(-3.5) - 1) / 2 - real_term / 2));
  for (auto loss : {+[](const V& v) { return gan::relativistic_discriminator_loss(v[0], v[1], 0.9); },
                    +[](const V& v) { return gan::relativistic_generator_loss(v[0], v[1]); }}) {
    Tensor a = from_vector<double>({0.3, -1.2, 2.0}), b = from_vector<double>({-0.7, 0.4, 1.5});
    GradcheckResult c1 = gradcheck(loss, {a, b});
    INFO(c1.message);
    CHECK(c1.ok);
    GradcheckResult c2 = gradgradcheck(loss, {a, b});
    INFO(c2.message);
    CHECK(c2.ok);
  }
  REQUIRE_KILN_ERROR(gan::relativistic_discriminator_loss(r, f, 1.5), "real_target");
  REQUIRE_KILN_ERROR(gan::relativistic_generator_loss(r.reshape({2, 1}), f), "logits (N)");
}

TEST_CASE("top-k training: G's loss on the k samples D rates most real, k's schedule", "[models][gan][objectives]") {
  Tensor f = from_vector<double>({0.5, -3.0, 2.0, 0.5, -1.0}).set_requires_grad(true);
  Tensor top = gan::top_k(f, 3);  // 2.0 (index 2), then the tie 0.5 at indices 0 and 3
  CHECK(test::values(top) == std::vector<double>{2.0, 0.5, 0.5});
  Tensor loss = gan::generator_loss(top);
  CHECK(loss.item<double>() == Approx((softplus(-2.0) + 2 * softplus(-0.5)) / 3));
  loss.backward();
  // d/dx softplus(-x) / 3 = -sigmoid(-x) / 3 on the chosen ones, 0 on the others.
  auto sig = [](double x) { return 1 / (1 + std::exp(-x)); };
  const std::vector<double> g = test::values(f.grad());
  CHECK(g[0] == Approx(-sig(-0.5) / 3));
  CHECK(g[1] == 0.0);
  CHECK(g[2] == Approx(-sig(-2.0) / 3));
  CHECK(g[3] == Approx(-sig(-0.5) / 3));
  CHECK(g[4] == 0.0);
  CHECK(gan::top_k(f, 5).is_same(f));  // k = N: all of them, as they are
  REQUIRE_KILN_ERROR(gan::top_k(f, 0), "k must lie in [1, 5]");
  REQUIRE_KILN_ERROR(gan::top_k(f, 6), "k must lie in [1, 5]");
  // k = max(ceil(gamma^epoch B), ceil(nu B)): 32 at epoch 0; 0.99^10 * 32 = 28.94 -> 29;
  // 0.99^36 * 32 = 22.27 -> 23; 0.99^100 * 32 = 11.7 -> nu's 16.
  CHECK(gan::top_k_count(32, 0, 0.99, 0.5) == 32);
  CHECK(gan::top_k_count(32, 10, 0.99, 0.5) == 29);
  CHECK(gan::top_k_count(32, 36, 0.99, 0.5) == 23);
  CHECK(gan::top_k_count(32, 100, 0.99, 0.5) == 16);
  CHECK(gan::top_k_count(3, 100, 0.5, 0.1) == 1);
  REQUIRE_KILN_ERROR(gan::top_k_count(32, 0, 0.0, 0.5), "gamma and nu");
}

TEST_CASE("feature matching: squared distance of the feature means, real side constant", "[models][gan][objectives]") {
  Tensor real = from_vector<double>({1, 2, 3, 4}).reshape({2, 2}).set_requires_grad(true);  // mean (2, 3)
  Tensor fake = from_vector<double>({0, 0, 2, 1, 1, 2}).reshape({3, 2}).set_requires_grad(true);  // mean (1, 1)
  Tensor l = gan::feature_matching_loss(real, fake);
  CHECK(l.item<double>() == Approx(1.0 + 4.0));
  l.backward();
  // d/dfake_ij = -2 (mean_real - mean_fake)_j / 3.
  CHECK(test::values(fake.grad()) == std::vector<double>{-2.0 / 3, -4.0 / 3, -2.0 / 3, -4.0 / 3, -2.0 / 3, -4.0 / 3});
  CHECK_FALSE(real.grad().defined());
}

TEST_CASE("WGAN-GP: critic and generator losses, the gradient penalty", "[models][gan][objectives]") {
  CHECK(gan::wgan_critic_loss(from_vector<double>({1, 3}), from_vector<double>({0, -2})).item<double>() == -3.0);
  CHECK(gan::wgan_generator_loss(from_vector<double>({0, -2})).item<double>() == 1.0);
  // A linear critic D(x) = <x, w>: the gradient is w everywhere, so the penalty is (||w|| - 1)^2
  // and its gradient in w is 2 (||w|| - 1) w / ||w||.
  Tensor w = from_vector<double>({3.0, 4.0}).set_requires_grad(true);
  Tensor real = from_vector<double>({1, 2, 3, 4, 5, 6}).reshape({3, 2}), fake = zeros({3, 2}, DType::F64);
  Tensor eps = from_vector<double>({0.1, 0.5, 0.9});
  auto critic = [&](const Tensor& x) { return matmul(x, w); };
  Tensor gp = gan::gradient_penalty(critic, real, fake, eps);
  CHECK(gp.item<double>() == Approx(16.0));
  gp.backward();
  CHECK(test::values(w.grad())[0] == Approx(2 * 4 * 3.0 / 5));
  CHECK(test::values(w.grad())[1] == Approx(2 * 4 * 4.0 / 5));
  // A quadratic critic D(x) = sum x^2: the gradient at x^ = e real is 2 e real.
  auto quad = [](const Tensor& x) { return sum(mul(x, x), {1}); };
  double want = 0;
  for (int i = 0; i < 3; ++i) {
    const double e = std::vector<double>{0.1, 0.5, 0.9}[i];
    const double a = 2 * e * (2 * i + 1), b = 2 * e * (2 * i + 2);
    want += std::pow(std::hypot(a, b) - 1, 2) / 3;
  }
  CHECK(gan::gradient_penalty(quad, real, fake, eps).item<double>() == Approx(want));
  REQUIRE_KILN_ERROR(gan::gradient_penalty(quad, real, fake, from_vector<double>({0.5})), "eps must have shape");
}

TEST_CASE("mode regulariser: geometric and mode terms", "[models][gan][objectives]") {
  Tensor x = from_vector<double>({1, 2, 0, 0}).reshape({2, 2});
  Tensor rec = from_vector<double>({1, 0, 1, 1}).reshape({2, 2});
  Tensor logits = from_vector<double>({0.0, 2.0});
  const double geo = (4.0 + 2.0) / 2, mode = (softplus(0.0) + softplus(-2.0)) / 2;
  CHECK(gan::mode_regularizer_loss(x, rec, logits, 0.2, 0.4).item<double>() == Approx(0.2 * geo + 0.4 * mode));
  CHECK(gan::mode_regularizer_loss(x, rec, logits, 0.0, 1.0).item<double>() == Approx(mode));
  REQUIRE_KILN_ERROR(gan::mode_regularizer_loss(x, rec.reshape({4, 1}), logits, 1, 1), "share a");
}

TEST_CASE("unrolled D: first order equals K real Adam steps; second order matches finite differences",
          "[models][gan][objectives]") {
  Generator gen(11);
  models::MlpGanOptions o;
  o.hidden = 6;
  auto D = models::mlp_discriminator(o, gen);
  D->to(DType::F64);
  Tensor real = test::random_tensor({5, 2}, DType::F64, 1), fake = test::random_tensor({4, 2}, DType::F64, 2);
  AdamOptions ao;
  ao.lr = 1e-2;
  ao.beta1 = 0.5;
  Adam opt(D->parameters(), ao);
  // The parameters after 3 steps of the real Adam on a copy of d (options opts) and of its
  // optimizer's state: what the unrolled first-order steps must reproduce.
  auto adam_steps = [&](const models::MlpGanOptions& opts, models::Discriminator& d, Adam& optimizer) {
    auto copy = models::mlp_discriminator(opts, gen);
    copy->to(DType::F64);
    copy->load_state_dict(d.state_dict());
    Adam copy_opt(copy->parameters(), ao);
    copy_opt.load_state_dict(optimizer.state_dict());
    for (int k = 0; k < 3; ++k) {
      copy_opt.zero_grad();
      gan::discriminator_loss(copy->run(real).logits, copy->run(fake).logits, 0.9).backward();
      copy_opt.step();
    }
    return copy->parameters();
  };
  // One real step first, so the unrolled steps start from a non-trivial Adam state.
  opt.zero_grad();
  gan::discriminator_loss(D->run(real).logits, D->run(fake).logits, 0.9).backward();
  opt.step();
  gan::UnrollOptions uo;
  uo.steps = 3;
  uo.lr = ao.lr;
  uo.beta1 = ao.beta1;
  uo.beta2 = ao.beta2;
  uo.eps = ao.eps;  // (the unrolled denominator is sqrt(v + eps^2) / .. + eps: Adam's to ~eps^2 / v)
  uo.real_target = 0.9;
  uo.second_order = false;
  std::vector<Tensor> theta = gan::unroll_discriminator(*D, opt, real, fake, uo);
  std::vector<Tensor> p2 = adam_steps(o, *D, opt);
  for (size_t i = 0; i < theta.size(); ++i) {
    INFO(test::compare(theta[i], p2[i], 1e-7, 1e-10));
    CHECK(test::allclose(theta[i], p2[i], 1e-7, 1e-10));
  }
  // D and its optimizer are untouched.
  CHECK_FALSE(test::allclose(D->parameters()[0], p2[0], 1e-12, 1e-12));

  // Second order: G's loss at theta_K(fake) differentiated in fake, against finite differences.
  uo.second_order = true;
  uo.eps = 1e-8;
  GradcheckOptions go;
  go.atol = 1e-6;
  go.rtol = 1e-3;
  GradcheckResult r = gradcheck([&](const V& v) {
    EnableGradGuard recording;
    std::vector<Tensor> th = gan::unroll_discriminator(*D, opt, real, v[0], uo);
    return gan::generator_loss(D->run(v[0], th).logits);
  }, {fake}, go);
  INFO(r.message);
  CHECK(r.ok);
  // ... and the second-order terms matter: the first-order gradient differs.
  Tensor f2 = fake.detach().set_requires_grad(true);
  Tensor g2 = grad({gan::generator_loss(D->run(f2, gan::unroll_discriminator(*D, opt, real, f2, uo)).logits)}, {f2})[0];
  uo.second_order = false;
  Tensor f1 = fake.detach().set_requires_grad(true);
  Tensor g1 = grad({gan::generator_loss(D->run(f1, gan::unroll_discriminator(*D, opt, real, f1, uo)).logits)}, {f1})[0];
  CHECK_FALSE(test::allclose(g1, g2, 1e-6, 1e-9));

  // This D's samples do not see each other, so the steps send the real and the fake batch
  // through D in one call (checked above against Adam's own steps with two calls). A D with
  // minibatch discrimination takes two calls; its unrolled steps match Adam's likewise.
  REQUIRE(D->per_sample());
  models::MlpGanOptions om = o;
  om.minibatch_kernels = 3;
  om.minibatch_kernel_dim = 2;
  auto Dm = models::mlp_discriminator(om, gen);
  Dm->to(DType::F64);
  REQUIRE_FALSE(Dm->per_sample());
  Adam optm(Dm->parameters(), ao);
  optm.zero_grad();  // one real step first, as above (a fresh Adam differs by eps's placement)
  gan::discriminator_loss(Dm->run(real).logits, Dm->run(fake).logits, 0.9).backward();
  optm.step();
  uo.second_order = false;
  uo.eps = ao.eps;
  std::vector<Tensor> thm = gan::unroll_discriminator(*Dm, optm, real, fake, uo);
  std::vector<Tensor> pm2 = adam_steps(om, *Dm, optm);
  REQUIRE(thm.size() == pm2.size());
  for (size_t i = 0; i < thm.size(); ++i) {
    INFO("parameter " << i << ": " << test::compare(thm[i], pm2[i], 1e-7, 1e-10));
    CHECK(test::allclose(thm[i], pm2[i], 1e-7, 1e-10));
  }
}

TEST_CASE("Discriminator::per_sample follows minibatch discrimination and BatchNorm's mode", "[models][gan]") {
  Generator gen(3);
  models::MlpGanOptions o;
  CHECK(models::mlp_discriminator(o, gen)->per_sample());
  o.minibatch_kernels = 4;
  CHECK_FALSE(models::mlp_discriminator(o, gen)->per_sample());
  models::DcganOptions d;
  auto D = models::dcgan_discriminator(d, gen);
  CHECK_FALSE(D->per_sample());  // BatchNorm in training mode mixes the batch
  D->eval();
  CHECK(D->per_sample());
  D->train();
  d.batch_norm_in_d = false;  // the WGAN-GP critic
  CHECK(models::dcgan_discriminator(d, gen)->per_sample());
}
