// Highway's vector math in the f32 CPU kernels (ops/cpu/vec_math.cpp) against the double
// reference, element by element: within a few ulp over the ordinary range, and exactly the
// reference's value for special inputs (NaN, infinities, zeros, denormals, magnitudes
// beyond the vector formulas' range), at every position of a vector and in the tail.
#include <kiln/ops/cpu/vec_math.h>

#include <cfloat>
#include <cmath>
#include <cstring>
#include <limits>

#include "test_util.h"

namespace kiln {
namespace {

double reference(UnaryOp op, double x, double) {
  switch (op) {
    case UnaryOp::Exp: return std::exp(x);
    case UnaryOp::Log: return std::log(x);
    case UnaryOp::Sqrt: return std::sqrt(x);
    case UnaryOp::Rsqrt: return 1.0 / std::sqrt(x);
    case UnaryOp::Sigmoid: return 1.0 / (1.0 + std::exp(-x));
    case UnaryOp::Silu: return x / (1.0 + std::exp(-x));
    case UnaryOp::Tanh: return std::tanh(x);
    case UnaryOp::GeluTanh: return x / (1.0 + std::exp(-2.0 * 0.7978845608028654 * (x + 0.044715 * x * x * x)));
    default: return NAN;
  }
}

// Distance in units in the last place between two floats of the same sign.
int64_t ulp_distance(float a, float b) {
  int32_t ia, ib;
  std::memcpy(&ia, &a, 4);
  std::memcpy(&ib, &b, 4);
  if ((ia < 0) != (ib < 0)) return std::abs(a - b) < 1e-37f ? 0 : INT32_MAX;
  return std::llabs(static_cast<int64_t>(ia) - static_cast<int64_t>(ib));
}

TEST_CASE("vector f32 unary math matches the double reference", "[vec_math][unary]") {
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> special = {nan, inf, -inf, 0.0f, -0.0f, FLT_MIN, FLT_MIN / 8, -FLT_MIN, FLT_MAX, -FLT_MAX,
                                1e30f, -1e30f, 88.0f, 88.8f, -87.5f, -103.0f, 104.0f, 150.0f, -150.0f, 19.9f, -20.5f};
  std::vector<float> ordinary;
  Generator g(3);
  for (double scale : {0.1, 1.0, 5.0, 30.0}) {
    std::vector<double> r = randn({301}, DType::F64, &g).to_vector<double>();
    for (double v : r) ordinary.push_back(static_cast<float>(v * scale));
  }
  const UnaryOp ops[] = {UnaryOp::Exp,  UnaryOp::Log,  UnaryOp::Sqrt,     UnaryOp::Rsqrt,
                         UnaryOp::Sigmoid, UnaryOp::Silu, UnaryOp::Tanh, UnaryOp::GeluTanh};
  for (UnaryOp op : ops) {
    INFO("op " << static_cast<int>(op));
    REQUIRE(cpu::vec::has_unary_f32(op));
    // Special values at every lane position, between ordinary ones, and a 7-element tail.
    std::vector<float> x;
    for (float s : special)
      for (int pos = 0; pos < 17; ++pos) {
        for (int k = 0; k < 17; ++k) x.push_back(k == pos ? s : 0.5f + 0.01f * static_cast<float>(k));
      }
    x.insert(x.end(), ordinary.begin(), ordinary.end());
    for (int k = 0; k < 7; ++k) x.push_back(static_cast<float>(k) - 3.0f);
    if (op == UnaryOp::Log || op == UnaryOp::Sqrt || op == UnaryOp::Rsqrt)
      for (float& v : x)
        if (v == v && std::isfinite(v) && &v >= &x[x.size() - ordinary.size() - 7]) v = std::abs(v) + 1e-3f;
    std::vector<float> y(x.size());
    cpu::vec::unary_f32(op, x.data(), y.data(), static_cast<int64_t>(x.size()), &reference, 0.0);
    int64_t worst = 0, bad = 0;
    for (size_t i = 0; i < x.size(); ++i) {
      const float want = static_cast<float>(reference(op, static_cast<double>(x[i]), 0.0));
      if (std::isnan(want) || std::isinf(want) || want == 0.0f || std::abs(want) < FLT_MIN) {
        const bool same = (std::isnan(want) && std::isnan(y[i])) || want == y[i];
        if (!same) {
          ++bad;
          UNSCOPED_INFO("x = " << x[i] << ": got " << y[i] << ", want " << want);
        }
        continue;
      }
      // gelu_tanh's exp argument t = 2 k (x + c x^3) is itself rounded a few times in f32:
      // its relative error |t| 2^-24 per rounding becomes about |t| / 2 ulp of e^-t.
      const double t = 2 * 0.7978845608028654 * (x[i] + 0.044715 * x[i] * x[i] * x[i]);
      const int64_t allowed = 4 + (op == UnaryOp::GeluTanh ? static_cast<int64_t>(std::min(2 * std::abs(t), 1e6)) : 0);
      const int64_t u = ulp_distance(y[i], want);
      if (op != UnaryOp::GeluTanh) worst = std::max(worst, u);
      if (u > allowed) {
        ++bad;
        UNSCOPED_INFO("x = " << x[i] << ": got " << y[i] << ", want " << want << " (" << u << " ulp)");
      }
    }
    CHECK(bad == 0);
    CHECK(worst <= 4);
  }
}

TEST_CASE("vector f32 softmax rows match the double reference", "[vec_math][softmax]") {
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  for (int64_t n : {1, 7, 8, 33, 256}) {
    std::vector<float> x = randn({6, n}, DType::F32, nullptr).to_vector<float>();
    for (int64_t j = 0; j < n; ++j) x[static_cast<size_t>(n + j)] *= 40.0f;   // row 1: large logits
    for (int64_t j = 0; j < n; j += 2) x[static_cast<size_t>(2 * n + j)] = -inf;  // row 2: causal-style mask
    for (int64_t j = 0; j < n; ++j) x[static_cast<size_t>(3 * n + j)] = -inf;  // row 3: all masked (NaN)
    x[static_cast<size_t>(4 * n + n / 2)] = nan;                                  // row 4: a NaN
    x[static_cast<size_t>(5 * n)] = inf;                                          // row 5: +inf
    for (bool log : {false, true}) {
      INFO("n " << n << (log ? " log_softmax" : " softmax"));
      std::vector<float> y(x.size());
      cpu::vec::softmax_rows_f32(x.data(), y.data(), 0, 6, n, log);
      for (int64_t r = 0; r < 6; ++r) {
        double m = -INFINITY;
        for (int64_t j = 0; j < n; ++j) m = std::max(m, static_cast<double>(x[static_cast<size_t>(r * n + j)]));
        bool has_nan = false;
        for (int64_t j = 0; j < n; ++j) has_nan |= std::isnan(x[static_cast<size_t>(r * n + j)]);
        double s = 0;
        for (int64_t j = 0; j < n; ++j) s += std::exp(static_cast<double>(x[static_cast<size_t>(r * n + j)]) - m);
        for (int64_t j = 0; j < n; ++j) {
          const double v = static_cast<double>(x[static_cast<size_t>(r * n + j)]) - m;
          const float want = has_nan ? nan : static_cast<float>(log ? v - std::log(s) : std::exp(v) / s);
          const float got = y[static_cast<size_t>(r * n + j)];
          INFO("row " << r << " col " << j << " got " << got << " want " << want);
          if (std::isnan(want) || std::isinf(want)) CHECK(((std::isnan(want) && std::isnan(got)) || got == want));
          else CHECK(std::abs(got - want) <= 2e-6 * std::abs(want) + 1e-7);
        }
      }
    }
  }
}

}  // namespace
}  // namespace kiln
