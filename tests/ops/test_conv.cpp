// conv2d, conv_transpose2d and pad2d on the CPU: hand-computed values; a direct
// 7-loop convolution (f64) over strides, padding, dilation and groups (depthwise too);
// the reflect/replicate/circular modes against a naive pad + convolution;
// conv_transpose2d against a naive scatter; output-size edge cases; half dtypes and
// strided inputs; finite-difference gradient checks of every input of every op; bad
// input naming the op.
#include "test_util.h"

#include <cmath>

using namespace kiln;
using V = std::vector<Tensor>;

namespace {

struct Cfg {
  Int2 stride, padding, dilation;
  int64_t groups;
};

std::string cfg_str(const Cfg& c) {
  return detail::str("stride (", c.stride.h, ",", c.stride.w, ") padding (", c.padding.h, ",", c.padding.w,
                     ") dilation (", c.dilation.h, ",", c.dilation.w, ") groups ", c.groups);
}

// Direct convolution with zero padding, f64: y[n, o, oh, ow] = b[o] + sum over the
// group's input channels c and kernel taps (i, j) of w[o, c, i, j] x[n, g Cg + c, ih, iw].
Tensor naive_conv2d(const Tensor& x, const Tensor& w, const Tensor& b, const Cfg& c) {
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t O = w.size(0), Cg = w.size(1), kH = w.size(2), kW = w.size(3), Og = O / c.groups;
  const int64_t Ho = (H + 2 * c.padding.h - c.dilation.h * (kH - 1) - 1) / c.stride.h + 1;
  const int64_t Wo = (W + 2 * c.padding.w - c.dilation.w * (kW - 1) - 1) / c.stride.w + 1;
  std::vector<double> xv = test::values(x), wv = test::values(w), bv = b.defined() ? test::values(b) : std::vector<double>();
  std::vector<double> y(N * O * Ho * Wo, 0.0);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t o = 0; o < O; ++o)
      for (int64_t oh = 0; oh < Ho; ++oh)
        for (int64_t ow = 0; ow < Wo; ++ow) {
          double s = b.defined() ? bv[o] : 0.0;
          const int64_t g = o / Og;
          for (int64_t ci = 0; ci < Cg; ++ci)
            for (int64_t i = 0; i < kH; ++i)
              for (int64_t j = 0; j < kW; ++j) {
                const int64_t ih = oh * c.stride.h - c.padding.h + i * c.dilation.h;
                const int64_t iw = ow * c.stride.w - c.padding.w + j * c.dilation.w;
                if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                s += wv[((o * Cg + ci) * kH + i) * kW + j] * xv[((n * C + g * Cg + ci) * H + ih) * W + iw];
              }
          y[((n * O + o) * Ho + oh) * Wo + ow] = s;
        }
  (void)C;
  return from_vector<double>(y, {N, O, Ho, Wo});
}

// Naive transposed convolution by scattering: each input element adds x * w[ci, oc]
// into output (ih s - p + i d, iw s - p + j d).
Tensor naive_conv_transpose2d(const Tensor& x, const Tensor& w, const Tensor& b, const Cfg& c, Int2 out_pad) {
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t Og = w.size(1), kH = w.size(2), kW = w.size(3), O = Og * c.groups, Cg = C / c.groups;
  const int64_t Ho = (H - 1) * c.stride.h - 2 * c.padding.h + c.dilation.h * (kH - 1) + out_pad.h + 1;
  const int64_t Wo = (W - 1) * c.stride.w - 2 * c.padding.w + c.dilation.w * (kW - 1) + out_pad.w + 1;
  std::vector<double> xv = test::values(x), wv = test::values(w);
  std::vector<double> y(N * O * Ho * Wo, 0.0);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t ci = 0; ci < C; ++ci) {
      const int64_t g = ci / Cg;
      for (int64_t ih = 0; ih < H; ++ih)
        for (int64_t iw = 0; iw < W; ++iw) {
          const double xval = xv[((n * C + ci) * H + ih) * W + iw];
          for (int64_t oc = 0; oc < Og; ++oc)
            for (int64_t i = 0; i < kH; ++i)
              for (int64_t j = 0; j < kW; ++j) {
                const int64_t oh = ih * c.stride.h - c.padding.h + i * c.dilation.h;
                const int64_t ow = iw * c.stride.w - c.padding.w + j * c.dilation.w;
                if (oh < 0 || oh >= Ho || ow < 0 || ow >= Wo) continue;
                y[((n * O + g * Og + oc) * Ho + oh) * Wo + ow] += xval * wv[((ci * Og + oc) * kH + i) * kW + j];
              }
        }
    }
  Tensor out = from_vector<double>(y, {N, O, Ho, Wo});
  if (b.defined()) out = add(out, b.to(DType::F64).view({1, O, 1, 1}));
  return out;
}

