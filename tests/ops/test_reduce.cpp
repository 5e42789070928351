// Reductions on the CPU against an independent loop in the test: single, several
// (non-adjacent) and all dims, keepdim, negative dims, non-contiguous input; result
// dtypes; max/min/argmax/argmin ties and NaN; var/std; bad input.
#include "test_util.h"

#include <cmath>
#include <limits>
#include <set>

using namespace kiln;

namespace {
const double kNaN = std::numeric_limits<double>::quiet_NaN();

enum class Ref { Sum, Mean, Max, Min, ArgMax, ArgMin, Var0, Var1 };

// Reduces row-major `v` of `shape` over `dims` (all when empty) by a plain loop over
// every output position; returns the values in the output's row-major order.
std::vector<double> ref_reduce(const std::vector<double>& v, const Shape& shape, std::vector<int64_t> dims, Ref op) {
  int64_t nd = static_cast<int64_t>(shape.size());
  if (dims.empty())
    for (int64_t i = 0; i < nd; ++i) dims.push_back(i);
  for (auto& d : dims) d = d < 0 ? d + nd : d;
  std::set<int64_t> red(dims.begin(), dims.end());
  Shape kept, redshape;
  for (int64_t i = 0; i < nd; ++i) (red.count(i) ? redshape : kept).push_back(shape[i]);
  Shape st = contiguous_strides(shape);
  std::vector<double> out;
  int64_t nout = shape_numel(kept), nr = shape_numel(redshape);
  for (int64_t o = 0; o < nout; ++o) {
    // Decompose o over kept dims and r over reduced dims into a full index.
    std::vector<double> xs;
    for (int64_t r = 0; r < nr; ++r) {
      int64_t oo = o, rr = r, off = 0;
      for (int64_t i = nd - 1; i >= 0; --i) {
        int64_t idx;
        if (red.count(i)) {
          idx = rr % shape[i];
          rr /= shape[i];
        } else {
          idx = oo % shape[i];
          oo /= shape[i];
        }
        off += idx * st[i];
      }
      xs.push_back(v[off]);
    }
    double acc = 0;
    switch (op) {
      case Ref::Sum:
      case Ref::Mean:
        for (double x : xs) acc += x;
        if (op == Ref::Mean) acc /= static_cast<double>(nr);
        break;
      case Ref::Max:
      case Ref::Min:
      case Ref::ArgMax:
      case Ref::ArgMin: {
        bool mx = op == Ref::Max || op == Ref::ArgMax;
        size_t best = 0;
        for (size_t j = 0; j < xs.size(); ++j) {
          if (std::isnan(xs[j])) {
            best = j;
            break;
          }
          if (mx ? xs[j] > xs[best] : xs[j] < xs[best]) best = j;
        }
        acc = (op == Ref::ArgMax || op == Ref::ArgMin) ? static_cast<double>(best) : xs[best];
        break;
      }
      case Ref::Var0:
      case Ref::Var1: {
        double m = 0;
        for (double x : xs) m += x;
        m /= static_cast<double>(nr);
        for (double x : xs) acc += (x - m) * (x - m);
        acc /= static_cast<double>(nr - (op == Ref::Var1 ? 1 : 0));
        break;
      }
    }
    out.push_back(acc);
  }
  return out;
}

Shape ref_shape(const Shape& shape, std::vector<int64_t> dims, bool keepdim) {
  int64_t nd = static_cast<int64_t>(shape.size());
  if (dims.empty())
    for (int64_t i = 0; i < nd; ++i) dims.push_back(i);
  std::set<int64_t> red;
  for (auto d : dims) red.insert(d < 0 ? d + nd : d);
  Shape s;
  for (int64_t i = 0; i < nd; ++i) {
    if (!red.count(i)) s.push_back(shape[i]);
    else if (keepdim) s.push_back(1);
  }
  return s;
}

std::vector<double> d(const Tensor& t) { return test::values(t); }

const std::vector<std::vector<int64_t>> kDimSets = {{}, {0}, {1}, {2}, {-1}, {0, 1}, {1, 2}, {0, 2}, {-1, 0}, {0, 1, 2}};
}  // namespace

