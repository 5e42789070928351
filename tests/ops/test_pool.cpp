// max_pool2d, avg_pool2d, adaptive_avg_pool2d on the CPU: hand-computed values (as
// PyTorch gives them), naive window loops written here over kernels, strides, padding,
// dilation and ceil_mode, output-size rules, NaN handling, every floating dtype,
// gradients (routing to the argmax, gradient checks) and bad input.
#include "test_util.h"

#include <cmath>
#include <limits>

using namespace kiln;
using V = std::vector<Tensor>;

namespace {

struct P {
  Int2 k, s, p, d;
  bool ceil;
};

std::string p_str(const P& c) {
  return detail::str("kernel (", c.k.h, ",", c.k.w, ") stride (", c.s.h, ",", c.s.w, ") padding (", c.p.h, ",",
                     c.p.w, ") dilation (", c.d.h, ",", c.d.w, ") ceil ", c.ceil);
}

// A config's stride, the kernel when left out (s = 0).
Int2 eff_stride(const P& c) { return c.s.h == 0 ? c.k : c.s; }

// PyTorch's pooling_output_shape.
int64_t out_size(int64_t n, int64_t k, int64_t s, int64_t p, int64_t d, bool ceil) {
  const int64_t num = n + 2 * p - d * (k - 1) - 1 + (ceil ? s - 1 : 0);
  int64_t o = (num >= 0 ? num / s : -((-num + s - 1) / s)) + 1;
  if (ceil && (o - 1) * s >= n + p) --o;
  return o;
}

// Max over each window's in-bounds taps; the index of the first maximum (of the last NaN).
std::pair<Tensor, Tensor> naive_max_pool(const Tensor& x, P c) {
  c.s = eff_stride(c);
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t Ho = out_size(H, c.k.h, c.s.h, c.p.h, c.d.h, c.ceil), Wo = out_size(W, c.k.w, c.s.w, c.p.w, c.d.w, c.ceil);
  std::vector<double> xv = test::values(x), y;
  std::vector<int64_t> idx;
  for (int64_t b = 0; b < N * C; ++b)
    for (int64_t oh = 0; oh < Ho; ++oh)
      for (int64_t ow = 0; ow < Wo; ++ow) {
        double m = -INFINITY;
        int64_t best = -1;
        for (int64_t i = 0; i < c.k.h; ++i)
          for (int64_t j = 0; j < c.k.w; ++j) {
            const int64_t ih = oh * c.s.h - c.p.h + i * c.d.h, iw = ow * c.s.w - c.p.w + j * c.d.w;
            if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
            const double v = xv[(b * H + ih) * W + iw];
            if (best < 0 || v > m || std::isnan(v)) {
              best = ih * W + iw;
              m = v;
            }
          }
        y.push_back(m);
        idx.push_back(best);
      }
  return {from_vector<double>(y, {N, C, Ho, Wo}), from_vector<int64_t>(idx, {N, C, Ho, Wo})};
}

Tensor naive_avg_pool(const Tensor& x, P c, bool include_pad, int64_t divisor) {
  c.s = eff_stride(c);
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t Ho = out_size(H, c.k.h, c.s.h, c.p.h, 1, c.ceil), Wo = out_size(W, c.k.w, c.s.w, c.p.w, 1, c.ceil);
  std::vector<double> xv = test::values(x), y;
  for (int64_t b = 0; b < N * C; ++b)
    for (int64_t oh = 0; oh < Ho; ++oh)
      for (int64_t ow = 0; ow < Wo; ++ow) {
        double s = 0;
        int64_t inside = 0, padded = 0;
        for (int64_t i = 0; i < c.k.h; ++i)
          for (int64_t j = 0; j < c.k.w; ++j) {
            const int64_t ih = oh * c.s.h - c.p.h + i, iw = ow * c.s.w - c.p.w + j;
            // Taps beyond the padded input (a ceil_mode window's overhang) never count.
            if (ih >= H + c.p.h || iw >= W + c.p.w) continue;
            ++padded;
            if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
            ++inside;
            s += xv[(b * H + ih) * W + iw];
          }
        y.push_back(s / static_cast<double>(divisor > 0 ? divisor : include_pad ? padded : inside));
      }
  return from_vector<double>(y, {N, C, Ho, Wo});
}

Tensor naive_adaptive(const Tensor& x, int64_t Ho, int64_t Wo) {
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  std::vector<double> xv = test::values(x), y;
  for (int64_t b = 0; b < N * C; ++b)
    for (int64_t oh = 0; oh < Ho; ++oh)
      for (int64_t ow = 0; ow < Wo; ++ow) {
        const int64_t h0 = static_cast<int64_t>(std::floor(double(oh) * H / Ho));
        const int64_t h1 = static_cast<int64_t>(std::ceil(double(oh + 1) * H / Ho));
        const int64_t w0 = static_cast<int64_t>(std::floor(double(ow) * W / Wo));
        const int64_t w1 = static_cast<int64_t>(std::ceil(double(ow + 1) * W / Wo));
        double s = 0;
        for (int64_t ih = h0; ih < h1; ++ih)
          for (int64_t iw = w0; iw < w1; ++iw) s += xv[(b * H + ih) * W + iw];
        y.push_back(s / static_cast<double>((h1 - h0) * (w1 - w0)));
      }
  return from_vector<double>(y, {N, C, Ho, Wo});
}

Tensor rnd(const Shape& s, uint64_t seed, DType dt = DType::F64) { return test::random_tensor(s, dt, seed); }

void check_grad(const std::function<Tensor(const V&)>& f, const V& inputs) {
  GradcheckResult r = gradcheck(f, inputs);
  INFO(r.message);
  CHECK(r.ok);
}

const std::vector<P>& max_configs() {
  static const std::vector<P> v{
      {2, {}, 0, 1, false},      {3, 2, 1, 1, false},        {3, 2, 1, 1, true},    {{3, 2}, {1, 2}, {1, 0}, 1, false},
      {2, 2, 0, 1, true},        {3, 1, 1, 2, false},        {{2, 3}, {2, 1}, {1, 1}, {3, 2}, true},
      {{5, 1}, {3, 1}, {2, 0}, 1, true},
  };
  return v;
}

}  // namespace

