// Performer (FAVOR+) and Random Feature Attention as composites of differentiable ops; see
// ops/linear_attention.h for the formulas.
#include <kiln/ops/linear_attention.h>

#include <cmath>
#include <vector>

#include <kiln/core/autograd.h>
#include <kiln/core/error.h>
#include <kiln/ops/attention.h>
#include <kiln/ops/binary.h>
#include <kiln/ops/checks.h>
#include <kiln/ops/clamp.h>
#include <kiln/ops/index.h>
#include <kiln/ops/matmul.h>
#include <kiln/ops/reduce.h>
#include <kiln/ops/unary.h>

namespace kiln {
namespace {

// The checked inputs as 4-D, and whether they came without a batch.
struct Qkv {
  Tensor q, k, v;
  bool batched;
};

Qkv check_qkv(const char* op, const Tensor& q, const Tensor& k, const Tensor& v, bool causal) {
  detail::check_defined(op, q, "q");
  detail::check_defined(op, k, "k");
  detail::check_defined(op, v, "v");
  KILN_CHECK(q.dim() == k.dim() && q.dim() == v.dim() && (q.dim() == 3 || q.dim() == 4), op,
             ": q, k, v must all be (B, H, T, D) or (H, T, D), got ", describe(q), ", ", describe(k), ", ",
             describe(v));
  detail::check_same_device(op, q, k);
  detail::check_same_device(op, q, v);
  KILN_CHECK(is_floating(q.dtype()) && q.dtype() == k.dtype() && q.dtype() == v.dtype(), op,
             ": q, k, v must share one floating dtype, got ", describe(q), ", ", describe(k), ", ", describe(v));
  const bool batched = q.dim() == 4;
  Tensor q4 = batched ? q : q.unsqueeze(0), k4 = batched ? k : k.unsqueeze(0), v4 = batched ? v : v.unsqueeze(0);
  KILN_CHECK(q4.size(0) == k4.size(0) && q4.size(0) == v4.size(0) && q4.size(1) == k4.size(1) &&
                 q4.size(1) == v4.size(1),
             op, ": batch and head counts differ: q ", describe(q), ", k ", describe(k), ", v ", describe(v));
  KILN_CHECK(q4.size(3) == k4.size(3), op, ": q and k have different head dims: ", describe(q), " vs ", describe(k));
  KILN_CHECK(k4.size(2) == v4.size(2), op, ": k and v have different lengths: ", describe(k), " vs ", describe(v));
  KILN_CHECK(q4.size(2) >= 1 && k4.size(2) >= 1, op, ": empty sequence: q ", describe(q), ", k ", describe(k));
  KILN_CHECK(!causal || q4.size(2) <= k4.size(2), op, ": causal attention needs Tq <= Tk, got q ", describe(q),
             ", k ", describe(k));
  return {q4, k4, v4, batched};
}

void check_features(const char* op, const Tensor& features, const Tensor& q) {
  detail::check_defined(op, features, "features");
  KILN_CHECK(features.dim() == 2 && features.size(1) == q.size(-1) && features.size(0) >= 1, op,
             ": features must be (m, D) with D = ", q.size(-1), " (the head dim), got ", describe(features));
}

// The projection x W^T for features on any device and dtype (a constant: no gradient).
Tensor project(const Tensor& x, const Tensor& features) {
  const Tensor w = cast(features.detach(), x.dtype()).to(x.device());
  return matmul(x, w.t());  // (..., T, m)
}

Tensor out_shape(const Tensor& y, bool batched) { return batched ? y : y.squeeze(0); }

}  // namespace

Tensor gaussian_features(int64_t m, int64_t d, Generator& gen, bool orthogonal) {
  KILN_CHECK(m >= 1 && d >= 1, "gaussian_features: m and d must be positive, got ", m, " and ", d);
  std::vector<double> g = randn({m, d}, TensorOptions(DType::F64), &gen).to_vector<double>();
  if (orthogonal) {
    const std::vector<double> norms_src = randn({m, d}, TensorOptions(DType::F64), &gen).to_vector<double>();
    for (int64_t b0 = 0; b0 < m; b0 += d) {  // blocks of up to d rows, orthonormalised
      const int64_t b1 = std::min(m, b0 + d);
      for (int64_t i = b0; i < b1; ++i) {
        double* ri = &g[static_cast<size_t>(i * d)];
        for (int pass = 0; pass < 2; ++pass)  // twice: modified Gram-Schmidt loses orthogonality once
          for (int64_t j = b0; j < i; ++j) {
            const double* rj = &g[static_cast<size_t>(j * d)];
            double dot = 0;
            for (int64_t c = 0; c < d; ++c) dot += ri[c] * rj[c];
            for (int64_t c = 0; c < d; ++c) ri[c] -= dot * rj[c];
          }
        double n = 0;
        for (int64_t c = 0; c < d; ++c) n += ri[c] * ri[c];
        n = std::sqrt(n);
        KILN_CHECK(n > 1e-12, "gaussian_features: a degenerate Gaussian draw (row ", i, ")");
        for (int64_t c = 0; c < d; ++c) ri[c] /= n;
      }
      for (int64_t i = b0; i < b1; ++i) {  // each row to the length of a fresh N(0, I_d) vector
        double n = 0;
        for (int64_t c = 0; c < d; ++c) n += norms_src[static_cast<size_t>(i * d + c)] * norms_src[static_cast<size_t>(i * d + c)];
        n = std::sqrt(n);
        for (int64_t c = 0; c < d; ++c) g[static_cast<size_t>(i * d + c)] *= n;
      }
    }
  }
  return cast(from_vector<double>(g).reshape({m, d}), DType::F32);
}

Tensor feature_attention(const Tensor& phi_q, const Tensor& phi_k, const Tensor& v, bool causal, int64_t chunk,
                         double eps, bool clamp_normaliser) {
  constexpr const char* op = "feature_attention";
  KILN_CHECK(chunk >= 1, op, ": chunk must be >= 1, got ", chunk);
  auto normalise = [&](const Tensor& num, const Tensor& den) {
    return div(num, clamp_normaliser ? clamp_min(den, eps) : add(den, eps));
  };
  KILN_CHECK(phi_q.dim() == 4 && phi_k.dim() == 4 && v.dim() == 4 && phi_q.size(-1) == phi_k.size(-1) &&
                 phi_k.size(2) == v.size(2),
             op, ": expects phi_q (B, H, Tq, F), phi_k (B, H, Tk, F), v (B, H, Tk, Dv), got ", describe(phi_q), ", ",
             describe(phi_k), ", ", describe(v));
  const int64_t B = phi_q.size(0), H = phi_q.size(1), Tq = phi_q.size(2), Tk = phi_k.size(2), F = phi_q.size(3),
                Dv = v.size(3);
  if (!causal) {
    const Tensor kv = matmul(phi_k.transpose(2, 3), v);   // (B, H, F, Dv)
    const Tensor z = sum(phi_k, {2}, true).transpose(2, 3);  // (B, H, F, 1)
    return normalise(matmul(phi_q, kv), matmul(phi_q, z));
  }
  KILN_CHECK(Tq <= Tk, op, ": causal attention needs Tq <= Tk, got ", Tq, " and ", Tk);
  // Keys before the first query's own position are seen by every query: their sums start
  // the running state.
  const int64_t P = Tk - Tq;
  Tensor kv0, z0;
  if (P > 0) {
    const Tensor pk = phi_k.narrow(2, 0, P), pv = v.narrow(2, 0, P);
    kv0 = matmul(pk.transpose(2, 3), pv);        // (B, H, F, Dv)
    z0 = sum(pk, {2}, true).transpose(2, 3);     // (B, H, F, 1)
  }
  Tensor fk = P > 0 ? phi_k.narrow(2, P, Tq) : phi_k, fv = P > 0 ? v.narrow(2, P, Tq) : v, fq = phi_q;
  // Pad to whole chunks with zero rows (a zero key adds nothing; a zero query's row is cut).
  const int64_t c = std::min(chunk, Tq), n = (Tq + c - 1) / c, Tp = n * c;
  if (Tp > Tq) {
    auto pad = [&](const Tensor& t) {
      return cat({t, zeros({B, H, Tp - Tq, t.size(3)}, TensorOptions(t.dtype(), t.device()))}, 2);
    };
    fq = pad(fq), fk = pad(fk), fv = pad(fv);
  }
  const Tensor qc = fq.reshape({B, H, n, c, F}), kc = fk.reshape({B, H, n, c, F}), vc = fv.reshape({B, H, n, c, Dv});
  const TensorOptions o(phi_q.dtype(), phi_q.device());
  // Within a chunk: the masked products (position j <= i).
  std::vector<float> tri(static_cast<size_t>(c * c), 0.0f), strict(static_cast<size_t>(n * n), 0.0f);
  for (int64_t i = 0; i < c; ++i)
    for (int64_t j = 0; j <= i; ++j) tri[static_cast<size_t>(i * c + j)] = 1.0f;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < i; ++j) strict[static_cast<size_t>(i * n + j)] = 1.0f;
  const Tensor mask = cast(from_vector<float>(tri).reshape({c, c}), o.dtype).to(o.device);
  const Tensor A = mul(matmul(qc, kc.transpose(3, 4)), mask);  // (B, H, n, c, c)
  Tensor num = matmul(A, vc);                                  // (B, H, n, c, Dv)
  Tensor den = sum(A, {4}, true);                              // (B, H, n, c, 1)
  // Across chunks: the sums of the earlier chunks, as a product with a strictly lower
  // triangular matrix of ones over the chunk index.
  if (n > 1 || P > 0) {
    const Tensor L = cast(from_vector<float>(strict).reshape({n, n}), o.dtype).to(o.device);
    Tensor S = matmul(L, matmul(kc.transpose(3, 4), vc).reshape({B, H, n, F * Dv})).reshape({B, H, n, F, Dv});
    Tensor Z = matmul(L, sum(kc, {3}).reshape({B, H, n, F})).reshape({B, H, n, F, 1});
    if (P > 0) S = add(S, kv0.unsqueeze(2)), Z = add(Z, z0.unsqueeze(2));
    num = add(num, matmul(qc, S));
    den = add(den, matmul(qc, Z));
  }
  const Tensor out = normalise(num, den).reshape({B, H, Tp, Dv});
  return Tp > Tq ? out.narrow(2, 0, Tq) : out;
}

