#include <kiln/models/gan/objectives.h>

#include <algorithm>
#include <cmath>

#include <kiln/core/autograd.h>
#include <kiln/core/error.h>
#include <kiln/ops/binary.h>
#include <kiln/ops/checks.h>
#include <kiln/ops/index.h>
#include <kiln/ops/loss.h>
#include <kiln/ops/reduce.h>
#include <kiln/ops/unary.h>

namespace kiln::gan {
namespace {

Tensor bce_to(const Tensor& logits, double target) {
  return binary_cross_entropy_with_logits(logits,
                                          full(logits.sizes(), target, TensorOptions(logits.dtype(), logits.device())));
}

void check_logits(const char* op, const Tensor& t, const char* name) {
  kiln::detail::check_defined(op, t, name);
  KILN_CHECK(t.dim() == 1, op, ": ", name, " must be D's logits (N), got ", describe(t));
}

// Dims 1.. of x (the per-sample dims).
Dims sample_dims(const Tensor& x) {
  Dims d;
  for (int64_t i = 1; i < x.dim(); ++i) d.push_back(i);
  return d;
}

}  // namespace

Tensor discriminator_loss(const Tensor& real_logits, const Tensor& fake_logits, double real_target) {
  check_logits("discriminator_loss", real_logits, "real_logits");
  check_logits("discriminator_loss", fake_logits, "fake_logits");
  KILN_CHECK(real_target > 0 && real_target <= 1, "discriminator_loss: real_target must lie in (0, 1], got ",
             real_target);
  return add(bce_to(real_logits, real_target), bce_to(fake_logits, 0.0));
}

Tensor generator_loss(const Tensor& fake_logits) {
  check_logits("generator_loss", fake_logits, "fake_logits");
  return bce_to(fake_logits, 1.0);
}

Tensor minimax_generator_loss(const Tensor& fake_logits) {
  check_logits("minimax_generator_loss", fake_logits, "fake_logits");
  return neg(bce_to(fake_logits, 0.0));
}

Tensor relativistic_discriminator_loss(const Tensor& real_logits, const Tensor& fake_logits, double real_target) {
  check_logits("relativistic_discriminator_loss", real_logits, "real_logits");
  check_logits("relativistic_discriminator_loss", fake_logits, "fake_logits");
  KILN_CHECK(real_target > 0 && real_target <= 1,
             "relativistic_discriminator_loss: real_target must lie in (0, 1], got ", real_target);
  return add(bce_to(sub(real_logits, mean(fake_logits)), real_target),
             bce_to(sub(fake_logits, mean(real_logits)), 0.0));
}

Tensor relativistic_generator_loss(const Tensor& real_logits, const Tensor& fake_logits) {
  check_logits("relativistic_generator_loss", real_logits, "real_logits");
  check_logits("relativistic_generator_loss", fake_logits, "fake_logits");
  return add(bce_to(sub(fake_logits, mean(real_logits)), 1.0), bce_to(sub(real_logits, mean(fake_logits)), 0.0));
}

Tensor top_k(const Tensor& fake_logits, int64_t k) {
  check_logits("top_k", fake_logits, "fake_logits");
  const int64_t n = fake_logits.size(0);
  KILN_CHECK(k >= 1 && k <= n, "top_k: k must lie in [1, ", n, "], got ", k);
  if (k == n) return fake_logits;
  const std::vector<double> v = fake_logits.detach().to(kCPU).to_vector<double>();
  std::vector<int64_t> idx(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) idx[static_cast<size_t>(i)] = i;
  std::stable_sort(idx.begin(), idx.end(), [&](int64_t a, int64_t b) { return v[a] > v[b]; });
  idx.resize(static_cast<size_t>(k));
  return index_select(fake_logits, 0, from_vector(idx).to(fake_logits.device()));
}

int64_t top_k_count(int64_t batch, int64_t epoch, double gamma, double nu) {
  KILN_CHECK(batch >= 1 && epoch >= 0, "top_k_count: batch must be >= 1 and epoch >= 0, got ", batch, ", ", epoch);
  KILN_CHECK(gamma > 0 && gamma <= 1 && nu > 0 && nu <= 1, "top_k_count: gamma and nu must lie in (0, 1], got ",
             gamma, ", ", nu);
  const auto up = [](double x) { return static_cast<int64_t>(std::ceil(x - 1e-9)); };
  const int64_t decayed = up(std::pow(gamma, static_cast<double>(epoch)) * static_cast<double>(batch));
  return std::clamp<int64_t>(std::max(decayed, up(nu * static_cast<double>(batch))), 1, batch);
}

Tensor feature_matching_loss(const Tensor& real_features, const Tensor& fake_features) {
  kiln::detail::check_defined("feature_matching_loss", real_features, "real_features");
  kiln::detail::check_defined("feature_matching_loss", fake_features, "fake_features");
  KILN_CHECK(real_features.dim() == 2 && fake_features.dim() == 2 && real_features.size(1) == fake_features.size(1),
             "feature_matching_loss: expects features (N, F) and (M, F), got ", describe(real_features), " and ",
             describe(fake_features));
  Tensor d = sub(mean(real_features.detach(), {0}), mean(fake_features, {0}));
  return sum(mul(d, d));
}

Tensor gradient_penalty(const std::function<Tensor(const Tensor&)>& critic, const Tensor& real, const Tensor& fake,
                        const Tensor& eps) {
  kiln::detail::check_defined("gradient_penalty", real, "real");
  kiln::detail::check_defined("gradient_penalty", fake, "fake");
  KILN_CHECK(real.sizes() == fake.sizes() && real.dim() >= 2, "gradient_penalty: real and fake must share a shape (N, ...), got ",
             describe(real), " and ", describe(fake));
  KILN_CHECK(eps.defined() && eps.dim() == 1 && eps.size(0) == real.size(0), "gradient_penalty: eps must have shape (",
             real.size(0), "), got ", eps.defined() ? describe(eps) : "undefined");
  Shape es(static_cast<size_t>(real.dim()), 1);
  es[0] = real.size(0);
  Tensor e = cast(eps, real.dtype()).reshape(es);
  Tensor xh = add(mul(e, real.detach()), mul(sub(1.0, e), fake.detach())).detach().set_requires_grad(true);
  GradOptions go;
  go.create_graph = true;
  Tensor g = grad({sum(critic(xh))}, {xh}, {}, go)[0];
  Tensor norm = sqrt(add(sum(mul(g, g), sample_dims(g)), 1e-12));
  Tensor dev = sub(norm, 1.0);
  return mean(mul(dev, dev));
}

Tensor wgan_critic_loss(const Tensor& real_scores, const Tensor& fake_scores) {
  check_logits("wgan_critic_loss", real_scores, "real_scores");
  check_logits("wgan_critic_loss", fake_scores, "fake_scores");
  return sub(mean(fake_scores), mean(real_scores));
}

Tensor wgan_generator_loss(const Tensor& fake_scores) {
  check_logits("wgan_generator_loss", fake_scores, "fake_scores");
  return neg(mean(fake_scores));
}

Tensor hinge_discriminator_loss(const Tensor& real_scores, const Tensor& fake_scores) {
  check_logits("hinge_discriminator_loss", real_scores, "real_scores");
  check_logits("hinge_discriminator_loss", fake_scores, "fake_scores");
  return add(mean(relu(sub(1.0, real_scores))), mean(relu(add(fake_scores, 1.0))));
}

Tensor mode_regularizer_loss(const Tensor& x, const Tensor& reconstruction, const Tensor& recon_logits,
                             double lambda1, double lambda2) {
  kiln::detail::check_defined("mode_regularizer_loss", x, "x");
  kiln::detail::check_defined("mode_regularizer_loss", reconstruction, "reconstruction");
  KILN_CHECK(x.sizes() == reconstruction.sizes() && x.dim() >= 2, "mode_regularizer_loss: x and G(E(x)) must share a ",
             "shape (N, ...), got ", describe(x), " and ", describe(reconstruction));
  check_logits("mode_regularizer_loss", recon_logits, "recon_logits");
  KILN_CHECK(lambda1 >= 0 && lambda2 >= 0, "mode_regularizer_loss: lambdas must be >= 0, got ", lambda1, " and ",
             lambda2);
  Tensor d = sub(x, reconstruction);
  Tensor geometric = mean(sum(mul(d, d), sample_dims(d)));
  return add(mul(geometric, lambda1), mul(bce_to(recon_logits, 1.0), lambda2));
}

std::vector<Tensor> unroll_discriminator(models::Discriminator& D, const Optimizer& opt, const Tensor& real,
                                         const Tensor& fake, const UnrollOptions& o) {
  KILN_CHECK(o.steps >= 0, "unroll_discriminator: steps must be >= 0, got ", o.steps);
  const std::vector<Tensor> params = D.parameters();
  // Adam runs on all of D's parameters as one flat vector (their concatenation): a dozen
  // elementwise ops a step instead of a dozen per parameter, each recorded for the second
  // order and run again backward. Every element sees the same arithmetic as a
  // per-parameter update; the parameters are views of the vector.
  std::vector<int64_t> numels;
  for (const Tensor& p : params) numels.push_back(p.numel());
  auto flat = [](const std::vector<Tensor>& ts) {
    std::vector<Tensor> f;
    for (const Tensor& t : ts) f.push_back(t.reshape({-1}));
    return cat(f, 0);
  };
  auto unflat = [&](const Tensor& f) {
    std::vector<Tensor> pieces = split_with_sizes(f, numels, 0);
    for (size_t i = 0; i < pieces.size(); ++i) pieces[i] = pieces[i].reshape(params[i].sizes());
    return pieces;
  };
  // Adam's state, copied (D's optimizer is not touched).
  std::vector<Tensor> m0, v0;
  double t = 0;
  const auto sd = opt.state_dict();
  for (size_t i = 0; i < params.size(); ++i) {
    auto em = sd.find(kiln::detail::str("state.", i, ".exp_avg"));
    auto ev = sd.find(kiln::detail::str("state.", i, ".exp_avg_sq"));
    const bool have = em != sd.end() && ev != sd.end();
    m0.push_back(have ? em->second.detach() : zeros_like(params[i]));
    v0.push_back(have ? ev->second.detach() : zeros_like(params[i]));
    auto st = sd.find(kiln::detail::str("state.", i, ".step"));
    if (i == 0 && st != sd.end()) t = st->second.to(kCPU).item<double>();
  }
  if (params.empty() || o.steps == 0) return params;
  Tensor m, v;
  {
    NoGradGuard no_grad;
    m = flat(m0);  // (new tensors: cat copies)
    v = flat(v0);
  }
  // The steps start from D's weights as constants: G's loss differentiates through the
  // steps to G, and a gradient reaching D's own weights would only be thrown away (and,
  // under data parallelism, all-reduced first).
  Tensor th = flat(params).detach().set_requires_grad(true);
  std::vector<Tensor> theta = unflat(th);
  const Tensor fk = o.second_order ? fake : fake.detach();
  // A D whose samples do not see each other (no BatchNorm in training mode, no minibatch
  // discrimination) takes the real and the fake batch in one call: the same values, half
  // the ops and larger products.
  const bool joint = D.per_sample() && real.sizes().size() == fk.sizes().size() && real.dim() > 0 &&
                     std::equal(real.sizes().begin() + 1, real.sizes().end(), fk.sizes().begin() + 1);
  const Tensor both = joint ? cat({real, fk}, 0) : Tensor();
  const int64_t nr = real.size(0), nf = fk.size(0);
  for (int64_t k = 0; k < o.steps; ++k) {
    Tensor lk;
    if (joint) {
      const Tensor logits = D.run(both, theta).logits;
      lk = discriminator_loss(logits.narrow(0, 0, nr), logits.narrow(0, nr, nf), o.real_target);
    } else {
      lk = discriminator_loss(D.run(real, theta).logits, D.run(fk, theta).logits, o.real_target);
    }
    GradOptions go;
    go.create_graph = o.second_order;
    const Tensor g = flat(grad({lk}, theta, {}, go));
    t += 1;
    const double bc1 = 1 - std::pow(o.beta1, t), bc2 = 1 - std::pow(o.beta2, t);
    m = add(mul(m, o.beta1), mul(g, 1 - o.beta1));
    v = add(mul(v, o.beta2), mul(mul(g, g), 1 - o.beta2));
    // sqrt(v + eps^2): the derivative of sqrt stays finite where a gradient is exactly 0.
    Tensor denom = add(div(sqrt(add(v, o.eps * o.eps)), std::sqrt(bc2)), o.eps);
    Tensor next = sub(th, mul(div(m, denom), o.lr / bc1));
    th = o.second_order ? next : next.detach().set_requires_grad(true);
    theta = unflat(th);
  }
  return theta;
}

}  // namespace kiln::gan