// Index of the input read by padded position o of a dim of size n padded by `before`,
// by the textbook definition of each mode (-1: zero).
int64_t naive_source(int64_t o, int64_t n, int64_t before, PaddingMode mode) {
  int64_t j = o - before;
  if (j >= 0 && j < n) return j;
  if (mode == PaddingMode::Zeros) return -1;
  if (mode == PaddingMode::Replicate) return std::clamp<int64_t>(j, 0, n - 1);
  if (mode == PaddingMode::Circular) {
    while (j < 0) j += n;
    return j % n;
  }
  // reflect: bounce off the edges (without repeating them) until inside
  while (j < 0 || j >= n) j = j < 0 ? -j : 2 * (n - 1) - j;
  return j;
}

Tensor naive_pad2d(const Tensor& x, Pad2d p, PaddingMode mode) {
  const int64_t H = x.size(-2), W = x.size(-1), B = x.numel() / (H * W);
  const int64_t Ho = H + p.top + p.bottom, Wo = W + p.left + p.right;
  std::vector<double> xv = test::values(x), y(B * Ho * Wo);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t oh = 0; oh < Ho; ++oh)
      for (int64_t ow = 0; ow < Wo; ++ow) {
        const int64_t ih = naive_source(oh, H, p.top, mode), iw = naive_source(ow, W, p.left, mode);
        y[(b * Ho + oh) * Wo + ow] = ih < 0 || iw < 0 ? 0.0 : xv[(b * H + ih) * W + iw];
      }
  Shape s = x.sizes();
  s[s.size() - 2] = Ho;
  s.back() = Wo;
  return from_vector<double>(y, s);
}

Tensor rnd(const Shape& s, uint64_t seed, DType dt = DType::F64) { return test::random_tensor(s, dt, seed); }

void check_grad(const std::function<Tensor(const V&)>& f, const V& inputs) {
  GradcheckResult r = gradcheck(f, inputs);
  INFO(r.message);
  CHECK(r.ok);
}

const std::vector<Cfg>& configs() {
  static const std::vector<Cfg> v{
      {1, 0, 1, 1},           {1, 1, 1, 1},        {2, 1, 1, 1},       {{2, 3}, {1, 2}, 1, 1},
      {1, 2, 2, 1},           {{1, 2}, {3, 0}, {2, 3}, 1}, {2, 1, 1, 2},  {1, 1, 1, 4},
      {{3, 1}, {0, 1}, {1, 2}, 2}, {2, 0, 2, 4},
  };
  return v;
}

}  // namespace

TEST_CASE("conv2d: hand-computed values", "[ops][conv]") {
  // x = 0..15 in a 4x4 plane; a 3x3 box of ones sums each neighbourhood.
  Tensor x = arange(0.0, 16.0, 1.0, DType::F64).view({1, 1, 4, 4});
  Tensor w = ones({1, 1, 3, 3}, DType::F64);
  Tensor y = conv2d(x, w);
  CHECK(y.sizes() == Shape{1, 1, 2, 2});
  CHECK(test::values(y) == std::vector<double>{45, 54, 81, 90});
  // Padding 1: the corner sees x[0..1, 0..1] = 0 + 1 + 4 + 5.
  Tensor yp = conv2d(x, w, Tensor(), 1, 1);
  CHECK(yp.sizes() == Shape{1, 1, 4, 4});
  CHECK(test::values(yp)[0] == 10);
  // Stride 2 with a bias; cross-correlation (no kernel flip): w = [[1, 0], [0, -1]].
  Tensor w2 = from_vector<double>({1, 0, 0, -1}, {1, 1, 2, 2});
  Tensor y2 = conv2d(x, w2, from_vector<double>({0.5}), 2);
  CHECK(test::values(y2) == std::vector<double>{-4.5, -4.5, -4.5, -4.5});
  // Dilation 2 on a 2x2 kernel picks x[i, j] - x[i + 2, j + 2] = -10.
  Tensor y3 = conv2d(x, w2, Tensor(), 1, 0, 2);
  CHECK(y3.sizes() == Shape{1, 1, 2, 2});
  CHECK(test::values(y3) == std::vector<double>{-10, -10, -10, -10});
  // Two groups: each output channel sees only its own input channel.
  Tensor x2 = cat({x, mul(x, 2.0)}, 1);
  Tensor yg = conv2d(x2, ones({2, 1, 3, 3}, DType::F64), Tensor(), 1, 0, 1, 2);
  CHECK(test::values(yg) == std::vector<double>{45, 54, 81, 90, 90, 108, 162, 180});
}

