// Losses, dropout and embedding on CUDA against the CPU reference: the fused cross
// entropy forward and backward for rows of C = 10, 1000, 50257 (and the sizes around the
// warp/block switch) in f32/f16/bf16/f64, every reduction, label smoothing, ignore_index,
// (N, C, d) layouts, misaligned rows and special values; dropout masks bit-identical to
// the CPU's for the same generator state; nll/bce/mse/embedding forward and backward;
// out-of-range targets reported by the kernels at the next synchronisation point.
#include "test_util.h"

#include <cmath>
#include <functional>
#include <string>

using namespace kiln;
using test::cuda0;
using V = std::vector<Tensor>;

namespace {

// Targets in [0, C) with every 5th (from `first`) set to ignore_index.
Tensor make_targets(const Shape& shape, int64_t C, uint64_t seed, int64_t ignore_index, int64_t first = 2) {
  Generator g(seed);
  std::vector<int64_t> t = randint(0, C, shape, DType::I64, &g).to_vector<int64_t>();
  for (size_t i = static_cast<size_t>(first); i < t.size(); i += 5) t[i] = ignore_index;
  return from_vector<int64_t>(t, shape);
}

struct Tols {
  double loss_rtol, loss_atol, grad_rtol, grad_atol;
};
Tols tols(DType dt) {
  switch (dt) {
    case DType::F64: return {1e-10, 1e-12, 1e-10, 1e-14};
    case DType::F32: return {1e-5, 1e-5, 1e-4, 1e-8};
    case DType::F16: return {2e-3, 2e-3, 2e-3, 1e-6};
    default: return {1.6e-2, 1e-2, 1.6e-2, 1e-5};  // bf16
  }
}

// cross_entropy of prep(x) on the CPU and of prep(CUDA copy of x), then backward of both
// with one random output gradient: losses and gradients of x within the dtype's
// tolerance. prep makes views (offsets, transposes) alike on both devices.
using Prep = std::function<Tensor(const Tensor&)>;
void check_ce(const Tensor& x, const Tensor& t, Reduction r, int64_t ignore_index, double eps, uint64_t seed,
              const Prep& prep = [](const Tensor& v) { return v; }) {
  INFO(describe(x) << " " << reduction_name(r) << " ignore_index " << ignore_index << " smoothing " << eps);
  const Tols tl = tols(x.dtype());
  Tensor xc = x.detach().clone().set_requires_grad(true);
  Tensor xg = x.detach().to(cuda0()).set_requires_grad(true);
  Tensor lc = cross_entropy(prep(xc), t, r, ignore_index, eps);
  Tensor lg = cross_entropy(prep(xg), t.to(cuda0()), r, ignore_index, eps);
  REQUIRE(lg.is_cuda());
  CHECK(lg.dtype() == lc.dtype());
  CHECK_CLOSE_TOL(lg.cpu(), lc, tl.loss_rtol, tl.loss_atol);
  Generator g(seed);
  Tensor w = randn(lc.sizes(), DType::F32, &g).to(lc.dtype());
  lc.backward(w);
  lg.backward(w.to(cuda0()));
  REQUIRE(xg.grad().defined());
  CHECK(xg.grad().is_cuda());
  CHECK_CLOSE_TOL(xg.grad().cpu(), xc.grad(), tl.grad_rtol, tl.grad_atol);
}

}  // namespace

TEST_CASE("cuda cross_entropy: rows of 10, 1000 and 50257 classes", "[cuda][loss]") {
  struct Case {
    int64_t rows, C;
  };
  for (Case c : {Case{257, 10}, Case{65, 1000}, Case{37, 50257}}) {
    for (DType dt : {DType::F32, DType::BF16, DType::F16}) {
      Tensor x = test::random_tensor({c.rows, c.C}, dt, 100 + c.C, 3.0);
      Tensor t = make_targets({c.rows}, c.C, 200 + c.C, -100);
      check_ce(x, t, Reduction::Mean, -100, 0.0, 1);
      check_ce(x, t, Reduction::None, -100, 0.1, 2);
      check_ce(x, t, Reduction::Sum, -100, 0.0, 3);
    }
  }
  Tensor x64 = test::random_tensor({19, 1000}, DType::F64, 7, 3.0);
  Tensor t64 = make_targets({19}, 1000, 8, -100);
  for (Reduction r : {Reduction::None, Reduction::Mean, Reduction::Sum}) check_ce(x64, t64, r, -100, 0.2, 4);
}