Tensor performer_attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& features, bool causal,
                           double scale, int64_t chunk) {
  constexpr const char* op = "performer_attention";
  Qkv x = check_qkv(op, q, k, v, causal);
  check_features(op, features, x.q);
  const double s = scale > 0 ? scale : 1.0 / std::sqrt(static_cast<double>(x.q.size(3)));
  KILN_CHECK(std::isfinite(s), op, ": scale must be finite and positive, got ", scale);
  const double r = std::sqrt(s);  // q . k scaled by s: each side by sqrt(s)
  auto phi = [&](const Tensor& t, bool query) {
    const Tensor xs = mul(t, r);
    const Tensor proj = project(xs, features);                      // (B, H, T, m)
    const Tensor half_sq = mul(sum(mul(xs, xs), {3}, true), 0.5);   // (B, H, T, 1)
    Tensor e = sub(proj, half_sq);
    // The stabiliser: per query row; one number for all keys of a head. Constant factors
    // cancel in the ratio, so no gradient flows through them.
    const Tensor m = query ? max(e, {3}, true).detach() : max(e, {2, 3}, true).detach();
    return exp(sub(e, m));
  };
  const Tensor out = feature_attention(phi(x.q, true), phi(x.k, false), x.v, causal, chunk, 1e-30, false);
  return out_shape(out, x.batched);
}

