// 2-D pooling over (B, H, W) planes (B = N * C), forward and backward.
//
//   max:      y[b, oh, ow] = max over taps (oh sh - ph + i dh, ow sw - pw + j dw) inside
//             the plane (NaN wins, the last NaN; else the first maximum);
//             idx[b, oh, ow] = h * W + w of it (-1 for a window that misses the plane).
//             gx[b, h, w] = sum of gy over the outputs whose window holds (h, w) and
//             whose idx is h * W + w.
//   avg:      y = sum over the window's in-plane taps / divisor, divisor =
//             divisor_override, or the window clipped to the padded plane
//             (count_include_pad), or clipped to the plane. gx[b, h, w] = sum of
//             gy / divisor over the windows holding (h, w).
//   adaptive: y[b, oh, ow] = mean of rows [floor(oh H / Ho), ceil((oh + 1) H / Ho)) x the
//             matching columns; gx[b, h, w] = sum of gy / area over the windows holding
//             it, which are exactly oh in [floor(h Ho / H), ceil((h + 1) Ho / H)).
// x/gx (B, H, W), y/gy/idx (B, Ho, Wo), contiguous; f16/bf16/f32/f64 with f32 (f64 for
// f64) accumulation; every kernel writes (=). The semantics follow PyTorch's kernels
// and ops/cpu/pool.cpp; ops/pool.cpp has checked the geometry (padding at most half
// the effective kernel, so every window holds a plane element unless dilation skips
// over it).
// One thread per output (forward) or per input element (backward): the backward
// kernels gather over the few windows that hold each input instead of scattering with
// atomics, so they are deterministic and need no zeroed output. 32-bit index arithmetic
// when the planes allow it.
// Bandwidth on H100/H200: not yet measured on a GPU.
#include <kiln/cuda/kernels/common.cuh>
#include <kiln/cuda/kernels/elementwise.cuh>
#include <kiln/cuda/kernels/launch.h>

