// softmax / log_softmax on the CPU: values against exp(x)/sum exp(x) computed in the
// test, over last and non-last dims, rows summing to 1, large inputs staying finite,
// half dtypes, non-contiguous input, bad input.
#include "test_util.h"

#include <cmath>
#include <limits>

using namespace kiln;

namespace {
// Softmax over `dim` of a row-major tensor of `shape`, in double.
std::vector<double> ref_softmax(const std::vector<double>& v, const Shape& shape, int64_t dim, bool log) {
  int64_t nd = static_cast<int64_t>(shape.size());
  if (dim < 0) dim += nd;
  int64_t outer = 1, n = shape[dim], inner = 1;
  for (int64_t i = 0; i < dim; ++i) outer *= shape[i];
  for (int64_t i = dim + 1; i < nd; ++i) inner *= shape[i];
  std::vector<double> out(v.size());
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t i = 0; i < inner; ++i) {
      double m = -INFINITY, s = 0;
      for (int64_t j = 0; j < n; ++j) m = std::max(m, v[(o * n + j) * inner + i]);
      for (int64_t j = 0; j < n; ++j) s += std::exp(v[(o * n + j) * inner + i] - m);
      for (int64_t j = 0; j < n; ++j) {
        double x = v[(o * n + j) * inner + i];
        out[(o * n + j) * inner + i] = log ? x - m - std::log(s) : std::exp(x - m) / s;
      }
    }
  return out;
}
std::vector<double> d(const Tensor& t) { return test::values(t); }
}  // namespace

TEST_CASE("softmax: hand-computed values", "[ops][softmax]") {
  Tensor x = from_vector<double>({1, 2, 3});
  double s = std::exp(1.0) + std::exp(2.0) + std::exp(3.0);
  CHECK_CLOSE(softmax(x), from_vector<double>({std::exp(1.0) / s, std::exp(2.0) / s, std::exp(3.0) / s}));
  CHECK_CLOSE(log_softmax(x), from_vector<double>({1 - std::log(s), 2 - std::log(s), 3 - std::log(s)}));
  CHECK_CLOSE(softmax(from_vector<float>({0, 0, 0, 0})), from_vector<double>({0.25, 0.25, 0.25, 0.25}));
  // ln 3 and 0: probabilities 3/4 and 1/4.
  CHECK_CLOSE(softmax(from_vector<double>({std::log(3.0), 0})), from_vector<double>({0.75, 0.25}));
  // -inf gets probability 0.
  Tensor mi = softmax(from_vector<float>({-INFINITY, 0, -INFINITY}));
  CHECK(d(mi) == std::vector<double>{0, 1, 0});
  CHECK(log_softmax(from_vector<float>({-INFINITY, 0})).to_vector<float>()[0] == -INFINITY);
  // One element, and a 0-d tensor.
  CHECK(d(softmax(from_vector<float>({42}))) == std::vector<double>{1});
  CHECK(softmax(scalar_tensor(5.0)).item<float>() == 1);
  CHECK(softmax(scalar_tensor(5.0)).dim() == 0);
  CHECK(log_softmax(scalar_tensor(5.0)).item<float>() == 0);
  CHECK(softmax(zeros({0, 4})).sizes() == Shape{0, 4});
}

TEST_CASE("softmax over the last and non-last dims", "[ops][softmax]") {
  Tensor x = test::random_tensor({3, 4, 5}, DType::F64, 31, 3.0);
  std::vector<double> xv = d(x);
  for (int64_t dim : {0, 1, 2, -1, -3}) {
    INFO("dim " << dim);
    Tensor p = softmax(x, dim), lp = log_softmax(x, dim);
    CHECK(p.sizes() == x.sizes());
    CHECK(p.dtype() == DType::F64);
    CHECK_CLOSE(p, from_vector<double>(ref_softmax(xv, x.sizes(), dim, false), x.sizes()));
    CHECK_CLOSE(lp, from_vector<double>(ref_softmax(xv, x.sizes(), dim, true), x.sizes()));
    CHECK_CLOSE(exp(lp), p);
    // Rows sum to 1 along dim.
    CHECK_CLOSE(sum(p, {dim}), ones(sum(p, {dim}).sizes(), DType::F64));
    // Non-contiguous input gives the same.
    CHECK_CLOSE(softmax(test::transposed_copy(x), dim), p);
    CHECK_CLOSE(log_softmax(test::strided_copy(x), dim), lp);
  }
  // A transposed view: softmax over its dim 0 equals softmax over the base's dim 1.
  Tensor m = test::random_tensor({6, 7}, DType::F32, 32);
  CHECK_CLOSE(softmax(m.t(), 0), softmax(m, 1).t());
  CHECK_CLOSE(softmax(m.t(), -1), softmax(m, 0).t());
  // Default dim is the last.
  CHECK_EQUAL_T(softmax(m), softmax(m, 1));
}