TEST_CASE("conv2d: against a direct 7-loop convolution", "[ops][conv]") {
  uint64_t seed = 10;
  for (const Cfg& c : configs()) {
    for (bool with_bias : {false, true}) {
      INFO(cfg_str(c) << (with_bias ? " with bias" : ""));
      const int64_t C = 4, O = 4 * (c.groups == 4 ? 2 : 1) * (c.groups == 2 ? 3 : 1);
      Tensor x = rnd({2, C, 9, 8}, ++seed);
      Tensor w = rnd({O, C / c.groups, 3, 2}, ++seed);
      Tensor b = with_bias ? rnd({O}, ++seed) : Tensor();
      Tensor ref = naive_conv2d(x, w, b, c);
      Tensor y = conv2d(x, w, b, c.stride, c.padding, c.dilation, c.groups);
      CHECK_CLOSE(y, ref);
      // f32 through sgemm.
      Tensor y32 = conv2d(x.to(DType::F32), w.to(DType::F32), with_bias ? b.to(DType::F32) : Tensor(), c.stride,
                          c.padding, c.dilation, c.groups);
      CHECK(y32.dtype() == DType::F32);
      CHECK_CLOSE_TOL(y32, ref, 1e-5, 1e-5);
    }
  }
}

TEST_CASE("conv2d: depthwise, 1x1, unbatched and strided inputs", "[ops][conv]") {
  // Depthwise with channel multiplier 2: groups = C.
  Tensor x = rnd({3, 5, 13, 13}, 1);
  Tensor w = rnd({10, 1, 3, 3}, 2);
  Cfg dw{2, 1, 1, 5};
  CHECK_CLOSE(conv2d(x, w, Tensor(), 2, 1, 1, 5), naive_conv2d(x, w, Tensor(), dw));
  // 1x1, stride 1, no padding takes the no-im2col path, with and without groups.
  Tensor w1 = rnd({6, 5, 1, 1}, 3);
  CHECK_CLOSE(conv2d(x, w1), naive_conv2d(x, w1, Tensor(), {1, 0, 1, 1}));
  Tensor x6 = rnd({2, 6, 4, 7}, 4);
  Tensor w1g = rnd({4, 3, 1, 1}, 5);
  CHECK_CLOSE(conv2d(x6, w1g, Tensor(), 1, 0, 1, 2), naive_conv2d(x6, w1g, Tensor(), {1, 0, 1, 2}));
  // 1x1 with stride 2 goes through im2col.
  CHECK_CLOSE(conv2d(x, w1, Tensor(), 2), naive_conv2d(x, w1, Tensor(), {2, 0, 1, 1}));
  // Unbatched (C, H, W) input gives (O, Ho, Wo).
  Tensor wu = rnd({2, 5, 3, 3}, 6);
  Tensor yu = conv2d(x[1], wu, Tensor(), 1, 1);
  CHECK(yu.sizes() == Shape{2, 13, 13});
  CHECK_CLOSE(yu, naive_conv2d(x.narrow(0, 1, 1), wu, Tensor(), {1, 1, 1, 1})[0]);
  // Non-contiguous input and weight.
  Tensor xs = test::noncontiguous(x), ws = test::strided_copy(wu);
  REQUIRE_FALSE(xs.is_contiguous());
  CHECK_CLOSE(conv2d(xs, ws, Tensor(), 2, 1), naive_conv2d(x, wu, Tensor(), {2, 1, 1, 1}));
}

TEST_CASE("conv2d: half dtypes on the CPU", "[ops][conv]") {
  Tensor x = rnd({2, 4, 7, 6}, 7), w = rnd({6, 2, 3, 3}, 8), b = rnd({6}, 9);
  for (DType dt : {DType::F16, DType::BF16}) {
    INFO(dtype_name(dt));
    Tensor xh = x.to(dt), wh = w.to(dt), bh = b.to(dt);
    Tensor y = conv2d(xh, wh, bh, 1, 1, 1, 2);
    CHECK(y.dtype() == dt);
    // Reference from the rounded operands; the output is rounded once.
    Tensor ref = naive_conv2d(xh, wh, bh, {1, 1, 1, 2});
    const double tol = dt == DType::F16 ? 2e-3 : 1.6e-2;
    CHECK_CLOSE_TOL(y, ref, tol, tol);
  }
}

