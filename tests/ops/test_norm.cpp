// batch_norm / layer_norm / group_norm on the CPU: values against references computed
// here in double, running-statistic updates over two training steps, eval mode, the
// saved statistics' effect on backward, half inputs with f32 parameters, non-contiguous
// inputs, gradient checks (f64) wrt x, weight and bias, and bad inputs.
#include "test_util.h"

#include <cmath>

using namespace kiln;
using V = std::vector<Tensor>;

namespace {

std::vector<double> d(const Tensor& t) { return test::values(t); }

// y[n, c, s] = (x - mean_c) / sqrt(var_c + eps) * w_c + b_c with mean and biased var of
// channel c over (n, s); x row-major (N, C, S). Also returns the channel stats.
std::vector<double> ref_batch_norm(const std::vector<double>& x, int64_t N, int64_t C, int64_t S,
                                   const std::vector<double>& w, const std::vector<double>& b, double eps,
                                   std::vector<double>* means = nullptr, std::vector<double>* vars = nullptr) {
  std::vector<double> y(x.size());
  for (int64_t c = 0; c < C; ++c) {
    double m = 0, v = 0;
    for (int64_t n = 0; n < N; ++n)
      for (int64_t s = 0; s < S; ++s) m += x[(n * C + c) * S + s];
    m /= static_cast<double>(N * S);
    for (int64_t n = 0; n < N; ++n)
      for (int64_t s = 0; s < S; ++s) v += std::pow(x[(n * C + c) * S + s] - m, 2);
    v /= static_cast<double>(N * S);
    if (means) means->push_back(m);
    if (vars) vars->push_back(v);
    for (int64_t n = 0; n < N; ++n)
      for (int64_t s = 0; s < S; ++s) {
        size_t i = static_cast<size_t>((n * C + c) * S + s);
        y[i] = (x[i] - m) / std::sqrt(v + eps) * (w.empty() ? 1.0 : w[c]) + (b.empty() ? 0.0 : b[c]);
      }
  }
  return y;
}

// Normalises consecutive blocks of D elements; weight index of element j of a block is
// widx(block, j).
template <class F>
std::vector<double> ref_rows(const std::vector<double>& x, int64_t D, double eps, F affine) {
  std::vector<double> y(x.size());
  for (size_t r = 0; r * D < x.size(); ++r) {
    double m = 0, v = 0;
    for (int64_t j = 0; j < D; ++j) m += x[r * D + j];
    m /= static_cast<double>(D);
    for (int64_t j = 0; j < D; ++j) v += std::pow(x[r * D + j] - m, 2);
    v /= static_cast<double>(D);
    for (int64_t j = 0; j < D; ++j)
      y[r * D + j] = affine(static_cast<int64_t>(r), j, (x[r * D + j] - m) / std::sqrt(v + eps));
  }
  return y;
}

void require_gradcheck(const std::function<Tensor(const V&)>& f, const V& inputs) {
  GradcheckOptions opt;
  opt.atol = 1e-6;
  opt.rtol = 1e-5;
  GradcheckResult r = gradcheck(f, inputs, opt);
  INFO(r.message);
  CHECK(r.ok);
}

}  // namespace

TEST_CASE("batch_norm: hand-computed values", "[ops][norm]") {
  // One channel of 1, 2, 3, 4: mean 2.5, biased var 1.25.
  Tensor x = from_vector<double>({1, 2, 3, 4}, {4, 1});
  Tensor y = batch_norm(x, Tensor(), Tensor(), Tensor(), Tensor(), true, 0.1, 0.0);
  const double s = std::sqrt(1.25);
  CHECK_CLOSE(y, from_vector<double>({-1.5 / s, -0.5 / s, 0.5 / s, 1.5 / s}, {4, 1}));
  // With weight 2 and bias -1.
  Tensor y2 = batch_norm(x, Tensor(), Tensor(), from_vector<double>({2}), from_vector<double>({-1}), true, 0.1, 0.0);
  CHECK_CLOSE(y2, from_vector<double>({-3 / s - 1, -1 / s - 1, 1 / s - 1, 3 / s - 1}, {4, 1}));

  // (N, C, H, W) against the reference, with weight and bias, f64 and f32.
  for (DType dt : {DType::F64, DType::F32}) {
    INFO(dtype_name(dt));
    Tensor xi = test::random_tensor({3, 4, 2, 5}, dt, 1, 2.0);
    Tensor w = test::random_tensor({4}, dt, 2), b = test::random_tensor({4}, dt, 3);
    Tensor yi = batch_norm(xi, Tensor(), Tensor(), w, b, true, 0.1, 1e-5);
    CHECK(yi.sizes() == xi.sizes());
    CHECK(yi.dtype() == dt);
    std::vector<double> ref = ref_batch_norm(d(xi), 3, 4, 10, d(w), d(b), 1e-5);
    CHECK_CLOSE_TOL(yi, from_vector<double>(ref, xi.sizes()), 1e-5, 1e-5);
  }
  // (N, C) input (batch_norm1d) and no affine.
  Tensor x2 = test::random_tensor({7, 3}, DType::F64, 4);
  CHECK_CLOSE(batch_norm(x2, Tensor(), Tensor(), Tensor(), Tensor(), true),
              from_vector<double>(ref_batch_norm(d(x2), 7, 3, 1, {}, {}, 1e-5), {7, 3}));
}

