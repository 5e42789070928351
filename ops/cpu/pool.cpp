// CPU reference of 2-D pooling over (B, H, W) planes: one loop per output window, in
// double, following PyTorch's CPU kernels (window clipping, divisors, NaN handling);
// each backward walks the same windows and adds the output gradient back.
#include <kiln/core/cpu_loops.h>
#include <kiln/ops/op_list.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace kiln::cpu {

using namespace kiln::detail;

namespace {

using Geom = Pool2dGeometry;

// Rows [start, end) of avg-pool window o along one dim and its divisor's factor
// (the window clipped to the padded input).
struct Span {
  int64_t start, end, padded;
};
Span avg_span(int64_t o, int64_t n, int64_t k, int64_t s, int64_t p) {
  int64_t start = o * s - p;
  int64_t end = std::min(start + k, n + p);
  const int64_t padded = end - start;
  return {std::max<int64_t>(start, 0), std::min(end, n), padded};
}

double avg_divisor(const Span& h, const Span& w, const Geom& g) {
  if (g.divisor_override > 0) return static_cast<double>(g.divisor_override);
  if (g.count_include_pad) return static_cast<double>(h.padded * w.padded);
  return static_cast<double>((h.end - h.start) * (w.end - w.start));
}

int64_t adaptive_start(int64_t o, int64_t in, int64_t out) { return (o * in) / out; }
int64_t adaptive_end(int64_t o, int64_t in, int64_t out) { return ((o + 1) * in + out - 1) / out; }

template <class F>
void visit_floating(DType dt, const char* op, F&& f) {
  visit_dtype(dt, [&](auto tag) {
    using T = decltype(tag);
    if constexpr (std::is_integral_v<T>) throw Error(detail::str(op, ": integer tensor reached the CPU kernel"));
    else f(tag);
  });
}

}  // namespace

void max_pool2d_forward(const TensorView& x, const TensorView& y, const TensorView& indices, const Pool2dGeometry& g) {
  visit_floating(x.dtype, "max_pool2d", [&](auto tag) {
    using T = decltype(tag);
    using C = std::conditional_t<is_half_v<T>, float, T>;  // exact for every dtype: a max only compares
    const int64_t B = x.size(0), H = x.size(1), W = x.size(2), Ho = y.size(1), Wo = y.size(2);
    const T* px = x.ptr<const T>();
    T* py = y.ptr<T>();
    int64_t* pi = indices.ptr<int64_t>();
    // Planes split over the thread pool; each is computed as in a serial loop.
    parallel_for(B, std::max<int64_t>(1, kElementwiseGrain / std::max<int64_t>(1, H * W)), [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const T* xb = px + b * H * W;
      for (int64_t oh = 0; oh < Ho; ++oh) {
        int64_t h0 = oh * g.stride_h - g.pad_h;
        const int64_t h1 = std::min(h0 + (g.kernel_h - 1) * g.dilation_h + 1, H);
        while (h0 < 0) h0 += g.dilation_h;
        for (int64_t ow = 0; ow < Wo; ++ow) {
          int64_t w0 = ow * g.stride_w - g.pad_w;
          const int64_t w1 = std::min(w0 + (g.kernel_w - 1) * g.dilation_w + 1, W);
          while (w0 < 0) w0 += g.dilation_w;
          // A window can miss the input entirely (all padding, with dilation): -inf, index -1.
          int64_t best = h0 < h1 && w0 < w1 ? h0 * W + w0 : -1;
          C m = -std::numeric_limits<C>::infinity();
          for (int64_t ih = h0; ih < h1; ih += g.dilation_h) {
            for (int64_t iw = w0; iw < w1; iw += g.dilation_w) {
              const C v = static_cast<C>(xb[ih * W + iw]);
              if (v > m || v != v) {  // NaN wins
                m = v;
                best = ih * W + iw;
              }
            }
          }
          const int64_t o = (b * Ho + oh) * Wo + ow;
          py[o] = convert<T>(m);
          pi[o] = best;
        }
      }
    }
    });
  });
}

void max_pool2d_backward(const TensorView& gy, const TensorView& indices, const TensorView& gx,
                         const Pool2dGeometry& g) {
  visit_floating(gy.dtype, "max_pool2d backward", [&](auto tag) {
    using T = decltype(tag);
    const int64_t B = gx.size(0), HW = gx.size(1) * gx.size(2), L = gy.size(1) * gy.size(2);
    const T* pg = gy.ptr<const T>();
    const int64_t* pi = indices.ptr<const int64_t>();
    T* px = gx.ptr<T>();
    // Planes split over the thread pool; each is computed as in a serial loop.
    parallel_for(B, std::max<int64_t>(1, kElementwiseGrain / std::max<int64_t>(1, HW)), [&](int64_t b0, int64_t b1) {
      std::vector<double> acc(static_cast<size_t>(HW));
    for (int64_t b = b0; b < b1; ++b) {
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int64_t l = 0; l < L; ++l) {
        const int64_t i = pi[b * L + l];
        if (i >= 0 && i < HW) acc[i] += to_f64(pg[b * L + l]);
      }
      for (int64_t i = 0; i < HW; ++i) px[b * HW + i] = convert<T>(acc[i]);
    }
    });
  });
}

