// GAN building blocks: minibatch discrimination, functional_call, the DCGAN and MLP GAN
// models, 2-D mixtures, the image folder, sample grids, the GAN metrics (on cases with
// known answers) and the classifier loader.
#include <cmath>
#include <filesystem>
#include <fstream>

#include <kiln/core/safetensors.h>
#include <kiln/models/data/images.h>
#include <kiln/models/data/toy2d.h>
#include <kiln/models/eval/classifier.h>
#include <kiln/models/eval/gan_metrics.h>
#include <kiln/models/nn/functional.h>
#include <kiln/models/nn/minibatch_discrimination.h>
#include <kiln/models/nn/spectral_norm.h>
#include <kiln/ops/conv.h>
#include <kiln/models/zoo/gan.h>
#include <kiln/models/zoo/resnet_cnn.h>

#include "test_util.h"

using namespace kiln;
using V = std::vector<Tensor>;

TEST_CASE("minibatch discrimination: the formula on a hand-checked case", "[models][gan]") {
  // x (3, 2), T = identity-like (2, B*C = 2*1): M_i,b = x_i,b; o_i,b = sum_{j != i} exp(-|x_i,b - x_j,b|).
  Tensor x = from_vector<double>({0.0, 1.0, 1.0, 1.0, 3.0, 0.0}).reshape({3, 2});
  Tensor T = from_vector<double>({1.0, 0.0, 0.0, 1.0}).reshape({2, 2});
  Tensor y = nn::minibatch_discrimination(x, T, 2, 1);
  REQUIRE(y.sizes() == Shape{3, 4});
  std::vector<double> v = test::values(y);
  auto e = [](double d) { return std::exp(-std::abs(d)); };
  CHECK(v[2] == Approx(e(0 - 1) + e(0 - 3)));  // sample 0, kernel 0
  CHECK(v[3] == Approx(e(1 - 1) + e(1 - 0)));  // sample 0, kernel 1
  CHECK(v[10] == Approx(e(3 - 0) + e(3 - 1)));  // sample 2, kernel 0
  CHECK(v[0] == 0.0);                           // x is passed through
  // First and second derivatives in x and T.
  GradcheckOptions opt;
  opt.atol = 1e-5;
  opt.rtol = 1e-3;
  Tensor xr = test::random_tensor({4, 3}, DType::F64, 1), Tr = test::random_tensor({3, 6}, DType::F64, 2);
  auto f = [](const V& a) { return nn::minibatch_discrimination(a[0], a[1], 3, 2); };
  CHECK(gradcheck(f, {xr, Tr}, opt).ok);
  CHECK(gradgradcheck(f, {xr, Tr}, opt).ok);
  REQUIRE_KILN_ERROR(nn::minibatch_discrimination(xr, Tr, 2, 2), "T must have shape");
}

TEST_CASE("functional_call evaluates a module at other parameters", "[models][gan]") {
  Generator gen(3);
  models::MlpGanOptions o;
  o.minibatch_kernels = 4;
  auto d = models::mlp_discriminator(o, gen);
  Tensor x = randn({5, 2}, DType::F32, &gen);
  std::vector<Tensor> own = d->parameters();
  // Its own parameters: the ordinary forward.
  CHECK(test::allclose(d->run(x, own).logits, d->run(x).logits));
  // Changed parameters: the same as a copy loaded with them.
  std::vector<Tensor> other;
  for (auto& p : own) other.push_back(add(p.detach(), 0.1));
  auto d2 = models::mlp_discriminator(o, gen);
  std::map<std::string, Tensor> sd;
  auto names = d->named_parameters();
  for (size_t i = 0; i < names.size(); ++i) sd[names[i].first] = other[i];
  d2->load_state_dict(sd);
  CHECK(test::allclose(d->run(x, other).logits, d2->run(x).logits, 1e-5, 1e-6));
  // Gradients flow to the replacements (what unrolling needs).
  std::vector<Tensor> leaves;
  for (auto& p : other) leaves.push_back(p.detach().set_requires_grad(true));
  Tensor l = sum(d->run(x, leaves).logits);
  std::vector<Tensor> g = grad({l}, leaves);
  for (size_t i = 0; i < g.size(); ++i) CHECK(g[i].sizes() == leaves[i].sizes());
  REQUIRE_KILN_ERROR(d->run(x, std::vector<Tensor>(own.begin(), own.end() - 1)), "expects");
  // A DCGAN discriminator with BN in training mode (batch statistics).
  models::DcganOptions dc;
  auto dd = models::dcgan_discriminator(dc, gen);
  Tensor img = randn({4, 1, 28, 28}, DType::F32, &gen);
  std::vector<Tensor> dp;
  for (auto& p : dd->parameters()) dp.push_back(p.detach().clone());
  CHECK(test::allclose(dd->run(img, dp).logits, dd->run(img).logits, 1e-4, 1e-5));
}

