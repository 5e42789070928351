// Highway loops of ops/cpu/vec_math.h. This file is compiled once per CPU target Highway
// supports (foreach_target.h includes it again for each); HWY_DYNAMIC_DISPATCH picks the
// best one the running CPU has.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kiln/ops/cpu/vec_math.cpp"
#include <hwy/foreach_target.h>  // IWYU pragma: keep

#include <hwy/contrib/math/math-inl.h>
#include <hwy/highway.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include <kiln/ops/cpu/vec_math.h>

HWY_BEFORE_NAMESPACE();
namespace kiln::cpu::vec {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using D = hn::ScalableTag<float>;
using V = hn::Vec<D>;
using M = hn::Mask<D>;

// Lanes where lo <= x <= hi (false for NaN).
HWY_INLINE M in_range(D d, V x, float lo, float hi) { return hn::And(x >= hn::Set(d, lo), x <= hn::Set(d, hi)); }

// e^x where the formula is accurate (|x| <= 87: no overflow, no denormal results).
constexpr float kExpLimit = 87.0f;

// One vector of op(x), and the lanes where it is accurate.
HWY_INLINE V apply(D d, UnaryOp op, V x, M& ok) {
  const V one = hn::Set(d, 1.0f);
  switch (op) {
    case UnaryOp::Exp:
      ok = in_range(d, x, -kExpLimit, kExpLimit);
      return hn::Exp(d, x);
    case UnaryOp::Log:
      ok = in_range(d, x, std::numeric_limits<float>::min(), std::numeric_limits<float>::max());
      return hn::Log(d, x);
    case UnaryOp::Sqrt:
      ok = hn::Eq(x, x);
      return hn::Sqrt(x);
    case UnaryOp::Rsqrt:
      ok = hn::Eq(x, x);
      return hn::Div(one, hn::Sqrt(x));
    case UnaryOp::Sigmoid:
      ok = in_range(d, x, -kExpLimit, kExpLimit);
      return hn::Div(one, hn::Add(one, hn::Exp(d, hn::Neg(x))));
    case UnaryOp::Silu:
      ok = in_range(d, x, -kExpLimit, kExpLimit);
      return hn::Div(x, hn::Add(one, hn::Exp(d, hn::Neg(x))));
    case UnaryOp::Tanh:
      ok = in_range(d, x, -20.0f, 20.0f);
      return hn::Tanh(d, x);
    case UnaryOp::GeluTanh: {
      // 0.5 x (1 + tanh(z)) = x sigmoid(2 z): no cancellation where tanh(z) is near -1.
      const V x3 = hn::Mul(hn::Mul(x, x), x);
      const V z2 = hn::Mul(hn::Set(d, 2.0f * 0.7978845608028654f), hn::MulAdd(hn::Set(d, 0.044715f), x3, x));
      ok = in_range(d, z2, -kExpLimit, 1e30f);  // e^-2z neither overflows nor underflows past 0 badly
      return hn::Div(x, hn::Add(one, hn::Exp(d, hn::Neg(z2))));
    }
    default:
      ok = hn::FirstN(d, 0);
      return x;
  }
}

void UnaryF32(UnaryOp op, const float* x, float* y, int64_t n, double (*reference)(UnaryOp, double, double),
              double alpha) {
  const D d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  HWY_ALIGN float in[hn::MaxLanes(d)], out[hn::MaxLanes(d)], good[hn::MaxLanes(d)];
  // One vector: the formula, then the reference for each lane outside its range, so every
  // element's result depends on its value alone (not on its neighbours or the layout).
  auto one = [&](const V v, float* dst, int64_t count) {
    M ok;
    const V r = apply(d, op, v, ok);
    if (HWY_LIKELY(count == N && hn::AllTrue(d, ok))) return hn::StoreU(r, d, dst);
    hn::Store(v, d, in);
    hn::Store(r, d, out);
    hn::Store(hn::IfThenElseZero(ok, hn::Set(d, 1.0f)), d, good);
    for (int64_t l = 0; l < count; ++l)
      dst[l] = good[l] != 0.0f ? out[l] : static_cast<float>(reference(op, static_cast<double>(in[l]), alpha));
  };
  int64_t i = 0;
  for (; i + N <= n; i += N) one(hn::LoadU(d, x + i), y + i, N);
  if (i < n) {  // the tail through a padded buffer
    HWY_ALIGN float tail[hn::MaxLanes(d)];
    std::fill(tail, tail + N, 1.0f);
    std::memcpy(tail, x + i, static_cast<size_t>(n - i) * sizeof(float));
    one(hn::Load(d, tail), y + i, n - i);
  }
}

// A row with a NaN or an infinite max goes to the double reference.
void softmax_row_reference(const float* x, float* y, int64_t n, bool log) {
  double m = -INFINITY;
  for (int64_t j = 0; j < n; ++j) m = std::max(m, static_cast<double>(x[j]));
  double s = 0;
  for (int64_t j = 0; j < n; ++j) s += std::exp(static_cast<double>(x[j]) - m);
  for (int64_t j = 0; j < n; ++j) {
    const double v = static_cast<double>(x[j]) - m;
    y[j] = static_cast<float>(log ? v - std::log(s) : std::exp(v) / s);
  }
}

void SoftmaxRowsF32(const float* x, float* y, int64_t r0, int64_t r1, int64_t n, bool log) {
  const D d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  const V floor = hn::Set(d, -104.0f);  // e^-104 is 0 in f32: masked (-inf) entries give 0
  for (int64_t r = r0; r < r1; ++r) {
    const float* xr = x + r * n;
    float* yr = y + r * n;
    // The max: a NaN anywhere makes the row the reference's (it propagates the NaN).
    V vm = hn::Set(d, -std::numeric_limits<float>::infinity());
    M nan = hn::FirstN(d, 0);
    int64_t j = 0;
    for (; j + N <= n; j += N) {
      const V v = hn::LoadU(d, xr + j);
      vm = hn::Max(vm, v);
      nan = hn::Or(nan, hn::Not(hn::Eq(v, v)));  // Ne is an ordered compare: false for NaN
    }
    float m = hn::GetLane(hn::MaxOfLanes(d, vm));
    bool bad = !hn::AllFalse(d, nan);
    for (; j < n; ++j) {
      m = std::max(m, xr[j]);
      bad |= xr[j] != xr[j];
    }
    if (bad || !std::isfinite(m)) {
      softmax_row_reference(xr, yr, n, log);
      continue;
    }
    // e_j = exp(x_j - m) into y, summed in double with kLanes partial sums.
    const V vmax = hn::Set(d, m);
    j = 0;
    for (; j + N <= n; j += N) hn::StoreU(hn::Exp(d, hn::Max(hn::Sub(hn::LoadU(d, xr + j), vmax), floor)), d, yr + j);
    for (; j < n; ++j) yr[j] = static_cast<float>(std::exp(static_cast<double>(xr[j]) - m));
    double part[8] = {};
    j = 0;
    for (; j + 8 <= n; j += 8)
      for (int l = 0; l < 8; ++l) part[l] += static_cast<double>(yr[j + l]);
    for (; j < n; ++j) part[j % 8] += static_cast<double>(yr[j]);
    const double s = ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
    if (log) {
      const float ls = static_cast<float>(std::log(s));
      for (j = 0; j < n; ++j) yr[j] = (xr[j] - m) - ls;
    } else {
      const float inv = static_cast<float>(1.0 / s);
      for (j = 0; j < n; ++j) yr[j] *= inv;
    }
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace kiln::cpu::vec
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace kiln::cpu::vec {

HWY_EXPORT(UnaryF32);
HWY_EXPORT(SoftmaxRowsF32);

bool has_unary_f32(UnaryOp op) {
  switch (op) {
    case UnaryOp::Exp:
    case UnaryOp::Log:
    case UnaryOp::Sqrt:
    case UnaryOp::Rsqrt:
    case UnaryOp::Sigmoid:
    case UnaryOp::Silu:
    case UnaryOp::Tanh:
    case UnaryOp::GeluTanh: return true;
    default: return false;
  }
}

void unary_f32(UnaryOp op, const float* x, float* y, int64_t n, double (*reference)(UnaryOp, double, double),
               double alpha) {
  HWY_DYNAMIC_DISPATCH(UnaryF32)(op, x, y, n, reference, alpha);
}

void softmax_rows_f32(const float* x, float* y, int64_t r0, int64_t r1, int64_t n, bool log) {
  HWY_DYNAMIC_DISPATCH(SoftmaxRowsF32)(x, y, r0, r1, n, log);
}

}  // namespace kiln::cpu::vec
#endif  // HWY_ONCE
