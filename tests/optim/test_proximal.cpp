// ProxGen's proximal maps (optim/prox.h) and ProxAdam (optim/proximal.h). The maps are
// checked against a brute-force minimisation of 1/2 (x - z)^2 + eta |x|^p and, where the
// result is non-zero, against the first-order condition x - z + eta p |x|^(p-1) sign(x) = 0;
// ProxAdam's step against the formula by hand, its exact zeros, and Adam at lambda = 0.
// The whole update is checked step by step against PyTorch in tests/interop/optim_torch.py.
#include <cmath>
#include <vector>

#include "test_util.h"

using namespace kiln;
using kiln::test::values;

namespace {

double penalty_of(double x, LpPenalty pen) {
  const double a = std::abs(x);
  switch (pen) {
    case LpPenalty::L0: return a != 0 ? 1.0 : 0.0;
    case LpPenalty::LHalf: return std::sqrt(a);
    case LpPenalty::LTwoThirds: return std::cbrt(a * a);
    case LpPenalty::L1: return a;
  }
  return 0;
}
double objective(double x, double z, double eta, LpPenalty pen) {
  return 0.5 * (x - z) * (x - z) + eta * penalty_of(x, pen);
}
double exponent(LpPenalty pen) {
  return pen == LpPenalty::L0 ? 0 : pen == LpPenalty::LHalf ? 0.5 : pen == LpPenalty::LTwoThirds ? 2.0 / 3 : 1;
}

// The minimum of the objective over 0 and a grid of 400,001 points in [-1.2|z|, 1.2|z|],
// refined by golden-section search around the best grid point.
double brute_force_min(double z, double eta, LpPenalty pen) {
  const double r = 1.2 * std::abs(z) + 1e-12;
  const int n = 400000;
  double best = objective(0, z, eta, pen), best_x = 0;
  for (int i = 0; i <= n; ++i) {
    const double x = -r + 2 * r * i / n;
    const double f = objective(x, z, eta, pen);
    if (f < best) best = f, best_x = x;
  }
  double lo = best_x - 2 * r / n, hi = best_x + 2 * r / n;
  const double gr = (std::sqrt(5.0) - 1) / 2;
  for (int it = 0; it < 100; ++it) {
    const double a = hi - gr * (hi - lo), b = lo + gr * (hi - lo);
    if (objective(a, z, eta, pen) < objective(b, z, eta, pen)) hi = b;
    else lo = a;
  }
  return std::min(best, objective(0.5 * (lo + hi), z, eta, pen));
}

}  // namespace

TEST_CASE("prox_lp minimises 1/2 (x - z)^2 + eta |x|^p for p = 0, 1/2, 2/3, 1", "[optim]") {
  Generator gen(3);
  const std::vector<double> zs = values(mul(randn({150}, TensorOptions(DType::F64), &gen), 2.0));
  const std::vector<double> etas = values(abs(mul(randn({150}, TensorOptions(DType::F64), &gen), 0.8)));
  for (LpPenalty pen : {LpPenalty::L0, LpPenalty::LHalf, LpPenalty::LTwoThirds, LpPenalty::L1}) {
    INFO("p = " << exponent(pen));
    int nonzero = 0, zero = 0;
    for (size_t i = 0; i < zs.size(); ++i) {
      const double z = zs[i], eta = etas[i];
      INFO("z " << z << " eta " << eta);
      const double x = detail::prox_lp(z, eta, pen);
      // Never worse than the brute-force minimum (up to its resolution), so it is the minimum.
      CHECK(objective(x, z, eta, pen) <= brute_force_min(z, eta, pen) + 1e-12);
      if (x != 0) {
        ++nonzero;
        CHECK(x * z > 0);  // the same sign as z, and shrunk
        CHECK(std::abs(x) <= std::abs(z));
        const double p = exponent(pen);
        if (p > 0) CHECK(std::abs(x - z + eta * p * std::pow(std::abs(x), p - 1) * (x > 0 ? 1 : -1)) < 1e-9);
        else CHECK(x == z);  // hard thresholding keeps z
      } else {
        ++zero;
      }
      // f32 computes the same map to f32 rounding (the CUDA kernel computes in f32).
      const float xf = detail::prox_lp(float(z), float(eta), pen);
      if ((xf == 0) == (x == 0)) CHECK(std::abs(double(xf) - x) <= 1e-5 * (1 + std::abs(x)));
    }
    CHECK(nonzero > 20);  // both branches were exercised
    CHECK(zero > 5);
  }
  // Known values.
  CHECK(detail::prox_lp(3.0, 1.0, LpPenalty::L1) == 2.0);
  CHECK(detail::prox_lp(-0.5, 1.0, LpPenalty::L1) == 0.0);
  CHECK(detail::prox_lp(1.0, 0.4, LpPenalty::L0) == 1.0);  // sqrt(0.8) < 1
  CHECK(detail::prox_lp(0.8, 0.4, LpPenalty::L0) == 0.0);
  CHECK(detail::prox_lp(0.7, 0.0, LpPenalty::LHalf) == 0.7);  // no penalty
  // Just above the p = 1/2 threshold 3/2 eta^(2/3) the map jumps from 0 to 2/3 |z|.
  const double t = 1.5 * std::cbrt(0.25 * 0.25);
  CHECK(detail::prox_lp(t * (1 - 1e-9), 0.25, LpPenalty::LHalf) == 0.0);
  CHECK(detail::prox_lp(t * (1 + 1e-9), 0.25, LpPenalty::LHalf) == Approx(2.0 / 3 * t).epsilon(1e-4));
}