TEST_CASE("spectral normalisation: sigma of a known matrix, the layer dims, gradients", "[models][gan]") {
  // Rows 3 (1, 1, 1, 1) / 2 and (1, -1, 1, -1) / 2 are orthogonal: singular values 3 and 1.
  Tensor w = from_vector<double>({1.5, 1.5, 1.5, 1.5, 0.5, -0.5, 0.5, -0.5}).reshape({2, 1, 2, 2});
  Tensor u = from_vector<double>({0.6, 0.8}), v = zeros({4}, DType::F64);
  Tensor wn = nn::spectral_normalize(w, u, v, 0, 30, 1e-12, true);
  CHECK(test::allclose(wn, div(w, 3.0), 1e-9, 1e-12));
  // Power iteration converged to the top singular vectors (up to sign).
  CHECK(std::abs(test::values(u)[0]) == Approx(1.0).margin(1e-9));
  CHECK(std::abs(test::values(v)[0]) == Approx(0.5).margin(1e-9));
  // Without iterations sigma = u^T W v from the given vectors: u = (0, 1), v = (1, -1, 1, -1) / 2 -> 1.
  Tensor u1 = from_vector<double>({0.0, 1.0}), v1 = from_vector<double>({0.5, -0.5, 0.5, -0.5});
  CHECK(test::allclose(nn::spectral_normalize(w, u1, v1, 0, 0), w, 1e-12, 1e-12));
  // A ConvTranspose2d's weight (in, out, kH, kW) is a matrix over its dim 1: the same two rows
  // as out channels give sigma 3 (over dim 0 the (1, 8) matrix would give sqrt(10)).
  Tensor wt = w.reshape({1, 2, 2, 2});
  Tensor ut = from_vector<double>({0.6, 0.8}), vt = zeros({4}, DType::F64);
  CHECK(test::allclose(nn::spectral_normalize(wt, ut, vt, 1, 30, 1e-12, true), div(wt, 3.0), 1e-9, 1e-12));
  // The gradient treats u and v as constants: d(W / u^T W v) = dW / s - W (u^T dW v) / s^2.
  GradcheckOptions opt;
  opt.atol = 1e-5;
  opt.rtol = 1e-3;
  Tensor wr = test::random_tensor({3, 2, 2, 2}, DType::F64, 4);
  Tensor ur = div(test::random_tensor({3}, DType::F64, 5), 2.0), vr = test::random_tensor({8}, DType::F64, 6);
  auto f = [&](const V& a) { return nn::spectral_normalize(a[0], ur, vr, 0, 0); };
  CHECK(gradcheck(f, {wr}, opt).ok);
  CHECK(gradgradcheck(f, {wr}, opt).ok);
  // A gradient check fails if sigma's dependence on W were dropped (W / s with s a constant).
  auto wrong = [&](const V& a) {
    Tensor W = a[0].reshape({3, -1});
    Tensor s = sum(mul(ur, matmul(W.detach(), vr)));
    return div(a[0], s);
  };
  {
    Tensor a = wr.detach().set_requires_grad(true), b = wr.detach().set_requires_grad(true);
    Tensor proj = test::random_tensor({3, 2, 2, 2}, DType::F64, 7);
    Tensor ga = grad({sum(mul(f({a}), proj))}, {a})[0], gb = grad({sum(mul(wrong({b}), proj))}, {b})[0];
    CHECK_FALSE(test::allclose(ga, gb, 1e-6, 1e-8));
  }
  REQUIRE_KILN_ERROR(nn::spectral_normalize(w, from_vector<double>({1.0, 0.0, 0.0}), v, 0), "u (2) and v (4)");
  REQUIRE_KILN_ERROR(nn::spectral_normalize(w, u, v, 2), "dim 2");
}