Tensor rfa_attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& features, bool causal,
                     double sigma, int64_t chunk, double eps) {
  constexpr const char* op = "rfa_attention";
  Qkv x = check_qkv(op, q, k, v, causal);
  check_features(op, features, x.q);
  KILN_CHECK(sigma > 0 && std::isfinite(sigma), op, ": sigma must be finite and positive, got ", sigma);
  KILN_CHECK(eps > 0, op, ": eps must be positive, got ", eps);
  auto phi = [&](const Tensor& t) {
    const Tensor unit = mul(t, rsqrt(add(sum(mul(t, t), {3}, true), 1e-12)));  // t / |t|
    const Tensor proj = mul(project(unit, features), 1.0 / sigma);
    return cat({sin(proj), cos(proj)}, 3);  // (B, H, T, 2m); the 1/sqrt(m) cancels in the ratio
  };
  const Tensor out = feature_attention(phi(x.q), phi(x.k), x.v, causal, chunk, eps, /*clamp_normaliser=*/true);
  return out_shape(out, x.batched);
}

Tensor rfa_exact_attention(const Tensor& q, const Tensor& k, const Tensor& v, bool causal, double sigma) {
  constexpr const char* op = "rfa_exact_attention";
  Qkv x = check_qkv(op, q, k, v, causal);
  KILN_CHECK(sigma > 0 && std::isfinite(sigma), op, ": sigma must be finite and positive, got ", sigma);
  auto unit = [](const Tensor& t) { return mul(t, rsqrt(add(sum(mul(t, t), {3}, true), 1e-12))); };
  const Tensor out = naive_attention(unit(x.q), unit(x.k), x.v, causal, 0.0, 1.0 / (sigma * sigma));
  return out_shape(out, x.batched);
}

}  // namespace kiln