TEST_CASE("max_pool2d: hand-computed values and indices", "[ops][pool]") {
  Tensor x = arange(0.0, 16.0, 1.0, DType::F32).view({1, 1, 4, 4});
  auto [y, idx] = max_pool2d_with_indices(x, 2);
  CHECK(y.sizes() == Shape{1, 1, 2, 2});
  CHECK(test::values(y) == std::vector<double>{5, 7, 13, 15});
  CHECK(idx.dtype() == DType::I64);
  CHECK(test::vec<int64_t>(idx) == std::vector<int64_t>{5, 7, 13, 15});
  // 3x3 windows, stride 1, padding 1: the max of each neighbourhood.
  Tensor m = from_vector<float>({1, 9, 2, 3, 0, 8, 7, 4, 5}, {1, 3, 3});  // unbatched
  Tensor ym = max_pool2d(m, 3, 1, 1);
  CHECK(ym.sizes() == Shape{1, 3, 3});
  CHECK(test::values(ym) == std::vector<double>{9, 9, 9, 9, 9, 9, 7, 8, 8});
  // Padding never wins, even over negative values.
  Tensor neg = full({1, 1, 2, 2}, -5.0);
  CHECK(test::values(max_pool2d(neg, 2, 1, 1)) == std::vector<double>(9, -5.0));
}