TEST_CASE("sum/mean/max/min over dims against a loop", "[ops][reduce]") {
  Tensor x = test::random_tensor({4, 5, 6}, DType::F64, 21);
  std::vector<double> xv = d(x);
  for (const auto& dims : kDimSets) {
    for (bool keep : {false, true}) {
      INFO("dims " << shape_str(dims) << " keepdim " << keep);
      Shape want_shape = ref_shape(x.sizes(), dims, keep);
      Tensor s = sum(x, dims, keep), m = mean(x, dims, keep), mx = max(x, dims, keep), mn = min(x, dims, keep);
      CHECK(s.sizes() == want_shape);
      CHECK(m.sizes() == want_shape);
      CHECK(mx.sizes() == want_shape);
      CHECK(s.dtype() == DType::F64);
      CHECK_CLOSE(s, from_vector<double>(ref_reduce(xv, x.sizes(), dims, Ref::Sum), want_shape));
      CHECK_CLOSE(m, from_vector<double>(ref_reduce(xv, x.sizes(), dims, Ref::Mean), want_shape));
      CHECK_EQUAL_T(mx, from_vector<double>(ref_reduce(xv, x.sizes(), dims, Ref::Max), want_shape));
      CHECK_EQUAL_T(mn, from_vector<double>(ref_reduce(xv, x.sizes(), dims, Ref::Min), want_shape));
      // Same results from non-contiguous layouts of the same values.
      CHECK_CLOSE(sum(test::transposed_copy(x), dims, keep), s);
      CHECK_CLOSE(mean(test::strided_copy(x), dims, keep), m);
      CHECK_EQUAL_T(max(test::transposed_copy(x), dims, keep), mx);
      CHECK_EQUAL_T(min(test::strided_copy(x), dims, keep), mn);
    }
  }
  // A permuted view reduced over its own dims.
  Tensor p = x.permute({2, 0, 1});  // [6, 4, 5]
  CHECK_CLOSE(sum(p, {0}), sum(x, {2}));
  CHECK_CLOSE(sum(p, {1, 2}), sum(x, {0, 1}));
  CHECK_EQUAL_T(max(p, {-1}), max(x, {1}).t());
}

TEST_CASE("reductions: small hand-computed cases", "[ops][reduce]") {
  Tensor x = from_vector<float>({1, 2, 3, 4, 5, 6}, {2, 3});
  CHECK(sum(x).dim() == 0);
  CHECK(sum(x).item<float>() == 21);
  CHECK(d(sum(x, {0})) == std::vector<double>{5, 7, 9});
  CHECK(d(sum(x, {1})) == std::vector<double>{6, 15});
  CHECK(sum(x, {1}, true).sizes() == Shape{2, 1});
  CHECK(sum(x, {}, true).sizes() == Shape{1, 1});
  CHECK(d(mean(x, {0})) == std::vector<double>{2.5, 3.5, 4.5});
  CHECK(d(mean(x, {-1})) == std::vector<double>{2, 5});
  CHECK(d(max(x, {0})) == std::vector<double>{4, 5, 6});
  CHECK(d(min(x, {1})) == std::vector<double>{1, 4});
  CHECK(max(x).item<float>() == 6);
  CHECK(min(x).item<float>() == 1);
  // 0-d input.
  CHECK(sum(scalar_tensor(3.0)).item<float>() == 3);
  CHECK(max(scalar_tensor(3.0)).item<float>() == 3);
  // A stride-0 (expanded) input.
  CHECK(d(sum(from_vector<float>({1, 2}, {2, 1}).expand({2, 5}), {1})) == std::vector<double>{5, 10});
  // f32 sums accumulate in more than f32: 2^24 + 1 + 1 ... does not stall at 2^24.
  Tensor big = ones({1 << 12}, DType::F32);
  Tensor withbig = cat({full({1}, 16777216.0), big});
  CHECK(sum(withbig).item<double>() == 16777216.0 + 4096.0);
  // Half types.
  Tensor h = full({300}, 0.5, DType::F16);
  CHECK(sum(h).dtype() == DType::F16);
  CHECK(sum(h).item<float>() == 150);
  CHECK(mean(ones({7, 3}, DType::BF16), {0}).dtype() == DType::BF16);
  CHECK(d(mean(ones({7, 3}, DType::BF16), {0})) == std::vector<double>{1, 1, 1});
}

TEST_CASE("reductions: integer and bool inputs", "[ops][reduce]") {
  Tensor i = from_vector<int32_t>({1, 2, 3, 4, 5, 6}, {2, 3});
  CHECK(sum(i).dtype() == DType::I64);
  CHECK(sum(i).item<int64_t>() == 21);
  CHECK(sum(i, {0}).to_vector<int64_t>() == std::vector<int64_t>{5, 7, 9});
  CHECK(sum(from_vector<uint8_t>(std::vector<uint8_t>(300, 255))).item<int64_t>() == 300 * 255);
  CHECK(sum(from_vector<uint8_t>({1})).dtype() == DType::I64);
  Tensor b = from_vector<bool>({true, false, true, true});
  CHECK(sum(b).dtype() == DType::I64);
  CHECK(sum(b).item<int64_t>() == 3);
  Tensor l = from_vector<int64_t>({1ll << 62, 1ll << 61, -5});
  CHECK(sum(l).item<int64_t>() == (1ll << 62) + (1ll << 61) - 5);
  CHECK(max(i).dtype() == DType::I32);
  CHECK(max(i).item<int64_t>() == 6);
  CHECK(min(i, {1}).to_vector<int32_t>() == std::vector<int32_t>{1, 4});
  CHECK(max(l).item<int64_t>() == (1ll << 62));
  CHECK(argmax(i).item<int64_t>() == 5);
  REQUIRE_KILN_ERROR(mean(i), "mean");
  REQUIRE_KILN_ERROR(mean(b), "mean");
  REQUIRE_KILN_ERROR(max(b), "max");
  REQUIRE_KILN_ERROR(argmin(b), "argmin");
}