TEST_CASE("cuda cross_entropy: sizes around the warp/block switch, odd rows, misaligned rows", "[cuda][loss]") {
  for (int64_t C : {1, 7, 31, 33, 1023, 1024, 1025, 4097}) {
    Tensor x = test::random_tensor({13, C}, DType::F32, 300 + C, 2.0);
    Tensor t = make_targets({13}, C, 400 + C, -100);
    check_ce(x, t, Reduction::Mean, -100, 0.1, 5);
    check_ce(x.to(DType::BF16), t, Reduction::None, -100, 0.0, 6);
  }
  // Rows starting off a 16-byte boundary (a view at an odd element offset), so the
  // kernels take their scalar heads and the backward stores without vectors.
  for (int64_t C : {1001, 50257}) {
    Tensor big = test::random_tensor({10, C}, DType::F32, 500 + C, 3.0);
    Prep rows_1_to_9 = [](const Tensor& v) {
      Tensor n = v.narrow(0, 1, 9);
      REQUIRE(n.is_contiguous());
      return n;
    };
    check_ce(big, make_targets({9}, C, 600 + C, -100), Reduction::Mean, -100, 0.1, 7, rows_1_to_9);
    check_ce(big.to(DType::F16), make_targets({9}, C, 601 + C, -100), Reduction::Sum, -100, 0.0, 8, rows_1_to_9);
  }
  // A transposed (non-contiguous) view of the logits.
  check_ce(test::random_tensor({300, 11}, DType::F32, 9, 2.0), make_targets({11}, 300, 10, -100), Reduction::Mean,
           -100, 0.0, 9, [](const Tensor& v) { return v.t(); });
}

TEST_CASE("cuda cross_entropy: (N, C, d) layout, ignore_index as a class, all ignored", "[cuda][loss]") {
  Tensor x = test::random_tensor({4, 1000, 3}, DType::F32, 11, 2.0);
  Tensor t = make_targets({4, 3}, 1000, 12, -100);
  check_ce(x, t, Reduction::None, -100, 0.1, 10);
  check_ce(x, t, Reduction::Mean, -100, 0.0, 11);
  Tensor x5 = test::random_tensor({2, 10, 3, 5}, DType::BF16, 13, 2.0);
  check_ce(x5, make_targets({2, 3, 5}, 10, 14, -100), Reduction::Sum, -100, 0.3, 12);
  // ignore_index inside [0, C): class 0 is padding.
  Tensor tp = make_targets({40}, 50257, 15, 0, 1);
  check_ce(test::random_tensor({40, 50257}, DType::BF16, 16, 2.0), tp, Reduction::Mean, 0, 0.1, 13);
  // Every target ignored: NaN mean, zero sum and zero gradient on both.
  Tensor all = full({6}, int64_t{-100}, DType::I64);
  Tensor xa = test::random_tensor({6, 1500}, DType::F32, 17);
  Tensor mg = cross_entropy(xa.to(cuda0()), all.to(cuda0()));
  CHECK(std::isnan(mg.item<float>()));
  check_ce(xa, all, Reduction::Sum, -100, 0.1, 14);
}

