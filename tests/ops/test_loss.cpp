// Losses on the CPU: cross_entropy against log-sum-exp computed in the test (label
// smoothing, ignore_index, every reduction, (N, C, d) and (C) layouts, half dtypes), its
// agreement with nll_loss(log_softmax), nll_loss, binary_cross_entropy_with_logits
// (stable for large |x|, pos_weight) and mse_loss values, f64 gradient checks of each,
// and bad input.
#include "test_util.h"

#include <cmath>
#include <limits>

using namespace kiln;
using V = std::vector<Tensor>;

namespace {

Tensor leaf(const Shape& s, uint64_t seed, double lo = -2.0, double hi = 2.0) {
  Generator g(seed);
  return add(mul(rand(s, DType::F64, &g), hi - lo), lo);
}

void check_grad(const std::function<Tensor(const V&)>& f, const V& inputs) {
  GradcheckResult r = gradcheck(f, inputs);
  INFO(r.message);
  CHECK(r.ok);
}

// Per-row cross entropy of row-major (N, C) values, in double: lse - x_t, smoothed.
std::vector<double> ref_ce_rows(const std::vector<double>& x, int64_t N, int64_t C, const std::vector<int64_t>& t,
                                int64_t ignore, double eps) {
  std::vector<double> out(N);
  for (int64_t r = 0; r < N; ++r) {
    if (t[r] == ignore) {
      out[r] = 0;
      continue;
    }
    double m = -INFINITY, s = 0, sx = 0;
    for (int64_t c = 0; c < C; ++c) m = std::max(m, x[r * C + c]);
    for (int64_t c = 0; c < C; ++c) s += std::exp(x[r * C + c] - m), sx += x[r * C + c];
    const double lse = m + std::log(s);
    double smooth = 0;  // (1/C) sum_c -logp_c
    for (int64_t c = 0; c < C; ++c) smooth += (lse - x[r * C + c]) / static_cast<double>(C);
    out[r] = (1 - eps) * (lse - x[r * C + t[r]]) + eps * smooth;
  }
  return out;
}

double ref_reduce(const std::vector<double>& rows, const std::vector<int64_t>& t, int64_t ignore, Reduction r) {
  double s = 0;
  int64_t n = 0;
  for (size_t i = 0; i < rows.size(); ++i) {
    s += rows[i];
    n += t[i] != ignore;
  }
  return r == Reduction::Sum ? s : s / static_cast<double>(n);
}

}  // namespace

TEST_CASE("cross_entropy: hand-computed values", "[ops][loss]") {
  // Row 0: logits (1, 2, 3), target 2: loss = log(e + e^2 + e^3) - 3.
  Tensor x = from_vector<double>({1, 2, 3, 0, 0, 0}, {2, 3});
  Tensor t = from_vector<int64_t>({2, 0});
  const double l0 = std::log(std::exp(1.0) + std::exp(2.0) + std::exp(3.0)) - 3, l1 = std::log(3.0);
  CHECK_CLOSE(cross_entropy(x, t, Reduction::None), from_vector<double>({l0, l1}));
  CHECK_CLOSE(cross_entropy(x, t, Reduction::Sum), scalar_tensor(l0 + l1, DType::F64));
  CHECK_CLOSE(cross_entropy(x, t), scalar_tensor((l0 + l1) / 2, DType::F64));
  CHECK(cross_entropy(x, t).dim() == 0);
  // ignore_index: row 1 ignored, the mean is over row 0 only.
  Tensor ti = from_vector<int64_t>({2, -100});
  CHECK_CLOSE(cross_entropy(x, ti, Reduction::None), from_vector<double>({l0, 0}));
  CHECK_CLOSE(cross_entropy(x, ti), scalar_tensor(l0, DType::F64));
  CHECK_CLOSE(cross_entropy(x, from_vector<int64_t>({2, 1}), Reduction::Mean, 1), scalar_tensor(l0, DType::F64));
  // Label smoothing 0.1 on row 0: 0.9 * nll + 0.1 * mean_c(lse - x_c).
  const double lse0 = l0 + 3;
  const double smooth0 = ((lse0 - 1) + (lse0 - 2) + (lse0 - 3)) / 3;
  CHECK_CLOSE(cross_entropy(x, t, Reduction::None, -100, 0.1),
              from_vector<double>({0.9 * l0 + 0.1 * smooth0, std::log(3.0)}));
  // Smoothing 1: the loss no longer depends on the target.
  CHECK_CLOSE(cross_entropy(x, from_vector<int64_t>({0, 1}), Reduction::None, -100, 1.0),
              cross_entropy(x, from_vector<int64_t>({2, 2}), Reduction::None, -100, 1.0));
  // Unbatched (C) logits with a 0-d target.
  Tensor u = cross_entropy(from_vector<double>({1, 2, 3}), scalar_tensor(int64_t{2}, DType::I64), Reduction::None);
  CHECK(u.dim() == 0);
  CHECK(u.item<double>() == Approx(l0).epsilon(1e-12));
  // Large logits stay finite.
  Tensor big = from_vector<float>({1000, 1000, -1000}, {1, 3});
  CHECK(cross_entropy(big, from_vector<int64_t>({0})).item<float>() == Approx(std::log(2.0)).epsilon(1e-6));
  // -inf logits (masked classes) add nothing.
  Tensor masked = from_vector<float>({0, -INFINITY, 0}, {1, 3});
  CHECK(cross_entropy(masked, from_vector<int64_t>({2})).item<float>() == Approx(std::log(2.0)).epsilon(1e-6));
}