TEST_CASE("max_pool2d: against naive windows", "[ops][pool]") {
  uint64_t seed = 20;
  for (const P& c : max_configs()) {
    INFO(p_str(c));
    Tensor x = rnd({2, 3, 9, 7}, ++seed);
    auto [ry, ri] = naive_max_pool(x, c);
    for (DType dt : test::floating_dtypes()) {
      INFO(dtype_name(dt));
      auto [y, idx] = max_pool2d_with_indices(x.to(dt), c.k, c.s.h == 0 ? std::nullopt : std::optional<Int2>(c.s),
                                              c.p, c.d, c.ceil);
      auto [rdy, rdi] = naive_max_pool(x.to(dt), c);
      CHECK_EQUAL_T(y, rdy.to(dt));
      CHECK(test::vec<int64_t>(idx) == test::vec<int64_t>(rdi));
    }
    // Non-contiguous input.
    CHECK_EQUAL_T(max_pool2d(test::noncontiguous(x), c.k, c.s.h == 0 ? std::nullopt : std::optional<Int2>(c.s), c.p,
                             c.d, c.ceil),
                  ry);
  }
}

TEST_CASE("max_pool2d: NaN and infinities", "[ops][pool]") {
  const double nan = std::numeric_limits<double>::quiet_NaN(), inf = INFINITY;
  Tensor x = from_vector<double>({1, nan, 3, 4, -inf, -inf, -inf, -inf, inf, 2, 0, 1}, {1, 1, 3, 4});
  auto [y, idx] = max_pool2d_with_indices(x, {1, 2}, Int2{1, 2});
  std::vector<double> v = test::values(y);
  CHECK(std::isnan(v[0]));  // a NaN wins its window
  CHECK(v[1] == 4);
  CHECK(v[2] == -inf);      // all -inf: the first tap's index
  CHECK(v[3] == -inf);
  CHECK(v[4] == inf);
  CHECK(v[5] == 1);
  CHECK(test::vec<int64_t>(idx) == std::vector<int64_t>{1, 3, 4, 6, 8, 11});
}

TEST_CASE("pooling: output sizes and ceil_mode", "[ops][pool]") {
  Tensor x5 = zeros({1, 1, 5, 5});
  CHECK(max_pool2d(x5, 2).sizes() == Shape{1, 1, 2, 2});
  CHECK(max_pool2d(x5, 2, 2, 0, 1, true).sizes() == Shape{1, 1, 3, 3});
  // ceil_mode drops a last window that would start in the right padding:
  // H = 3, k 2, s 2, p 1 -> 2 windows, not 3.
  CHECK(max_pool2d(zeros({1, 1, 3, 3}), 2, 2, 1, 1, true).sizes() == Shape{1, 1, 2, 2});
  CHECK(pool_output_size(3, 2, 2, 1, 1, true) == 2);
  CHECK(pool_output_size(224, 3, 2, 1, 1, false) == 112);
  CHECK(pool_output_size(7, 3, 2, 0, 1, true) == 3);
  CHECK(pool_output_size(8, 3, 2, 0, 1, true) == 4);
  CHECK(pool_output_size(8, 3, 2, 0, 1, false) == 3);
  CHECK(avg_pool2d(x5, 3, 2, 1, true).sizes() == Shape{1, 1, 3, 3});
  CHECK(avg_pool2d(zeros({2, 3, 6, 4}), {3, 2}).sizes() == Shape{2, 3, 2, 2});
  // Empty batch.
  CHECK(max_pool2d(zeros({0, 3, 4, 4}), 2).sizes() == Shape{0, 3, 2, 2});
  CHECK(avg_pool2d(zeros({0, 3, 4, 4}), 2).sizes() == Shape{0, 3, 2, 2});
  CHECK(adaptive_avg_pool2d(zeros({0, 3, 4, 4}), 2).sizes() == Shape{0, 3, 2, 2});
}

