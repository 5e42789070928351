// Reductions and softmax on CUDA against the CPU reference: every dim set on odd
// shapes and non-contiguous layouts, every dtype; sums of integer-valued data compared
// exactly (exact in any summation order), sums of random data within an accumulation
// bound; reduce-all of 2^24 + 5 elements; argmax/argmin ties and NaN; softmax rows of 1,
// 31, 1024 and 5000 elements and non-last dims.
#include "test_util.h"

#include <cmath>

using namespace kiln;
using test::cuda0;

namespace {
std::vector<std::vector<int64_t>> dim_sets(int64_t nd) {
  std::vector<std::vector<int64_t>> v{{}};
  for (int64_t d = 0; d < nd; ++d) v.push_back({d});
  if (nd >= 2) v.push_back({-1, 0});
  if (nd >= 3) v.push_back({0, 2});  // non-adjacent
  if (nd >= 4) v.push_back({1, 3});
  if (nd >= 4) v.push_back({1, 2});
  return v;
}

// Integer values in [-50, 50) (u8: [0, 100)) stored in dtype t: their sums are exact in
// f32 in any order for the sizes used here.
Tensor int_valued(const Shape& s, DType t, uint64_t seed) {
  return test::random_tensor(s, DType::I32, seed).to(t);
}

// |sum_cuda - sum_cpu| <= atol + rtol |sum_cpu| + 4 eps sqrt(r) sum|x|, where eps is the
// accumulation precision (f32 for all but f64): the error of any reasonable summation
// order (tree, blocked, sequential) of r terms.
void check_sum_close(const Tensor& g, const Tensor& c, const Tensor& abs_sum, int64_t r) {
  REQUIRE(g.is_cuda());
  REQUIRE(g.dtype() == c.dtype());
  REQUIRE(g.sizes() == c.sizes());
  test::Tol tol = test::tol_for(c.dtype());
  double eps = c.dtype() == DType::F64 ? 1.2e-16 : 6.0e-8;
  std::vector<double> gv = test::values(g), cv = test::values(c), av = test::values(abs_sum);
  int bad = 0;
  double worst = 0;
  for (size_t i = 0; i < gv.size(); ++i) {
    double allowed = tol.atol + tol.rtol * std::fabs(cv[i]) + 4 * eps * std::sqrt(double(r)) * av[i];
    double diff = std::fabs(gv[i] - cv[i]);
    if (!(diff <= allowed)) {
      ++bad;
      worst = std::max(worst, diff);
    }
  }
  INFO(bad << " of " << gv.size() << " differ; worst diff " << worst);
  CHECK(bad == 0);
}

int64_t reduced_count(const Tensor& x, const std::vector<int64_t>& dims) {
  if (dims.empty()) return x.numel();
  int64_t r = 1;
  for (int64_t d : dims) r *= x.size(d);
  return r;
}

// All layouts for small tensors; for big ones (the CPU reference is the slow side) the
// contiguous one and one non-contiguous one.
std::vector<test::Layout> layouts_for(const Shape& s) {
  if (shape_numel(s) <= 100000) return test::layouts();
  return {test::layouts()[0], test::layouts()[s.size() >= 2 ? 4 : 2]};
}
}  // namespace