TEST_CASE("SpectralNorm wraps a layer: power iteration in training, none in eval, functional_call", "[models][gan]") {
  Generator gen(11);
  auto conv = std::make_shared<nn::Conv2d>(3, 4, 3, 1, 1);
  conv->reset_parameters(&gen);
  auto sn = std::make_shared<nn::SpectralNorm>(conv, 1, 1e-12, &gen, 0);  // u, v as drawn
  // Its state: the layer's own parameters under "module." and the two vectors.
  auto sd = sn->state_dict();
  CHECK(sd.count("module.weight") == 1);
  CHECK(sd.count("module.bias") == 1);
  CHECK(sd.at("u").sizes() == Shape{4});
  CHECK(sd.at("v").sizes() == Shape{27});
  CHECK(sn->parameters().size() == 2);
  Tensor x = randn({2, 3, 5, 5}, DType::F32, &gen);
  // Training: one step from u, v (kept), then the convolution with W / sigma.
  Tensor u0 = sn->u.clone(), v0 = sn->v.clone();
  Tensor expect_u = u0.clone(), expect_v = v0.clone();
  Tensor wn = nn::spectral_normalize(conv->weight, expect_u, expect_v, 0, 1, 1e-12, true);
  Tensor y = sn->forward(x);
  CHECK(test::allclose(y, conv2d(x, wn, conv->bias, 1, 1), 1e-5, 1e-6));
  CHECK(test::allclose(sn->u, expect_u, 1e-6, 1e-7));
  CHECK_FALSE(test::allclose(sn->u, u0, 1e-6, 1e-7));
  // The weight's gradient flows through W / sigma to the layer's parameter.
  sum(mul(y, y)).backward();
  REQUIRE(conv->weight.grad().defined());
  // Eval: u and v stay.
  sn->eval();
  Tensor ue = sn->u.clone();
  Tensor ye = sn->forward(x);
  CHECK(test::allclose(sn->u, ue, 0, 0));
  Tensor ue2 = sn->u.clone(), ve2 = sn->v.clone();
  CHECK(test::allclose(ye, conv2d(x, nn::spectral_normalize(conv->weight, ue2, ve2, 0, 0), conv->bias, 1, 1), 1e-5,
                       1e-6));
  // Warmed up (15 iterations at construction): sigma is within a few per cent of the top
  // singular value, found by 500 iterations here, and never above it.
  auto conv2 = std::make_shared<nn::Conv2d>(8, 16, 3);
  conv2->reset_parameters(&gen);
  nn::SpectralNorm warm(conv2, 1, 1e-12, &gen);
  Tensor uu = warm.u.clone(), vv = warm.v.clone(), ul = warm.u.clone(), vl = warm.v.clone();
  const Tensor W2 = conv2->weight.detach();
  const double s_est = test::values(div(W2, nn::spectral_normalize(W2, uu, vv, 0, 0)))[0];
  const double s_true = test::values(div(W2, nn::spectral_normalize(W2, ul, vl, 0, 500)))[0];
  CHECK(s_est == Approx(s_true).epsilon(0.05));
  CHECK(s_est <= s_true * (1 + 1e-5));
  nn::SpectralNorm cold(conv2, 1, 1e-12, &gen, 0);
  Tensor uc0 = cold.u.clone(), vc0 = cold.v.clone();
  CHECK(test::values(div(W2, nn::spectral_normalize(W2, uc0, vc0, 0, 0)))[0] < 0.5 * s_true);  // random u, v
  // functional_call at other weights: W' / sigma(W') after one step from the kept u, v,
  // which it leaves alone.
  sn->train();
  Tensor w2 = add(conv->weight.detach(), 0.05), b2 = conv->bias.detach();
  Tensor uk = sn->u.clone(), vk = sn->v.clone();
  Tensor yf = nn::functional_call(*sn, x, std::vector<Tensor>{w2, b2});
  Tensor uc = sn->u.clone(), vc = sn->v.clone();
  CHECK(test::allclose(yf, conv2d(x, nn::spectral_normalize(w2, uc, vc, 0, 1), b2, 1, 1), 1e-5, 1e-6));
  CHECK(test::allclose(sn->u, uk, 0, 0));
  CHECK(test::allclose(sn->v, vk, 0, 0));
  // A ConvTranspose2d is normalised over its output channels (dim 1).
  auto tconv = std::make_shared<nn::ConvTranspose2d>(4, 2, 4, 2, 1);
  auto snt = std::make_shared<nn::SpectralNorm>(tconv, 1, 1e-12, &gen);
  CHECK(snt->dim == 1);
  CHECK(snt->u.sizes() == Shape{2});
  CHECK(snt->forward(randn({1, 4, 3, 3}, DType::F32, &gen)).sizes() == Shape{1, 2, 6, 6});
  REQUIRE_KILN_ERROR(nn::SpectralNorm(std::make_shared<nn::ReLU>()), "supports Linear, Conv2d and ConvTranspose2d");
  REQUIRE_KILN_ERROR(nn::SpectralNorm(conv, 0), "n_power_iterations must be >= 1");
}