TEST_CASE("softmax: large inputs stay finite", "[ops][softmax]") {
  // [1000, 1000, 999] -> [1, 1, 1/e] / (2 + 1/e).
  double z = 2 + std::exp(-1.0);
  for (DType t : {DType::F32, DType::F64, DType::F16}) {  // bf16 cannot hold 999
    INFO(dtype_name(t));
    Tensor x = from_vector<double>({1000, 1000, 999}).to(t);
    Tensor p = softmax(x), lp = log_softmax(x);
    CHECK_CLOSE(p, from_vector<double>({1 / z, 1 / z, std::exp(-1.0) / z}));
    CHECK_CLOSE(lp, from_vector<double>({-std::log(z), -std::log(z), -1 - std::log(z)}));
  }
  Tensor neg = softmax(from_vector<float>({-1000, -1001}));
  CHECK_CLOSE(neg, from_vector<double>({1 / (1 + std::exp(-1.0)), std::exp(-1.0) / (1 + std::exp(-1.0))}));
  Tensor wide = softmax(from_vector<float>({-5000, 5000}));
  CHECK(d(wide) == std::vector<double>{0, 1});
  std::vector<double> lw = d(log_softmax(from_vector<float>({-5000, 5000})));
  CHECK(lw[1] == 0);
  CHECK(lw[0] == -10000);
  // f16 with values near its max.
  Tensor h = softmax(from_vector<float>({60000, 60000}).to(DType::F16));
  CHECK(d(h) == std::vector<double>{0.5, 0.5});
}

TEST_CASE("softmax: half dtypes within tolerance", "[ops][softmax]") {
  for (DType t : {DType::F16, DType::BF16}) {
    INFO(dtype_name(t));
    Tensor x = test::random_tensor({4, 33}, t, 41, 2.0);
    std::vector<double> xv = d(x);  // the rounded inputs
    for (int64_t dim : {0, 1}) {
      Tensor p = softmax(x, dim);
      CHECK(p.dtype() == t);
      CHECK_CLOSE(p, from_vector<double>(ref_softmax(xv, x.sizes(), dim, false), x.sizes()));
      CHECK_CLOSE(log_softmax(x, dim), from_vector<double>(ref_softmax(xv, x.sizes(), dim, true), x.sizes()));
    }
  }
}

TEST_CASE("softmax: bad input throws kiln::Error naming the op", "[ops][softmax][errors]") {
  REQUIRE_KILN_ERROR(softmax(from_vector<int32_t>({1, 2})), "softmax");
  REQUIRE_KILN_ERROR(log_softmax(from_vector<int64_t>({1, 2})), "log_softmax");
  REQUIRE_KILN_ERROR(softmax(from_vector<bool>({true})), "softmax");
  REQUIRE_KILN_ERROR(softmax(zeros({2, 3}), 2), "softmax");
  REQUIRE_KILN_ERROR(log_softmax(zeros({2, 3}), -3), "log_softmax");
  REQUIRE_KILN_ERROR(softmax(Tensor()), "softmax");
}

namespace {
int g_softmax_fused_calls = 0;
void spy_softmax_backward(const TensorView& y, const TensorView& g, const TensorView& gx, const SoftmaxParams& p) {
  ++g_softmax_fused_calls;
  cpu::softmax_backward(y, g, gx, p);
}
}  // namespace

TEST_CASE("softmax: first-order gradients run the fused kernel and agree with the composite formula",
          "[ops][softmax][autograd]") {
  // A first-order backward of softmax and log_softmax is one softmax_backward kernel; a
  // create_graph pass runs the composite formula (the spy checks which ran). The kernel
  // matches the composite in f64 on the same values: every dim of a 3-D tensor (inner 1
  // and inner > 1), a transposed input, f32, f64 and bf16.
  (void)kernel<op::softmax_backward>(kCPU);  // the list's loader first, so it cannot replace the spy
  set_kernel<op::softmax_backward>(DeviceType::CPU, &spy_softmax_backward);
  for (DType dt : {DType::F32, DType::F64, DType::BF16}) {
    const Tensor base = test::random_tensor({6, 37, 129}, dt, 3, 3.0);
    const Tensor g = test::random_tensor({6, 37, 129}, dt, 4);
    for (bool log : {false, true})
      for (int64_t d : {0, 1, 2, -1})
        for (bool transposed : {false, true}) {
          INFO((log ? "log_softmax" : "softmax") << " dim " << d << " " << dtype_name(dt)
                                                 << (transposed ? " transposed" : ""));
          const Tensor xin = transposed ? base.transpose(0, 2) : base;
          const Tensor gin = transposed ? g.transpose(0, 2) : g;
          auto f = [&](const Tensor& x) { return log ? log_softmax(x, d) : softmax(x, d); };
          Tensor x = xin.detach().requires_grad_(true);
          const int before = g_softmax_fused_calls;
          const Tensor fused = grad({f(x)}, {x}, {gin})[0];
          CHECK(g_softmax_fused_calls == before + 1);
          GradOptions create;
          create.create_graph = true;
          Tensor x64 = xin.to(DType::F64).detach().requires_grad_(true);
          const Tensor composite = grad({f(x64)}, {x64}, {gin.to(DType::F64)}, create)[0].detach();
          CHECK(g_softmax_fused_calls == before + 1);
          REQUIRE(fused.dtype() == dt);
          // Against f64 from the same inputs: f32 and bf16 differ by their own rounding
          // of y (the forward's output) and of the result.
          const double tol = dt == DType::F64 ? 1e-13 : dt == DType::F32 ? 1e-5 : 3e-2;
          CHECK_CLOSE_TOL(fused.to(DType::F64), composite, tol, tol);
        }
  }
  set_kernel<op::softmax_backward>(DeviceType::CPU, &cpu::softmax_backward);
}