TEST_CASE("conv2d: output sizes", "[ops][conv]") {
  Tensor w = ones({1, 1, 3, 3}, DType::F64);
  // Kernel exactly covering the padded input: 1x1 output.
  CHECK(conv2d(ones({1, 1, 3, 3}, DType::F64), w).sizes() == Shape{1, 1, 1, 1});
  CHECK(conv2d(ones({1, 1, 1, 1}, DType::F64), w, Tensor(), 1, 1).sizes() == Shape{1, 1, 1, 1});
  // Floor division drops the last partial stride: (10 + 2 - 3) / 4 + 1 = 3.
  CHECK(conv2d(ones({1, 1, 10, 10}, DType::F64), w, Tensor(), 4, 1).sizes() == Shape{1, 1, 3, 3});
  // Dilation widens the kernel to 5: (7 - 5) / 1 + 1 = 3; rectangular stride and padding.
  CHECK(conv2d(ones({1, 1, 7, 7}, DType::F64), w, Tensor(), {1, 3}, {0, 1}, 2).sizes() == Shape{1, 1, 3, 2});
  CHECK(conv_output_size(224, 7, 2, 3, 1) == 112);
  CHECK(conv_transpose_output_size(112, 4, 2, 1, 1, 0) == 224);
  // An empty batch gives an empty output.
  Tensor e = conv2d(empty({0, 1, 5, 5}, DType::F64), w);
  CHECK(e.sizes() == Shape{0, 1, 3, 3});
  // Too small: the kernel does not fit.
  REQUIRE_KILN_ERROR(conv2d(ones({1, 1, 2, 2}, DType::F64), w), "conv2d");
  REQUIRE_KILN_ERROR(conv2d(ones({1, 1, 5, 5}, DType::F64), w, Tensor(), 1, 0, 3), "too small");
}

TEST_CASE("conv2d: reflect, replicate and circular padding modes", "[ops][conv]") {
  uint64_t seed = 40;
  for (PaddingMode mode : {PaddingMode::Reflect, PaddingMode::Replicate, PaddingMode::Circular, PaddingMode::Zeros}) {
    for (const Cfg& c : {Cfg{1, 1, 1, 1}, Cfg{2, {2, 1}, 1, 2}, Cfg{1, {1, 3}, {2, 1}, 1}, Cfg{{1, 2}, 2, 1, 4}}) {
      INFO(padding_mode_name(mode) << " " << cfg_str(c));
      Tensor x = rnd({2, 4, 6, 5}, ++seed), w = rnd({4, 4 / c.groups, 3, 3}, ++seed), b = rnd({4}, ++seed);
      Tensor xp = naive_pad2d(x, {c.padding.w, c.padding.w, c.padding.h, c.padding.h}, mode);
      Tensor ref = naive_conv2d(xp, w, b, {c.stride, 0, c.dilation, c.groups});
      CHECK_CLOSE(conv2d(x, w, b, c.stride, c.padding, c.dilation, c.groups, mode), ref);
    }
  }
  // Reflect needs padding < size; circular allows padding == size.
  Tensor x = rnd({1, 1, 3, 3}, 1), w = rnd({1, 1, 1, 1}, 2);
  REQUIRE_KILN_ERROR(conv2d(x, w, Tensor(), 1, 3, 1, 1, PaddingMode::Reflect), "conv2d");
  CHECK(conv2d(x, w, Tensor(), 1, 3, 1, 1, PaddingMode::Circular).sizes() == Shape{1, 1, 9, 9});
  REQUIRE_KILN_ERROR(conv2d(x, w, Tensor(), 1, 4, 1, 1, PaddingMode::Circular), "conv2d");
}

