// Curvature instruments (models/eval/curvature.h): Hessian-vector products and the top
// eigenvalue on quadratics with known Hessians, and the gradient noise scale's formulas.
#include <cmath>

#include <kiln/models/eval/curvature.h>

#include "test_util.h"

using namespace kiln;
using kiln::test::values;

namespace {

// A = Q diag(d) Q^T for a fixed rotation Q (4 x 4), as a dense f64 matrix.
Tensor rotated(const std::vector<double>& d) {
  // Q: a Householder reflection I - 2 u u^T / |u|^2, u = (1, 2, -1, 3).
  const double u[4] = {1, 2, -1, 3};
  const double uu = 15;
  std::vector<double> q(16), a(16, 0.0);
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j) q[i * 4 + j] = (i == j ? 1.0 : 0.0) - 2 * u[i] * u[j] / uu;
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j)
      for (int k = 0; k < 4; ++k) a[i * 4 + j] += q[i * 4 + k] * d[k] * q[j * 4 + k];
  return from_vector<double>(a, {4, 4});
}

// L = 1/2 x^T A x + 1/2 c |y|^2 + (a linear term, which has no curvature).
Tensor quadratic(const Tensor& A, double c, const Tensor& x, const Tensor& y) {
  Tensor ax = matmul(A, x.reshape({4, 1})).reshape({4});
  return add(add(mul(sum(mul(x, ax)), 0.5), mul(sum(mul(y, y)), 0.5 * c)), sum(mul(x, 0.3)));
}

}  // namespace

TEST_CASE("hessian_vector_product is A v on a quadratic", "[eval]") {
  Tensor A = rotated({5, 3, -1, 0.5});
  Tensor x = from_vector<double>({0.1, -0.2, 0.3, 0.4}).set_requires_grad(true);
  Tensor y = from_vector<double>({1.0, 2.0}).set_requires_grad(true);
  Tensor v0 = from_vector<double>({1, 0, -1, 2}), v1 = from_vector<double>({3, -1});
  std::vector<Tensor> hv = eval::hessian_vector_product(quadratic(A, 2.0, x, y), {x, y}, {v0, v1});
  const auto av = values(matmul(A, v0.reshape({4, 1})));
  const auto h0 = values(hv[0]), h1 = values(hv[1]);
  for (int i = 0; i < 4; ++i) CHECK(h0[i] == Approx(av[i]).epsilon(1e-12));
  CHECK(h1[0] == Approx(6.0));
  CHECK(h1[1] == Approx(-2.0));
  CHECK_KILN_ERROR(eval::hessian_vector_product(quadratic(A, 2.0, x, y), {x, y}, {v0}), "1 vectors");
}

TEST_CASE("hessian_top_eigenvalue finds the eigenvalue of largest magnitude", "[eval]") {
  Tensor x = from_vector<double>({0.1, -0.2, 0.3, 0.4}).set_requires_grad(true);
  Tensor y = from_vector<double>({1.0, 2.0}).set_requires_grad(true);
  SECTION("across params: x's block (top 5) against y's (c = 7)") {
    Tensor A = rotated({5, 3, -1, 0.5});
    eval::TopEigen e = eval::hessian_top_eigenvalue([&] { return quadratic(A, 7.0, x, y); }, {x, y});
    CHECK(e.converged);
    CHECK(e.eigenvalue == Approx(7.0).epsilon(1e-3));
    CHECK(e.iterations > 1);
    CHECK(e.seconds >= 0);
  }
  SECTION("inside one param, rotated, with a negative eigenvalue of largest magnitude") {
    Tensor A = rotated({2, 1, -6, 0.5});
    eval::PowerIterationOptions o;
    o.tolerance = 1e-8;
    eval::TopEigen e = eval::hessian_top_eigenvalue([&] { return quadratic(A, 0.1, x, y); }, {x, y}, o);
    CHECK(e.eigenvalue == Approx(-6.0).epsilon(1e-3));
    // The eigenvector: A v = -6 v.
    const auto av = values(matmul(A, e.eigenvector[0].reshape({4, 1})));
    const auto v = values(e.eigenvector[0]);
    for (int i = 0; i < 4; ++i) CHECK(av[i] == Approx(-6.0 * v[i]).margin(1e-3));
  }
  SECTION("bad input") {
    Tensor A = rotated({1, 1, 1, 1});
    CHECK_KILN_ERROR(eval::hessian_top_eigenvalue([&] { return quadratic(A, 1.0, x, y); }, {}), "no params");
    eval::PowerIterationOptions o;
    o.max_iterations = 0;
    CHECK_KILN_ERROR(eval::hessian_top_eigenvalue([&] { return quadratic(A, 1.0, x, y); }, {x}, o), "bad options");
    CHECK_KILN_ERROR(eval::hessian_top_eigenvalue([&] { return sum(mul(x, 2.0)); }, {x}), "linear");
    CHECK_KILN_ERROR(eval::hessian_top_eigenvalue([&] { return mul(x, x); }, {x}), "scalar");
  }
}

