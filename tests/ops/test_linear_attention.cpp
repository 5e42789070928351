// Performer (FAVOR+) and Random Feature Attention (ops/linear_attention.h): the chunked
// causal core against the explicit masked formula (odd lengths, Tq < Tk, chunks that do not
// divide T), the orthogonal random features, the approximation error against exact softmax
// attention falling as the number of features grows, first- and second-order gradient checks
// in f64, and the error messages.
#include "test_util.h"

#include <cmath>

#include <kiln/ops/linear_attention.h>

namespace kiln {
namespace {

using V = std::vector<Tensor>;

// The defining formula with the whole (Tq, Tk) matrix: out = (A v) / (A 1), A = phi_q phi_k^T
// masked to j <= i + Tk - Tq when causal.
Tensor explicit_feature_attention(const Tensor& pq, const Tensor& pk, const Tensor& v, bool causal) {
  const int64_t Tq = pq.size(2), Tk = pk.size(2);
  Tensor A = matmul(pq, pk.transpose(2, 3));
  if (causal) {
    std::vector<double> m(static_cast<size_t>(Tq * Tk), 0.0);
    for (int64_t i = 0; i < Tq; ++i)
      for (int64_t j = 0; j <= i + Tk - Tq; ++j) m[static_cast<size_t>(i * Tk + j)] = 1.0;
    A = mul(A, from_vector<double>(m).reshape({Tq, Tk}));
  }
  return div(matmul(A, v), sum(A, {3}, true));
}

// Mean |approx - exact| / mean |exact| over the elements.
double rel_error(const Tensor& approx, const Tensor& exact) {
  const std::vector<double> a = approx.to_vector<double>(), e = exact.to_vector<double>();
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) num += std::fabs(a[i] - e[i]), den += std::fabs(e[i]);
  return num / den;
}

TEST_CASE("chunked causal feature attention equals the explicit masked formula", "[ops][linear_attention]") {
  struct Case {
    int64_t B, H, Tq, Tk, F, Dv, chunk;
  };
  for (const Case& c : std::vector<Case>{{2, 3, 37, 37, 11, 5, 8},   // chunks that do not divide T
                                         {1, 2, 16, 16, 4, 3, 16},   // one chunk
                                         {1, 1, 16, 16, 4, 3, 1},    // chunks of one position
                                         {2, 1, 5, 23, 6, 4, 2},     // Tq < Tk: a prefix every query sees
                                         {1, 1, 1, 9, 3, 2, 4}}) {   // one query (decoding)
    for (bool causal : {true, false}) {
      INFO("Tq " << c.Tq << " Tk " << c.Tk << " chunk " << c.chunk << (causal ? " causal" : " full"));
      const Tensor pq = exp(test::random_tensor({c.B, c.H, c.Tq, c.F}, DType::F64, 1));  // positive features
      const Tensor pk = exp(test::random_tensor({c.B, c.H, c.Tk, c.F}, DType::F64, 2));
      const Tensor v = test::random_tensor({c.B, c.H, c.Tk, c.Dv}, DType::F64, 3);
      CHECK_CLOSE_TOL(feature_attention(pq, pk, v, causal, c.chunk, 1e-300), explicit_feature_attention(pq, pk, v, causal),
                      1e-12, 1e-12);
    }
  }
}

TEST_CASE("orthogonal Gaussian features", "[ops][linear_attention]") {
  Generator g(5);
  const int64_t m = 40, d = 16;
  const Tensor w = gaussian_features(m, d, g);
  REQUIRE(w.sizes() == Shape{m, d});
  REQUIRE(w.dtype() == DType::F32);
  const std::vector<double> x = w.to_vector<double>();
  auto dot = [&](int64_t i, int64_t j) {
    double s = 0;
    for (int64_t c = 0; c < d; ++c) s += x[static_cast<size_t>(i * d + c)] * x[static_cast<size_t>(j * d + c)];
    return s;
  };
  double mean_sq_norm = 0;
  for (int64_t i = 0; i < m; ++i) {
    mean_sq_norm += dot(i, i) / m;
    for (int64_t j = 0; j < i; ++j)
      if (i / d == j / d) CHECK(std::fabs(dot(i, j)) < 1e-4 * std::sqrt(dot(i, i) * dot(j, j)));  // same block
  }
  CHECK(mean_sq_norm > 0.6 * d);  // rows keep N(0, I_d)'s length: E|w|^2 = d
  CHECK(mean_sq_norm < 1.4 * d);
  Generator g2(5);
  CHECK(test::equal(gaussian_features(m, d, g2), w));  // a function of the generator's state
}

TEST_CASE("Performer and RFA approach exact attention as the features grow", "[ops][linear_attention]") {
  const int64_t B = 1, H = 2, T = 48, D = 16;
  for (bool causal : {false, true}) {
    std::vector<double> perf, rfa;
    for (int64_t m : {8, 64, 512, 4096}) {
      double ep = 0, er = 0;
      for (uint64_t seed = 0; seed < 3; ++seed) {  // averaged over draws of the inputs and the features
        const Tensor q = test::random_tensor({B, H, T, D}, DType::F64, 10 + seed, 0.5);
        const Tensor k = test::random_tensor({B, H, T, D}, DType::F64, 20 + seed, 0.5);
        const Tensor v = test::random_tensor({B, H, T, D}, DType::F64, 30 + seed);
        Generator g(100 + seed);
        const Tensor w = gaussian_features(m, D, g);
        ep += rel_error(performer_attention(q, k, v, w, causal, -1, 16), naive_attention(q, k, v, causal)) / 3;
        er += rel_error(rfa_attention(q, k, v, w, causal, 0.7, 16), rfa_exact_attention(q, k, v, causal, 0.7)) / 3;
      }
      perf.push_back(ep);
      rfa.push_back(er);
      UNSCOPED_INFO((causal ? "causal" : "full") << " m " << m << ": Performer error " << ep << ", RFA error " << er);
    }
    for (size_t i = 1; i < perf.size(); ++i) {
      CHECK(perf[i] < perf[i - 1]);
      CHECK(rfa[i] < rfa[i - 1]);
    }
    // Monte Carlo: the error falls like 1/sqrt(m); 512x the features, well over 4x smaller.
    CHECK(perf.back() < perf.front() / 4);
    CHECK(rfa.back() < rfa.front() / 4);
    CHECK(perf.back() < 0.05);
    CHECK(rfa.back() < 0.1);
  }
}

TEST_CASE("Performer and RFA gradients (first and second order)", "[ops][linear_attention]") {
  Generator g(3);
  const Tensor w = gaussian_features(64, 4, g);  // enough features that RFA's normaliser stays clear of its clamp
  const V in = {test::random_tensor({1, 2, 7, 4}, DType::F64, 1, 0.5), test::random_tensor({1, 2, 9, 4}, DType::F64, 2, 0.5),
                test::random_tensor({1, 2, 9, 3}, DType::F64, 3)};
  for (bool causal : {true, false}) {
    INFO((causal ? "causal, Tq < Tk, chunk 3" : "full"));
    auto perf = [&](const V& x) { return performer_attention(x[0], x[1], x[2], w, causal, -1, 3); };
    auto rfa = [&](const V& x) { return rfa_attention(x[0], x[1], x[2], w, causal, 0.8, 3); };
    const GradcheckResult r1 = gradcheck(perf, in);
    INFO("performer: " << r1.message);
    CHECK(r1.ok);
    const GradcheckResult r2 = gradcheck(rfa, in);
    INFO("rfa: " << r2.message);
    CHECK(r2.ok);
    const GradcheckResult r3 = gradgradcheck(perf, in);
    INFO("performer, second order: " << r3.message);
    CHECK(r3.ok);
  }
}

TEST_CASE("linear attention works in f32 and without a batch dim", "[ops][linear_attention]") {
  Generator g(9);
  const Tensor w = gaussian_features(32, 8, g);
  const Tensor q = test::random_tensor({3, 10, 8}, DType::F64, 1, 0.5), k = test::random_tensor({3, 10, 8}, DType::F64, 2, 0.5),
               v = test::random_tensor({3, 10, 5}, DType::F64, 3);
  const Tensor out64 = performer_attention(q, k, v, w, true, -1, 4);
  REQUIRE(out64.sizes() == Shape{3, 10, 5});
  const Tensor out32 = performer_attention(cast(q, DType::F32), cast(k, DType::F32), cast(v, DType::F32), w, true, -1, 4);
  CHECK(out32.dtype() == DType::F32);
  CHECK_CLOSE_TOL(cast(out32, DType::F64), out64, 1e-4, 1e-5);
  CHECK(rfa_attention(q, k, v, w, true).sizes() == Shape{3, 10, 5});
}

TEST_CASE("linear attention rejects bad inputs with clear errors", "[ops][linear_attention]") {
  Generator g(1);
  const Tensor w = gaussian_features(8, 4, g);
  const Tensor q = zeros({1, 2, 5, 4}), k = zeros({1, 2, 5, 4}), v = zeros({1, 2, 5, 3});
  CHECK_KILN_ERROR(performer_attention(q, zeros({1, 3, 5, 4}), v, w, true), "head counts");
  CHECK_KILN_ERROR(performer_attention(q, k, v, gaussian_features(8, 5, g), true), "features must be (m, D) with D = 4");
  CHECK_KILN_ERROR(rfa_attention(zeros({1, 2, 6, 4}), k, v, w, true), "Tq <= Tk");
  CHECK_KILN_ERROR(rfa_attention(q, k, v, w, true, -1.0), "sigma");
  CHECK_KILN_ERROR(performer_attention(q, k, zeros({1, 2, 4, 3}), w, false), "k and v have different lengths");
  CHECK_KILN_ERROR(feature_attention(q, k, v, true, 0), "chunk");
}

}  // namespace
}  // namespace kiln