TEST_CASE("pad2d: values of each mode", "[ops][conv][pad]") {
  Tensor x = from_vector<double>({1, 2, 3, 4, 5, 6}, {2, 3});
  // F.pad(x, (2, 1, 1, 0), mode) for a 2x3 plane, as PyTorch gives it.
  CHECK(test::values(pad2d(x, {2, 1, 1, 0}, PaddingMode::Zeros)) ==
        std::vector<double>{0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 0, 0, 0, 4, 5, 6, 0});
  CHECK(test::values(pad2d(x, {2, 1, 1, 0}, PaddingMode::Reflect)) ==
        std::vector<double>{6, 5, 4, 5, 6, 5, 3, 2, 1, 2, 3, 2, 6, 5, 4, 5, 6, 5});
  CHECK(test::values(pad2d(x, {2, 1, 1, 0}, PaddingMode::Replicate)) ==
        std::vector<double>{1, 1, 1, 2, 3, 3, 1, 1, 1, 2, 3, 3, 4, 4, 4, 5, 6, 6});
  CHECK(test::values(pad2d(x, {2, 1, 1, 0}, PaddingMode::Circular)) ==
        std::vector<double>{5, 6, 4, 5, 6, 4, 2, 3, 1, 2, 3, 1, 5, 6, 4, 5, 6, 4});
  // Any leading dims, every floating dtype, strided input.
  Tensor y = rnd({2, 3, 5, 4}, 3);
  for (PaddingMode mode : {PaddingMode::Zeros, PaddingMode::Reflect, PaddingMode::Replicate, PaddingMode::Circular}) {
    INFO(padding_mode_name(mode));
    Pad2d p{3, 1, 0, 4};
    CHECK_CLOSE(pad2d(test::noncontiguous(y), p, mode), naive_pad2d(y, p, mode));
    for (DType dt : test::floating_dtypes()) CHECK_EQUAL_T(pad2d(y.to(dt), p, mode), naive_pad2d(y.to(dt), p, mode).to(dt));
  }
  CHECK(pad2d(y[0][0], {}, PaddingMode::Reflect).sizes() == Shape{5, 4});
  REQUIRE_KILN_ERROR(pad2d(y, {4, 0, 0, 0}, PaddingMode::Reflect), "pad2d");
  REQUIRE_KILN_ERROR(pad2d(y, {5, 0, 0, 0}, PaddingMode::Circular), "pad2d");
  REQUIRE_KILN_ERROR(pad2d(y, {-1, 0, 0, 0}), "pad2d");
  REQUIRE_KILN_ERROR(pad2d(from_vector<double>({1, 2}), {1, 1, 1, 1}), "pad2d");
  REQUIRE_KILN_ERROR(pad2d(ones({2, 2}, DType::I64), {1, 1, 1, 1}), "pad2d");
}

TEST_CASE("conv_transpose2d: against a naive scatter", "[ops][conv]") {
  uint64_t seed = 60;
  struct T {
    Cfg c;
    Int2 out_pad;
  };
  for (const T& t : {T{{1, 0, 1, 1}, 0}, T{{2, 1, 1, 1}, 1}, T{{{2, 3}, {0, 1}, 1, 1}, {1, 2}},
                     T{{2, 1, 2, 2}, {1, 0}}, T{{3, 2, 1, 3}, 2}, T{{1, 1, 2, 3}, 1},  // output_padding < dilation only
                     T{{{1, 2}, {1, 0}, {3, 1}, 1}, {2, 1}}}) {
    for (bool with_bias : {false, true}) {
      INFO(cfg_str(t.c) << " output_padding (" << t.out_pad.h << "," << t.out_pad.w << ")"
                        << (with_bias ? " with bias" : ""));
      const int64_t C = 6, Og = 2;
      Tensor x = rnd({2, C, 5, 4}, ++seed), w = rnd({C, Og, 3, 2}, ++seed);
      Tensor b = with_bias ? rnd({Og * t.c.groups}, ++seed) : Tensor();
      Tensor ref = naive_conv_transpose2d(x, w, b, t.c, t.out_pad);
      Tensor y = conv_transpose2d(x, w, b, t.c.stride, t.c.padding, t.out_pad, t.c.groups, t.c.dilation);
      CHECK_CLOSE(y, ref);
      Tensor y32 = conv_transpose2d(x.to(DType::F32), w.to(DType::F32), with_bias ? b.to(DType::F32) : Tensor(),
                                    t.c.stride, t.c.padding, t.out_pad, t.c.groups, t.c.dilation);
      CHECK_CLOSE_TOL(y32, ref, 1e-5, 1e-5);
    }
  }
  // PyTorch's argument order: (..., output_padding, groups, dilation), as
  // F.conv_transpose2d(x, w, b, stride, padding, output_padding, groups, dilation).
  {
    Tensor xg = rnd({1, 4, 5, 5}, 41), wg = rnd({4, 3, 3, 3}, 42);
    CHECK_CLOSE(conv_transpose2d(xg, wg, Tensor(), 1, 0, 0, 2), naive_conv_transpose2d(xg, wg, Tensor(), {1, 0, 1, 2}, 0));
    CHECK_CLOSE(conv_transpose2d(xg, wg, Tensor(), 1, 0, 0, 2, 2),
                naive_conv_transpose2d(xg, wg, Tensor(), {1, 0, 2, 2}, 0));
  }
  // The classic DCGAN up-sampling step: k4 s2 p1 doubles the size.
  Tensor x = rnd({1, 3, 7, 7}, 1), w = rnd({3, 2, 4, 4}, 2);
  CHECK(conv_transpose2d(x, w, Tensor(), 2, 1).sizes() == Shape{1, 2, 14, 14});
  // Unbatched input.
  CHECK_CLOSE(conv_transpose2d(x[0], w, Tensor(), 2, 1), naive_conv_transpose2d(x, w, Tensor(), {2, 1, 1, 1}, 0)[0]);
}