TEST_CASE("batch_norm: running statistics over two training steps", "[ops][norm]") {
  const int64_t N = 4, C = 3, S = 6;
  Tensor rm = zeros({C}, DType::F64), rv = ones({C}, DType::F64);
  std::vector<double> em(C, 0.0), ev(C, 1.0);
  const double momentum = 0.25;
  for (int step = 0; step < 2; ++step) {
    Tensor x = add(mul(test::random_tensor({N, C, 2, 3}, DType::F64, 10 + step), 3.0), step + 1.0);
    std::vector<double> means, vars;
    std::vector<double> ref = ref_batch_norm(d(x), N, C, S, {}, {}, 1e-5, &means, &vars);
    Tensor y = batch_norm(x, rm, rv, Tensor(), Tensor(), true, momentum);
    CHECK_CLOSE(y, from_vector<double>(ref, x.sizes()));  // training normalises with batch stats
    for (int64_t c = 0; c < C; ++c) {
      const double m = static_cast<double>(N * S);
      em[c] = (1 - momentum) * em[c] + momentum * means[c];
      ev[c] = (1 - momentum) * ev[c] + momentum * vars[c] * m / (m - 1);  // unbiased
    }
    INFO("step " << step);
    CHECK_CLOSE(rm, from_vector<double>(em));
    CHECK_CLOSE(rv, from_vector<double>(ev));
  }
  // f32 running stats; and non-contiguous ones are updated through a copy.
  Tensor x = test::random_tensor({5, 2, 3}, DType::F32, 20);
  Tensor big = zeros({2, 2}, DType::F32);
  Tensor rm32 = big.select(1, 0), rv32 = big.select(1, 1);
  rv32.fill_(1);
  REQUIRE(!rm32.is_contiguous());
  batch_norm(x, rm32, rv32, Tensor(), Tensor(), true, 0.1);
  std::vector<double> means, vars;
  ref_batch_norm(d(x), 5, 2, 3, {}, {}, 1e-5, &means, &vars);
  CHECK_CLOSE(rm32, from_vector<double>({0.1 * means[0], 0.1 * means[1]}));
  CHECK_CLOSE(rv32, from_vector<double>({0.9 + 0.1 * vars[0] * 15 / 14, 0.9 + 0.1 * vars[1] * 15 / 14}));
  // Running stats do not get a gradient or a graph.
  CHECK(!rm32.requires_grad());
}

TEST_CASE("batch_norm: eval mode uses the running statistics", "[ops][norm]") {
  Tensor x = test::random_tensor({3, 2, 4}, DType::F64, 30);
  Tensor rm = from_vector<double>({0.5, -1.0}), rv = from_vector<double>({4.0, 0.25});
  Tensor w = from_vector<double>({2.0, 3.0}), b = from_vector<double>({0.1, -0.2});
  Tensor y = batch_norm(x, rm, rv, w, b, false, 0.1, 1e-3);
  std::vector<double> xv = d(x), ref(xv.size());
  for (size_t i = 0; i < xv.size(); ++i) {
    const size_t c = (i / 4) % 2;
    ref[i] = (xv[i] - d(rm)[c]) / std::sqrt(d(rv)[c] + 1e-3) * d(w)[c] + d(b)[c];
  }
  CHECK_CLOSE(y, from_vector<double>(ref, x.sizes()));
  // Not updated in eval mode.
  CHECK(d(rm) == std::vector<double>{0.5, -1.0});
  CHECK(d(rv) == std::vector<double>{4.0, 0.25});
  // Eval mode accepts a single value per channel.
  CHECK(batch_norm(from_vector<double>({1.0, 2.0}, {1, 2}), rm, rv, w, b, false).sizes() == Shape{1, 2});
}

