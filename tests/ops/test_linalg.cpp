// logdet_spd (ops/linalg.h): values against determinants computed by hand and against the
// eigenvalues of a built-in spectrum, f32 against f64, batches, errors for matrices that
// are not square or not positive definite, and the gradient check (through a symmetric
// parametrisation, as the op reads one triangle).
#include <cmath>
#include <vector>

#include "test_util.h"

using namespace kiln;
using V = std::vector<Tensor>;

namespace {

// Q diag(ev) Q^T for a random orthogonal Q (Gram-Schmidt on a seeded Gaussian matrix).
Tensor with_spectrum(const std::vector<double>& ev, uint64_t seed) {
  const int64_t n = static_cast<int64_t>(ev.size());
  Generator g(seed);
  std::vector<double> a = test::values(randn({n, n}, TensorOptions(DType::F64), &g));
  for (int64_t j = 0; j < n; ++j) {  // columns orthonormal
    for (int64_t k = 0; k < j; ++k) {
      double dot = 0;
      for (int64_t i = 0; i < n; ++i) dot += a[i * n + j] * a[i * n + k];
      for (int64_t i = 0; i < n; ++i) a[i * n + j] -= dot * a[i * n + k];
    }
    double norm = 0;
    for (int64_t i = 0; i < n; ++i) norm += a[i * n + j] * a[i * n + j];
    for (int64_t i = 0; i < n; ++i) a[i * n + j] /= std::sqrt(norm);
  }
  std::vector<double> m(static_cast<size_t>(n * n), 0.0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j)
      for (int64_t k = 0; k < n; ++k) m[i * n + j] += a[i * n + k] * ev[k] * a[j * n + k];
  return from_vector(m, {n, n});
}

}  // namespace

TEST_CASE("logdet_spd: known determinants, batches and f32", "[ops][linalg]") {
  Tensor a = from_vector(std::vector<double>{4, 2, 2, 3}, {2, 2});  // det 8
  CHECK(logdet_spd(a).item<double>() == Approx(std::log(8.0)).epsilon(1e-14));
  const std::vector<double> ev{0.1, 0.5, 2.0, 3.0, 7.5, 11.0, 0.02};
  double want = 0;
  for (double e : ev) want += std::log(e);
  Tensor m = with_spectrum(ev, 3);
  CHECK(logdet_spd(m).item<double>() == Approx(want).epsilon(1e-12));
  CHECK(logdet_spd(m.to(DType::F32)).item<double>() == Approx(want).epsilon(1e-4));
  // A (2, 3, n, n) batch gives a (2, 3) result, entry by entry.
  std::vector<Tensor> mats;
  for (int i = 0; i < 6; ++i) mats.push_back(with_spectrum({1.0 + i, 0.5, 2.0 + 0.1 * i}, 10 + i).reshape({1, 3, 3}));
  Tensor batch = cat(mats, 0).reshape({2, 3, 3, 3});
  Tensor ld = logdet_spd(batch);
  REQUIRE(ld.sizes() == Shape{2, 3});
  std::vector<double> got = test::values(ld);
  for (int i = 0; i < 6; ++i)
    CHECK(got[i] == Approx(std::log((1.0 + i) * 0.5 * (2.0 + 0.1 * i))).epsilon(1e-12).margin(1e-14));
  // Only the lower triangle is read.
  Tensor upper_garbage = from_vector(std::vector<double>{4, 99, 2, 3}, {2, 2});
  CHECK(logdet_spd(upper_garbage).item<double>() == Approx(std::log(8.0)).epsilon(1e-14));
}

TEST_CASE("logdet_spd: bad matrices are clear errors", "[ops][linalg]") {
  CHECK_KILN_ERROR(logdet_spd(zeros({2, 3}, DType::F64)), "square");
  CHECK_KILN_ERROR(logdet_spd(zeros({3}, DType::F64)), "square");
  CHECK_KILN_ERROR(logdet_spd(zeros({2, 2}, DType::I64)), "f32 or f64");
  CHECK_KILN_ERROR(logdet_spd(from_vector(std::vector<double>{1, 2, 2, 1}, {2, 2})), "not positive definite");
  Tensor two = cat({eye(2, -1, TensorOptions(DType::F64)).reshape({1, 2, 2}), zeros({1, 2, 2}, DType::F64)}, 0);
  CHECK_KILN_ERROR(logdet_spd(two), "matrix 1 of 2 is not positive definite");
  Tensor nan_m = from_vector(std::vector<double>{NAN, 0, 0, 1}, {2, 2});
  // NaN: the not-positive-definite error where the factorisation notices it, else NaN out.
  try {
    CHECK(std::isnan(logdet_spd(nan_m).item<double>()));
  } catch (const Error& e) {
    CHECK_THAT(e.what(), Catch::Matchers::Contains("not positive definite"));
  }
}

TEST_CASE("gradcheck: logdet_spd", "[ops][linalg][autograd][gradcheck]") {
  // A = X X^T + I (symmetric positive definite for any X): the chain rule reaches both
  // triangles, so the symmetric gradient A^{-1} is the whole story.
  auto spd = [](const Tensor& x) {
    const int64_t n = x.size(-1);
    return add(matmul(x, x.transpose(-2, -1)), eye(n, -1, TensorOptions(x.dtype())));
  };
  Generator g(5);
  Tensor x = randn({4, 4}, TensorOptions(DType::F64), &g);
  GradcheckResult r = gradcheck([&](const V& v) { return logdet_spd(spd(v[0])); }, {x});
  INFO(r.message);
  CHECK(r.ok);
  Tensor xb = randn({3, 5, 5}, TensorOptions(DType::F64), &g);
  r = gradcheck([&](const V& v) { return mul(logdet_spd(spd(v[0])), sum(v[0], {1, 2})); }, {xb});
  INFO(r.message);
  CHECK(r.ok);
  // d logdet / dA = A^{-1}: A^{-1} A = I.
  Tensor a = spd(x).set_requires_grad(true);
  logdet_spd(a).backward();
  CHECK_CLOSE_TOL(matmul(a.grad(), a.detach()), eye(4, -1, TensorOptions(DType::F64)), 1e-12, 1e-12);
}
