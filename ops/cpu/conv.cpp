// CPU reference of the three convolution products, by im2col + OpenBLAS gemm, one
// (sample, group) at a time:
//   col (Cg kH kW, Ho Wo): col[(c, i, j), (oh, ow)] = x[c, oh sh - ph + i dh, ow sw - pw + j dw] (0 outside)
//   forward:         y_g (Og, Ho Wo)    = w_g (Og, Cg kH kW) @ col            (+ bias)
//   backward data:   col = w_g^T @ gy_g, then col2im adds each column entry back into gx
//   backward weight: gw_g += gy_g @ col^T, summed over the batch
// A 1x1 kernel with stride 1 and no padding needs no im2col: col is x itself. Tiny
// weight blocks (depthwise) use plain loops instead of BLAS calls.
// f32 and f64 run in their own precision; f16/bf16 are widened to f32 and narrowed back.
#include <kiln/core/kernel_list.h>
#include <kiln/core/cpu_loops.h>
#include <kiln/ops/op_list.h>

#include <algorithm>
#include <climits>
#include <initializer_list>
#include <vector>

#include <kiln/ops/cpu/blas.h>

namespace kiln::cpu {
namespace {

using Geom = Conv2dGeometry;


// The three products of one (sample, group), w (M, K), col (K, L), y (M, L). When the
// weight block is tiny (depthwise and other thin groups) plain loops beat a BLAS call's
// fixed cost; their inner loops run along the output plane and vectorise.
constexpr int64_t kSmallWeights = 256;

// y = w @ col
template <class T>
void product_forward(const T* w, const T* col, T* y, int64_t M, int64_t K, int64_t L) {
  if (M * K > kSmallWeights) return gemm(false, false, M, L, K, T(1), w, K, col, L, T(0), y, L);
  for (int64_t m = 0; m < M; ++m) {
    T* yr = y + m * L;
    std::fill(yr, yr + L, T(0));
    for (int64_t k = 0; k < K; ++k) {
      const T a = w[m * K + k];
      const T* cr = col + k * L;
      for (int64_t l = 0; l < L; ++l) yr[l] += a * cr[l];
    }
  }
}

// col = w^T @ gy
template <class T>
void product_backward_data(const T* w, const T* gy, T* col, int64_t M, int64_t K, int64_t L) {
  if (M * K > kSmallWeights) return gemm(true, false, K, L, M, T(1), w, K, gy, L, T(0), col, L);
  for (int64_t k = 0; k < K; ++k) {
    T* cr = col + k * L;
    std::fill(cr, cr + L, T(0));
    for (int64_t m = 0; m < M; ++m) {
      const T a = w[m * K + k];
      const T* gr = gy + m * L;
      for (int64_t l = 0; l < L; ++l) cr[l] += a * gr[l];
    }
  }
}

// gw += gy @ col^T
template <class T>
void product_backward_weight(const T* gy, const T* col, T* gw, int64_t M, int64_t K, int64_t L) {
  if (M * K > kSmallWeights) return gemm(false, true, M, K, L, T(1), gy, L, col, L, T(1), gw, K);
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t k = 0; k < K; ++k) {
      const T* gr = gy + m * L;
      const T* cr = col + k * L;
      T s[4] = {0, 0, 0, 0};  // four partial sums: the loop vectorises, the order stays fixed
      int64_t l = 0;
      for (; l + 4 <= L; l += 4)
        for (int u = 0; u < 4; ++u) s[u] += gr[l + u] * cr[l + u];
      for (; l < L; ++l) s[0] += gr[l] * cr[l];
      gw[m * K + k] += (s[0] + s[1]) + (s[2] + s[3]);
    }
  }
}

// Sizes of one problem, read from the (contiguous, checked) views.
struct Dims {
  int64_t N, C, H, W, O, kH, kW, Ho, Wo, G, Cg, Og, K, L;  // K = Cg kH kW, L = Ho Wo
  bool direct;                                            // 1x1, stride 1, no padding: col = x
};

Dims dims_of(const TensorView& x, const TensorView& w, const TensorView& y, const Geom& g) {
  Dims d{};
  d.N = x.size(0);
  d.C = x.size(1);
  d.H = x.size(2);
  d.W = x.size(3);
  d.O = w.size(0);
  d.kH = w.size(2);
  d.kW = w.size(3);
  d.Ho = y.size(2);
  d.Wo = y.size(3);
  d.G = g.groups;
  d.Cg = d.C / d.G;
  d.Og = d.O / d.G;
  d.K = d.Cg * d.kH * d.kW;
  d.L = d.Ho * d.Wo;
  d.direct = d.kH == 1 && d.kW == 1 && g.stride_h == 1 && g.stride_w == 1 && g.pad_h == 0 && g.pad_w == 0;
  KILN_CHECK(d.K <= INT_MAX && d.L <= INT_MAX && d.Og <= INT_MAX, "conv2d: a (sample, group) product of ", d.Og,
             " x ", d.K, " x ", d.L, " exceeds the BLAS int range");
  return d;
}