TEST_CASE("batch_norm: backward formula values", "[ops][norm]") {
  // Training: dx = w invstd (dy - mean(dy) - xhat mean(dy xhat)); dw = sum dy xhat; db = sum dy.
  Tensor x = test::random_tensor({4, 2, 3}, DType::F64, 40).set_requires_grad(true);
  Tensor w = from_vector<double>({1.5, -0.5}).set_requires_grad(true);
  Tensor b = from_vector<double>({0.2, 0.3}).set_requires_grad(true);
  Tensor dy = test::random_tensor({4, 2, 3}, DType::F64, 41);
  batch_norm(x, Tensor(), Tensor(), w, b, true, 0.1, 1e-5).backward(dy);
  std::vector<double> xv = d(x), gv = d(dy), dx(xv.size()), dw(2, 0.0), db(2, 0.0);
  for (int c = 0; c < 2; ++c) {
    double m = 0, v = 0, sg = 0, sgx = 0;
    auto idx = [c](int n, int s) { return static_cast<size_t>((n * 2 + c) * 3 + s); };
    for (int n = 0; n < 4; ++n)
      for (int s = 0; s < 3; ++s) m += xv[idx(n, s)] / 12;
    for (int n = 0; n < 4; ++n)
      for (int s = 0; s < 3; ++s) v += std::pow(xv[idx(n, s)] - m, 2) / 12;
    const double is = 1 / std::sqrt(v + 1e-5);
    for (int n = 0; n < 4; ++n)
      for (int s = 0; s < 3; ++s) {
        sg += gv[idx(n, s)];
        sgx += gv[idx(n, s)] * (xv[idx(n, s)] - m) * is;
      }
    dw[c] = sgx;
    db[c] = sg;
    for (int n = 0; n < 4; ++n)
      for (int s = 0; s < 3; ++s) {
        const double xh = (xv[idx(n, s)] - m) * is;
        dx[idx(n, s)] = d(w)[c] * is * (gv[idx(n, s)] - sg / 12 - xh * sgx / 12);
      }
  }
  CHECK_CLOSE_TOL(x.grad(), from_vector<double>(dx, x.sizes()), 1e-10, 1e-10);
  CHECK_CLOSE_TOL(w.grad(), from_vector<double>(dw), 1e-10, 1e-10);
  CHECK_CLOSE_TOL(b.grad(), from_vector<double>(db), 1e-10, 1e-10);
}

TEST_CASE("layer_norm: hand-computed values", "[ops][norm]") {
  // Row 1, 2, 3: mean 2, var 2/3.
  Tensor x = from_vector<double>({1, 2, 3, 10, 10, 16}, {2, 3});
  Tensor y = layer_norm(x, {3}, Tensor(), Tensor(), 0.0);
  const double s1 = std::sqrt(2.0 / 3.0), s2 = std::sqrt(8.0);  // row 2: mean 12, var 8
  CHECK_CLOSE(y, from_vector<double>({-1 / s1, 0, 1 / s1, -2 / s2, -2 / s2, 4 / s2}, {2, 3}));
  Tensor yw = layer_norm(x, {3}, from_vector<double>({1, 2, 3}), from_vector<double>({0, 1, 0}), 0.0);
  CHECK_CLOSE(yw, from_vector<double>({-1 / s1, 1, 3 / s1, -2 / s2, -4 / s2 + 1, 12 / s2}, {2, 3}));

  // Over the last two dims, with weight and bias, f64 and f32.
  for (DType dt : {DType::F64, DType::F32}) {
    INFO(dtype_name(dt));
    Tensor xi = test::random_tensor({2, 3, 4, 5}, dt, 50, 3.0);
    Tensor w = test::random_tensor({4, 5}, dt, 51), b = test::random_tensor({4, 5}, dt, 52);
    std::vector<double> wv = d(w), bv = d(b);
    std::vector<double> ref =
        ref_rows(d(xi), 20, 1e-5, [&](int64_t, int64_t j, double xh) { return xh * wv[j] + bv[j]; });
    CHECK_CLOSE_TOL(layer_norm(xi, {4, 5}, w, b), from_vector<double>(ref, xi.sizes()), 1e-5, 1e-5);
    // A non-contiguous input gives the same.
    CHECK_CLOSE_TOL(layer_norm(test::transposed_copy(xi), {4, 5}, w, b), from_vector<double>(ref, xi.sizes()),
                    1e-5, 1e-5);
  }
  // Statistics of a large-offset row stay accurate (two-pass variance).
  Tensor big = add(test::random_tensor({2, 64}, DType::F64, 53), 1e6);
  std::vector<double> rb = ref_rows(d(big), 64, 1e-5, [](int64_t, int64_t, double xh) { return xh; });
  CHECK_CLOSE_TOL(layer_norm(big, {64}), from_vector<double>(rb, big.sizes()), 1e-8, 1e-8);
  // The whole tensor as one row, and a 1-element row (output = bias).
  Tensor one = from_vector<double>({5.0}, {1, 1});
  CHECK(d(layer_norm(one, {1}, from_vector<double>({3.0}), from_vector<double>({0.5}))) == std::vector<double>{0.5});
}