TEST_CASE("ProxAdam takes Adam's step, then the proximal map, and puts weights at exactly 0", "[optim]") {
  const std::vector<double> w0{0.5, -0.02, 0.003, -1.5, 0.0, 0.2};
  const std::vector<double> g0{0.1, 0.4, -0.2, 0.3, 0.0, -0.05};
  for (double p : {0.0, 0.5, 2.0 / 3, 1.0}) {
    INFO("p = " << p);
    Tensor w = from_vector(w0, {6}).set_requires_grad(true);
    ProxAdam opt({w}, ProxAdamOptions{.lr = 0.1, .beta1 = 0.9, .beta2 = 0.99, .eps = 1e-8, .weight_decay = 0.01,
                                      .lambda = 0.3, .p = p});
    std::vector<double> m(6, 0), v(6, 0), want = w0;
    for (int t = 1; t <= 3; ++t) {
      std::vector<double> g = g0;
      for (double& x : g) x *= t;
      w.set_grad(from_vector(g, {6}));
      opt.step();
      for (int i = 0; i < 6; ++i) {
        const double gi = g[i] + 0.01 * want[i];
        m[i] = 0.9 * m[i] + 0.1 * gi;
        v[i] = 0.99 * v[i] + 0.01 * gi * gi;
        const double denom = std::sqrt(v[i]) / std::sqrt(1 - std::pow(0.99, t)) + 1e-8;
        want[i] = detail::prox_lp(want[i] - 0.1 / (1 - std::pow(0.9, t)) * m[i] / denom, 0.1 * 0.3 / denom,
                                  lp_penalty(p));
      }
      const std::vector<double> got = values(w);
      for (int i = 0; i < 6; ++i) CHECK(got[i] == Approx(want[i]).margin(1e-14));
    }
    const std::vector<double> got = values(w);
    CHECK(std::count(got.begin(), got.end(), 0.0) >= 2);  // small weights sit at exactly 0
    CHECK(got[3] < -1.0);                                  // the large one survives
    CHECK(opt.state(0).step == 3);
  }
  // lambda = 0 is Adam (L2 decay in the gradient), to rounding (Adam uses a lerp for m).
  Tensor a = test::random_tensor({5, 7}, DType::F64, 4).set_requires_grad(true);
  Tensor b = a.detach().clone().set_requires_grad(true);
  ProxAdam pa({a}, ProxAdamOptions{.lr = 0.01, .weight_decay = 0.1, .lambda = 0});
  Adam ad({b}, AdamOptions{.lr = 0.01, .weight_decay = 0.1});
  for (int s = 0; s < 4; ++s) {
    Tensor g = test::random_tensor({5, 7}, DType::F64, 10 + s);
    a.set_grad(g);
    b.set_grad(g.clone());
    pa.step();
    ad.step();
  }
  CHECK_CLOSE_TOL(a, b, 1e-12, 1e-14);
  // The regulariser's value, for logging.
  Tensor z = from_vector(std::vector<double>{0, -4, 1, 0.25}, {4});
  CHECK(lp_penalty_value({z}, 0) == 3);
  CHECK(lp_penalty_value({z}, 1) == Approx(5.25));
  CHECK(lp_penalty_value({z}, 0.5) == Approx(2 + 1 + 0.5));
  CHECK(lp_penalty_value({z}, 2.0 / 3) == Approx(std::cbrt(16.0) + 1 + std::cbrt(0.0625)));
}

TEST_CASE("ProxAdam and Apollo reject bad hyper-parameters", "[optim]") {
  Tensor w = zeros({2}).set_requires_grad(true);
  w.set_grad(ones({2}));
  CHECK_KILN_ERROR(ProxAdam({w}, ProxAdamOptions{.p = 0.3}).step(), "p must be 0, 0.5, 2/3 or 1");
  CHECK_KILN_ERROR(ProxAdam({w}, ProxAdamOptions{.lambda = -1}).step(), "ProxAdam: invalid lambda");
  CHECK_KILN_ERROR(ProxAdam({w}, ProxAdamOptions{.eps = 0}).step(), "ProxAdam: invalid eps");
  CHECK_KILN_ERROR(ProxAdam({w}, ProxAdamOptions{.beta2 = 1}).step(), "ProxAdam: invalid beta2");
  CHECK_KILN_ERROR(lp_penalty_value({w}, 3), "p must be");
  CHECK_KILN_ERROR(Apollo({w}, ApolloOptions{.sigma = 0}).step(), "Apollo: invalid sigma");
  CHECK_KILN_ERROR(Apollo({w}, ApolloOptions{.beta = 1}).step(), "Apollo: invalid beta");
  CHECK_KILN_ERROR(Apollo({w}, ApolloOptions{.warmup = -1}).step(), "warmup");
  CHECK_KILN_ERROR(Apollo({w}, ApolloOptions{.decay_type = 3}).step(), "decay_type");
  CHECK_KILN_ERROR(Apollo({w}, ApolloOptions{.lr = -1}).step(), "Apollo: invalid lr");
  Apollo ap({w});
  ap.set_option(0, "warmup", 1.5);
  CHECK_KILN_ERROR(ap.step(), "warmup");
}
