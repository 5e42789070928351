#include <kiln/models/eval/gan_metrics.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include <kiln/core/autograd.h>
#include <kiln/core/error.h>
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

// Eigenvalues and (column-major) eigenvectors of the symmetric F x F matrix a.
void syev(std::vector<double>& a, std::vector<double>& w, int F) {
  w.assign(F, 0);
  int lwork = -1, info = 0;
  double q = 0;
  const char jobz = 'V', uplo = 'U';
  dsyev_(&jobz, &uplo, &F, a.data(), &F, w.data(), &q, &lwork, &info);
  lwork = static_cast<int>(q);
  std::vector<double> work(std::max(lwork, 1));
  dsyev_(&jobz, &uplo, &F, a.data(), &F, w.data(), work.data(), &lwork, &info);
  KILN_CHECK(info == 0, "frechet_distance: LAPACK dsyev failed (info ", info, ")");
}

void moments(const std::vector<double>& x, int64_t n, int64_t F, std::vector<double>& mu, std::vector<double>& cov) {
  mu.assign(F, 0);
  cov.assign(F * F, 0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t f = 0; f < F; ++f) mu[f] += x[i * F + f];
  for (auto& m : mu) m /= static_cast<double>(n);
  std::vector<double> c(F);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t f = 0; f < F; ++f) c[f] = x[i * F + f] - mu[f];
    for (int64_t a = 0; a < F; ++a)
      for (int64_t b = a; b < F; ++b) cov[a * F + b] += c[a] * c[b];
  }
  for (int64_t a = 0; a < F; ++a)
    for (int64_t b = a; b < F; ++b) cov[b * F + a] = cov[a * F + b] /= static_cast<double>(n - 1);
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
  const int64_t F = a.size(1);
  KILN_CHECK(F <= 4096, "frechet_distance: at most 4096 features, got ", F);
  std::vector<double> mu_a, mu_b, ca, cb;
  moments(host_f64(a), a.size(0), F, mu_a, ca);
  moments(host_f64(b), b.size(0), F, mu_b, cb);
  // S_a^(1/2) = V diag(sqrt(max(w, 0))) V^T.
  std::vector<double> v = ca, w;
  syev(v, w, static_cast<int>(F));
  std::vector<double> sa(F * F, 0);
  for (int64_t k = 0; k < F; ++k) {
    const double s = std::sqrt(std::max(w[k], 0.0));
    for (int64_t i = 0; i < F; ++i)
      for (int64_t j = 0; j < F; ++j) sa[i * F + j] += v[k * F + i] * s * v[k * F + j];
  }
  // M = S_a^(1/2) S_b S_a^(1/2) (symmetric).
  std::vector<double> t(F * F, 0), m(F * F, 0);
  for (int64_t i = 0; i < F; ++i)
    for (int64_t k = 0; k < F; ++k)
      for (int64_t j = 0; j < F; ++j) t[i * F + j] += sa[i * F + k] * cb[k * F + j];
  for (int64_t i = 0; i < F; ++i)
    for (int64_t k = 0; k < F; ++k)
      for (int64_t j = 0; j < F; ++j) m[i * F + j] += t[i * F + k] * sa[k * F + j];
  syev(m, w, static_cast<int>(F));
  double tr_sqrt = 0, tr_a = 0, tr_b = 0, d2 = 0;
  for (int64_t k = 0; k < F; ++k) tr_sqrt += std::sqrt(std::max(w[k], 0.0));
  for (int64_t k = 0; k < F; ++k) tr_a += ca[k * F + k], tr_b += cb[k * F + k], d2 += std::pow(mu_a[k] - mu_b[k], 2);
  return std::max(0.0, d2 + tr_a + tr_b - 2 * tr_sqrt);
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