TEST_CASE("DCGAN and MLP GAN shapes, init and errors", "[models][gan]") {
  Generator gen(5);
  for (int64_t size : {28, 32, 64}) {
    models::DcganOptions o;
    o.image_size = size;
    o.channels = size == 28 ? 1 : 3;
    o.width = 8;
    auto G = models::dcgan_generator(o, gen);
    auto D = models::dcgan_discriminator(o, gen);
    Tensor z = randn({2, o.latent_dim}, DType::F32, &gen);
    Tensor img = G->forward(z);
    INFO(size);
    CHECK(img.sizes() == Shape{2, o.channels, size, size});
    CHECK(max(abs(img)).item<float>() <= 1.0f);  // tanh
    auto out = D->run(img);
    CHECK(out.logits.sizes() == Shape{2});
    CHECK(out.features.dim() == 2);
    auto E = models::dcgan_encoder(o, gen);
    CHECK(E->forward(img).sizes() == Shape{2, o.latent_dim});
  }
  models::DcganOptions o;
  auto G = models::dcgan_generator(o, gen);
  // N(0, 0.02) weights: the first transposed convolution has 100 x 64 x 7 x 7 of them.
  Tensor w = G->get_parameter("main.0.weight");
  CHECK(std::abs(mean(w).item<float>()) < 1e-3);
  CHECK(kiln::std(w).item<float>() == Approx(0.02).epsilon(0.02));
  CHECK(mean(G->get_parameter("main.1.weight")).item<float>() == Approx(1.0).epsilon(0.01));
  // d_width sets D's (and E's) channels alone: ndf 48 -> conv 1->48 4x4, conv 48->96 4x4, BN 96,
  // Linear 96*7*7 -> 1; G keeps ngf = width.
  models::DcganOptions wide = o;
  wide.d_width = 48;
  auto Dw = models::dcgan_discriminator(wide, gen);
  CHECK(Dw->get_parameter("main.0.weight").sizes() == Shape{48, 1, 4, 4});
  CHECK(Dw->get_parameter("main.2.weight").sizes() == Shape{96, 48, 4, 4});
  CHECK(Dw->get_parameter("head.weight").sizes() == Shape{1, 96 * 7 * 7});
  CHECK(models::dcgan_generator(wide, gen)->get_parameter("main.0.weight").sizes() == Shape{100, 64, 7, 7});
  CHECK(Dw->run(G->forward(randn({2, 100}, DType::F32, &gen))).features.sizes() == Shape{2, 96 * 7 * 7});
  CHECK(models::dcgan_encoder(wide, gen)->forward(randn({2, 1, 28, 28}, DType::F32, &gen)).sizes() ==
        Shape{2, 100});
  wide.d_width = -1;
  REQUIRE_KILN_ERROR(models::dcgan_discriminator(wide, gen), "d_width >= 0");
  o.image_size = 48;
  REQUIRE_KILN_ERROR(models::dcgan_generator(o, gen), "image_size must be 28, 32 or 64");
  models::DcganOptions gp;
  gp.batch_norm_in_d = false;
  for (auto& [name, m] : models::dcgan_discriminator(gp, gen)->named_modules())
    CHECK(m->type_name() != "BatchNorm2d");
  // Spectral normalisation: both convolutions and the head wrapped (the weights under
  // "module."), u warmed up on the DCGAN init, no BN; D's outputs stay per sample.
  models::DcganOptions sno;
  sno.spectral_norm = true;
  sno.batch_norm_in_d = false;
  auto dsn = models::dcgan_discriminator(sno, gen);
  int n_sn = 0;
  for (auto& [name, m] : dsn->named_modules()) {
    n_sn += m->type_name() == "SpectralNorm";
    CHECK(m->type_name() != "BatchNorm2d");
  }
  CHECK(n_sn == 3);
  CHECK(dsn->get_parameter("main.0.module.weight").sizes() == Shape{32, 1, 4, 4});
  CHECK(dsn->get_parameter("head.module.weight").sizes() == Shape{1, 64 * 7 * 7});
  CHECK(dsn->get_buffer("main.2.u").sizes() == Shape{64});
  CHECK(kiln::std(dsn->get_parameter("main.2.module.weight")).item<float>() == Approx(0.02).epsilon(0.05));
  CHECK(dsn->per_sample());
  Tensor imgs = randn({3, 1, 28, 28}, DType::F32, &gen);
  CHECK(dsn->run(imgs).logits.sizes() == Shape{3});
  std::vector<Tensor> shifted;
  for (auto& p : dsn->parameters()) shifted.push_back(add(p.detach(), 0.01));
  CHECK(dsn->run(imgs, shifted).logits.sizes() == Shape{3});  // functional_call through the wrappers
  models::MlpGanOptions msn;
  msn.spectral_norm = true;
  CHECK(models::mlp_discriminator(msn, gen)->get_buffer("head.v").sizes() == Shape{128});
  models::MlpGanOptions mo;
  auto mg = models::mlp_generator(mo, gen);
  CHECK(mg->forward(randn({3, 256}, DType::F32, &gen)).sizes() == Shape{3, 2});
  mo.hidden = 0;
  REQUIRE_KILN_ERROR(models::mlp_generator(mo, gen), "must be >= 1");
}

