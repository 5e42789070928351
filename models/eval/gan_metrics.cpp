#include <kiln/models/eval/gan_metrics.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include <kiln/core/autograd.h>
#include <kiln/core/error.h>
#include <kiln/ops/binary.h>
#include <kiln/ops/matmul.h>
#include <kiln/ops/reduce.h>
#include <kiln/ops/checks.h>

extern "C" void dsyev_(const char* jobz, const char* uplo, const int* n, double* a, const int* lda, double* w,
                       double* work, const int* lwork, int* info);

namespace kiln::eval {
namespace {

std::vector<double> host_f64(const Tensor& t) { return t.detach().to(kCPU).to(DType::F64).contiguous().to_vector<double>(); }

// (rows, K) probabilities and a K prior, checked.
void check_probs(const char* op, const Tensor& probs, const Tensor& prior) {
  kiln::detail::check_defined(op, probs, "probs");
  KILN_CHECK(probs.dim() == 2 && probs.size(0) >= 1 && probs.size(1) >= 1, op,
             ": expects class probabilities (N, K), got ", describe(probs));
  if (prior.defined())
    KILN_CHECK(prior.dim() == 1 && prior.size(0) == probs.size(1), op, ": prior must have shape (", probs.size(1),
               "), got ", describe(prior));
}

double kl(const double* p, const double* q, int64_t K) {
  double s = 0;
  for (int64_t k = 0; k < K; ++k)
    if (p[k] > 0) s += p[k] * (std::log(p[k]) - std::log(std::max(q[k], 1e-300)));
  return s;
}

// The eigenvalues of the symmetric F x F f64 matrix `a` (ascending) and its
// eigenvectors as the rows of the returned (F, F) tensor (LAPACK dsyev).
Tensor syev(const Tensor& a, std::vector<double>& w) {
  int F = static_cast<int>(a.size(0));
  std::vector<double> v = a.contiguous().to_vector<double>();  // symmetric: row- or column-major alike
  w.assign(F, 0);
  int lwork = -1, info = 0;
  double q = 0;
  const char jobz = 'V', uplo = 'U';
  dsyev_(&jobz, &uplo, &F, v.data(), &F, w.data(), &q, &lwork, &info);
  lwork = static_cast<int>(q);
  std::vector<double> work(std::max(lwork, 1));
  dsyev_(&jobz, &uplo, &F, v.data(), &F, w.data(), work.data(), &lwork, &info);
  KILN_CHECK(info == 0, "frechet_distance: LAPACK dsyev failed (info ", info, ")");
  return from_vector<double>(v).reshape({F, F});  // column k of the column-major result = row k here
}

// Mean (F) and unbiased covariance (F, F) of the rows of x, in f64 on the CPU.
std::pair<Tensor, Tensor> moments(const Tensor& x) {
  Tensor x64 = x.detach().to(kCPU).to(DType::F64);
  Tensor mu = mean(x64, {0});
  Tensor c = sub(x64, mu);
  return {mu, div(matmul(c.t(), c), static_cast<double>(x.size(0) - 1))};
}

}  // namespace

double mode_score(const Tensor& probs, const Tensor& prior) {
  check_probs("mode_score", probs, prior);
  const int64_t N = probs.size(0), K = probs.size(1);
  const std::vector<double> p = host_f64(probs);
  std::vector<double> ps = prior.defined() ? host_f64(prior) : std::vector<double>(K, 1.0 / K), py(K, 0);
  double e_kl = 0;
  for (int64_t i = 0; i < N; ++i) {
    e_kl += kl(&p[i * K], ps.data(), K);
    for (int64_t k = 0; k < K; ++k) py[k] += p[i * K + k] / static_cast<double>(N);
  }
  return std::exp(e_kl / static_cast<double>(N) - kl(py.data(), ps.data(), K));
}

double inception_score(const Tensor& probs) {
  check_probs("inception_score", probs, Tensor());
  const int64_t N = probs.size(0), K = probs.size(1);
  const std::vector<double> p = host_f64(probs);
  std::vector<double> py(K, 0);
  for (int64_t i = 0; i < N; ++i)
    for (int64_t k = 0; k < K; ++k) py[k] += p[i * K + k] / static_cast<double>(N);
  double e_kl = 0;
  for (int64_t i = 0; i < N; ++i) e_kl += kl(&p[i * K], py.data(), K);
  return std::exp(e_kl / static_cast<double>(N));
}

double frechet_distance(const Tensor& a, const Tensor& b) {
  kiln::detail::check_defined("frechet_distance", a);
  kiln::detail::check_defined("frechet_distance", b);
  KILN_CHECK(a.dim() == 2 && b.dim() == 2 && a.size(1) == b.size(1) && a.size(1) >= 1, "frechet_distance: expects ",
             "features (N, F) and (M, F), got ", describe(a), " and ", describe(b));
  KILN_CHECK(a.size(0) >= 2 && b.size(0) >= 2, "frechet_distance: needs at least 2 samples on each side, got ",
             a.size(0), " and ", b.size(0));
  KILN_CHECK(a.size(1) <= 4096, "frechet_distance: at most 4096 features, got ", a.size(1));
  NoGradGuard no_grad;
  const auto [mu_a, ca] = moments(a);
  const auto [mu_b, cb] = moments(b);
  // S_a^(1/2) = E^T diag(sqrt(max(w, 0))) E, E's rows the eigenvectors of S_a.
  std::vector<double> w;
  Tensor E = syev(ca, w);
  for (double& x : w) x = std::sqrt(std::max(x, 0.0));
  Tensor sa = matmul(mul(E.t(), from_vector<double>(w).reshape({1, -1})), E);
  // tr (S_a S_b)^(1/2) = sum sqrt(eigenvalues of S_a^(1/2) S_b S_a^(1/2)).
  syev(matmul(matmul(sa, cb), sa), w);
  double tr_sqrt = 0;
  for (double x : w) tr_sqrt += std::sqrt(std::max(x, 0.0));
  Tensor d = sub(mu_a, mu_b);
  const double d2 = sum(mul(d, d)).item<double>();
  const int64_t F = ca.size(0);
  auto trace = [F](const Tensor& m) { return sum(m.as_strided({F}, {F + 1}, 0)).item<double>(); };
  const double tr = trace(ca) + trace(cb);
  return std::max(0.0, d2 + tr - 2 * tr_sqrt);
}

ClassCoverage class_coverage(const Tensor& predicted, int64_t K) {
  kiln::detail::check_defined("class_coverage", predicted);
  KILN_CHECK(K >= 1, "class_coverage: num_classes must be >= 1, got ", K);
  KILN_CHECK(predicted.dim() == 1 && !is_floating(predicted.dtype()), "class_coverage: expects class indices (N), got ",
             describe(predicted));
  ClassCoverage c;
  c.histogram.assign(K, 0);
  for (int64_t y : predicted.to(kCPU).to(DType::I64).contiguous().to_vector<int64_t>()) {
    KILN_CHECK(y >= 0 && y < K, "class_coverage: class ", y, " outside [0, ", K, ")");
    ++c.histogram[y];
  }
  const auto [mn, mx] = std::minmax_element(c.histogram.begin(), c.histogram.end());
  c.classes_covered = std::count_if(c.histogram.begin(), c.histogram.end(), [](int64_t n) { return n > 0; });
  c.max_min_ratio = *mn == 0 ? std::numeric_limits<double>::infinity() : static_cast<double>(*mx) / *mn;
  return c;
}

ModeCoverage mode_coverage(const Tensor& samples, const data::Mixture2d& m, double sigmas, double min_share) {
  kiln::detail::check_defined("mode_coverage", samples);
  KILN_CHECK(samples.dim() == 2 && samples.size(1) == 2 && samples.size(0) >= 1,
             "mode_coverage: expects 2-D samples (N, 2), got ", describe(samples));
  KILN_CHECK(!m.centers.empty() && sigmas > 0 && min_share >= 0, "mode_coverage: bad mixture or thresholds");
  const int64_t N = samples.size(0), K = static_cast<int64_t>(m.centers.size());
  const std::vector<double> x = host_f64(samples);
  ModeCoverage c;
  c.high_quality_per_mode.assign(K, 0);
  int64_t hq = 0;
  for (int64_t i = 0; i < N; ++i) {
    double best = std::numeric_limits<double>::infinity();
    int64_t arg = 0;
    for (int64_t k = 0; k < K; ++k) {
      const double d = std::hypot(x[2 * i] - m.centers[k][0], x[2 * i + 1] - m.centers[k][1]);
      if (d < best) best = d, arg = k;
    }
    if (best <= sigmas * m.std) ++hq, ++c.high_quality_per_mode[arg];
  }
  const double need = std::max(1.0, min_share * static_cast<double>(N));
  c.modes_covered = std::count_if(c.high_quality_per_mode.begin(), c.high_quality_per_mode.end(),
                                  [&](int64_t n) { return static_cast<double>(n) >= need; });
  c.high_quality = static_cast<double>(hq) / static_cast<double>(N);
  return c;
}

}  // namespace kiln::eval