TEST_CASE("cross_entropy: random batches against log-sum-exp, every reduction", "[ops][loss]") {
  const int64_t N = 9, C = 37;
  Tensor x = test::random_tensor({N, C}, DType::F64, 5, 3.0);
  Generator g(4);
  std::vector<int64_t> tv = randint(0, C, {N}, DType::I64, &g).to_vector<int64_t>();
  tv[3] = -100;
  tv[7] = -100;
  Tensor t = from_vector<int64_t>(tv, {N});
  std::vector<double> xv = test::values(x);
  for (double eps : {0.0, 0.1, 0.5}) {
    INFO("label smoothing " << eps);
    std::vector<double> rows = ref_ce_rows(xv, N, C, tv, -100, eps);
    CHECK_CLOSE(cross_entropy(x, t, Reduction::None, -100, eps), from_vector<double>(rows, {N}));
    for (Reduction r : {Reduction::Mean, Reduction::Sum}) {
      INFO(reduction_name(r));
      CHECK_CLOSE(cross_entropy(x, t, r, -100, eps), scalar_tensor(ref_reduce(rows, tv, -100, r), DType::F64));
    }
    // f32 and i32 targets.
    CHECK_CLOSE_TOL(cross_entropy(x.to(DType::F32), t.to(DType::I32), Reduction::None, -100, eps),
                    from_vector<double>(rows, {N}), 1e-5, 1e-5);
    // Non-contiguous logits.
    CHECK_CLOSE(cross_entropy(test::transposed_copy(x), t, Reduction::None, -100, eps), from_vector<double>(rows, {N}));
  }
}

TEST_CASE("cross_entropy: (N, C, d1, d2) equals the rows moved to (N*d1*d2, C)", "[ops][loss]") {
  const int64_t N = 2, C = 5, D1 = 3, D2 = 4;
  Tensor x = test::random_tensor({N, C, D1, D2}, DType::F64, 6, 2.0);
  Generator g(7);
  std::vector<int64_t> tv = randint(0, C, {N * D1 * D2}, DType::I64, &g).to_vector<int64_t>();
  for (size_t i = 0; i < tv.size(); i += 7) tv[i] = -100;
  Tensor t = from_vector<int64_t>(tv, {N, D1, D2});
  Tensor rows = x.permute({0, 2, 3, 1}).reshape({N * D1 * D2, C});
  for (double eps : {0.0, 0.2}) {
    Tensor none = cross_entropy(x, t, Reduction::None, -100, eps);
    CHECK(none.sizes() == Shape{N, D1, D2});
    CHECK_CLOSE(none.reshape({-1}), cross_entropy(rows, t.reshape({-1}), Reduction::None, -100, eps));
    CHECK_CLOSE(cross_entropy(x, t, Reduction::Mean, -100, eps),
                cross_entropy(rows, t.reshape({-1}), Reduction::Mean, -100, eps));
    std::vector<double> ref = ref_ce_rows(test::values(rows), N * D1 * D2, C, tv, -100, eps);
    CHECK_CLOSE(none.reshape({-1}), from_vector<double>(ref, {N * D1 * D2}));
  }
}

