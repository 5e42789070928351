// MCR^2's coding rates (formulas: models/eval/mcr2.h), from matmul, one_hot and
// logdet_spd.
#include <kiln/models/eval/mcr2.h>

#include <cmath>

#include <kiln/ops/binary.h>
#include <kiln/ops/checks.h>
#include <kiln/ops/clamp.h>
#include <kiln/ops/index.h>
#include <kiln/ops/linalg.h>
#include <kiln/ops/matmul.h>
#include <kiln/ops/reduce.h>

namespace kiln::eval {
namespace {

void check_features(const char* op, const Tensor& z, double eps) {
  KILN_CHECK(z.defined() && z.dim() == 2 && z.size(0) >= 1 && z.size(1) >= 1, op,
             ": needs features Z (m, d) with m, d >= 1, got ", z.defined() ? describe(z) : std::string("undefined"));
  KILN_CHECK(z.dtype() == DType::F32 || z.dtype() == DType::F64, op, ": needs f32 or f64 features, got ", describe(z));
  KILN_CHECK(eps > 0 && std::isfinite(eps), op, ": eps must be > 0, got ", eps);
}

}  // namespace

Tensor coding_rate(const Tensor& z, double eps) {
  check_features("coding_rate", z, eps);
  const int64_t m = z.size(0), d = z.size(1);
  Tensor gram = matmul(z.transpose(0, 1), z);  // (d, d)
  Tensor a = add(eye(d, -1, TensorOptions(z.dtype(), z.device())), mul(gram, double(d) / (double(m) * eps * eps)));
  return mul(logdet_spd(a), 0.5);
}

RateReduction rate_reduction(const Tensor& z, const Tensor& labels, int64_t num_classes, double eps) {
  check_features("rate_reduction", z, eps);
  KILN_CHECK(num_classes >= 1, "rate_reduction: num_classes must be >= 1, got ", num_classes);
  KILN_CHECK(labels.defined() && labels.dim() == 1 && labels.size(0) == z.size(0) && !is_floating(labels.dtype()),
             "rate_reduction: needs integer labels of shape (", z.size(0), "), got ",
             labels.defined() ? describe(labels) : std::string("undefined"));
  const int64_t m = z.size(0), d = z.size(1), k = num_classes;
  RateReduction out;
  out.r = coding_rate(z, eps);
  // Z_j^T Z_j = (Pi_j Z)^T (Pi_j Z) for the 0/1 diagonal Pi_j: one batched product.
  Tensor onehot = one_hot(labels.to(DType::I64), k).to(z.dtype());  // (m, k); one_hot checks the range
  Tensor zw = mul(onehot.transpose(0, 1).reshape({k, m, 1}), z.reshape({1, m, d}));  // (k, m, d)
  Tensor gram = matmul(zw.transpose(1, 2), zw);                                        // (k, d, d)
  Tensor counts = sum(onehot, {0});                                                    // m_j
  Tensor scale = div(double(d) / (eps * eps), clamp_min(counts, 1.0)).reshape({k, 1, 1});
  Tensor a = add(eye(d, -1, TensorOptions(z.dtype(), z.device())), mul(gram, scale));
  out.rc = sum(mul(logdet_spd(a), div(counts, 2.0 * double(m))));
  out.delta_r = sub(out.r, out.rc);
  return out;
}

}  // namespace kiln::eval
