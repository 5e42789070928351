// oneDNN's convolutions (ops/cpu/onednn.cpp) against kiln's own loops (ops/cpu/conv.cpp),
// the reference: each of the three products over geometries that exercise what the
// oneDNN path translates (strides, padding, dilation, groups, bias, a negative right
// padding, conv_transpose2d's extra rows, the whole-input kernels it computes as one matrix
// product, one input channel), and the fall-backs (f64, f16) bit for bit.
#include <kiln/ops/cpu/onednn.h>

#include "test_util.h"

namespace kiln {
namespace {

using test::random_tensor;

struct Case {
  int64_t N, C, H, W, O, kH, kW;
  Conv2dGeometry g;
  bool bias;
  int64_t extra = 0;  // input rows/cols no output reads (conv_transpose2d's output_padding)
};

int64_t out_size(int64_t in, int64_t k, int64_t s, int64_t p, int64_t d) { return (in + 2 * p - d * (k - 1) - 1) / s + 1; }

Conv2dGeometry geom(int64_t s, int64_t p, int64_t d, int64_t groups) {
  Conv2dGeometry g;
  g.stride_h = g.stride_w = s;
  g.pad_h = g.pad_w = p;
  g.dilation_h = g.dilation_w = d;
  g.groups = groups;
  return g;
}

std::vector<Case> cases() {
  return {
      {2, 3, 7, 9, 4, 3, 3, geom(1, 1, 1, 1), false},
      {2, 3, 7, 9, 4, 3, 3, geom(1, 1, 1, 1), true},
      {3, 16, 28, 28, 32, 1, 1, geom(2, 0, 1, 1), false},  // strided 1x1: negative right padding
      {2, 8, 11, 10, 8, 3, 3, geom(2, 1, 1, 1), true},
      {2, 4, 12, 13, 6, 3, 3, geom(1, 2, 2, 1), false},    // dilation 2
      {2, 4, 9, 9, 6, 3, 3, geom(1, 1, 1, 2), true},       // 2 groups
      {2, 8, 9, 9, 8, 3, 3, geom(1, 1, 1, 8), false},      // depthwise
      {1, 5, 13, 11, 7, 5, 5, geom(3, 2, 1, 1), true},     // odd everything
      {2, 6, 9, 9, 4, 4, 4, geom(2, 1, 1, 1), false, 1},   // as conv_transpose2d with output_padding 1
      // matrix products (ops/cpu/onednn.cpp): the kernel covers the whole input (a transposed
      // convolution from 1 x 1 latents), without and with bias
      {5, 64, 7, 7, 100, 7, 7, geom(1, 0, 1, 1), false},
      {3, 8, 4, 5, 6, 4, 5, geom(2, 0, 1, 1), true},
      // one input channel: the data gradient runs kiln's loops (a transposed convolution to one channel)
      {4, 1, 28, 28, 32, 4, 4, geom(2, 1, 1, 1), false},
  };
}

struct Operands {
  Tensor x, w, b, y;
};

Operands make(const Case& c, DType dt, uint64_t seed) {
  const int64_t H = c.H, W = c.W;
  const int64_t Ho = out_size(H - c.extra, c.kH, c.g.stride_h, c.g.pad_h, c.g.dilation_h);
  const int64_t Wo = out_size(W - c.extra, c.kW, c.g.stride_w, c.g.pad_w, c.g.dilation_w);
  Operands o;
  o.x = random_tensor({c.N, c.C, H, W}, dt, seed);
  o.w = random_tensor({c.O, c.C / c.g.groups, c.kH, c.kW}, dt, seed + 1, 0.3);
  if (c.bias) o.b = random_tensor({c.O}, dt, seed + 2);
  o.y = random_tensor({c.N, c.O, Ho, Wo}, dt, seed + 3);
  return o;
}

std::string describe(const Case& c) {
  std::ostringstream os;
  os << "x (" << c.N << ", " << c.C << ", " << c.H << ", " << c.W << ") w (" << c.O << ", " << c.C / c.g.groups
     << ", " << c.kH << ", " << c.kW << ") stride " << c.g.stride_h << " pad " << c.g.pad_h << " dilation "
     << c.g.dilation_h << " groups " << c.g.groups << (c.bias ? " bias" : "") << " extra " << c.extra;
  return os.str();
}

TensorView view_or_none(const Tensor& t) { return t.defined() ? kernel_view(t) : TensorView{}; }

// The three products through `fwd`, `bwd_data`, `bwd_weight` kernel functions.
template <class F1, class F2, class F3>
std::vector<Tensor> products(const Case& c, const Operands& o, F1 fwd, F2 bwd_data, F3 bwd_weight) {
  Tensor y = empty_like(o.y), gx = empty_like(o.x), gw = empty_like(o.w);
  fwd(kernel_view(o.x), kernel_view(o.w), view_or_none(o.b), kernel_view(y), c.g);
  bwd_data(kernel_view(o.y), kernel_view(o.w), kernel_view(gx), c.g);
  bwd_weight(kernel_view(o.x), kernel_view(o.y), kernel_view(gw), c.g);
  return {y, gx, gw};
}

TEST_CASE("oneDNN convolutions match kiln's reference loops", "[onednn][conv]") {
  if (!onednn::enabled()) {
    WARN("KILN_ONEDNN=0: the oneDNN kernels are off, nothing to compare");
    return;
  }
  // The CPU slots hold the oneDNN kernels, so every conv2d on the CPU runs them.
  CHECK(kernel<op::conv2d_forward>(kCPU) == &onednn::conv2d_forward);
  CHECK(kernel<op::conv2d_backward_data>(kCPU) == &onednn::conv2d_backward_data);
  CHECK(kernel<op::conv2d_backward_weight>(kCPU) == &onednn::conv2d_backward_weight);
  uint64_t seed = 10;
  for (const Case& c : cases()) {
    INFO(describe(c));
    const Operands o = make(c, DType::F32, seed += 10);
    auto got = products(c, o, onednn::conv2d_forward, onednn::conv2d_backward_data, onednn::conv2d_backward_weight);
    auto ref = products(c, o, cpu::conv2d_forward, cpu::conv2d_backward_data, cpu::conv2d_backward_weight);
    // Each output is a sum of `terms` products of N(0, 1)-sized values, added in another
    // order: the rounding difference grows with the terms, not with the (possibly
    // cancelled) result, so the absolute tolerance does too.
    const int64_t Ho = o.y.size(2), Wo = o.y.size(3);
    const int64_t terms[] = {c.C / c.g.groups * c.kH * c.kW, c.O / c.g.groups * c.kH * c.kW, c.N * Ho * Wo};
    const char* names[] = {"forward", "backward data", "backward weight"};
    for (int i = 0; i < 3; ++i) {
      INFO(names[i]);
      CHECK(test::compare(got[i], ref[i], 1e-5, 1e-6 + 1e-7 * static_cast<double>(terms[i])) == "");
    }
  }
}

TEST_CASE("oneDNN kernels hand f64 and f16 to the reference unchanged", "[onednn][conv]") {
  const Case c{2, 3, 7, 9, 4, 3, 3, geom(1, 1, 1, 1), true};
  for (DType dt : {DType::F64, DType::F16}) {
    INFO(dtype_name(dt));
    const Operands o = make(c, dt, 77);
    auto got = products(c, o, onednn::conv2d_forward, onednn::conv2d_backward_data, onednn::conv2d_backward_weight);
    auto ref = products(c, o, cpu::conv2d_forward, cpu::conv2d_backward_data, cpu::conv2d_backward_weight);
    for (int i = 0; i < 3; ++i) CHECK(test::bit_equal(got[i], ref[i]));
  }
}

TEST_CASE("oneDNN convolutions are deterministic for a thread count", "[onednn][conv]") {
  const Case c{8, 16, 14, 14, 16, 3, 3, geom(1, 1, 1, 1), false};
  const Operands o = make(c, DType::F32, 5);
  const int saved = num_threads();
  for (int t : {1, 2}) {
    set_num_threads(t);
    auto a = products(c, o, onednn::conv2d_forward, onednn::conv2d_backward_data, onednn::conv2d_backward_weight);
    auto b = products(c, o, onednn::conv2d_forward, onednn::conv2d_backward_data, onednn::conv2d_backward_weight);
    for (int i = 0; i < 3; ++i) CHECK(test::bit_equal(a[i], b[i]));
  }
  set_num_threads(saved);
}

}  // namespace
}  // namespace kiln