TEST_CASE("cuda: sum/mean/max/min/argmax/argmin over dims match the CPU", "[cuda][reduce]") {
  for (DType t : test::floating_dtypes()) {
    for (const Shape& s : test::odd_shapes()) {
      Tensor xi = int_valued(s, t, 71), xr = test::random_tensor(s, t, 72);
      Tensor gxi = xi.to(cuda0()), gxr = xr.to(cuda0());
      for (const test::Layout& l : layouts_for(s)) {
        Tensor ci = l.apply(xi), gi = l.apply(gxi), cr = l.apply(xr), gr = l.apply(gxr);
        for (const auto& dims : dim_sets(ci.dim())) {
          for (bool keep : {false, true}) {
            INFO(dtype_name(t) << " " << shape_str(s) << " " << l.name << " dims " << shape_str(dims) << " keepdim "
                               << keep);
            // Exact sums of integer-valued data; means within the dtype's tolerance.
            Tensor gs = sum(gi, dims, keep);
            CHECK(gs.is_cuda());
            CHECK_EQUAL_T(gs, sum(ci, dims, keep));
            CHECK_CLOSE(mean(gi, dims, keep), mean(ci, dims, keep));
            // Random data: within the accumulation bound.
            int64_t r = reduced_count(cr, dims);
            Tensor abs_sum = sum(abs(cr.to(DType::F64)), dims, keep);
            check_sum_close(sum(gr, dims, keep), sum(cr, dims, keep), abs_sum, r);
            check_sum_close(mean(gr, dims, keep), mean(cr, dims, keep), div(abs_sum, double(r)), r);
            // Extremes and their indices are exact (ties: the first index).
            CHECK_EQUAL_T(max(gr, dims, keep), max(cr, dims, keep));
            CHECK_EQUAL_T(min(gr, dims, keep), min(cr, dims, keep));
            if (dims.size() == 1) {
              CHECK_EQUAL_T(argmax(gr, dims[0], keep), argmax(cr, dims[0], keep));
              CHECK_EQUAL_T(argmin(gi, dims[0], keep), argmin(ci, dims[0], keep));  // many ties
            }
          }
        }
        CHECK_EQUAL_T(argmax(gr), argmax(cr));
        CHECK_EQUAL_T(argmin(gi), argmin(ci));
      }
    }
  }
}

TEST_CASE("cuda: reductions of integer and bool tensors", "[cuda][reduce]") {
  for (DType t : {DType::U8, DType::I32, DType::I64, DType::Bool}) {
    for (const Shape& s : {Shape{7}, Shape{33, 65}, Shape{3, 5, 7, 9}, Shape{(1 << 20) + 3}}) {
      Tensor x = test::random_tensor(s, t, 73), g = x.to(cuda0());
      for (const auto& dims : dim_sets(x.dim())) {
        INFO(dtype_name(t) << " " << shape_str(s) << " dims " << shape_str(dims));
        Tensor gs = sum(g, dims);
        CHECK(gs.dtype() == DType::I64);
        CHECK_EQUAL_T(gs, sum(x, dims));
        CHECK_EQUAL_T(sum(test::transposed_copy(g), dims), sum(x, dims));
        if (t != DType::Bool) {
          CHECK_EQUAL_T(max(g, dims), max(x, dims));
          CHECK_EQUAL_T(min(g, dims, true), min(x, dims, true));
          if (dims.size() == 1) {
            CHECK_EQUAL_T(argmax(g, dims[0]), argmax(x, dims[0]));
            CHECK_EQUAL_T(argmin(g, dims[0]), argmin(x, dims[0]));
          }
        }
      }
    }
  }
  REQUIRE_KILN_ERROR(mean(ones({3}, TensorOptions(DType::I32, cuda0()))), "mean");
}