TEST_CASE("conv2d and conv_transpose2d: gradient checks", "[ops][conv][gradcheck]") {
  Tensor x = rnd({2, 4, 5, 6}, 1), w = rnd({4, 2, 3, 3}, 2), b = rnd({4}, 3);
  for (PaddingMode mode : {PaddingMode::Zeros, PaddingMode::Reflect, PaddingMode::Replicate, PaddingMode::Circular}) {
    INFO(padding_mode_name(mode));
    check_grad([mode](const V& v) { return conv2d(v[0], v[1], v[2], {2, 1}, {1, 2}, 1, 2, mode); }, {x, w, b});
    check_grad([mode](const V& v) { return conv2d(v[0], v[1], Tensor(), 1, 1, {2, 1}, 1, mode); },
               {x, rnd({3, 4, 2, 3}, 4)});
  }
  // Depthwise, dilated.
  check_grad([](const V& v) { return conv2d(v[0], v[1], v[2], 1, 2, 2, 4); }, {x, rnd({4, 1, 3, 3}, 5), b});
  // conv_transpose2d, including output_padding that reaches past the stride.
  Tensor xt = rnd({2, 4, 3, 4}, 6), wt = rnd({4, 3, 3, 2}, 7), bt = rnd({6}, 8);
  check_grad([](const V& v) { return conv_transpose2d(v[0], v[1], v[2], 2, 1, 1, 2, 1); }, {xt, wt, bt});
  check_grad([](const V& v) { return conv_transpose2d(v[0], v[1], Tensor(), 1, {1, 0}, 1, 2, 2); }, {xt, wt});
  check_grad([](const V& v) { return conv_transpose2d(v[0], v[1], Tensor(), {3, 2}, 0, {2, 1}, 1, 1); },
             {xt, rnd({4, 2, 2, 3}, 9)});
  // conv2d's gradients as ops of their own.
  check_grad([](const V& v) { return conv2d_input_grad({2, 4, 5, 6}, v[0], v[1], 2, 1, 1, 2); },
             {w, rnd({2, 4, 3, 3}, 10)});
  check_grad([](const V& v) { return conv2d_weight_grad(v[0], {4, 2, 3, 3}, v[1], 2, 1, 1, 2); },
             {x, rnd({2, 4, 3, 3}, 11)});
}

TEST_CASE("conv2d gradients: values against the naive formulas", "[ops][conv]") {
  // dx is the transposed convolution of dy; dw correlates x with dy; db sums dy.
  Tensor x = rnd({2, 6, 7, 5}, 1).set_requires_grad(true), w = rnd({4, 3, 3, 3}, 2).set_requires_grad(true);
  Tensor b = rnd({4}, 3).set_requires_grad(true);
  Tensor y = conv2d(x, w, b, 2, 1, 1, 2);
  Tensor gy = rnd(y.sizes(), 4);
  y.backward(gy);
  CHECK_CLOSE(x.grad(), naive_conv_transpose2d(gy, w.detach(), Tensor(), {2, 1, 1, 2}, {0, 0}));
  CHECK_CLOSE(b.grad(), sum(gy, {0, 2, 3}));
  CHECK_CLOSE(conv2d_input_grad(x.sizes(), w.detach(), gy, 2, 1, 1, 2), x.grad());
  CHECK_CLOSE(conv2d_weight_grad(x.detach(), w.sizes(), gy, 2, 1, 1, 2), w.grad());
}