TEST_CASE("argmax/argmin: first index on ties, NaN wins", "[ops][reduce]") {
  CHECK(argmax(from_vector<float>({3, 1, 3})).item<int64_t>() == 0);
  CHECK(argmin(from_vector<float>({1, 0, 0})).item<int64_t>() == 1);
  CHECK(argmax(from_vector<float>({1, 1, 1, 1})).item<int64_t>() == 0);
  CHECK(argmax(from_vector<float>({1, 2, 5, 5})).item<int64_t>() == 2);
  CHECK(argmax(from_vector<float>({1, 2, 5, 5})).dtype() == DType::I64);
  // NaN is the maximum and the minimum (like PyTorch): the first NaN's index.
  CHECK(argmax(from_vector<double>({1, kNaN, 3, kNaN})).item<int64_t>() == 1);
  CHECK(argmin(from_vector<double>({1, -5, kNaN})).item<int64_t>() == 2);
  CHECK(std::isnan(max(from_vector<double>({1, kNaN, 3})).item<double>()));
  CHECK(std::isnan(min(from_vector<double>({kNaN, 1, 3})).item<double>()));
  CHECK(std::isnan(d(max(from_vector<float>({1, 2, NAN, 4}, {2, 2}), {1}))[1]));
  CHECK(d(max(from_vector<float>({1, 2, NAN, 4}, {2, 2}), {1}))[0] == 2);
  // Along a dim, with keepdim, and flattened.
  Tensor x = from_vector<float>({1, 9, 9, 4, 0, 4, 7, 7, 2}, {3, 3});
  CHECK(argmax(x, 1).to_vector<int64_t>() == std::vector<int64_t>{1, 0, 0});
  CHECK(argmax(x, 0).to_vector<int64_t>() == std::vector<int64_t>{2, 0, 0});
  CHECK(argmin(x, 1).to_vector<int64_t>() == std::vector<int64_t>{0, 1, 2});
  CHECK(argmin(x, -2).to_vector<int64_t>() == std::vector<int64_t>{0, 1, 2});
  CHECK(argmax(x, 1, true).sizes() == Shape{3, 1});
  CHECK(argmax(x).item<int64_t>() == 1);
  CHECK(argmin(x).item<int64_t>() == 4);
  CHECK(argmax(x, std::nullopt, true).sizes() == Shape{1, 1});
  CHECK(argmax(x, std::nullopt, true).item<int64_t>() == 1);
  // Non-contiguous: flattened index into the logical (row-major) order.
  CHECK(argmax(x.t()).item<int64_t>() == 3);            // x.t()[1][0] = 9
  CHECK(argmin(x.t(), 0).to_vector<int64_t>() == std::vector<int64_t>{0, 1, 2});
  // Against the loop on random data, for every dim.
  Tensor r = test::random_tensor({5, 6, 7}, DType::F32, 77);
  std::vector<double> rv = d(r);
  for (int64_t dim : {0, 1, 2, -1}) {
    INFO("dim " << dim);
    CHECK(d(argmax(r, dim)) == ref_reduce(rv, r.sizes(), {dim}, Ref::ArgMax));
    CHECK(d(argmin(test::transposed_copy(r), dim)) == ref_reduce(rv, r.sizes(), {dim}, Ref::ArgMin));
  }
  CHECK(d(argmax(r)) == ref_reduce(rv, r.sizes(), {}, Ref::ArgMax));
  // Integer inputs with ties.
  CHECK(argmin(from_vector<int64_t>({5, -2, 7, -2})).item<int64_t>() == 1);
}