TEST_CASE("cuda: reduce-all of 2^24 + 5 elements", "[cuda][reduce]") {
  const int64_t n = (int64_t{1} << 24) + 5;
  // Integer-valued f32: exact in any order.
  Tensor xi = int_valued({n}, DType::F32, 81);
  Tensor gxi = xi.to(cuda0());
  CHECK(sum(gxi).item<double>() == sum(xi).item<double>());
  Tensor ii = int_valued({n}, DType::I32, 82);
  CHECK(sum(ii.to(cuda0())).item<int64_t>() == sum(ii).item<int64_t>());
  Tensor dd = int_valued({n}, DType::F64, 83);
  CHECK(sum(dd.to(cuda0())).item<double>() == sum(dd).item<double>());
  // Uniform [0, 1) data: the f32 sum (about 8.4e6) within a relative 1e-5: a tree or
  // blocked reduction is near 1e-7; 1e-5 allows atomics of block partials.
  Generator gen(84);
  Tensor u = rand({n}, DType::F32, &gen);
  Tensor gu = u.to(cuda0());
  double want = sum(u.to(DType::F64)).item<double>();
  CHECK(sum(gu).item<double>() == Approx(want).epsilon(1e-5));
  CHECK(mean(gu).item<double>() == Approx(want / double(n)).epsilon(1e-5));
  CHECK(sum(gu.to(DType::F64)).item<double>() == Approx(want).epsilon(1e-12));
  // The extremes sit in the tail (the last 5 elements), then at the front: argmax finds
  // the first.
  Tensor t = u.clone();
  t.narrow(0, n - 2, 1).fill_(5.0);
  t.narrow(0, n - 1, 1).fill_(-5.0);
  Tensor gt = t.to(cuda0());
  CHECK(max(gt).item<float>() == 5.0f);
  CHECK(min(gt).item<float>() == -5.0f);
  CHECK(argmax(gt).item<int64_t>() == n - 2);
  CHECK(argmin(gt).item<int64_t>() == n - 1);
  t.narrow(0, 3, 1).fill_(5.0);
  gt = t.to(cuda0());
  CHECK(argmax(gt).item<int64_t>() == 3);
  // All equal: argmax/argmin is 0.
  Tensor same = full({n}, 2.0, cuda0());
  CHECK(argmax(same).item<int64_t>() == 0);
  CHECK(argmin(same).item<int64_t>() == 0);
  CHECK(sum(same).item<double>() == Approx(2.0 * double(n)).epsilon(1e-6));
}

TEST_CASE("cuda: argmax/argmin ties and NaN", "[cuda][reduce]") {
  Tensor x = from_vector<float>({3, 1, 3, 0, 0, 3});
  Tensor g = x.to(cuda0());
  CHECK(argmax(g).item<int64_t>() == 0);
  CHECK(argmin(g).item<int64_t>() == 3);
  // Ties everywhere in rows of many lengths, along last and non-last dims.
  for (int64_t len : {1, 2, 31, 32, 33, 1024, 1025, 5000}) {
    INFO("len " << len);
    Tensor r = randint(0, 3, {5, len}, DType::F32);  // values 0, 1, 2: many ties
    Tensor gr = r.to(cuda0());
    CHECK_EQUAL_T(argmax(gr, 1), argmax(r, 1));
    CHECK_EQUAL_T(argmin(gr, 1), argmin(r, 1));
    CHECK_EQUAL_T(argmax(gr.t().contiguous(), 0), argmax(r, 1));
    CHECK_EQUAL_T(argmin(gr.t(), 0), argmin(r, 1));
    CHECK_EQUAL_T(argmax(gr), argmax(r));
  }
  // NaN is the extreme; max/min propagate it.
  Tensor n = from_vector<float>({1, NAN, 7, NAN, -3}, {5});
  Tensor gn = n.to(cuda0());
  CHECK(argmax(gn).item<int64_t>() == 1);
  CHECK(argmin(gn).item<int64_t>() == 1);
  CHECK(std::isnan(max(gn).item<float>()));
  CHECK(std::isnan(min(gn).item<float>()));
  Tensor big = rand({3, 5000});
  big.select(0, 1).narrow(0, 4000, 1).fill_(NAN);
  Tensor gbig = big.to(cuda0());
  CHECK_EQUAL_T(max(gbig, {1}), max(big, {1}));
  CHECK_EQUAL_T(argmax(gbig, 1), argmax(big, 1));
  CHECK_EQUAL_T(argmin(gbig, 1), argmin(big, 1));
}

TEST_CASE("cuda: var and std", "[cuda][reduce]") {
  for (DType t : {DType::F32, DType::F64}) {
    Tensor x = test::random_tensor({33, 65, 3}, t, 91, 3.0), g = x.to(cuda0());
    for (const auto& dims : dim_sets(3)) {
      INFO(dtype_name(t) << " dims " << shape_str(dims));
      // Sums of r positive squares: the dtype's tolerance plus the accumulation bound.
      test::Tol tol = test::tol_for(t);
      double eps = t == DType::F64 ? 1.2e-16 : 6.0e-8;
      double rtol = tol.rtol + 4 * eps * std::sqrt(double(reduced_count(x, dims)));
      CHECK_CLOSE_TOL(var(g, dims), var(x, dims), rtol, tol.atol);
      CHECK_CLOSE_TOL(kiln::std(g, dims, 0, true), kiln::std(x, dims, 0, true), rtol, tol.atol);
    }
  }
}