TEST_CASE("cross_entropy equals nll_loss(log_softmax) and matches its gradient", "[ops][loss]") {
  Tensor x = test::random_tensor({6, 11}, DType::F64, 8, 2.0);
  Tensor t = from_vector<int64_t>({3, -100, 0, 10, 5, 5});
  for (Reduction r : {Reduction::None, Reduction::Mean, Reduction::Sum}) {
    INFO(reduction_name(r));
    Tensor a = x.clone().set_requires_grad(true), b = x.clone().set_requires_grad(true);
    Tensor la = cross_entropy(a, t, r), lb = nll_loss(log_softmax(b, 1), t, r);
    CHECK_CLOSE(la, lb);
    Tensor w = test::random_tensor(la.sizes(), DType::F64, 9);
    la.backward(w);
    lb.backward(w);
    CHECK_CLOSE(a.grad(), b.grad());
    // Ignored rows get exactly zero gradient.
    CHECK(test::values(a.grad()[1]) == std::vector<double>(11, 0.0));
  }
}

TEST_CASE("cross_entropy: half dtypes compute in f32 and keep their dtype", "[ops][loss]") {
  for (DType dt : {DType::F16, DType::BF16, DType::F32}) {
    INFO(dtype_name(dt));
    Tensor x = test::random_tensor({5, 40}, dt, 10, 2.0);
    Tensor t = from_vector<int64_t>({0, 39, -100, 7, 7});
    Tensor l = cross_entropy(x, t, Reduction::None, -100, 0.1);
    CHECK(l.dtype() == dt);
    std::vector<double> ref = ref_ce_rows(test::values(x), 5, 40, test::vec<int64_t>(t), -100, 0.1);
    CHECK_CLOSE(l, from_vector<double>(ref, {5}));
    CHECK(cross_entropy(x, t).dtype() == dt);
    Tensor xg = x.clone().set_requires_grad(true);
    cross_entropy(xg, t).backward();
    CHECK(xg.grad().dtype() == dt);
    Tensor x64 = x.to(DType::F64).set_requires_grad(true);
    cross_entropy(x64, t).backward();
    CHECK_CLOSE_TOL(xg.grad(), x64.grad(), test::tol_for(dt).rtol, test::tol_for(dt).atol);
  }
}

TEST_CASE("cross_entropy: empty and fully ignored batches", "[ops][loss]") {
  Tensor x = test::random_tensor({3, 4}, DType::F32, 11);
  Tensor t = from_vector<int64_t>({-100, -100, -100});
  CHECK(std::isnan(cross_entropy(x, t).item<float>()));  // 0 / 0, as in PyTorch
  CHECK(cross_entropy(x, t, Reduction::Sum).item<float>() == 0);
  Tensor xg = x.clone().set_requires_grad(true);
  cross_entropy(xg, t, Reduction::Sum).backward();
  CHECK(test::values(xg.grad()) == std::vector<double>(12, 0.0));
  Tensor e = zeros({0, 4});
  Tensor te = zeros({0}, DType::I64);
  CHECK(cross_entropy(e, te, Reduction::None).sizes() == Shape{0});
  CHECK(cross_entropy(e, te, Reduction::Sum).item<float>() == 0);
  CHECK(std::isnan(cross_entropy(e, te).item<float>()));
}

TEST_CASE("gradcheck: cross_entropy", "[ops][loss][gradcheck]") {
  Tensor x = leaf({4, 7}, 1);
  Tensor t = from_vector<int64_t>({6, 0, -100, 3});
  for (Reduction r : {Reduction::None, Reduction::Mean, Reduction::Sum}) {
    for (double eps : {0.0, 0.3}) {
      INFO(reduction_name(r) << " smoothing " << eps);
      check_grad([=](const V& v) { return cross_entropy(v[0], t, r, -100, eps); }, {x});
    }
  }
  check_grad([=](const V& v) { return cross_entropy(v[0], from_vector<int64_t>({6, 0, 3, 3}), Reduction::Mean, 3, 0.1); }, {x});
  // (N, C, d) and a non-contiguous view.
  Tensor x3 = leaf({2, 4, 3}, 2);
  Tensor t3 = from_vector<int64_t>({0, 3, -100, 1, 1, 2}, {2, 3});
  check_grad([=](const V& v) { return cross_entropy(v[0], t3, Reduction::None, -100, 0.2); }, {x3});
  check_grad([=](const V& v) { return cross_entropy(v[0].t(), t, Reduction::Mean); }, {leaf({7, 4}, 3)});
  check_grad([=](const V& v) { return cross_entropy(v[0], scalar_tensor(int64_t{2}, DType::I64)); }, {leaf({5}, 4)});
}