// For kernel column j, output column ow reads input column iw = ow sw + base; the ow in
// [lo, hi) are the ones whose iw lies inside the image (the rest read padding).
inline void valid_columns(const Dims& d, const Geom& g, int64_t j, int64_t& base, int64_t& lo, int64_t& hi) {
  const int64_t sw = g.stride_w;
  base = j * g.dilation_w - g.pad_w;
  lo = base >= 0 ? 0 : (-base + sw - 1) / sw;
  hi = base > d.W - 1 ? 0 : (d.W - 1 - base) / sw + 1;
  lo = std::min(lo, d.Wo);
  hi = std::max(lo, std::min(hi, d.Wo));
}

// x (Cg, H, W) of one (sample, group) -> col (K, L).
template <class T>
void im2col(const T* x, const Dims& d, const Geom& g, T* col) {
  for (int64_t c = 0; c < d.Cg; ++c) {
    for (int64_t i = 0; i < d.kH; ++i) {
      for (int64_t j = 0; j < d.kW; ++j) {
        T* row = col + ((c * d.kH + i) * d.kW + j) * d.L;
        int64_t base, lo, hi;
        valid_columns(d, g, j, base, lo, hi);
        const int64_t sw = g.stride_w;
        for (int64_t oh = 0; oh < d.Ho; ++oh) {
          const int64_t ih = oh * g.stride_h - g.pad_h + i * g.dilation_h;
          T* out = row + oh * d.Wo;
          if (ih < 0 || ih >= d.H) {
            for (int64_t ow = 0; ow < d.Wo; ++ow) out[ow] = T(0);
            continue;
          }
          const T* in = x + (c * d.H + ih) * d.W;
          std::fill(out, out + lo, T(0));
          if (sw == 1) std::copy(in + (lo + base), in + (hi + base), out + lo);
          else
            for (int64_t ow = lo; ow < hi; ++ow) out[ow] = in[ow * sw + base];
          std::fill(out + hi, out + d.Wo, T(0));
        }
      }
    }
  }
}

// gx (Cg, H, W) += col (K, L) scattered back: the adjoint of im2col.
template <class T>
void col2im_add(const T* col, const Dims& d, const Geom& g, T* x) {
  for (int64_t c = 0; c < d.Cg; ++c) {
    for (int64_t i = 0; i < d.kH; ++i) {
      for (int64_t j = 0; j < d.kW; ++j) {
        const T* row = col + ((c * d.kH + i) * d.kW + j) * d.L;
        int64_t base, lo, hi;
        valid_columns(d, g, j, base, lo, hi);
        const int64_t sw = g.stride_w;
        for (int64_t oh = 0; oh < d.Ho; ++oh) {
          const int64_t ih = oh * g.stride_h - g.pad_h + i * g.dilation_h;
          if (ih < 0 || ih >= d.H) continue;
          T* out = x + (c * d.H + ih) * d.W;
          const T* in = row + oh * d.Wo;
          if (sw == 1)
            for (int64_t ow = lo; ow < hi; ++ow) out[ow + base] += in[ow];
          else
            for (int64_t ow = lo; ow < hi; ++ow) out[ow * sw + base] += in[ow];
        }
      }
    }
  }
}

template <class T>
void forward_impl(const TensorView& x, const TensorView& w, const TensorView& bias, const TensorView& y,
                  const Geom& g) {
  const Dims d = dims_of(x, w, y, g);
  const T* px = x.ptr<const T>();
  const T* pw = w.ptr<const T>();
  T* py = y.ptr<T>();
  std::vector<T> col(d.direct ? 0 : static_cast<size_t>(d.K * d.L));
  for (int64_t n = 0; n < d.N; ++n) {
    for (int64_t gi = 0; gi < d.G; ++gi) {
      const T* xg = px + (n * d.C + gi * d.Cg) * d.H * d.W;
      const T* cp = xg;
      if (!d.direct) {
        im2col(xg, d, g, col.data());
        cp = col.data();
      }
      product_forward(pw + gi * d.Og * d.K, cp, py + (n * d.O + gi * d.Og) * d.L, d.Og, d.K, d.L);
    }
    if (bias.defined) {
      const T* pb = bias.ptr<const T>();
      for (int64_t o = 0; o < d.O; ++o) {
        T* row = py + (n * d.O + o) * d.L;
        const T b = pb[o];
        for (int64_t l = 0; l < d.L; ++l) row[l] += b;
      }
    }
  }
}