TEST_CASE("group_norm: hand-computed values", "[ops][norm]") {
  // N = 1, C = 4, 2 groups of 2 channels, S = 1: groups {1, 3} and {10, 20}.
  Tensor x = from_vector<double>({1, 3, 10, 20}, {1, 4, 1});
  Tensor w = from_vector<double>({1, 2, 3, 4}), b = from_vector<double>({0, 0, 1, 1});
  Tensor y = group_norm(x, 2, w, b, 0.0);
  CHECK_CLOSE(y, from_vector<double>({-1, 2, -3 + 1, 4 + 1}, {1, 4, 1}));

  for (int64_t G : {1, 2, 6}) {
    INFO("groups " << G);
    Tensor xi = test::random_tensor({3, 6, 2, 3}, DType::F64, 60 + G, 2.0);
    Tensor wi = test::random_tensor({6}, DType::F64, 61), bi = test::random_tensor({6}, DType::F64, 62);
    const int64_t Cg = 6 / G, D = Cg * 6;
    std::vector<double> wv = d(wi), bv = d(bi);
    std::vector<double> ref = ref_rows(d(xi), D, 1e-5, [&](int64_t r, int64_t j, double xh) {
      const int64_t c = (r % G) * Cg + j / 6;
      return xh * wv[c] + bv[c];
    });
    CHECK_CLOSE_TOL(group_norm(xi, G, wi, bi), from_vector<double>(ref, xi.sizes()), 1e-10, 1e-10);
    CHECK_CLOSE_TOL(group_norm(test::strided_copy(xi), G, wi, bi), from_vector<double>(ref, xi.sizes()), 1e-10,
                    1e-10);
  }
  // One group per channel (instance norm) matches layer norm over the spatial dims.
  Tensor xi = test::random_tensor({2, 3, 10}, DType::F64, 63);
  CHECK_CLOSE(group_norm(xi, 3), layer_norm(xi, {10}));
  // One group: layer norm over (C, S).
  CHECK_CLOSE(group_norm(xi, 1), layer_norm(xi, {3, 10}));
}

TEST_CASE("norm ops: half inputs with f32 or half parameters", "[ops][norm]") {
  for (DType dt : {DType::F16, DType::BF16}) {
    for (DType pt : {dt, DType::F32}) {
      INFO(dtype_name(dt) << " with " << dtype_name(pt) << " parameters");
      Tensor x = test::random_tensor({4, 6, 5}, dt, 70);
      Tensor w = test::random_tensor({6}, pt, 71), b = test::random_tensor({6}, pt, 72);
      Tensor x64 = x.to(DType::F64), w64 = w.to(DType::F64), b64 = b.to(DType::F64);
      const double tol = dt == DType::F16 ? 4e-3 : 2e-2;
      Tensor rm = zeros({6}, pt), rv = ones({6}, pt);
      Tensor y = batch_norm(x, rm, rv, w, b, true);
      CHECK(y.dtype() == dt);
      CHECK_CLOSE_TOL(y, batch_norm(x64, Tensor(), Tensor(), w64, b64, true), tol, tol);
      CHECK_CLOSE_TOL(batch_norm(x, rm, rv, w, b, false), batch_norm(x64, rm.to(DType::F64), rv.to(DType::F64), w64,
                                                                     b64, false),
                      tol, tol);
      Tensor wl = test::random_tensor({5}, pt, 73);
      CHECK_CLOSE_TOL(layer_norm(x, {5}, wl, Tensor()), layer_norm(x64, {5}, wl.to(DType::F64), Tensor()), tol, tol);
      CHECK_CLOSE_TOL(group_norm(x, 3, w, b), group_norm(x64, 3, w64, b64), tol, tol);
      // Gradients come back in the parameters' dtype.
      Tensor wg = w.clone().set_requires_grad(true);
      sum(group_norm(x, 2, wg, Tensor())).backward();
      CHECK(wg.grad().dtype() == pt);
    }
  }
}