TEST_CASE("2-D mixtures: centres, samples, names", "[models][data][gan]") {
  data::Mixture2d r = data::ring8();
  REQUIRE(r.centers.size() == 8);
  for (auto& c : r.centers) CHECK(std::hypot(c[0], c[1]) == Approx(2.0));
  CHECK(data::grid25().centers.size() == 25);
  Generator gen(1);
  Tensor s = data::sample_mixture(r, 4000, gen);
  REQUIRE(s.sizes() == Shape{4000, 2});
  eval::ModeCoverage mc = eval::mode_coverage(s, r);
  CHECK(mc.modes_covered == 8);
  CHECK(mc.high_quality > 0.98);  // 3 sigma of a 2-D Gaussian holds 98.9%
  REQUIRE_KILN_ERROR(data::mixture2d("ring9"), "expected ring8 or grid25");
}

TEST_CASE("GAN metrics on cases with known answers", "[models][gan][metrics]") {
  const int64_t K = 10, N = 1000;
  // Confident samples spread evenly over the classes: MODE = Inception = K.
  auto cycle = [](int64_t n, int64_t k) {
    std::vector<int64_t> v(n);
    for (int64_t i = 0; i < n; ++i) v[i] = i % k;
    return from_vector<int64_t>(v);
  };
  Tensor even = one_hot(cycle(N, K), K).to(DType::F64);
  CHECK(eval::mode_score(even) == Approx(10.0));
  CHECK(eval::inception_score(even) == Approx(10.0));
  // A one-class generator: MODE = Inception = 1.
  Tensor one = one_hot(zeros({N}, DType::I64), K).to(DType::F64);
  CHECK(eval::mode_score(one) == Approx(1.0));
  CHECK(eval::inception_score(one) == Approx(1.0));
  // Real data against itself under a skewed prior: p(y) = p* gives MODE = exp(E KL(p(y|x) || p*)).
  Tensor prior = from_vector<double>({0.5, 0.5});
  Tensor half = one_hot(cycle(100, 2), 2).to(DType::F64);
  CHECK(eval::mode_score(half, prior) == Approx(2.0));
  // Uniform predictions carry no information: 1.
  CHECK(eval::mode_score(full({N, K}, 0.1, DType::F64)) == Approx(1.0));
  REQUIRE_KILN_ERROR(eval::mode_score(full({N, K}, 0.1, DType::F64), from_vector<double>({1.0})), "prior");

  // Frechet distance: 0 against itself; for b = 2 a + 1 (mean shift mean(a) + 1, covariance
  // 4 cov(a)), ||mean(a) + 1||^2 + tr(cov a) exactly.
  Generator gen(2);
  Tensor a = randn({2000, 4}, DType::F64, &gen);
  CHECK(eval::frechet_distance(a, a) == Approx(0.0).margin(1e-6));
  Tensor b = add(mul(a, 2.0), 1.0);
  double tr = 0;
  for (int64_t f = 0; f < 4; ++f) {
    tr += var(a.select(1, f)).item<double>();
    tr += std::pow(mean(a.select(1, f)).item<double>() + 1.0, 2);
  }
  CHECK(eval::frechet_distance(a, b) == Approx(tr).epsilon(1e-6));
  CHECK(eval::frechet_distance(b, a) == Approx(tr).epsilon(1e-6));
  REQUIRE_KILN_ERROR(eval::frechet_distance(a, randn({10, 3}, DType::F64, &gen)), "features");

  // Class coverage.
  eval::ClassCoverage cc = eval::class_coverage(from_vector<int64_t>({0, 1, 1, 2, 2, 2}), 3);
  CHECK(cc.classes_covered == 3);
  CHECK(cc.max_min_ratio == Approx(3.0));
  eval::ClassCoverage c1 = eval::class_coverage(zeros({5}, DType::I64), 3);
  CHECK(c1.classes_covered == 1);
  CHECK(std::isinf(c1.max_min_ratio));

  // Mode coverage: exactly at the centres, all in one mode, far away.
  data::Mixture2d r = data::ring8();
  std::vector<float> pts, onept, far;
  for (int i = 0; i < 800; ++i) {
    auto& c = r.centers[i % 8];
    pts.insert(pts.end(), {float(c[0]), float(c[1])});
    onept.insert(onept.end(), {float(r.centers[0][0]), float(r.centers[0][1])});
    far.insert(far.end(), {0.0f, 0.0f});
  }
  eval::ModeCoverage all = eval::mode_coverage(from_vector<float>(pts).reshape({800, 2}), r);
  CHECK(all.modes_covered == 8);
  CHECK(all.high_quality == 1.0);
  CHECK(eval::mode_coverage(from_vector<float>(onept).reshape({800, 2}), r).modes_covered == 1);
  eval::ModeCoverage none = eval::mode_coverage(from_vector<float>(far).reshape({800, 2}), r);
  CHECK(none.modes_covered == 0);
  CHECK(none.high_quality == 0.0);
}