TEST_CASE("cuda: softmax and log_softmax match the CPU", "[cuda][softmax]") {
  for (DType t : test::floating_dtypes()) {
    for (int64_t n : {1, 31, 1024, 5000}) {
      for (double scale : {1.0, 30.0}) {  // 30: exp overflows without the max subtraction
        Tensor x = test::random_tensor({7, n}, t, 100 + n, scale), g = x.to(cuda0());
        INFO(dtype_name(t) << " n=" << n << " scale " << scale);
        Tensor gs = softmax(g), gl = log_softmax(g);
        CHECK(gs.is_cuda());
        CHECK(gs.dtype() == t);
        CHECK_CLOSE(gs, softmax(x));
        CHECK_CLOSE(gl, log_softmax(x));
        // Non-contiguous input and non-last dims.
        CHECK_CLOSE(softmax(g.t(), 0), softmax(x.t(), 0));
        CHECK_CLOSE(log_softmax(test::strided_copy(g), 1), log_softmax(x, 1));
        CHECK_CLOSE(softmax(g, 0), softmax(x, 0));
        Tensor x3 = test::random_tensor({3, n, 5}, t, 200 + n, scale), g3 = x3.to(cuda0());
        CHECK_CLOSE(softmax(g3, 1), softmax(x3, 1));
        CHECK_CLOSE(log_softmax(g3, 1), log_softmax(x3, 1));
        CHECK_CLOSE(softmax(g3, 0), softmax(x3, 0));
        CHECK_CLOSE(softmax(g3, -1), softmax(x3, -1));
      }
    }
  }
  // Rows sum to 1; -inf entries get 0; 1000s stay finite.
  Tensor g = test::random_tensor({129, 1000}, DType::F32, 300, 5.0).to(cuda0());
  CHECK_CLOSE(sum(softmax(g), {1}), ones({129}));
  Tensor inf = from_vector<float>({-INFINITY, 0, -INFINITY, 1000, 1000, 999}, {2, 3}, cuda0());
  CHECK_CLOSE(softmax(inf), softmax(inf.cpu()));
  CHECK_CLOSE(log_softmax(inf), log_softmax(inf.cpu()));
  CHECK(softmax(zeros({0, 7}, cuda0())).sizes() == Shape{0, 7});
  REQUIRE_KILN_ERROR(softmax(ones({3}, TensorOptions(DType::I32, cuda0()))), "softmax");
}

TEST_CASE("cuda: first-order gradients of softmax and log_softmax (the fused kernel) match the CPU",
          "[cuda][softmax]") {
  // The warp-per-row path (inner 1: rows of 1 to 5000) and the column path (inner > 1).
  for (DType t : test::floating_dtypes())
    for (int64_t n : {1, 33, 1024, 5000})
      for (bool log : {false, true})
        for (int64_t d : {0, 1, 2}) {
          INFO(dtype_name(t) << " n=" << n << (log ? " log_softmax" : " softmax") << " dim " << d);
          const Tensor x = test::random_tensor({3, n, 5}, t, 400 + n, 3.0).transpose(1, 2);  // (3, 5, n)
          const Tensor g = test::random_tensor({3, 5, n}, t, 401 + n);
          auto grad_on = [&](Device dev) {
            Tensor xi = x.to(dev).detach().requires_grad_(true);
            Tensor y = log ? log_softmax(xi, d) : softmax(xi, d);
            return grad({y}, {xi}, {g.to(dev)})[0];
          };
          const Tensor gc = grad_on(kCPU), gg = grad_on(cuda0());
          CHECK(gg.is_cuda());
          CHECK(gg.dtype() == t);
          CHECK_CLOSE(gg, gc);
        }
}