TEST_CASE("norm ops: gradient checks (f64)", "[ops][norm][gradcheck]") {
  SECTION("batch_norm, training") {
    Tensor rm = zeros({3}, DType::F64), rv = ones({3}, DType::F64);
    require_gradcheck([&](const V& v) { return batch_norm(v[0], rm, rv, v[1], v[2], true, 0.1, 1e-3); },
                      {test::random_tensor({4, 3, 2}, DType::F64, 80), test::random_tensor({3}, DType::F64, 81),
                       test::random_tensor({3}, DType::F64, 82)});
    // 2-D input, no affine; and a transposed (non-contiguous) input.
    require_gradcheck([](const V& v) { return batch_norm(v[0], Tensor(), Tensor(), Tensor(), Tensor(), true); },
                      {test::random_tensor({5, 3}, DType::F64, 83)});
    require_gradcheck(
        [](const V& v) { return batch_norm(v[0].transpose(0, 1), Tensor(), Tensor(), v[1], Tensor(), true); },
        {test::random_tensor({3, 4, 2}, DType::F64, 84), test::random_tensor({3}, DType::F64, 85)});
  }
  SECTION("batch_norm, eval") {
    Tensor rm = from_vector<double>({0.1, -0.2, 0.3}), rv = from_vector<double>({1.5, 0.5, 2.0});
    require_gradcheck([&](const V& v) { return batch_norm(v[0], rm, rv, v[1], v[2], false); },
                      {test::random_tensor({2, 3, 3}, DType::F64, 86), test::random_tensor({3}, DType::F64, 87),
                       test::random_tensor({3}, DType::F64, 88)});
  }
  SECTION("layer_norm") {
    require_gradcheck([](const V& v) { return layer_norm(v[0], {5}, v[1], v[2]); },
                      {test::random_tensor({3, 5}, DType::F64, 90), test::random_tensor({5}, DType::F64, 91),
                       test::random_tensor({5}, DType::F64, 92)});
    require_gradcheck([](const V& v) { return layer_norm(v[0], {2, 3}, v[1], Tensor()); },
                      {test::random_tensor({2, 2, 3}, DType::F64, 93), test::random_tensor({2, 3}, DType::F64, 94)});
    require_gradcheck([](const V& v) { return layer_norm(v[0], {4}); }, {test::random_tensor({3, 4}, DType::F64, 95)});
    // Only the bias needs a gradient.
    Tensor x = test::random_tensor({3, 4}, DType::F64, 96);
    require_gradcheck([&](const V& v) { return layer_norm(x, {4}, Tensor(), v[0]); },
                      {test::random_tensor({4}, DType::F64, 97)});
  }
  SECTION("group_norm") {
    for (int64_t G : {1, 2, 4}) {
      INFO("groups " << G);
      require_gradcheck([G](const V& v) { return group_norm(v[0], G, v[1], v[2]); },
                        {test::random_tensor({2, 4, 3}, DType::F64, 100 + G), test::random_tensor({4}, DType::F64, 101),
                         test::random_tensor({4}, DType::F64, 102)});
    }
    require_gradcheck([](const V& v) { return group_norm(v[0], 2); }, {test::random_tensor({3, 4}, DType::F64, 103)});
  }
}