TEST_CASE("image folder, sample grid and PNG files", "[models][data][gan]") {
  test::TempDir dir("kiln_images");
  // Two classes in sub-folders, one image at the top; sizes that need cropping and resizing.
  Tensor red = zeros({3, 40, 60}, DType::U8);
  red.select(0, 0).fill_(200);
  data::write_png(dir.file("cats/a.png"), red);
  data::write_png(dir.file("dogs/b.png"), full({1, 16, 16}, int64_t{50}, DType::U8));
  data::write_png(dir.file("c.png"), full({3, 8, 8}, int64_t{255}, DType::U8));
  std::filesystem::create_directories(dir.file("empty"));
  data::Dataset d = data::load_image_folder(dir.path.string(), 8, 3);
  REQUIRE(d.images.sizes() == Shape{3, 3, 8, 8});
  // Sorted paths: c.png (top level, label 0), cats/a.png (0), dogs/b.png (1).
  CHECK(test::vec<int64_t>(d.labels) == std::vector<int64_t>{0, 0, 1});
  std::vector<uint8_t> px = test::vec<uint8_t>(d.images);
  CHECK(px[0] == 255);                  // c.png
  CHECK(px[3 * 64] == 200);             // a.png red channel
  CHECK(px[3 * 64 + 64] == 0);          // a.png green channel
  CHECK(px[2 * 3 * 64 + 64 + 5] == 50);  // b.png grey -> RGB
  data::Dataset g = data::load_image_folder(dir.path.string(), 4, 1);
  CHECK(g.images.sizes() == Shape{3, 1, 4, 4});
  {  // an image of the size asked keeps its pixels, bit for bit (no resampling filter)
    test::TempDir exact("kiln_images_exact");
    std::vector<uint8_t> values(3 * 8 * 8);
    for (size_t i = 0; i < values.size(); ++i) values[i] = static_cast<uint8_t>(i * 37 % 256);
    Tensor pattern = from_vector<uint8_t>(values).reshape({3, 8, 8});
    data::write_png(exact.file("p.png"), pattern);
    data::Dataset e = data::load_image_folder(exact.path.string(), 8, 3);
    CHECK(test::vec<uint8_t>(e.images) == test::vec<uint8_t>(pattern));
  }
  REQUIRE_KILN_ERROR(data::load_image_folder(dir.file("empty"), 8, 3), "no image files");
  REQUIRE_KILN_ERROR(data::load_image_folder(dir.file("missing"), 8, 3), "is not a directory");
  {
    std::ofstream bad(dir.file("z.png"));
    bad << "not a png";
  }
  REQUIRE_KILN_ERROR(data::load_image_folder(dir.path.string(), 8, 3), "cannot decode");

  // A grid of 5 images, 3 per row, pad 1: (C, 2 * (H + 1) + 1, 3 * (W + 1) + 1); values mapped from [-1, 1].
  Tensor imgs = full({5, 1, 2, 2}, 1.0, DType::F32);
  imgs.select(0, 4).fill_(-1.0);
  Tensor grid = data::image_grid(imgs, 3, 1);
  REQUIRE(grid.sizes() == Shape{1, 7, 10});
  std::vector<uint8_t> gv = test::vec<uint8_t>(grid);
  CHECK(gv[0] == 0);            // padding
  CHECK(gv[1 * 10 + 1] == 255);  // image 0
  CHECK(gv[4 * 10 + 5] == 0);   // image 4 (value -1)
  CHECK(gv[4 * 10 + 1] == 255);  // image 3
  data::write_png(dir.file("grid.png"), grid);
  CHECK(std::filesystem::file_size(dir.file("grid.png")) > 0);
  REQUIRE_KILN_ERROR(data::write_png(dir.file("x.png"), zeros({2, 4, 4}, DType::U8)), "C = 1 or 3");
  data::write_scatter_png(dir.file("s.png"), zeros({3, 2}), data::ring8().centers, 3.0, 64);
  CHECK(std::filesystem::exists(dir.file("s.png")));
}