TEST_CASE("avg_pool2d: hand-computed values", "[ops][pool]") {
  Tensor x = arange(0.0, 25.0, 1.0, DType::F64).view({1, 1, 5, 5});
  // ceil_mode: the overhanging windows divide by their clipped size (F.avg_pool2d(x, 2, 2, ceil_mode=True)).
  CHECK(test::values(avg_pool2d(x, 2, 2, 0, true)) == std::vector<double>{3, 5, 6.5, 13, 15, 16.5, 20.5, 22.5, 24});
  Tensor x3 = arange(0.0, 9.0, 1.0, DType::F64).view({1, 1, 3, 3});
  // Corner window of a 3x3 kernel with padding 1 holds 0, 1, 3, 4.
  std::vector<double> inc = test::values(avg_pool2d(x3, 3, 1, 1, false, true));
  std::vector<double> exc = test::values(avg_pool2d(x3, 3, 1, 1, false, false));
  CHECK(inc[0] == Approx(8.0 / 9.0));
  CHECK(exc[0] == Approx(2.0));
  CHECK(exc[4] == Approx(4.0));
  CHECK(inc[4] == Approx(4.0));
  // divisor_override replaces the window size.
  CHECK(test::values(avg_pool2d(x3, 3, 1, 1, false, true, 2))[0] == Approx(4.0));
}

TEST_CASE("avg_pool2d: against naive windows", "[ops][pool]") {
  uint64_t seed = 30;
  const std::vector<P> cfgs{{2, {}, 0, 1, false}, {3, 2, 1, 1, false}, {3, 2, 1, 1, true}, {{3, 2}, {1, 2}, {1, 1}, 1, false},
                            {{4, 3}, {3, 2}, {2, 1}, 1, true}, {3, 3, 0, 1, true}};
  for (const P& c : cfgs) {
    for (bool include : {true, false}) {
      for (int64_t div : {int64_t{0}, int64_t{5}}) {
        INFO(p_str(c) << " count_include_pad " << include << " divisor_override " << div);
        Tensor x = rnd({2, 3, 8, 7}, ++seed);
        Tensor ref = naive_avg_pool(x, c, include, div);
        std::optional<Int2> s = c.s.h == 0 ? std::nullopt : std::optional<Int2>(c.s);
        CHECK_CLOSE(avg_pool2d(x, c.k, s, c.p, c.ceil, include, div), ref);
        CHECK_CLOSE(avg_pool2d(test::noncontiguous(x), c.k, s, c.p, c.ceil, include, div), ref);
        for (DType dt : {DType::F16, DType::BF16, DType::F32}) {
          INFO(dtype_name(dt));
          Tensor xd = x.to(dt);
          Tensor y = avg_pool2d(xd, c.k, s, c.p, c.ceil, include, div);
          CHECK(y.dtype() == dt);
          CHECK_CLOSE(y, naive_avg_pool(xd, c, include, div).to(dt));
        }
      }
    }
  }
}

TEST_CASE("adaptive_avg_pool2d: values", "[ops][pool]") {
  // Rows [0, 2), [1, 4), [3, 5) of 0..4.
  Tensor x = arange(0.0, 5.0, 1.0, DType::F64).view({1, 1, 5, 1});
  CHECK(test::values(adaptive_avg_pool2d(x, {3, 1})) == std::vector<double>{0.5, 2, 3.5});
  Tensor r = rnd({2, 3, 7, 10}, 1);
  // Global average pooling.
  CHECK_CLOSE(adaptive_avg_pool2d(r, 1), mean(r, {2, 3}, true));
  // Divisible sizes: plain average pooling.
  CHECK_CLOSE(adaptive_avg_pool2d(r.narrow(2, 0, 6), {3, 5}), avg_pool2d(r.narrow(2, 0, 6), 2));
  for (Int2 o : {Int2{3, 4}, Int2{7, 10}, Int2{5, 3}, Int2{9, 13}, Int2{1, 6}}) {
    INFO(o.h << "x" << o.w);
    CHECK_CLOSE(adaptive_avg_pool2d(r, o), naive_adaptive(r, o.h, o.w));
    CHECK_CLOSE(adaptive_avg_pool2d(r.to(DType::F32), o), naive_adaptive(r, o.h, o.w).to(DType::F32));
  }
  CHECK(adaptive_avg_pool2d(r[0], 2).sizes() == Shape{3, 2, 2});
}

