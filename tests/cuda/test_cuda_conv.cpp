// conv2d, conv_transpose2d and pad2d on CUDA (cuDNN and cuda/kernels/pad.cu) against
// the CPU reference: forward values and every input gradient through autograd, on odd
// shapes (N = 3, C = 5, 13x13, stride 2, groups 1 and 5 = depthwise, dilation,
// rectangular kernels, 1x1), every padding mode, transposed convolutions (including an
// output_padding past the stride), f32, f16, bf16 and f64, non-contiguous inputs, an
// empty batch and a larger problem that needs workspace.
//
// Tolerances: the reference is the CPU result in f64 on the same (rounded) inputs.
// cuDNN sums in a different order and some of its algorithms (Winograd, FFT) transform
// the operands, so f32 is held to about 1e-4 relative to the output's scale rather than
// the elementwise 1.3e-6; f16/bf16 outputs are rounded once from f32 accumulators.
#include "test_util.h"

#include <cmath>

using namespace kiln;
using test::cuda0;
using V = std::vector<Tensor>;

namespace {

// Tolerance for outputs that are sums of `terms` products of O(1) values in dtype t.
test::Tol conv_tol(DType t, int64_t terms) {
  const double scale = std::sqrt(static_cast<double>(std::max<int64_t>(terms, 1)));
  switch (t) {
    case DType::F64: return {1e-10, 1e-10 * scale};
    case DType::F32: return {1e-4, 2e-5 * scale};
    case DType::F16: return {4e-3, 2e-3 * scale};
    default: return {2e-2, 1e-2 * scale};  // bf16
  }
}

// Runs f on CPU f64 leaves and on CUDA leaves of dtype dt holding the same (dt-rounded)
// values; compares the outputs and, after backpropagating the same output gradient, the
// gradients of every input.
void compare(const std::function<Tensor(const V&)>& f, const std::vector<Shape>& shapes, DType dt, uint64_t seed,
             int64_t terms, bool backward = true) {
  V cpu, gpu;
  for (size_t i = 0; i < shapes.size(); ++i) {
    Tensor x = test::random_tensor(shapes[i], dt, seed + i);  // rounded to dt
    // detach(): for f64, to(F64) is x itself, which must not become a grad-requiring
    // parent of the CUDA copy.
    cpu.push_back(x.to(DType::F64).detach().set_requires_grad(backward));
    gpu.push_back(x.to(cuda0()).detach().set_requires_grad(backward));
  }
  Tensor yc = f(cpu), yg = f(gpu);
  REQUIRE(yg.is_cuda());
  REQUIRE(yg.dtype() == dt);
  const test::Tol tol = conv_tol(dt, terms);
  CHECK_CLOSE_TOL(yg.cpu(), yc, tol.rtol, tol.atol);
  if (!backward) return;
  Tensor w = test::random_tensor(yc.sizes(), dt, seed + 100);
  yc.backward(w.to(DType::F64));
  yg.backward(w.to(cuda0()));
  for (size_t i = 0; i < shapes.size(); ++i) {
    INFO("gradient of input " << i);
    REQUIRE(gpu[i].grad().defined());
    CHECK(gpu[i].grad().is_cuda());
    CHECK(gpu[i].grad().dtype() == dt);
    // Gradients sum over more terms than the forward (the batch and the output plane).
    const test::Tol gt = conv_tol(dt, terms * 16);
    CHECK_CLOSE_TOL(gpu[i].grad().cpu(), cpu[i].grad(), gt.rtol, gt.atol);
  }
}

const std::vector<DType>& dtypes() {
  static const std::vector<DType> v{DType::F32, DType::F16, DType::BF16, DType::F64};
  return v;
}

}  // namespace

TEST_CASE("cuda conv2d: odd shapes, groups 1 and depthwise, forward and backward", "[cuda][conv]") {
  for (DType dt : dtypes()) {
    INFO(dtype_name(dt));
    // N = 3, C = 5, 13x13, k = 3, stride 2, padding 1, with bias.
    compare([](const V& v) { return conv2d(v[0], v[1], v[2], 2, 1); }, {{3, 5, 13, 13}, {7, 5, 3, 3}, {7}}, dt, 1,
            5 * 9);
    // groups = 5 = C: depthwise with channel multiplier 2.
    compare([](const V& v) { return conv2d(v[0], v[1], v[2], 2, 1, 1, 5); }, {{3, 5, 13, 13}, {10, 1, 3, 3}, {10}}, dt,
            2, 9);
    // Dilation, rectangular kernel, stride and padding; no bias.
    compare([](const V& v) { return conv2d(v[0], v[1], Tensor(), {2, 1}, {2, 1}, {2, 3}); },
            {{3, 5, 13, 11}, {4, 5, 3, 2}}, dt, 3, 5 * 6);
    // 1x1.
    compare([](const V& v) { return conv2d(v[0], v[1], v[2]); }, {{3, 5, 13, 13}, {6, 5, 1, 1}, {6}}, dt, 4, 5);
  }
}

TEST_CASE("cuda conv2d: padding modes", "[cuda][conv]") {
  for (DType dt : {DType::F32, DType::F16}) {
    for (PaddingMode mode : {PaddingMode::Reflect, PaddingMode::Replicate, PaddingMode::Circular}) {
      INFO(dtype_name(dt) << " " << padding_mode_name(mode));
      compare([mode](const V& v) { return conv2d(v[0], v[1], v[2], 2, {1, 2}, 1, 1, mode); },
              {{3, 5, 13, 13}, {4, 5, 3, 3}, {4}}, dt, 10, 5 * 9);
      compare([mode](const V& v) { return conv2d(v[0], v[1], Tensor(), 1, 2, 1, 5, mode); },
              {{2, 5, 9, 7}, {5, 1, 5, 5}}, dt, 11, 25);
    }
  }
}