template <class T>
void backward_data_impl(const TensorView& gy, const TensorView& w, const TensorView& gx, const Geom& g) {
  const Dims d = dims_of(gx, w, gy, g);
  const T* pg = gy.ptr<const T>();
  const T* pw = w.ptr<const T>();
  T* px = gx.ptr<T>();
  std::vector<T> col(d.direct ? 0 : static_cast<size_t>(d.K * d.L));
  if (!d.direct) std::fill(px, px + gx.numel, T(0));
  for (int64_t n = 0; n < d.N; ++n) {
    for (int64_t gi = 0; gi < d.G; ++gi) {
      T* xg = px + (n * d.C + gi * d.Cg) * d.H * d.W;
      T* cp = d.direct ? xg : col.data();  // direct: col is gx itself, written whole
      product_backward_data(pw + gi * d.Og * d.K, pg + (n * d.O + gi * d.Og) * d.L, cp, d.Og, d.K, d.L);
      if (!d.direct) col2im_add(cp, d, g, xg);
    }
  }
}

template <class T>
void backward_weight_impl(const TensorView& x, const TensorView& gy, const TensorView& gw, const Geom& g) {
  const Dims d = dims_of(x, gw, gy, g);
  const T* px = x.ptr<const T>();
  const T* pg = gy.ptr<const T>();
  T* pw = gw.ptr<T>();
  std::vector<T> col(d.direct ? 0 : static_cast<size_t>(d.K * d.L));
  std::fill(pw, pw + gw.numel, T(0));
  for (int64_t n = 0; n < d.N; ++n) {
    for (int64_t gi = 0; gi < d.G; ++gi) {
      const T* xg = px + (n * d.C + gi * d.Cg) * d.H * d.W;
      const T* cp = xg;
      if (!d.direct) {
        im2col(xg, d, g, col.data());
        cp = col.data();
      }
      product_backward_weight(pg + (n * d.O + gi * d.Og) * d.L, cp, pw + gi * d.Og * d.K, d.Og, d.K, d.L);
    }
  }
}

// Runs f(T{}, ins, out) with T float or double on the operands' views, widening f16/bf16
// operands to f32 first (undefined ones stay undefined) and narrowing the output (f32)
// back into `out`.
template <class F>
void dispatch(std::initializer_list<TensorView> ins, const TensorView& out, F&& f) {
  std::vector<TensorView> in(ins);
  if (out.dtype == DType::F32) return f(float{}, in, out);
  if (out.dtype == DType::F64) return f(double{}, in, out);
  // f16/bf16 (ops/conv.cpp admits floating dtypes only).
  std::vector<Tensor> wide;  // keeps the f32 copies alive
  for (TensorView& v : in) {
    if (!v.defined) continue;
    wide.push_back(empty(detail::shape_of(v), DType::F32));
    kiln::cpu::copy(v, kernel_view(wide.back()));
    v = kernel_view(wide.back());
  }
  Tensor out32 = empty(detail::shape_of(out), DType::F32);
  f(float{}, in, kernel_view(out32));
  kiln::cpu::copy(kernel_view(out32), out);
}

}  // namespace

void conv2d_forward(const TensorView& x, const TensorView& w, const TensorView& bias, const TensorView& y,
                    const Conv2dGeometry& g) {
  dispatch({x, w, bias}, y, [&](auto tag, const std::vector<TensorView>& in, const TensorView& out) {
    forward_impl<decltype(tag)>(in[0], in[1], in[2], out, g);
  });
}

void conv2d_backward_data(const TensorView& gy, const TensorView& w, const TensorView& gx, const Conv2dGeometry& g) {
  dispatch({gy, w}, gx, [&](auto tag, const std::vector<TensorView>& in, const TensorView& out) {
    backward_data_impl<decltype(tag)>(in[0], in[1], out, g);
  });
}

void conv2d_backward_weight(const TensorView& x, const TensorView& gy, const TensorView& gw,
                            const Conv2dGeometry& g) {
  dispatch({x, gy}, gw, [&](auto tag, const std::vector<TensorView>& in, const TensorView& out) {
    backward_weight_impl<decltype(tag)>(in[0], in[1], out, g);
  });
}

}  // namespace kiln::cpu