TEST_CASE("conv2d: large weight blocks (BLAS) and thin ones (plain loops)", "[ops][conv]") {
  // The CPU products switch from loops to OpenBLAS when a group's weight block exceeds
  // 256 elements; both sides, forward and both gradients, against the naive formulas.
  uint64_t seed = 80;
  for (int64_t groups : {1, 2, 8}) {
    for (DType dt : {DType::F64, DType::F32}) {
      INFO("groups " << groups << " " << dtype_name(dt));
      Tensor x = rnd({2, 16, 9, 8}, ++seed), w = rnd({24, 16 / groups, 3, 3}, ++seed), b = rnd({24}, ++seed);
      Tensor xd = x.to(dt).set_requires_grad(true), wd = w.to(dt).set_requires_grad(true);
      Tensor y = conv2d(xd, wd, b.to(dt), 2, 1, 1, groups);
      const Cfg c{2, 1, 1, groups};
      const double tol = dt == DType::F64 ? 1e-12 : 2e-5;
      CHECK_CLOSE_TOL(y, naive_conv2d(x.to(dt), w.to(dt), b.to(dt), c), tol, tol);
      Tensor gy = rnd(y.sizes(), ++seed);
      y.backward(gy.to(dt));
      Tensor gx_ref = naive_conv_transpose2d(gy, w.to(dt), Tensor(), c, {1, 1});
      CHECK_CLOSE_TOL(xd.grad(), gx_ref.narrow(2, 0, 9).narrow(3, 0, 8), tol, tol);
      // dw[o, c, i, j] = sum over n, oh, ow of gy[n, o, oh, ow] x[n, g Cg + c, oh s - p + i, ow s - p + j].
      std::vector<double> gyv = test::values(gy), xv = test::values(x.to(dt)), gw(w.numel(), 0.0);
      const int64_t Cg = 16 / groups, Og = 24 / groups, Ho = y.size(2), Wo = y.size(3);
      for (int64_t n = 0; n < 2; ++n)
        for (int64_t o = 0; o < 24; ++o)
          for (int64_t ci = 0; ci < Cg; ++ci)
            for (int64_t i = 0; i < 3; ++i)
              for (int64_t j = 0; j < 3; ++j)
                for (int64_t oh = 0; oh < Ho; ++oh)
                  for (int64_t ow = 0; ow < Wo; ++ow) {
                    const int64_t ih = oh * 2 - 1 + i, iw = ow * 2 - 1 + j;
                    if (ih < 0 || ih >= 9 || iw < 0 || iw >= 8) continue;
                    gw[((o * Cg + ci) * 3 + i) * 3 + j] += gyv[((n * 24 + o) * Ho + oh) * Wo + ow] *
                                                           xv[((n * 16 + (o / Og) * Cg + ci) * 9 + ih) * 8 + iw];
                  }
      CHECK_CLOSE_TOL(wd.grad(), from_vector<double>(gw, w.sizes()), tol, tol);
    }
  }
}

TEST_CASE("pad2d: gradient checks", "[ops][conv][pad][gradcheck]") {
  Tensor x = rnd({2, 3, 4, 5}, 1);
  for (PaddingMode mode : {PaddingMode::Zeros, PaddingMode::Reflect, PaddingMode::Replicate, PaddingMode::Circular}) {
    INFO(padding_mode_name(mode));
    check_grad([mode](const V& v) { return pad2d(v[0], {3, 2, 1, 3}, mode); }, {x});
    check_grad([mode](const V& v) { return pad2d(v[0].transpose(-1, -2), {0, 1, 4, 2}, mode); }, {x});
  }
  // Replicate pads beyond the size.
  check_grad([](const V& v) { return pad2d(v[0], {7, 6, 9, 8}, PaddingMode::Replicate); }, {x});
}

