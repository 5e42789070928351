// CPU kernel of the unary elementwise family (slot `unary`), computed in double (int64
// for ints). ops/unary.cpp has checked the op against the dtype: bool never gets here,
// integers only for neg, abs and relu.
#include <algorithm>

#include <kiln/core/cpu_loops.h>
#include <kiln/ops/cpu/vec_math.h>
#include <kiln/ops/op_list.h>

namespace kiln::cpu {
namespace {

using namespace kiln::detail;

double unary_f64(UnaryOp op, double x, double alpha) {
  constexpr double kSqrt2OverPi = 0.7978845608028654, kInvSqrt2 = 0.7071067811865476;
  switch (op) {
    case UnaryOp::Neg: return -x;
    case UnaryOp::Abs: return std::fabs(x);
    case UnaryOp::Exp: return std::exp(x);
    case UnaryOp::Log: return std::log(x);
    case UnaryOp::Sqrt: return std::sqrt(x);
    case UnaryOp::Rsqrt: return 1.0 / std::sqrt(x);
    case UnaryOp::Sin: return std::sin(x);
    case UnaryOp::Cos: return std::cos(x);
    case UnaryOp::Relu: return x > 0 || std::isnan(x) ? x : 0.0;  // NaN propagates, as in PyTorch
    case UnaryOp::LeakyRelu: return x > 0 ? x : alpha * x;
    case UnaryOp::Sigmoid: return 1.0 / (1.0 + std::exp(-x));
    case UnaryOp::Tanh: return std::tanh(x);
    case UnaryOp::Gelu: return 0.5 * x * (1.0 + std::erf(x * kInvSqrt2));
    // 0.5 x (1 + tanh(z)) written as x sigmoid(2 z), which has no cancellation where
    // tanh(z) is near -1 (x below about -5).
    case UnaryOp::GeluTanh: return x / (1.0 + std::exp(-2.0 * kSqrt2OverPi * (x + 0.044715 * x * x * x)));
    case UnaryOp::Silu: return x / (1.0 + std::exp(-x));
    case UnaryOp::Erf: return std::erf(x);
  }
  return x;
}

int64_t unary_i64(UnaryOp op, int64_t x) {
  switch (op) {
    case UnaryOp::Neg: return -x;
    case UnaryOp::Abs: return x < 0 ? -x : x;
    case UnaryOp::Relu: return x > 0 ? x : 0;
    default: break;  // ops/unary.cpp computes the other ops of integers in f32
  }
  return x;
}

// y = f(x) for f32/f64, row by row: contiguous rows as flat loops (the cheap ops
// vectorise), with the op chosen once per call. f is unary_f64 for that op, so each
// element gets the generic path's arithmetic.
template <class T, class F>
void unary_rows(const TensorView& x, const TensorView& y, F f) {
  const T* px = x.ptr<const T>();
  T* py = y.ptr<T>();
  parallel_for_each_row<2>(y, {&x, &y}, kElementwiseGrain, [&](const auto& off, int64_t n, const auto& st) {
    const T* a = px + off[0];
    T* o = py + off[1];
    if (st[0] == 1 && st[1] == 1) {
      for (int64_t i = 0; i < n; ++i) o[i] = static_cast<T>(f(static_cast<double>(a[i])));
    } else {
      for (int64_t i = 0; i < n; ++i) o[i * st[1]] = static_cast<T>(f(static_cast<double>(a[i * st[0]])));
    }
  });
}

template <class T>
void unary_fast(UnaryOp op, const TensorView& x, const TensorView& y, double alpha) {
#define KILN_UNARY_CASE(E, name) \
  case UnaryOp::E: return unary_rows<T>(x, y, [alpha](double v) { return unary_f64(UnaryOp::E, v, alpha); });
  switch (op) { KILN_UNARY_OPS(KILN_UNARY_CASE) }
#undef KILN_UNARY_CASE
  unary_rows<T>(x, y, [op, alpha](double v) { return unary_f64(op, v, alpha); });
}

// g * op'(s) in double: the reference of unary_backward (ops/unary.h says which s).
double unary_grad_f64(UnaryOp op, double s, double g, double alpha) {
  constexpr double k = 0.7978845608028654, c = 0.044715, kInvSqrt2 = 0.7071067811865476,
                   kInvSqrt2Pi = 0.3989422804014327;
  switch (op) {
    case UnaryOp::Relu: return s > 0 ? g : 0.0;
    case UnaryOp::LeakyRelu: return s > 0 ? g : alpha * g;
    case UnaryOp::Sigmoid: return g * (s * (1.0 - s));
    case UnaryOp::Tanh: return g * (1.0 - s * s);
    case UnaryOp::Gelu: return g * (0.5 * (1.0 + std::erf(s * kInvSqrt2)) + s * kInvSqrt2Pi * std::exp(-0.5 * s * s));
    case UnaryOp::GeluTanh: {
      const double t = std::tanh(k * (s + c * s * s * s));
      return g * (0.5 * (1.0 + t) + 0.5 * k * s * (1.0 - t * t) * (1.0 + 3.0 * c * s * s));
    }
    case UnaryOp::Silu: {
      const double sg = 1.0 / (1.0 + std::exp(-s));
      return g * (sg * (1.0 + s * (1.0 - sg)));
    }
    default: break;
  }
  return 0.0;
}

// f32, contiguous: n elements from s, g into gx, in chunks whose transcendental part
// (tanh for gelu_tanh, sigmoid for silu) runs through the vector math of the forward
// ops (vec_math.h); the rest is plain float arithmetic the compiler vectorises.
void unary_grad_f32(UnaryOp op, const float* s, const float* g, float* gx, int64_t n, double alpha) {
  constexpr float k = 0.7978845608028654f, c = 0.044715f;
  const float a = static_cast<float>(alpha);
  switch (op) {
    case UnaryOp::Relu:
      for (int64_t i = 0; i < n; ++i) gx[i] = s[i] > 0.0f ? g[i] : 0.0f;
      return;
    case UnaryOp::LeakyRelu:
      for (int64_t i = 0; i < n; ++i) gx[i] = s[i] > 0.0f ? g[i] : a * g[i];
      return;
    case UnaryOp::Sigmoid:
      for (int64_t i = 0; i < n; ++i) gx[i] = g[i] * (s[i] * (1.0f - s[i]));
      return;
    case UnaryOp::Tanh:
      for (int64_t i = 0; i < n; ++i) gx[i] = g[i] * (1.0f - s[i] * s[i]);
      return;
    case UnaryOp::GeluTanh:
    case UnaryOp::Silu: {
      float buf[256];
      for (int64_t i0 = 0; i0 < n; i0 += 256) {
        const int64_t m = std::min<int64_t>(256, n - i0);
        const float* x = s + i0;
        if (op == UnaryOp::GeluTanh) {
          for (int64_t i = 0; i < m; ++i) buf[i] = k * (x[i] + c * x[i] * x[i] * x[i]);
          vec::unary_f32(UnaryOp::Tanh, buf, buf, m, &unary_f64, 0.0);
          for (int64_t i = 0; i < m; ++i) {
            const float t = buf[i];
            gx[i0 + i] = g[i0 + i] * (0.5f * (1.0f + t) + 0.5f * k * x[i] * (1.0f - t * t) * (1.0f + 3.0f * c * x[i] * x[i]));
          }
        } else {
          vec::unary_f32(UnaryOp::Sigmoid, x, buf, m, &unary_f64, 0.0);
          for (int64_t i = 0; i < m; ++i) gx[i0 + i] = g[i0 + i] * (buf[i] * (1.0f + x[i] * (1.0f - buf[i])));
        }
      }
      return;
    }
    default:  // gelu (erf has no vector version): the double reference
      for (int64_t i = 0; i < n; ++i) gx[i] = static_cast<float>(unary_grad_f64(op, s[i], g[i], alpha));
      return;
  }
}

}  // namespace

void unary(const TensorView& x, const TensorView& y, const UnaryParams& p) {
  const UnaryOp op = p.op;
  const double alpha = p.alpha;
  visit_dtype(x.dtype, [&](auto tag) {
    using T = decltype(tag);
    if constexpr (!std::is_same_v<T, bool>) {  // bool: rejected by ops/unary.cpp
      if constexpr (std::is_same_v<T, float>) {
        // exp, tanh, sigmoid, ...: Highway's vector math (ops/cpu/vec_math.h) on contiguous rows.
        if (vec::has_unary_f32(op) && no_partial_overlap(x, y)) {
          const float* px = x.ptr<const float>();
          float* py = y.ptr<float>();
          parallel_for_each_row<2>(y, {&x, &y}, kElementwiseGrain / 4, [&](const auto& off, int64_t n, const auto& st) {
            if (st[0] == 1 && st[1] == 1) return vec::unary_f32(op, px + off[0], py + off[1], n, &unary_f64, alpha);
            // Strided rows through a contiguous buffer, so that each element gets the same
            // arithmetic in every layout.
            float buf[256];
            for (int64_t i0 = 0; i0 < n; i0 += 256) {
              const int64_t m = std::min<int64_t>(256, n - i0);
              for (int64_t i = 0; i < m; ++i) buf[i] = px[off[0] + (i0 + i) * st[0]];
              vec::unary_f32(op, buf, buf, m, &unary_f64, alpha);
              for (int64_t i = 0; i < m; ++i) py[off[1] + (i0 + i) * st[1]] = buf[i];
            }
          });
          return;
        }
      }
      if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) {
        if (no_partial_overlap(x, y)) return unary_fast<T>(op, x, y, alpha);
      }
      const T* px = x.ptr<const T>();
      T* py = y.ptr<T>();
      for_each_element<2>(y, {&x, &y}, [&](const auto& o) {
        if constexpr (std::is_integral_v<T>) py[o[1]] = static_cast<T>(unary_i64(op, px[o[0]]));
        else py[o[1]] = convert<T>(unary_f64(op, to_f64(px[o[0]]), alpha));
      });
    }
  });
}


void unary_backward(const TensorView& s, const TensorView& g, const TensorView& gx, const UnaryParams& p) {
  const UnaryOp op = p.op;
  const double alpha = p.alpha;
  const int64_t n = gx.numel;
  visit_dtype(gx.dtype, [&](auto tag) {
    using T = decltype(tag);
    if constexpr (std::is_floating_point_v<T> || std::is_same_v<T, Half> || std::is_same_v<T, BFloat16>) {
      const T* ps = s.ptr<const T>();
      const T* pg = g.ptr<const T>();
      T* po = gx.ptr<T>();
      parallel_for(n, kElementwiseGrain, [&](int64_t b, int64_t e) {
        if constexpr (std::is_same_v<T, float>) {
          unary_grad_f32(op, ps + b, pg + b, po + b, e - b, alpha);
        } else {
          for (int64_t i = b; i < e; ++i)
            po[i] = convert<T>(unary_grad_f64(op, to_f64(ps[i]), to_f64(pg[i]), alpha));
        }
      });
    }
  });
}

}  // namespace kiln::cpu