namespace kiln {
namespace {
// a (B, M, K) and b (B, K, N) in the layouts matmul hands its slot: row-major, transposed
// (column-major), and a weight broadcast over the batch (stride 0).
TensorView view3(const Tensor& t, bool transposed, bool broadcast, int64_t batch) {
  Tensor u = transposed ? t.transpose(-1, -2).contiguous().transpose(-1, -2) : t.contiguous();
  if (broadcast) u = u.expand({batch, u.size(-2), u.size(-1)});
  return kernel_view(u);
}
}  // namespace

TEST_CASE("oneDNN's sgemm fills the f32 matmul slot and matches OpenBLAS", "[onednn][matmul]") {
  const std::vector<std::array<int64_t, 4>> sizes{{1, 1, 1, 1}, {1, 7, 33, 5}, {3, 64, 128, 96}, {2, 768, 128, 73},
                                                  {1, 73, 768, 128}, {4, 5, 1, 9}};
  for (auto [B, M, K, N] : sizes)
    for (bool ta : {false, true})
      for (bool tb : {false, true})
        for (bool bcast : {false, true}) {
          INFO(B << "x" << M << "x" << K << "x" << N << " ta " << ta << " tb " << tb << " broadcast b " << bcast);
          Tensor a = random_tensor({B, M, K}, DType::F32, 3), b = random_tensor({bcast ? 1 : B, K, N}, DType::F32, 4);
          const TensorView va = view3(a, ta, false, B), vb = view3(b, tb, bcast, B);
          Tensor got = empty({B, M, N}), ref = empty({B, M, N});
          onednn::matmul(va, vb, kernel_view(got));
          cpu::matmul(va, vb, kernel_view(ref));
          CHECK(test::compare(got, ref, 1e-5, 1e-6 + 1e-7 * static_cast<double>(K)) == "");
        }
  // f64 and bf16 go to the reference unchanged.
  for (DType dt : {DType::F64, DType::BF16}) {
    Tensor a = random_tensor({2, 5, 7}, dt, 5), b = random_tensor({2, 7, 3}, dt, 6);
    Tensor got = empty({2, 5, 3}, dt), ref = empty({2, 5, 3}, dt);
    onednn::matmul(kernel_view(a), kernel_view(b), kernel_view(got));
    cpu::matmul(kernel_view(a), kernel_view(b), kernel_view(ref));
    CHECK(test::bit_equal(got, ref));
  }
}

}  // namespace kiln