TEST_CASE("cuda cross_entropy: special values", "[cuda][loss]") {
  for (int64_t C : {10, 3000}) {
    INFO("C " << C);
    Tensor x = test::random_tensor({6, C}, DType::F32, 18, 2.0);
    // Row 0: masked classes (-inf); row 1: large logits; row 2: one NaN; row 3: all -inf
    // but the target; row 4: +inf.
    x[0].narrow(0, 0, C / 2).fill_(-INFINITY);
    x[1].copy_(mul(x[1], 1000.0));
    x[2][3].fill_(NAN);
    x[3].fill_(-INFINITY);
    x[3][C - 1].fill_(5.0);
    x[4][1].fill_(INFINITY);
    Tensor t = from_vector<int64_t>({C - 1, 0, 5, C - 1, 2, -100});
    Tensor lc = cross_entropy(x, t, Reduction::None), lg = cross_entropy(x.to(cuda0()), t.to(cuda0()), Reduction::None);
    CHECK_CLOSE_TOL(lg.cpu(), lc, 1e-5, 1e-5);
    std::vector<double> lv = test::values(lc);
    CHECK(std::isnan(lv[2]));
    CHECK(lv[3] == 0);
    CHECK(std::isnan(lv[4]));
    CHECK(lv[5] == 0);
  }
}

TEST_CASE("cuda nll_loss, binary_cross_entropy_with_logits, mse_loss, embedding", "[cuda][loss]") {
  auto check = [](const std::function<Tensor(const V&)>& f, const V& inputs, bool grads) {
    V cpu, gpu;
    for (const Tensor& in : inputs) {
      const bool diff = grads && is_floating(in.dtype());
      cpu.push_back(diff ? in.clone().set_requires_grad(true) : in);
      gpu.push_back(diff ? in.to(cuda0()).set_requires_grad(true) : in.to(cuda0()));
    }
    Tensor yc = f(cpu), yg = f(gpu);
    REQUIRE(yg.is_cuda());
    CHECK_CLOSE_TOL(yg.cpu(), yc, 1e-5, 1e-5);
    if (!grads) return;
    Generator g(1);
    Tensor w = randn(yc.sizes(), yc.dtype(), &g);
    yc.backward(w);
    yg.backward(w.to(cuda0()));
    for (size_t i = 0; i < inputs.size(); ++i) {
      if (!cpu[i].requires_grad()) continue;
      INFO("input " << i);
      CHECK_CLOSE_TOL(gpu[i].grad().cpu(), cpu[i].grad(), 1e-5, 1e-6);
    }
  };
  Tensor lp = log_softmax(test::random_tensor({33, 17}, DType::F32, 20), 1);
  Tensor t = make_targets({33}, 17, 21, -100);
  for (Reduction r : {Reduction::None, Reduction::Mean, Reduction::Sum})
    check([=](const V& v) { return nll_loss(v[0], v[1], r); }, {lp, t}, true);
  Tensor x = test::random_tensor({65, 33}, DType::F32, 22, 3.0);
  Generator g(23);
  Tensor y = rand({65, 33}, DType::F32, &g);
  Tensor pw = add(rand({33}, DType::F32, &g), 0.5);
  check([](const V& v) { return binary_cross_entropy_with_logits(v[0], v[1], Reduction::Mean); }, {x, y}, true);
  check([](const V& v) { return binary_cross_entropy_with_logits(v[0], v[1], Reduction::None, v[2]); }, {x, y, pw},
        true);
  check([](const V& v) { return mse_loss(v[0], v[1], Reduction::Sum); }, {x, y}, true);
  Tensor w = test::random_tensor({100, 64}, DType::F32, 24);
  Tensor idx = randint(0, 100, {7, 9}, DType::I64, &g);
  check([](const V& v) { return embedding(v[0], v[1]); }, {w, idx}, true);
  check([](const V& v) { return embedding(v[0], v[1], 3); }, {w, idx.to(DType::I32)}, true);
}