TEST_CASE("conv2d, conv_transpose2d: bad input", "[ops][conv]") {
  Tensor x = ones({2, 4, 6, 6}), w = ones({6, 2, 3, 3});
  REQUIRE_KILN_ERROR(conv2d(Tensor(), w), "conv2d");
  REQUIRE_KILN_ERROR(conv2d(x, Tensor()), "conv2d");
  REQUIRE_KILN_ERROR(conv2d(ones({4, 6, 6, 1, 1}), w, Tensor(), 1, 0, 1, 2), "conv2d");  // 5-D input
  REQUIRE_KILN_ERROR(conv2d(ones({4, 6}), w), "conv2d");
  REQUIRE_KILN_ERROR(conv2d(x, ones({6, 2, 3})), "conv2d");                                // 3-D weight
  REQUIRE_KILN_ERROR(conv2d(x, w), "conv2d");                                              // 4 channels vs 2
  REQUIRE_KILN_ERROR(conv2d(x, w, Tensor(), 1, 0, 1, 3), "groups");                        // 4 % 3
  REQUIRE_KILN_ERROR(conv2d(x, ones({5, 2, 3, 3}), Tensor(), 1, 0, 1, 2), "divisible");    // 5 % 2
  REQUIRE_KILN_ERROR(conv2d(x, w, Tensor(), 0, 0, 1, 2), "stride");
  REQUIRE_KILN_ERROR(conv2d(x, w, Tensor(), 1, -1, 1, 2), "padding");
  REQUIRE_KILN_ERROR(conv2d(x, w, Tensor(), 1, 0, 0, 2), "dilation");
  REQUIRE_KILN_ERROR(conv2d(x, w, Tensor(), 1, 0, 1, 0), "groups");
  REQUIRE_KILN_ERROR(conv2d(x, w, ones({5}), 1, 0, 1, 2), "bias");
  REQUIRE_KILN_ERROR(conv2d(x, w, ones({6}, DType::F64), 1, 0, 1, 2), "bias");
  REQUIRE_KILN_ERROR(conv2d(x, w.to(DType::F64), Tensor(), 1, 0, 1, 2), "dtype");
  REQUIRE_KILN_ERROR(conv2d(x.to(DType::I64), w.to(DType::I64), Tensor(), 1, 0, 1, 2), "conv2d");
  REQUIRE_KILN_ERROR(conv2d(ones({2, 4, 0, 6}), w, Tensor(), 1, 0, 1, 2), "conv2d");
  REQUIRE_KILN_ERROR(conv2d(x, ones({0, 2, 3, 3}), Tensor(), 1, 0, 1, 2), "conv2d");
  // The message names the shapes.
  REQUIRE_KILN_ERROR(conv2d(x, w), "[6, 2, 3, 3]");
  REQUIRE_KILN_ERROR(conv2d(x, w), "[2, 4, 6, 6]");

  Tensor wt = ones({4, 3, 3, 3});
  REQUIRE_KILN_ERROR(conv_transpose2d(x, ones({3, 3, 3, 3})), "conv_transpose2d");
  REQUIRE_KILN_ERROR(conv_transpose2d(x, wt, Tensor(), 1, 0, 1), "output_padding");  // 1 >= stride 1 and dilation 1
  REQUIRE_KILN_ERROR(conv_transpose2d(x, wt, Tensor(), 2, 0, 2), "output_padding");
  REQUIRE_KILN_ERROR(conv_transpose2d(x, wt, Tensor(), 1, 0, 0, 3), "conv_transpose2d");  // 4 % 3
  REQUIRE_KILN_ERROR(conv_transpose2d(x, wt, ones({4})), "bias");
  REQUIRE_KILN_ERROR(conv_transpose2d(ones({1, 4, 1, 1}), wt, Tensor(), 1, 2), "too small");

  // Sizes whose output-size arithmetic overflows int64 are refused, naming the computation.
  const int64_t huge = int64_t{1} << 62;
  REQUIRE_KILN_ERROR(conv_output_size(huge, 3, 1, huge, 1), "overflows int64");
  REQUIRE_KILN_ERROR(conv_transpose_output_size(huge, 3, 4, 0, 1, 0), "overflows int64");
  REQUIRE_KILN_ERROR(conv2d(x, w, Tensor(), 1, huge, 1, 2), "overflows int64");

  REQUIRE_KILN_ERROR(conv2d_input_grad({2, 4, 6, 6}, w, ones({2, 6, 5, 5}), 1, 0, 1, 2), "conv2d_input_grad");
  REQUIRE_KILN_ERROR(conv2d_weight_grad(x, {6, 2, 3, 3}, ones({2, 6, 4, 5}), 1, 0, 1, 2), "conv2d_weight_grad");
  REQUIRE_KILN_ERROR(conv2d_weight_grad(x, {6, 3, 3, 3}, ones({2, 6, 4, 4}), 1, 0, 1, 2), "conv2d_weight_grad");
}