TEST_CASE("var and std against a hand computation", "[ops][reduce]") {
  // [1, 2, 3, 4]: mean 2.5, sum of squares 5.
  Tensor x = from_vector<double>({1, 2, 3, 4});
  CHECK(var(x).item<double>() == Approx(5.0 / 3).epsilon(1e-14));
  CHECK(var(x, {}, 0).item<double>() == Approx(1.25).epsilon(1e-14));
  CHECK(kiln::std(x).item<double>() == Approx(std::sqrt(5.0 / 3)).epsilon(1e-14));
  CHECK(kiln::std(x, {}, 0).item<double>() == Approx(std::sqrt(1.25)).epsilon(1e-14));
  CHECK(var(x, {}, 1, true).sizes() == Shape{1});
  Tensor r = test::random_tensor({4, 5, 6}, DType::F64, 8, 3.0);
  std::vector<double> rv = d(r);
  for (const auto& dims : kDimSets) {
    INFO("dims " << shape_str(dims));
    for (bool keep : {false, true}) {
      Shape s = ref_shape(r.sizes(), dims, keep);
      CHECK_CLOSE(var(r, dims, 1, keep), from_vector<double>(ref_reduce(rv, r.sizes(), dims, Ref::Var1), s));
      CHECK_CLOSE(var(test::transposed_copy(r), dims, 0, keep),
                  from_vector<double>(ref_reduce(rv, r.sizes(), dims, Ref::Var0), s));
    }
    std::vector<double> v1 = ref_reduce(rv, r.sizes(), dims, Ref::Var1);
    for (double& v : v1) v = std::sqrt(v);
    CHECK_CLOSE(kiln::std(r, dims), from_vector<double>(v1, ref_shape(r.sizes(), dims, false)));
  }
  // f32 input stays f32.
  Tensor f = from_vector<float>({2, 4, 4, 4, 5, 5, 7, 9});  // population std 2
  CHECK(kiln::std(f, {}, 0).dtype() == DType::F32);
  CHECK(kiln::std(f, {}, 0).item<float>() == Approx(2.0f).epsilon(1e-6));
  REQUIRE_KILN_ERROR(var(from_vector<int32_t>({1, 2})), "var");
  REQUIRE_KILN_ERROR(var(x, {}, -1), "var");
  REQUIRE_KILN_ERROR(var(x, {1}), "var");
}

TEST_CASE("var/std divide by max(0, n - correction) as PyTorch does", "[ops][reduce]") {
  // torch.var(torch.tensor([1., 2.]), correction=3) == inf (was -0.5: divided by n - 3 = -1).
  Tensor x = from_vector<double>({1, 2});
  CHECK(std::isinf(var(x, {}, 3).item<double>()));
  CHECK(var(x, {}, 3).item<double>() > 0);
  CHECK(std::isinf(kiln::std(x, {}, 2).item<double>()));
  // A constant input with n <= correction: 0 / 0 = NaN (torch gives nan).
  CHECK(std::isnan(var(from_vector<double>({3.0}), {}, 1).item<double>()));
  // An empty reduction is NaN, not -0 (torch.var(torch.empty(0)) == nan).
  Tensor e = zeros({2, 0}, DType::F64);
  Tensor v = var(e, {1});
  REQUIRE(v.sizes() == Shape{2});
  for (double val : d(v)) CHECK(std::isnan(val));
  CHECK(std::isnan(var(zeros({0}), {}).item<float>()));
}

TEST_CASE("reductions over empty dims", "[ops][reduce]") {
  Tensor e = zeros({0, 3});
  CHECK(sum(e, {0}).sizes() == Shape{3});
  CHECK(d(sum(e, {0})) == std::vector<double>{0, 0, 0});
  CHECK(sum(e).item<float>() == 0);
  CHECK(std::isnan(mean(e).item<float>()));
  CHECK(sum(e, {1}).sizes() == Shape{0});
  CHECK(max(e, {1}).sizes() == Shape{0});  // nothing to reduce into
  REQUIRE_KILN_ERROR(max(e, {0}), "max");
  REQUIRE_KILN_ERROR(min(e), "min");
  REQUIRE_KILN_ERROR(argmax(e), "argmax");
  REQUIRE_KILN_ERROR(argmin(e, 0), "argmin");
}

TEST_CASE("reductions: bad dims throw kiln::Error naming the op", "[ops][reduce][errors]") {
  Tensor x = zeros({2, 3});
  REQUIRE_KILN_ERROR(sum(x, {2}), "sum");
  REQUIRE_KILN_ERROR(sum(x, {-3}), "sum");
  REQUIRE_KILN_ERROR(mean(x, {0, 0}), "mean");
  REQUIRE_KILN_ERROR(max(x, {1, -1}), "max");
  REQUIRE_KILN_ERROR(min(x, {5}), "min");
  REQUIRE_KILN_ERROR(argmax(x, 2), "argmax");
  REQUIRE_KILN_ERROR(argmin(x, -3), "argmin");
  REQUIRE_KILN_ERROR(kiln::std(x, {7}), "var");
  REQUIRE_KILN_ERROR(sum(Tensor()), "sum");
  REQUIRE_KILN_ERROR(argmax(Tensor()), "argmax");
}