TEST_CASE("cuda cross_entropy, nll_loss: out-of-range targets throw at the next synchronisation point",
          "[cuda][loss]") {
  using Catch::Contains;
  const Device dev = cuda0();
  synchronize(dev);  // nothing pending from earlier tests
  // The message of the kiln::Error that f throws ("" if none); f runs once, since the
  // error is reported once.
  auto error_of = [](const std::function<void()>& f) -> std::string {
    try {
      f();
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  };
  Tensor x = test::random_tensor({4, 10}, DType::F32, 40, 2.0).to(dev);
  Tensor bad = from_vector<int64_t>({1, 10, -100, 2}, {4}, dev);

  // No wait at the op; item() throws, naming the op, the range and the value.
  const int64_t s0 = host_sync_count();
  Tensor l = cross_entropy(x, bad);
  CHECK(host_sync_count() == s0);
  const std::string msg = error_of([&] { (void)l.item<float>(); });
  CHECK_THAT(msg, Contains("cross_entropy") && Contains("[0, 10)") && Contains("got 10") && Contains("cuda:0"));
  // Reported once: a valid loss then reads back.
  CHECK(std::isfinite(cross_entropy(x, from_vector<int64_t>({1, 9, -100, 2}, {4}, dev)).item<float>()));

  // The block-per-row path (C > 1024) and the backward: -1 is out of range unless it is
  // ignore_index; the bad row contributes nothing (loss 0, gradient 0).
  Tensor xb = test::random_tensor({3, 2000}, DType::BF16, 41, 2.0).to(dev).set_requires_grad(true);
  Tensor tb = from_vector<int64_t>({0, -1, 1999}, {3}, dev);
  const std::string mb = error_of([&] {
    Tensor lb = cross_entropy(xb, tb, Reduction::None);
    sum(lb).backward();
    synchronize(dev);
  });
  CHECK_THAT(mb, Contains("cross_entropy") && Contains("[0, 2000)") && Contains("got -1"));
  REQUIRE(xb.grad().defined());
  CHECK(test::values(xb.grad()[1]) == std::vector<double>(2000, 0.0));
  Tensor lbad = cross_entropy(xb.detach(), tb, Reduction::None);
  CHECK_THAT(error_of([&] { synchronize(dev); }), Contains("got -1"));
  CHECK(test::values(lbad)[1] == 0.0);
  CHECK(error_of([&] { (void)cross_entropy(xb.detach(), tb, Reduction::Sum, -1).item<float>(); }).empty());

  // nll_loss: the gather kernel checks its targets.
  Tensor lp = log_softmax(x, 1);
  CHECK_THAT(error_of([&] { (void)nll_loss(lp, bad).item<float>(); }),
             Contains("nll_loss") && Contains("[0, 10)") && Contains("got 10"));
  CHECK(error_of([&] { synchronize(dev); }).empty());
}

TEST_CASE("cuda dropout: the same mask and values as the CPU for the same generator state", "[cuda][dropout]") {
  for (DType dt : {DType::F32, DType::F16, DType::BF16, DType::F64}) {
    for (const Shape& s : test::odd_shapes()) {
      for (double p : {0.1, 0.5}) {
        INFO(dtype_name(dt) << " " << shape_str(s) << " p " << p);
        Tensor x = test::random_tensor(s, dt, 30);
        Generator gc(31), gg(31);
        gc.reserve(1000);
        gg.reserve(1000);
        Tensor xc = x.clone().set_requires_grad(true), xg = x.to(cuda0()).set_requires_grad(true);
        Tensor yc = dropout(xc, p, true, &gc), yg = dropout(xg, p, true, &gg);
        REQUIRE(yg.is_cuda());
        CHECK(test::bit_equal(yg, yc));
        CHECK(gc.offset() == gg.offset());
        Tensor w = test::random_tensor(s, dt, 32);
        yc.backward(w);
        yg.backward(w.to(cuda0()));
        CHECK(test::bit_equal(xg.grad(), xc.grad()));
      }
    }
  }
  // Unaligned data (a view at an odd element offset) takes the scalar kernel; a
  // non-contiguous view is made contiguous first: both still match the CPU.
  Tensor big = test::random_tensor({1 << 16}, DType::BF16, 33);
  for (const Tensor& x : {big.narrow(0, 1, (1 << 16) - 1), big.view({256, 256}).t()}) {
    Generator gc(34), gg(34);
    CHECK(test::bit_equal(dropout(x.to(cuda0()), 0.3, true, &gg), dropout(x, 0.3, true, &gc)));
  }
}