void avg_pool2d_forward(const TensorView& x, const TensorView& y, const Pool2dGeometry& g) {
  visit_floating(x.dtype, "avg_pool2d", [&](auto tag) {
    using T = decltype(tag);
    const int64_t B = x.size(0), H = x.size(1), W = x.size(2), Ho = y.size(1), Wo = y.size(2);
    const T* px = x.ptr<const T>();
    T* py = y.ptr<T>();
    // Planes split over the thread pool; each is computed as in a serial loop.
    parallel_for(B, std::max<int64_t>(1, kElementwiseGrain / std::max<int64_t>(1, H * W)), [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      for (int64_t oh = 0; oh < Ho; ++oh) {
        const Span sh = avg_span(oh, H, g.kernel_h, g.stride_h, g.pad_h);
        for (int64_t ow = 0; ow < Wo; ++ow) {
          const Span sw = avg_span(ow, W, g.kernel_w, g.stride_w, g.pad_w);
          double s = 0;
          for (int64_t ih = sh.start; ih < sh.end; ++ih)
            for (int64_t iw = sw.start; iw < sw.end; ++iw) s += to_f64(px[(b * H + ih) * W + iw]);
          const bool empty = sh.start >= sh.end || sw.start >= sw.end;
          py[(b * Ho + oh) * Wo + ow] = convert<T>(empty ? 0.0 : s / avg_divisor(sh, sw, g));
        }
      }
    }
    });
  });
}

void avg_pool2d_backward(const TensorView& gy, const TensorView& gx, const Pool2dGeometry& g) {
  visit_floating(gy.dtype, "avg_pool2d backward", [&](auto tag) {
    using T = decltype(tag);
    const int64_t B = gx.size(0), H = gx.size(1), W = gx.size(2), Ho = gy.size(1), Wo = gy.size(2);
    const T* pg = gy.ptr<const T>();
    T* px = gx.ptr<T>();
    // Planes split over the thread pool; each is computed as in a serial loop.
    parallel_for(B, std::max<int64_t>(1, kElementwiseGrain / std::max<int64_t>(1, H * W)), [&](int64_t b0, int64_t b1) {
      std::vector<double> acc(static_cast<size_t>(H * W));
    for (int64_t b = b0; b < b1; ++b) {
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int64_t oh = 0; oh < Ho; ++oh) {
        const Span sh = avg_span(oh, H, g.kernel_h, g.stride_h, g.pad_h);
        for (int64_t ow = 0; ow < Wo; ++ow) {
          const Span sw = avg_span(ow, W, g.kernel_w, g.stride_w, g.pad_w);
          if (sh.start >= sh.end || sw.start >= sw.end) continue;
          const double v = to_f64(pg[(b * Ho + oh) * Wo + ow]) / avg_divisor(sh, sw, g);
          for (int64_t ih = sh.start; ih < sh.end; ++ih)
            for (int64_t iw = sw.start; iw < sw.end; ++iw) acc[ih * W + iw] += v;
        }
      }
      for (int64_t i = 0; i < H * W; ++i) px[b * H * W + i] = convert<T>(acc[i]);
    }
    });
  });
}

void adaptive_avg_pool2d_forward(const TensorView& x, const TensorView& y) {
  visit_floating(x.dtype, "adaptive_avg_pool2d", [&](auto tag) {
    using T = decltype(tag);
    const int64_t B = x.size(0), H = x.size(1), W = x.size(2), Ho = y.size(1), Wo = y.size(2);
    const T* px = x.ptr<const T>();
    T* py = y.ptr<T>();
    // Planes split over the thread pool; each is computed as in a serial loop.
    parallel_for(B, std::max<int64_t>(1, kElementwiseGrain / std::max<int64_t>(1, H * W)), [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      for (int64_t oh = 0; oh < Ho; ++oh) {
        const int64_t h0 = adaptive_start(oh, H, Ho), h1 = adaptive_end(oh, H, Ho);
        for (int64_t ow = 0; ow < Wo; ++ow) {
          const int64_t w0 = adaptive_start(ow, W, Wo), w1 = adaptive_end(ow, W, Wo);
          double s = 0;
          for (int64_t ih = h0; ih < h1; ++ih)
            for (int64_t iw = w0; iw < w1; ++iw) s += to_f64(px[(b * H + ih) * W + iw]);
          py[(b * Ho + oh) * Wo + ow] = convert<T>(s / static_cast<double>((h1 - h0) * (w1 - w0)));
        }
      }
    }
    });
  });
}

void adaptive_avg_pool2d_backward(const TensorView& gy, const TensorView& gx) {
  visit_floating(gy.dtype, "adaptive_avg_pool2d backward", [&](auto tag) {
    using T = decltype(tag);
    const int64_t B = gx.size(0), H = gx.size(1), W = gx.size(2), Ho = gy.size(1), Wo = gy.size(2);
    const T* pg = gy.ptr<const T>();
    T* px = gx.ptr<T>();
    // Planes split over the thread pool; each is computed as in a serial loop.
    parallel_for(B, std::max<int64_t>(1, kElementwiseGrain / std::max<int64_t>(1, H * W)), [&](int64_t b0, int64_t b1) {
      std::vector<double> acc(static_cast<size_t>(H * W));
    for (int64_t b = b0; b < b1; ++b) {
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int64_t oh = 0; oh < Ho; ++oh) {
        const int64_t h0 = adaptive_start(oh, H, Ho), h1 = adaptive_end(oh, H, Ho);
        for (int64_t ow = 0; ow < Wo; ++ow) {
          const int64_t w0 = adaptive_start(ow, W, Wo), w1 = adaptive_end(ow, W, Wo);
          const double v = to_f64(pg[(b * Ho + oh) * Wo + ow]) / static_cast<double>((h1 - h0) * (w1 - w0));
          for (int64_t ih = h0; ih < h1; ++ih)
            for (int64_t iw = w0; iw < w1; ++iw) acc[ih * W + iw] += v;
        }
      }
      for (int64_t i = 0; i < H * W; ++i) px[b * H * W + i] = convert<T>(acc[i]);
    }
    });
  });
}

}  // namespace kiln::cpu