TEST_CASE("cuda pad2d: every mode against the CPU", "[cuda][conv][pad]") {
  for (DType dt : test::floating_dtypes()) {
    for (PaddingMode mode : {PaddingMode::Zeros, PaddingMode::Reflect, PaddingMode::Replicate, PaddingMode::Circular}) {
      INFO(dtype_name(dt) << " " << padding_mode_name(mode));
      // Forward is a copy: exact. The backward sums at most a handful of terms per element
      // (replicate: a whole border run at the corners).
      compare([mode](const V& v) { return pad2d(v[0], {3, 2, 1, 4}, mode); }, {{3, 5, 13, 11}}, dt, 20, 1);
      compare([mode](const V& v) { return pad2d(v[0].transpose(-1, -2), {0, 5, 2, 2}, mode); }, {{2, 7, 6}}, dt, 21,
              1);
    }
  }
  compare([](const V& v) { return pad2d(v[0], {9, 7, 8, 11}, PaddingMode::Replicate); }, {{2, 3, 4, 5}}, DType::F32,
          22, 100);
}

TEST_CASE("cuda conv_transpose2d: forward and backward", "[cuda][conv]") {
  for (DType dt : dtypes()) {
    INFO(dtype_name(dt));
    // DCGAN-style up-sampling: k4 s2 p1.
    compare([](const V& v) { return conv_transpose2d(v[0], v[1], v[2], 2, 1); }, {{3, 5, 13, 13}, {5, 4, 4, 4}, {4}},
            dt, 30, 5 * 4);
    // Groups, output_padding, dilation.
    compare([](const V& v) { return conv_transpose2d(v[0], v[1], Tensor(), 2, 1, 1, 5, {1, 2}); },
            {{3, 5, 13, 13}, {5, 2, 3, 3}}, dt, 31, 9);
    // output_padding past the stride (allowed below the dilation): the convolution of the
    // output is larger than the input, so the glue pads the gradient for cuDNN.
    compare([](const V& v) { return conv_transpose2d(v[0], v[1], v[2], 1, 1, 1, 1, 2); },
            {{2, 5, 7, 9}, {5, 3, 3, 3}, {3}}, dt, 32, 5 * 9);
  }
}

TEST_CASE("cuda conv2d: gradient ops, layouts, empty batch, a larger problem", "[cuda][conv]") {
  // conv2d's gradients as ops.
  compare([](const V& v) { return conv2d_input_grad({3, 5, 13, 13}, v[0], v[1], 2, 1, 1, 5); },
          {{10, 1, 3, 3}, {3, 10, 7, 7}}, DType::F32, 40, 9);
  compare([](const V& v) { return conv2d_weight_grad(v[0], {10, 1, 3, 3}, v[1], 2, 1, 1, 5); },
          {{3, 5, 13, 13}, {3, 10, 7, 7}}, DType::F32, 41, 3 * 49);
  // Non-contiguous inputs and weights.
  compare([](const V& v) { return conv2d(test::noncontiguous(v[0]), test::noncontiguous(v[1]), v[2], 2, 1); },
          {{3, 5, 13, 13}, {7, 5, 3, 3}, {7}}, DType::F32, 42, 45);
  compare([](const V& v) { return conv2d(v[0].permute({0, 3, 1, 2}), v[1], Tensor(), 1, 1); },
          {{2, 9, 11, 5}, {4, 5, 3, 3}}, DType::F32, 43, 45);
  // Unbatched input.
  compare([](const V& v) { return conv2d(v[0], v[1], Tensor(), 1, 1); }, {{5, 13, 13}, {4, 5, 3, 3}}, DType::F32, 44,
          45);
  // Empty batch: empty outputs, zero weight gradient.
  Tensor x = empty({0, 5, 13, 13}, TensorOptions(DType::F32, cuda0()));
  Tensor w = ones({4, 5, 3, 3}, TensorOptions(DType::F32, cuda0())).set_requires_grad(true);
  Tensor y = conv2d(x, w, Tensor(), 2, 1);
  CHECK(y.sizes() == Shape{0, 4, 7, 7});
  sum(y).backward();
  REQUIRE(w.grad().defined());
  CHECK(test::values(w.grad()) == std::vector<double>(180, 0.0));
  // A ResNet-like 3x3 layer: large enough for algorithms with workspace; forward only
  // against f64 on the CPU, then the backward passes once.
  compare([](const V& v) { return conv2d(v[0], v[1], Tensor(), 1, 1); }, {{8, 64, 28, 28}, {64, 64, 3, 3}},
          DType::F32, 45, 64 * 9, false);
  compare([](const V& v) { return conv2d(v[0], v[1], Tensor(), 1, 1); }, {{4, 32, 28, 28}, {64, 32, 3, 3}},
          DType::F16, 46, 32 * 9);
}

TEST_CASE("cuda conv2d: bad input", "[cuda][conv]") {
  Tensor x = ones({2, 4, 6, 6}, TensorOptions(DType::F32, cuda0()));
  REQUIRE_KILN_ERROR(conv2d(x, ones({6, 4, 3, 3})), "conv2d");  // weight on the CPU
  REQUIRE_KILN_ERROR(conv2d(x, ones({6, 4, 3, 3}, TensorOptions(DType::F16, cuda0()))), "conv2d");
  REQUIRE_KILN_ERROR(conv2d(x, ones({6, 4, 3, 3}, TensorOptions(DType::F32, cuda0())), ones({6})), "conv2d");
}
