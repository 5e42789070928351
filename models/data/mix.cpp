#include <kiln/models/data/mix.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include <kiln/core/error.h>
#include <kiln/ops/binary.h>
#include <kiln/ops/checks.h>
#include <kiln/ops/index.h>
#include <kiln/ops/loss.h>

namespace kiln::data {
namespace {

double uniform(Generator& gen) { return rand({1}, TensorOptions(DType::F64), &gen).item<double>(); }
double normal(Generator& gen) { return randn({1}, TensorOptions(DType::F64), &gen).item<double>(); }

// Marsaglia & Tsang (2000); for a < 1 the boost Gamma(a + 1) * U^(1/a).
double sample_gamma(double a, Generator& gen) {
  if (a < 1) return sample_gamma(a + 1, gen) * std::pow(std::max(uniform(gen), 1e-300), 1.0 / a);
  const double d = a - 1.0 / 3, c = 1 / std::sqrt(9 * d);
  while (true) {
    double z, v;
    do {
      z = normal(gen);
      v = 1 + c * z;
    } while (v <= 0);
    v = v * v * v;
    const double u = uniform(gen);
    if (u < 1 - 0.0331 * z * z * z * z || std::log(std::max(u, 1e-300)) < 0.5 * z * z + d * (1 - v + std::log(v)))
      return d * v;
  }
}

void check_batch(const char* op, const Tensor& x, const Tensor& y, double alpha) {
  kiln::detail::check_defined(op, x, "x");
  kiln::detail::check_defined(op, y, "y");
  KILN_CHECK(x.dim() == 4 && y.dim() == 1 && y.size(0) == x.size(0) && x.size(0) >= 1, op,
             ": expects images (B, C, H, W) and labels (B), got ", describe(x), " and ", describe(y));
  KILN_CHECK(alpha > 0 && std::isfinite(alpha), op, ": alpha must be > 0, got ", alpha);
}

// A uniform permutation of 0..n-1 (Fisher-Yates), as an i64 tensor on `device`.
Tensor permutation(int64_t n, Generator& gen, Device device) {
  std::vector<double> u = rand({n}, TensorOptions(DType::F64), &gen).to_vector<double>();
  std::vector<int64_t> p(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) p[i] = i;
  for (int64_t i = n - 1; i > 0; --i) {
    const int64_t j = std::min<int64_t>(i, static_cast<int64_t>(u[i] * double(i + 1)));
    std::swap(p[i], p[j]);
  }
  return from_vector(p).to(device);
}

}  // namespace

double sample_beta(double a, double b, Generator& gen) {
  KILN_CHECK(a > 0 && b > 0 && std::isfinite(a) && std::isfinite(b), "sample_beta: a and b must be > 0, got ", a,
             " and ", b);
  const double x = sample_gamma(a, gen), y = sample_gamma(b, gen);
  return x + y > 0 ? x / (x + y) : 0.5;
}

MixedBatch mixup(const Tensor& x, const Tensor& y, double alpha, Generator& gen) {
  check_batch("mixup", x, y, alpha);
  MixedBatch m;
  m.lam = sample_beta(alpha, alpha, gen);
  Tensor perm = permutation(x.size(0), gen, x.device());
  m.x = add(mul(x, m.lam), mul(index_select(x, 0, perm), 1 - m.lam));
  m.y_a = y;
  m.y_b = index_select(y, 0, perm);
  return m;
}

MixedBatch cutmix(const Tensor& x, const Tensor& y, double alpha, Generator& gen) {
  check_batch("cutmix", x, y, alpha);
  MixedBatch m;
  const double lam = sample_beta(alpha, alpha, gen);
  Tensor perm = permutation(x.size(0), gen, x.device());
  const int64_t H = x.size(2), W = x.size(3);
  const double r = std::sqrt(1 - lam);
  const int64_t ch = static_cast<int64_t>(H * r), cw = static_cast<int64_t>(W * r);
  const int64_t cy = std::min<int64_t>(H - 1, static_cast<int64_t>(uniform(gen) * double(H)));
  const int64_t cx = std::min<int64_t>(W - 1, static_cast<int64_t>(uniform(gen) * double(W)));
  const int64_t y1 = std::clamp<int64_t>(cy - ch / 2, 0, H), y2 = std::clamp<int64_t>(cy + ch / 2, 0, H);
  const int64_t x1 = std::clamp<int64_t>(cx - cw / 2, 0, W), x2 = std::clamp<int64_t>(cx + cw / 2, 0, W);
  std::vector<float> mask(static_cast<size_t>(H * W), 0.0f);
  for (int64_t i = y1; i < y2; ++i)
    for (int64_t j = x1; j < x2; ++j) mask[i * W + j] = 1.0f;
  Tensor M = cast(from_vector(mask, {1, 1, H, W}), x.dtype()).to(x.device());
  m.x = add(mul(x, sub(1.0, M)), mul(index_select(x, 0, perm), M));
  m.lam = 1 - double((y2 - y1) * (x2 - x1)) / double(H * W);
  m.y_a = y;
  m.y_b = index_select(y, 0, perm);
  return m;
}

Tensor mixed_cross_entropy(const Tensor& logits, const MixedBatch& b) {
  if (b.lam == 1.0) return cross_entropy(logits, b.y_a);
  return add(mul(cross_entropy(logits, b.y_a), b.lam), mul(cross_entropy(logits, b.y_b), 1 - b.lam));
}

}  // namespace kiln::data