TEST_CASE("nll_loss: values and gradient", "[ops][loss]") {
  Tensor lp = from_vector<double>({-0.1, -2.0, -3.0, -1.5, -0.5, -4.0}, {2, 3});
  CHECK_CLOSE(nll_loss(lp, from_vector<int64_t>({1, 0}), Reduction::None), from_vector<double>({2.0, 1.5}));
  CHECK_CLOSE(nll_loss(lp, from_vector<int64_t>({1, 0})), scalar_tensor(1.75, DType::F64));
  CHECK_CLOSE(nll_loss(lp, from_vector<int64_t>({1, 0}), Reduction::Sum), scalar_tensor(3.5, DType::F64));
  CHECK_CLOSE(nll_loss(lp, from_vector<int64_t>({-100, 2})), scalar_tensor(4.0, DType::F64));
  CHECK_CLOSE(nll_loss(lp, from_vector<int64_t>({1, 2}), Reduction::None, 2), from_vector<double>({2.0, 0.0}));
  // An ignored row holding -inf does not poison the result.
  Tensor inf = from_vector<double>({-INFINITY, -1.0}, {1, 2});
  CHECK(nll_loss(inf, from_vector<int64_t>({-100}), Reduction::Sum).item<double>() == 0);
  CHECK(nll_loss(from_vector<double>({-1, -2, -3}), scalar_tensor(int64_t{1}, DType::I64)).item<double>() == 2);
  Tensor t = from_vector<int64_t>({2, -100, 0});
  for (Reduction r : {Reduction::None, Reduction::Mean, Reduction::Sum})
    check_grad([=](const V& v) { return nll_loss(v[0], t, r); }, {leaf({3, 4}, 5)});
  check_grad([=](const V& v) { return nll_loss(v[0], from_vector<int64_t>({0, 2, 1, 1}, {2, 2})); },
             {leaf({2, 3, 2}, 6)});
}

TEST_CASE("binary_cross_entropy_with_logits: values, stability, pos_weight", "[ops][loss]") {
  std::vector<double> xv{-3, -0.5, 0, 0.7, 2.5, 12}, yv{0, 1, 0.5, 1, 0.2, 0};
  Tensor x = from_vector<double>(xv), y = from_vector<double>(yv);
  std::vector<double> ref, refw;
  std::vector<double> pw{2.0, 0.5, 1.0, 3.0, 1.5, 0.25};
  for (size_t i = 0; i < xv.size(); ++i) {
    const double s = 1 / (1 + std::exp(-xv[i]));
    ref.push_back(-(yv[i] * std::log(s) + (1 - yv[i]) * std::log(1 - s)));
    refw.push_back(-(pw[i] * yv[i] * std::log(s) + (1 - yv[i]) * std::log(1 - s)));
  }
  CHECK_CLOSE_TOL(binary_cross_entropy_with_logits(x, y, Reduction::None), from_vector<double>(ref), 1e-10, 1e-12);
  CHECK_CLOSE_TOL(binary_cross_entropy_with_logits(x, y, Reduction::None, from_vector<double>(pw)),
                  from_vector<double>(refw), 1e-10, 1e-12);
  double mean = 0;
  for (double v : ref) mean += v / static_cast<double>(ref.size());
  CHECK(binary_cross_entropy_with_logits(x, y).item<double>() == Approx(mean).epsilon(1e-10));
  // Large |x| stays finite: loss(1000, 0) = 1000, loss(-1000, 1) = 1000, loss(1000, 1) = 0.
  Tensor big = binary_cross_entropy_with_logits(from_vector<float>({1000, -1000, 1000}), from_vector<float>({0, 1, 1}),
                                                Reduction::None);
  CHECK(test::values(big) == std::vector<double>{1000, 1000, 0});
  // Gradient at x = 0 is sigmoid(0) - y.
  Tensor z = zeros({2}, DType::F64).set_requires_grad(true);
  binary_cross_entropy_with_logits(z, from_vector<double>({0.0, 1.0}), Reduction::Sum).backward();
  CHECK_CLOSE(z.grad(), from_vector<double>({0.5, -0.5}));
  // pos_weight broadcast over the last dim.
  Tensor x2 = test::random_tensor({3, 4}, DType::F64, 12), y2 = rand({3, 4}, DType::F64);
  Tensor w = from_vector<double>({1, 2, 3, 4});
  CHECK_CLOSE(binary_cross_entropy_with_logits(x2, y2, Reduction::None, w),
              binary_cross_entropy_with_logits(x2, y2, Reduction::None, w.expand({3, 4}).contiguous()));
  CHECK_CLOSE(binary_cross_entropy_with_logits(x2, y2, Reduction::None, ones({4}, DType::F64)),
              binary_cross_entropy_with_logits(x2, y2, Reduction::None));
}