TEST_CASE("load_classifier: a kiln_train_cnn checkpoint, its penultimate features", "[models][gan][metrics]") {
  test::TempDir dir("kiln_classifier");
  Generator gen(4);
  models::ResNetCNNOptions o;
  o.width = 4;
  auto net = models::resnet_cnn(o, gen);
  std::map<std::string, Tensor> st;
  for (auto& [k, v] : net->state_dict()) st["model." + k] = v;
  st["train.step"] = scalar_tensor(int64_t{1}, DType::I64);
  std::filesystem::create_directories(dir.file("run/checkpoints"));
  save_safetensors(dir.file("run/checkpoints/step-000000000001.safetensors"), st);
  eval::Classifier c = eval::load_classifier(dir.file("run"));
  CHECK(c.feature_dim == 16);
  CHECK(c.num_classes == 10);
  Tensor imgs = rand({7, 1, 28, 28}, DType::F32, &gen);
  eval::Classified out = eval::classify(c, mul(sub(imgs, 0.5), 2.0), -1, 1, 3);  // three batches
  CHECK(out.probs.sizes() == Shape{7, 10});
  CHECK(out.features.sizes() == Shape{7, 16});
  CHECK(test::allclose(sum(out.probs, {1}), ones({7}), 1e-5, 1e-5));
  // The same as the model on the normalised input.
  net->eval();
  Tensor ref = softmax((*net)(div(sub(imgs, data::kFashionMnistMean), data::kFashionMnistStd)), 1);
  CHECK(test::allclose(out.probs, ref, 1e-4, 1e-5));
  REQUIRE_KILN_ERROR(eval::load_classifier(dir.file("nothing")), "is not a file");
  std::filesystem::create_directories(dir.file("empty_run"));
  REQUIRE_KILN_ERROR(eval::load_classifier(dir.file("empty_run")), "no checkpoint");
  save_safetensors(dir.file("other.safetensors"), {{"x", zeros({1})}});
  REQUIRE_KILN_ERROR(eval::load_classifier(dir.file("other.safetensors")), "holds no kiln_train_cnn model");
}