TEST_CASE("gradient_noise_scale follows McCandlish et al.'s unbiased estimates", "[eval]") {
  // Three micro-batches of b = 4 samples; gradients of two params.
  std::vector<std::vector<Tensor>> g = {
      {from_vector<double>({1.0, 2.0}), from_vector<double>({0.5})},
      {from_vector<double>({0.0, 1.0}), from_vector<double>({1.5})},
      {from_vector<double>({2.0, 3.0}), from_vector<double>({-0.5})},
  };
  // |g_k|^2 = 5.25, 3.25, 13.25 -> small = 7.25; mean g = (1, 2, 0.5) -> big = 5.25.
  const double small = 7.25, big = 5.25, b = 4, B = 12;
  eval::NoiseScale n = eval::gradient_noise_scale(g, 4);
  const double g2 = (B * big - b * small) / (B - b), tr = (small - big) / (1 / b - 1 / B);
  CHECK(n.grad_norm_sq == Approx(g2));
  CHECK(n.trace_sigma == Approx(tr));
  CHECK(n.simple_noise_scale == Approx(tr / g2));
  CHECK(n.trace_sigma == Approx(12.0));  // (7.25 - 5.25) / (1/4 - 1/12)
  CHECK_KILN_ERROR(eval::gradient_noise_scale({g[0]}, 4), "2 micro-batches");
  CHECK_KILN_ERROR(eval::gradient_noise_scale(g, 0), "2 micro-batches");
}

TEST_CASE("optimization_variance is E_x sum_c Var_k f / E_x sum_c E_k f^2", "[eval]") {
  // Two inputs, two classes, three models.
  std::vector<Tensor> probs = {from_vector<double>({0.9, 0.1, 0.5, 0.5}, {2, 2}),
                               from_vector<double>({0.7, 0.3, 0.5, 0.5}, {2, 2}),
                               from_vector<double>({0.8, 0.2, 0.2, 0.8}, {2, 2})};
  double var = 0, sq = 0;
  for (int i = 0; i < 4; ++i) {
    double m = 0, m2 = 0;
    for (const Tensor& p : probs) {
      const double v = values(p)[i];
      m += v / 3, m2 += v * v / 3;
    }
    var += m2 - m * m, sq += m2;
  }
  CHECK(eval::optimization_variance(probs) == Approx(var / sq));
  CHECK(eval::optimization_variance({probs[0], probs[0]}) == Approx(0.0).margin(1e-15));
  CHECK_KILN_ERROR(eval::optimization_variance({probs[0]}), ">= 2");
  CHECK_KILN_ERROR(eval::optimization_variance({probs[0], from_vector<double>({1.0, 0.0})}), "one shape");
}

TEST_CASE("fisher_top_eigenvalue: a linear model's Gauss-Newton matrix", "[eval]") {
  // f = X W (N = 6, D = 3, C = 2); X's columns are orthogonal with squared norms 6 s_j^2,
  // so F = (1/N) X^T X (x) I_C = diag(s^2) (x) I_C, whose top eigenvalue is max s^2 = 9.
  std::vector<double> xs(18, 0.0);
  const double s[3] = {2.0, 3.0, 1.0};
  for (int j = 0; j < 3; ++j)
    for (int i = 0; i < 6; ++i) xs[i * 3 + j] = (i % 3 == j) ? s[j] * std::sqrt(3.0) : 0.0;  // 2 rows per column
  Tensor X = from_vector<double>(xs, {6, 3});
  Tensor W = test::random_tensor({3, 2}, DType::F64, 9).set_requires_grad(true);
  eval::PowerIterationOptions o;
  o.tolerance = 1e-10;
  o.max_iterations = 500;
  eval::TopEigen e = eval::fisher_top_eigenvalue([&] { return matmul(X, W); }, {W}, eval::FisherLoss::SquaredError, o);
  CHECK(e.eigenvalue == Approx(9.0).epsilon(1e-6));  // (1/6) * 2 rows * 3 * s^2 = s^2
  // Cross entropy: H = diag(p) - p p^T shrinks it (p from the logits, a probability vector).
  eval::TopEigen c = eval::fisher_top_eigenvalue([&] { return matmul(X, W); }, {W}, eval::FisherLoss::CrossEntropy, o);
  CHECK(c.eigenvalue > 0);
  CHECK(c.eigenvalue < 9.0 * 0.5 + 1e-9);  // the largest eigenvalue of diag(p) - p p^T is < 1/2 for 2 classes
  CHECK_KILN_ERROR(eval::fisher_top_eigenvalue([&] { return matmul(X, W).reshape({12}); }, {W}), "(N, C)");
}