TEST_CASE("pooling: gradients", "[ops][pool][gradcheck]") {
  // max: each output's gradient lands on its argmax; overlapping windows add up.
  Tensor m = from_vector<double>({1, 9, 2, 3, 0, 8, 7, 4, 5}, {1, 1, 3, 3}).set_requires_grad(true);
  max_pool2d(m, 2, 1).backward(ones({1, 1, 2, 2}, DType::F64));
  CHECK(test::values(m.grad()) == std::vector<double>{0, 2, 0, 0, 0, 1, 1, 0, 0});

  Tensor x = rnd({2, 3, 7, 6}, 2);
  for (const P& c : max_configs()) {
    INFO(p_str(c));
    std::optional<Int2> s = c.s.h == 0 ? std::nullopt : std::optional<Int2>(c.s);
    check_grad([&](const V& v) { return max_pool2d(v[0], c.k, s, c.p, c.d, c.ceil); }, {x});
  }
  for (bool include : {true, false}) {
    check_grad([&](const V& v) { return avg_pool2d(v[0], 3, 2, 1, true, include); }, {x});
    check_grad([&](const V& v) { return avg_pool2d(v[0], {2, 3}, Int2{1, 2}, {1, 0}, false, include); }, {x});
  }
  check_grad([](const V& v) { return avg_pool2d(v[0], 2, 2, 1, true, true, 3); }, {x});
  check_grad([](const V& v) { return adaptive_avg_pool2d(v[0], {3, 4}); }, {x});
  check_grad([](const V& v) { return adaptive_avg_pool2d(v[0], {5, 9}); }, {x});
  check_grad([](const V& v) { return adaptive_avg_pool2d(v[0][1], 2); }, {x});
}

TEST_CASE("pooling: bad input", "[ops][pool]") {
  Tensor x = zeros({2, 3, 6, 6});
  REQUIRE_KILN_ERROR(max_pool2d(Tensor(), 2), "max_pool2d");
  REQUIRE_KILN_ERROR(max_pool2d(zeros({6, 6}), 2), "max_pool2d");
  REQUIRE_KILN_ERROR(max_pool2d(zeros({1, 2, 3, 6, 6}), 2), "max_pool2d");
  REQUIRE_KILN_ERROR(max_pool2d(x.to(DType::I64), 2), "max_pool2d");
  REQUIRE_KILN_ERROR(max_pool2d(x, 0), "kernel");
  REQUIRE_KILN_ERROR(max_pool2d(x, 2, 0), "stride");
  REQUIRE_KILN_ERROR(max_pool2d(x, 2, 2, -1), "padding");
  REQUIRE_KILN_ERROR(max_pool2d(x, 2, 2, 2), "half");  // padding > kernel / 2
  REQUIRE_KILN_ERROR(max_pool2d(x, 2, 2, 0, 0), "dilation");
  REQUIRE_KILN_ERROR(max_pool2d(x, 7), "too small");
  REQUIRE_KILN_ERROR(max_pool2d(zeros({2, 3, 0, 6}), 2), "max_pool2d");
  REQUIRE_KILN_ERROR(max_pool2d(x, 7), "[2, 3, 6, 6]");
  REQUIRE_KILN_ERROR(avg_pool2d(x, 3, 1, 2), "avg_pool2d");
  REQUIRE_KILN_ERROR(avg_pool2d(x, 7), "avg_pool2d");
  REQUIRE_KILN_ERROR(avg_pool2d(x, 2, 2, 0, false, true, -1), "divisor_override");
  REQUIRE_KILN_ERROR(avg_pool2d(x.to(DType::I32), 2), "avg_pool2d");
  REQUIRE_KILN_ERROR(adaptive_avg_pool2d(x, 0), "adaptive_avg_pool2d");
  REQUIRE_KILN_ERROR(adaptive_avg_pool2d(zeros({6, 6}), 2), "adaptive_avg_pool2d");
  REQUIRE_KILN_ERROR(adaptive_avg_pool2d(zeros({2, 0, 6, 6}), 2), "adaptive_avg_pool2d");
}