namespace kiln::cuda {
namespace {

// ---- device helpers ------------------------------------------------------------------

// Geometry in the kernel's index type.
template <class I>
struct Geo {
  I B, H, W, Ho, Wo, kh, kw, sh, sw, ph, pw, dh, dw;
  bool include_pad;
  I divisor_override;
};

template <class I>
Geo<I> geo_of(const Pool2dArgs& a) {
  return {static_cast<I>(a.B),        static_cast<I>(a.H),        static_cast<I>(a.W),
          static_cast<I>(a.Ho),       static_cast<I>(a.Wo),       static_cast<I>(a.kernel_h),
          static_cast<I>(a.kernel_w), static_cast<I>(a.stride_h), static_cast<I>(a.stride_w),
          static_cast<I>(a.pad_h),    static_cast<I>(a.pad_w),    static_cast<I>(a.dilation_h),
          static_cast<I>(a.dilation_w), a.count_include_pad,      static_cast<I>(a.divisor_override)};
}

// Splits a linear index over (B, rows, cols) into its parts.
template <class I>
__device__ __forceinline__ void split3(I i, I rows, I cols, I& b, I& r, I& c) {
  c = i % cols;
  const I t = i / cols;
  r = t % rows;
  b = t / rows;
}

// Rows [start, end) of avg window o along one dim and the padded window size.
template <class I>
struct Span {
  I start, end, padded;
};
template <class I>
__device__ __forceinline__ Span<I> avg_span(I o, I n, I k, I s, I p) {
  const I start = o * s - p;
  const I end = min(start + k, n + p);
  return {max(start, I(0)), min(end, n), end - start};
}

template <class A, class I>
__device__ __forceinline__ A avg_divisor(const Span<I>& h, const Span<I>& w, const Geo<I>& g) {
  if (g.divisor_override > 0) return static_cast<A>(g.divisor_override);
  if (g.include_pad) return static_cast<A>(h.padded * w.padded);
  return static_cast<A>((h.end - h.start) * (w.end - w.start));
}

// First output index o whose window (o s - p + [0, extent)) reaches position i, and one
// past the last one whose window starts at or before it.
template <class I>
__device__ __forceinline__ I first_window(I i, I extent, I s, I p) {
  return i + p < extent ? I(0) : (i + p - extent) / s + 1;
}
template <class I>
__device__ __forceinline__ I end_window(I i, I s, I p, I n_out) {
  return min((i + p) / s + 1, n_out);
}

template <class I>
__device__ __forceinline__ I adaptive_start(I o, I in, I out) {
  return (o * in) / out;
}
template <class I>
__device__ __forceinline__ I adaptive_end(I o, I in, I out) {
  return ((o + 1) * in + out - 1) / out;
}

// ---- kernels -------------------------------------------------------------------------

template <class T, class I>
__global__ void max_pool2d_forward_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t* __restrict__ idx,
                                          Geo<I> g) {
  using A = acc_t<T>;
  const I total = g.B * g.Ho * g.Wo;
  const I stride = static_cast<I>(gridDim.x) * blockDim.x;
  for (I o = static_cast<I>(blockIdx.x) * blockDim.x + threadIdx.x; o < total; o += stride) {
    I b, oh, ow;
    split3(o, g.Ho, g.Wo, b, oh, ow);
    I h0 = oh * g.sh - g.ph, w0 = ow * g.sw - g.pw;
    const I h1 = min(h0 + (g.kh - 1) * g.dh + 1, g.H), w1 = min(w0 + (g.kw - 1) * g.dw + 1, g.W);
    while (h0 < 0) h0 += g.dh;
    while (w0 < 0) w0 += g.dw;
    const T* xb = x + b * g.H * g.W;
    I best = h0 < h1 && w0 < w1 ? h0 * g.W + w0 : I(-1);
    A m = neg_inf<A>();
    for (I ih = h0; ih < h1; ih += g.dh) {
      for (I iw = w0; iw < w1; iw += g.dw) {
        const A v = convert<A>(xb[ih * g.W + iw]);
        if (v > m || k_isnan(v)) {
          m = v;
          best = ih * g.W + iw;
        }
      }
    }
    y[o] = convert<T>(m);
    idx[o] = static_cast<int64_t>(best);
  }
}

template <class T, class I>
__global__ void max_pool2d_backward_kernel(const T* __restrict__ gy, const int64_t* __restrict__ idx,
                                           T* __restrict__ gx, Geo<I> g) {
  using A = acc_t<T>;
  const I total = g.B * g.H * g.W;
  const I stride = static_cast<I>(gridDim.x) * blockDim.x;
  const I eh = (g.kh - 1) * g.dh + 1, ew = (g.kw - 1) * g.dw + 1;  // effective kernel
  for (I i = static_cast<I>(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
    I b, h, w;
    split3(i, g.H, g.W, b, h, w);
    const I oh0 = first_window(h, eh, g.sh, g.ph), oh1 = end_window(h, g.sh, g.ph, g.Ho);
    const I ow0 = first_window(w, ew, g.sw, g.pw), ow1 = end_window(w, g.sw, g.pw, g.Wo);
    const int64_t me = static_cast<int64_t>(h * g.W + w);
    const I base = b * g.Ho * g.Wo;
    A acc = A(0);
    for (I oh = oh0; oh < oh1; ++oh)
      for (I ow = ow0; ow < ow1; ++ow) {
        const I o = base + oh * g.Wo + ow;
        if (idx[o] == me) acc += convert<A>(gy[o]);
      }
    gx[i] = convert<T>(acc);
  }
}

template <class T, class I>
__global__ void avg_pool2d_forward_kernel(const T* __restrict__ x, T* __restrict__ y, Geo<I> g) {
  using A = acc_t<T>;
  const I total = g.B * g.Ho * g.Wo;
  const I stride = static_cast<I>(gridDim.x) * blockDim.x;
  for (I o = static_cast<I>(blockIdx.x) * blockDim.x + threadIdx.x; o < total; o += stride) {
    I b, oh, ow;
    split3(o, g.Ho, g.Wo, b, oh, ow);
    const Span<I> sh = avg_span(oh, g.H, g.kh, g.sh, g.ph), sw = avg_span(ow, g.W, g.kw, g.sw, g.pw);
    const T* xb = x + b * g.H * g.W;
    A s = A(0);
    for (I ih = sh.start; ih < sh.end; ++ih)
      for (I iw = sw.start; iw < sw.end; ++iw) s += convert<A>(xb[ih * g.W + iw]);
    const bool empty = sh.start >= sh.end || sw.start >= sw.end;
    y[o] = convert<T>(empty ? A(0) : s / avg_divisor<A>(sh, sw, g));
  }
}

template <class T, class I>
__global__ void avg_pool2d_backward_kernel(const T* __restrict__ gy, T* __restrict__ gx, Geo<I> g) {
  using A = acc_t<T>;
  const I total = g.B * g.H * g.W;
  const I stride = static_cast<I>(gridDim.x) * blockDim.x;
  for (I i = static_cast<I>(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
    I b, h, w;
    split3(i, g.H, g.W, b, h, w);
    const I oh0 = first_window(h, g.kh, g.sh, g.ph), oh1 = end_window(h, g.sh, g.ph, g.Ho);
    const I ow0 = first_window(w, g.kw, g.sw, g.pw), ow1 = end_window(w, g.sw, g.pw, g.Wo);
    const T* gb = gy + b * g.Ho * g.Wo;
    A acc = A(0);
    for (I oh = oh0; oh < oh1; ++oh) {
      const Span<I> sh = avg_span(oh, g.H, g.kh, g.sh, g.ph);
      for (I ow = ow0; ow < ow1; ++ow) {
        const Span<I> sw = avg_span(ow, g.W, g.kw, g.sw, g.pw);
        acc += convert<A>(gb[oh * g.Wo + ow]) / avg_divisor<A>(sh, sw, g);
      }
    }
    gx[i] = convert<T>(acc);
  }
}

template <class T, class I>
__global__ void adaptive_avg_pool2d_forward_kernel(const T* __restrict__ x, T* __restrict__ y, I B, I H, I W, I Ho,
                                                   I Wo) {
  using A = acc_t<T>;
  const I total = B * Ho * Wo;
  const I stride = static_cast<I>(gridDim.x) * blockDim.x;
  for (I o = static_cast<I>(blockIdx.x) * blockDim.x + threadIdx.x; o < total; o += stride) {
    I b, oh, ow;
    split3(o, Ho, Wo, b, oh, ow);
    const I h0 = adaptive_start(oh, H, Ho), h1 = adaptive_end(oh, H, Ho);
    const I w0 = adaptive_start(ow, W, Wo), w1 = adaptive_end(ow, W, Wo);
    const T* xb = x + b * H * W;
    A s = A(0);
    for (I ih = h0; ih < h1; ++ih)
      for (I iw = w0; iw < w1; ++iw) s += convert<A>(xb[ih * W + iw]);
    y[o] = convert<T>(s / static_cast<A>((h1 - h0) * (w1 - w0)));
  }
}

template <class T, class I>
__global__ void adaptive_avg_pool2d_backward_kernel(const T* __restrict__ gy, T* __restrict__ gx, I B, I H, I W,
                                                    I Ho, I Wo) {
  using A = acc_t<T>;
  const I total = B * H * W;
  const I stride = static_cast<I>(gridDim.x) * blockDim.x;
  for (I i = static_cast<I>(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
    I b, h, w;
    split3(i, H, W, b, h, w);
    // Windows holding h: floor(oh H / Ho) <= h < ceil((oh + 1) H / Ho).
    const I oh0 = (h * Ho) / H, oh1 = ((h + 1) * Ho + H - 1) / H;
    const I ow0 = (w * Wo) / W, ow1 = ((w + 1) * Wo + W - 1) / W;
    const T* gb = gy + b * Ho * Wo;
    A acc = A(0);
    for (I oh = oh0; oh < oh1; ++oh) {
      const I rows = adaptive_end(oh, H, Ho) - adaptive_start(oh, H, Ho);
      for (I ow = ow0; ow < ow1; ++ow) {
        const I cols = adaptive_end(ow, W, Wo) - adaptive_start(ow, W, Wo);
        acc += convert<A>(gb[oh * Wo + ow]) / static_cast<A>(rows * cols);
      }
    }
    gx[i] = convert<T>(acc);
  }
}

// ---- launchers -----------------------------------------------------------------------

template <class F>
void visit_floating(DType dtype, const char* what, F&& f) {
  visit_device_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    if constexpr (std::is_integral_v<T>) launch_fail(what);
    else f(tag);
  });
}

// 32-bit indices when every index a kernel forms (including a grid-stride step past the
// end, and products like (h + 1) Ho in the adaptive kernels) stays below 2^31.
bool fits_int32(const Pool2dArgs& a) {
  const int64_t lim = INT32_MAX / 2;
  return a.B * a.H * a.W <= lim && a.B * a.Ho * a.Wo <= lim && (a.H + 1) * a.Ho <= lim && (a.W + 1) * a.Wo <= lim &&
         (a.Ho + 1) * a.H <= lim && (a.Wo + 1) * a.W <= lim;
}

// Runs launch(T{}, I{}) for the dtype and the narrowest safe index type.
template <class F>
void dispatch(DType dtype, const Pool2dArgs& a, const char* what, F&& launch) {
  visit_floating(dtype, what, [&](auto tag) {
    if (fits_int32(a)) launch(tag, int32_t{});
    else launch(tag, int64_t{});
    KILN_CUDA_CHECK_LAUNCH();
  });
}

Pool2dArgs adaptive_args(int64_t B, int64_t H, int64_t W, int64_t Ho, int64_t Wo) {
  Pool2dArgs a{};
  a.B = B;
  a.H = H;
  a.W = W;
  a.Ho = Ho;
  a.Wo = Wo;
  return a;
}

}  // namespace

void launch_max_pool2d_forward(const void* x, void* y, int64_t* indices, DType dtype, const Pool2dArgs& a,
                               cudaStream_t stream) {
  const int64_t n = a.B * a.Ho * a.Wo;
  if (n == 0) return;
  dispatch(dtype, a, "launch_max_pool2d_forward: needs a floating dtype", [&](auto tag, auto itag) {
    using T = decltype(tag);
    using I = decltype(itag);
    max_pool2d_forward_kernel<T, I><<<grid_for(n), kBlockSize, 0, stream>>>(static_cast<const T*>(x),
                                                                            static_cast<T*>(y), indices, geo_of<I>(a));
  });
}

void launch_max_pool2d_backward(const void* gy, const int64_t* indices, void* gx, DType dtype, const Pool2dArgs& a,
                                cudaStream_t stream) {
  const int64_t n = a.B * a.H * a.W;
  if (n == 0) return;
  dispatch(dtype, a, "launch_max_pool2d_backward: needs a floating dtype", [&](auto tag, auto itag) {
    using T = decltype(tag);
    using I = decltype(itag);
    max_pool2d_backward_kernel<T, I><<<grid_for(n), kBlockSize, 0, stream>>>(
        static_cast<const T*>(gy), indices, static_cast<T*>(gx), geo_of<I>(a));
  });
}

void launch_avg_pool2d_forward(const void* x, void* y, DType dtype, const Pool2dArgs& a, cudaStream_t stream) {
  const int64_t n = a.B * a.Ho * a.Wo;
  if (n == 0) return;
  dispatch(dtype, a, "launch_avg_pool2d_forward: needs a floating dtype", [&](auto tag, auto itag) {
    using T = decltype(tag);
    using I = decltype(itag);
    avg_pool2d_forward_kernel<T, I><<<grid_for(n), kBlockSize, 0, stream>>>(static_cast<const T*>(x),
                                                                            static_cast<T*>(y), geo_of<I>(a));
  });
}

void launch_avg_pool2d_backward(const void* gy, void* gx, DType dtype, const Pool2dArgs& a, cudaStream_t stream) {
  const int64_t n = a.B * a.H * a.W;
  if (n == 0) return;
  dispatch(dtype, a, "launch_avg_pool2d_backward: needs a floating dtype", [&](auto tag, auto itag) {
    using T = decltype(tag);
    using I = decltype(itag);
    avg_pool2d_backward_kernel<T, I><<<grid_for(n), kBlockSize, 0, stream>>>(static_cast<const T*>(gy),
                                                                             static_cast<T*>(gx), geo_of<I>(a));
  });
}

void launch_adaptive_avg_pool2d_forward(const void* x, void* y, DType dtype, int64_t B, int64_t H, int64_t W,
                                        int64_t Ho, int64_t Wo, cudaStream_t stream) {
  const int64_t n = B * Ho * Wo;
  if (n == 0) return;
  dispatch(dtype, adaptive_args(B, H, W, Ho, Wo), "launch_adaptive_avg_pool2d_forward: needs a floating dtype",
           [&](auto tag, auto itag) {
             using T = decltype(tag);
             using I = decltype(itag);
             adaptive_avg_pool2d_forward_kernel<T, I><<<grid_for(n), kBlockSize, 0, stream>>>(
                 static_cast<const T*>(x), static_cast<T*>(y), static_cast<I>(B), static_cast<I>(H),
                 static_cast<I>(W), static_cast<I>(Ho), static_cast<I>(Wo));
           });
}

void launch_adaptive_avg_pool2d_backward(const void* gy, void* gx, DType dtype, int64_t B, int64_t H, int64_t W,
                                         int64_t Ho, int64_t Wo, cudaStream_t stream) {
  const int64_t n = B * H * W;
  if (n == 0) return;
  dispatch(dtype, adaptive_args(B, H, W, Ho, Wo), "launch_adaptive_avg_pool2d_backward: needs a floating dtype",
           [&](auto tag, auto itag) {
             using T = decltype(tag);
             using I = decltype(itag);
             adaptive_avg_pool2d_backward_kernel<T, I><<<grid_for(n), kBlockSize, 0, stream>>>(
                 static_cast<const T*>(gy), static_cast<T*>(gx), static_cast<I>(B), static_cast<I>(H),
                 static_cast<I>(W), static_cast<I>(Ho), static_cast<I>(Wo));
           });
}

}  // namespace kiln::cuda