TEST_CASE("gradcheck: binary_cross_entropy_with_logits and mse_loss", "[ops][loss][gradcheck]") {
  Tensor x = leaf({3, 4}, 20, -3, 3), y = leaf({3, 4}, 21, 0, 1), w = leaf({4}, 22, 0.5, 2);
  for (Reduction r : {Reduction::None, Reduction::Mean, Reduction::Sum}) {
    INFO(reduction_name(r));
    check_grad([=](const V& v) { return binary_cross_entropy_with_logits(v[0], v[1], r); }, {x, y});
    check_grad([=](const V& v) { return binary_cross_entropy_with_logits(v[0], v[1], r, v[2]); }, {x, y, w});
    check_grad([=](const V& v) { return mse_loss(v[0], v[1], r); }, {x, y});
  }
}

TEST_CASE("mse_loss: values", "[ops][loss]") {
  Tensor a = from_vector<double>({1, 2, 3, 4}, {2, 2}), b = from_vector<double>({1, 0, 5, 1}, {2, 2});
  CHECK_CLOSE(mse_loss(a, b, Reduction::None), from_vector<double>({0, 4, 4, 9}, {2, 2}));
  CHECK(mse_loss(a, b).item<double>() == 17.0 / 4);
  CHECK(mse_loss(a, b, Reduction::Sum).item<double>() == 17.0);
  CHECK(mse_loss(a.to(DType::F32), b.to(DType::F32)).dtype() == DType::F32);
}

TEST_CASE("losses: bad input throws kiln::Error naming the op", "[ops][loss][errors]") {
  Tensor x = zeros({2, 3});
  Tensor t = from_vector<int64_t>({0, 2});
  REQUIRE_KILN_ERROR(cross_entropy(zeros({2, 3}, DType::I64), t), "cross_entropy");
  REQUIRE_KILN_ERROR(cross_entropy(x, from_vector<float>({0, 1})), "class-probability");
  REQUIRE_KILN_ERROR(cross_entropy(x, from_vector<int64_t>({0, 1, 2})), "target must have shape");
  REQUIRE_KILN_ERROR(cross_entropy(zeros({2, 3, 4}), t), "cross_entropy");
  REQUIRE_KILN_ERROR(cross_entropy(scalar_tensor(1.0), scalar_tensor(int64_t{0}, DType::I64)), "cross_entropy");
  REQUIRE_KILN_ERROR(cross_entropy(x, from_vector<int64_t>({0, 3})), "[0, 3)");
  REQUIRE_KILN_ERROR(cross_entropy(x, from_vector<int64_t>({-1, 0})), "ignore_index");
  REQUIRE_KILN_ERROR(cross_entropy(x, from_vector<int64_t>({-100, 0}), Reduction::Mean, 1), "cross_entropy");
  REQUIRE_KILN_ERROR(cross_entropy(x, t, Reduction::Mean, -100, -0.1), "label_smoothing");
  REQUIRE_KILN_ERROR(cross_entropy(x, t, Reduction::Mean, -100, 1.5), "label_smoothing");
  REQUIRE_KILN_ERROR(cross_entropy(x, t, Reduction::Mean, -100, std::nan("")), "label_smoothing");
  REQUIRE_KILN_ERROR(cross_entropy(zeros({2, 0}), t), "no classes");
  REQUIRE_KILN_ERROR(cross_entropy(Tensor(), t), "cross_entropy");
  REQUIRE_KILN_ERROR(nll_loss(x, from_vector<int64_t>({0, 5})), "nll_loss");
  REQUIRE_KILN_ERROR(nll_loss(x, from_vector<int32_t>({0})), "nll_loss");
  REQUIRE_KILN_ERROR(binary_cross_entropy_with_logits(x, zeros({3, 2})), "binary_cross_entropy_with_logits");
  REQUIRE_KILN_ERROR(binary_cross_entropy_with_logits(x, zeros({2, 3}, DType::I64)), "binary_cross_entropy_with_logits");
  REQUIRE_KILN_ERROR(binary_cross_entropy_with_logits(zeros({2, 3}, DType::I32), x), "binary_cross_entropy_with_logits");
  REQUIRE_KILN_ERROR(binary_cross_entropy_with_logits(x, x, Reduction::Mean, zeros({2})), "pos_weight");
  REQUIRE_KILN_ERROR(mse_loss(x, zeros({3})), "mse_loss");
  REQUIRE_KILN_ERROR(mse_loss(zeros({2}, DType::I64), zeros({2}, DType::I64)), "mse_loss");
}