TEST_CASE("norm ops: only the needed gradients, empty inputs", "[ops][norm]") {
  Tensor x = test::random_tensor({3, 4}, DType::F32, 110);
  Tensor w = ones({4}).set_requires_grad(true);
  Tensor y = layer_norm(x, {4}, w, Tensor());
  CHECK(y.requires_grad());
  sum(mul(y, y)).backward();
  REQUIRE(w.grad().defined());
  // sum over rows of 2 y xhat = 2 sum xhat^2 per column (w = 1).
  CHECK(!x.requires_grad());
  // No input needs grad: nothing is recorded.
  CHECK(!layer_norm(x, {4}).requires_grad());
  CHECK(!batch_norm(x, Tensor(), Tensor(), Tensor(), Tensor(), true).requires_grad());
  {
    NoGradGuard ng;
    CHECK(!group_norm(x.view({3, 4, 1}), 2, w, Tensor()).requires_grad());
  }
  // Empty batch: output empty, parameter gradients zero.
  Tensor e = zeros({0, 4}).set_requires_grad(true);
  Tensor we = ones({4}).set_requires_grad(true);
  Tensor ye = layer_norm(e, {4}, we, Tensor());
  CHECK(ye.sizes() == Shape{0, 4});
  sum(ye).backward();
  CHECK(d(we.grad()) == std::vector<double>(4, 0.0));
  CHECK(e.grad().sizes() == Shape{0, 4});
  Tensor ge = group_norm(zeros({0, 4, 2}), 2, we, Tensor());
  CHECK(ge.sizes() == Shape{0, 4, 2});
  CHECK(batch_norm(zeros({0, 3}), zeros({3}), ones({3}), Tensor(), Tensor(), false).sizes() == Shape{0, 3});
}

TEST_CASE("norm ops: bad input", "[ops][norm]") {
  Tensor x = test::random_tensor({4, 3, 5}, DType::F32, 120);
  Tensor c3 = ones({3}), c4 = ones({4});
  // Wrong channel counts.
  REQUIRE_KILN_ERROR(batch_norm(x, Tensor(), Tensor(), c4, Tensor(), true), "batch_norm");
  REQUIRE_KILN_ERROR(batch_norm(x, Tensor(), Tensor(), Tensor(), c4, true), "bias");
  REQUIRE_KILN_ERROR(batch_norm(x, zeros({4}), ones({4}), Tensor(), Tensor(), true), "running_mean");
  REQUIRE_KILN_ERROR(batch_norm(x, zeros({3}), Tensor(), Tensor(), Tensor(), true), "running_var");
  REQUIRE_KILN_ERROR(batch_norm(x, Tensor(), Tensor(), Tensor(), Tensor(), false), "eval mode");
  REQUIRE_KILN_ERROR(batch_norm(ones({3}), Tensor(), Tensor(), Tensor(), Tensor(), true), "(N, C, ...)");
  REQUIRE_KILN_ERROR(batch_norm(ones({1, 3}), Tensor(), Tensor(), Tensor(), Tensor(), true),
                     "more than 1 value per channel");
  REQUIRE_KILN_ERROR(batch_norm(x, Tensor(), Tensor(), ones({3}, DType::F64), Tensor(), true), "weight must be f32");
  REQUIRE_KILN_ERROR(batch_norm(x.to(DType::BF16), Tensor(), Tensor(), ones({3}, DType::F32), ones({3}, DType::BF16),
                                true),
                     "share a dtype");
  // normalized_shape mismatch.
  REQUIRE_KILN_ERROR(layer_norm(x, {4}), "normalized_shape [4]");
  REQUIRE_KILN_ERROR(layer_norm(x, {4, 3}), "layer_norm");
  REQUIRE_KILN_ERROR(layer_norm(x, {1, 4, 3, 5}), "layer_norm");
  REQUIRE_KILN_ERROR(layer_norm(x, {}), "at least one dim");
  REQUIRE_KILN_ERROR(layer_norm(x, {5}, ones({4})), "weight must have shape [5]");
  REQUIRE_KILN_ERROR(layer_norm(x, {3, 5}, ones({15})), "weight must have shape [3, 5]");
  // C not divisible by the groups.
  REQUIRE_KILN_ERROR(group_norm(x, 2), "divisible by num_groups");
  REQUIRE_KILN_ERROR(group_norm(x, 0), "num_groups must be positive");
  REQUIRE_KILN_ERROR(group_norm(x, 3, c4), "group_norm");
  REQUIRE_KILN_ERROR(group_norm(ones({6}), 3), "(N, C, ...)");
  // Non-floating input.
  Tensor xi = ones({4, 3, 5}, DType::I64);
  REQUIRE_KILN_ERROR(batch_norm(xi, Tensor(), Tensor(), Tensor(), Tensor(), true), "batch_norm");
  REQUIRE_KILN_ERROR(layer_norm(xi, {5}), "layer_norm: expects a floating tensor");
  REQUIRE_KILN_ERROR(group_norm(xi, 3), "group_norm: expects a floating tensor");
  REQUIRE_KILN_ERROR(layer_norm(Tensor(), {5}), "layer_norm");
  REQUIRE_KILN_ERROR(layer_norm(x, {5}, Tensor(), Tensor(), -1.0), "eps");
}
