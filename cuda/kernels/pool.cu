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
// and ops/cpu/pool.cpp; ops/pool.cpp has checked the geometry (Pool2dGeometry in
// ops/pool.h: padding at most half the effective kernel, so every window holds a plane
// element unless dilation skips over it).
// One thread per output (forward) or per input element (backward): the backward
// kernels gather over the few windows that hold each input instead of scattering with
// atomics, so they are deterministic and need no zeroed output. 32-bit index arithmetic
// when the planes allow it.
// Bandwidth on H100/H200: not yet measured on a GPU.
#include <kiln/cuda/kernels/common.cuh>
#include <kiln/cuda/kernels/elementwise.cuh>
#include <kiln/ops/op_list.h>

namespace kiln::cuda {
namespace {

// ---- device helpers ------------------------------------------------------------------

// The sizes of one launch in the kernel's index type: x/gx (B, H, W), y/gy (B, Ho, Wo).
template <class I>
struct Planes {
  I B, H, W, Ho, Wo;
};

// The window geometry in the kernel's index type.
template <class I>
struct Window {
  I kh, kw, sh, sw, ph, pw, dh, dw;
};
template <class I>
__device__ __forceinline__ Window<I> window_of(const Pool2dGeometry& g) {
  return {static_cast<I>(g.kernel_h),   static_cast<I>(g.kernel_w), static_cast<I>(g.stride_h),
          static_cast<I>(g.stride_w),   static_cast<I>(g.pad_h),    static_cast<I>(g.pad_w),
          static_cast<I>(g.dilation_h), static_cast<I>(g.dilation_w)};
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
  const I end = ::min(start + k, n + p);
  return {::max(start, I(0)), ::min(end, n), end - start};
}

template <class A, class I>
__device__ __forceinline__ A avg_divisor(const Span<I>& h, const Span<I>& w, const Pool2dGeometry& g) {
  if (g.divisor_override > 0) return static_cast<A>(g.divisor_override);
  if (g.count_include_pad) return static_cast<A>(h.padded * w.padded);
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
  return ::min((i + p) / s + 1, n_out);
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
                                          Planes<I> n, Pool2dGeometry geometry) {
  using A = acc_t<T>;
  const Window<I> g = window_of<I>(geometry);
  const I total = n.B * n.Ho * n.Wo;
  const I stride = static_cast<I>(gridDim.x) * blockDim.x;
  for (I o = static_cast<I>(blockIdx.x) * blockDim.x + threadIdx.x; o < total; o += stride) {
    I b, oh, ow;
    split3(o, n.Ho, n.Wo, b, oh, ow);
    I h0 = oh * g.sh - g.ph, w0 = ow * g.sw - g.pw;
    const I h1 = ::min(h0 + (g.kh - 1) * g.dh + 1, n.H), w1 = ::min(w0 + (g.kw - 1) * g.dw + 1, n.W);
    while (h0 < 0) h0 += g.dh;
    while (w0 < 0) w0 += g.dw;
    const T* xb = x + b * n.H * n.W;
    I best = h0 < h1 && w0 < w1 ? h0 * n.W + w0 : I(-1);
    A m = neg_inf<A>();
    for (I ih = h0; ih < h1; ih += g.dh) {
      for (I iw = w0; iw < w1; iw += g.dw) {
        const A v = convert<A>(xb[ih * n.W + iw]);
        if (v > m || k_isnan(v)) {
          m = v;
          best = ih * n.W + iw;
        }
      }
    }
    y[o] = convert<T>(m);
    idx[o] = static_cast<int64_t>(best);
  }
}

template <class T, class I>
__global__ void max_pool2d_backward_kernel(const T* __restrict__ gy, const int64_t* __restrict__ idx,
                                           T* __restrict__ gx, Planes<I> n, Pool2dGeometry geometry) {
  using A = acc_t<T>;
  const Window<I> g = window_of<I>(geometry);
  const I total = n.B * n.H * n.W;
  const I stride = static_cast<I>(gridDim.x) * blockDim.x;
  const I eh = (g.kh - 1) * g.dh + 1, ew = (g.kw - 1) * g.dw + 1;  // effective kernel
  for (I i = static_cast<I>(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
    I b, h, w;
    split3(i, n.H, n.W, b, h, w);
    const I oh0 = first_window(h, eh, g.sh, g.ph), oh1 = end_window(h, g.sh, g.ph, n.Ho);
    const I ow0 = first_window(w, ew, g.sw, g.pw), ow1 = end_window(w, g.sw, g.pw, n.Wo);
    const int64_t me = static_cast<int64_t>(h * n.W + w);
    const I base = b * n.Ho * n.Wo;
    A acc = A(0);
    for (I oh = oh0; oh < oh1; ++oh)
      for (I ow = ow0; ow < ow1; ++ow) {
        const I o = base + oh * n.Wo + ow;
        if (idx[o] == me) acc += convert<A>(gy[o]);
      }
    gx[i] = convert<T>(acc);
  }
}

template <class T, class I>
__global__ void avg_pool2d_forward_kernel(const T* __restrict__ x, T* __restrict__ y, Planes<I> n,
                                          Pool2dGeometry geometry) {
  using A = acc_t<T>;
  const Window<I> g = window_of<I>(geometry);
  const I total = n.B * n.Ho * n.Wo;
  const I stride = static_cast<I>(gridDim.x) * blockDim.x;
  for (I o = static_cast<I>(blockIdx.x) * blockDim.x + threadIdx.x; o < total; o += stride) {
    I b, oh, ow;
    split3(o, n.Ho, n.Wo, b, oh, ow);
    const Span<I> sh = avg_span(oh, n.H, g.kh, g.sh, g.ph), sw = avg_span(ow, n.W, g.kw, g.sw, g.pw);
    const T* xb = x + b * n.H * n.W;
    A s = A(0);
    for (I ih = sh.start; ih < sh.end; ++ih)
      for (I iw = sw.start; iw < sw.end; ++iw) s += convert<A>(xb[ih * n.W + iw]);
    const bool empty = sh.start >= sh.end || sw.start >= sw.end;
    y[o] = convert<T>(empty ? A(0) : s / avg_divisor<A>(sh, sw, geometry));
  }
}

template <class T, class I>
__global__ void avg_pool2d_backward_kernel(const T* __restrict__ gy, T* __restrict__ gx, Planes<I> n,
                                           Pool2dGeometry geometry) {
  using A = acc_t<T>;
  const Window<I> g = window_of<I>(geometry);
  const I total = n.B * n.H * n.W;
  const I stride = static_cast<I>(gridDim.x) * blockDim.x;
  for (I i = static_cast<I>(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
    I b, h, w;
    split3(i, n.H, n.W, b, h, w);
    const I oh0 = first_window(h, g.kh, g.sh, g.ph), oh1 = end_window(h, g.sh, g.ph, n.Ho);
    const I ow0 = first_window(w, g.kw, g.sw, g.pw), ow1 = end_window(w, g.sw, g.pw, n.Wo);
    const T* gb = gy + b * n.Ho * n.Wo;
    A acc = A(0);
    for (I oh = oh0; oh < oh1; ++oh) {
      const Span<I> sh = avg_span(oh, n.H, g.kh, g.sh, g.ph);
      for (I ow = ow0; ow < ow1; ++ow) {
        const Span<I> sw = avg_span(ow, n.W, g.kw, g.sw, g.pw);
        acc += convert<A>(gb[oh * n.Wo + ow]) / avg_divisor<A>(sh, sw, geometry);
      }
    }
    gx[i] = convert<T>(acc);
  }
}

template <class T, class I>
__global__ void adaptive_avg_pool2d_forward_kernel(const T* __restrict__ x, T* __restrict__ y, Planes<I> n) {
  using A = acc_t<T>;
  const I total = n.B * n.Ho * n.Wo;
  const I stride = static_cast<I>(gridDim.x) * blockDim.x;
  for (I o = static_cast<I>(blockIdx.x) * blockDim.x + threadIdx.x; o < total; o += stride) {
    I b, oh, ow;
    split3(o, n.Ho, n.Wo, b, oh, ow);
    const I h0 = adaptive_start(oh, n.H, n.Ho), h1 = adaptive_end(oh, n.H, n.Ho);
    const I w0 = adaptive_start(ow, n.W, n.Wo), w1 = adaptive_end(ow, n.W, n.Wo);
    const T* xb = x + b * n.H * n.W;
    A s = A(0);
    for (I ih = h0; ih < h1; ++ih)
      for (I iw = w0; iw < w1; ++iw) s += convert<A>(xb[ih * n.W + iw]);
    y[o] = convert<T>(s / static_cast<A>((h1 - h0) * (w1 - w0)));
  }
}

template <class T, class I>
__global__ void adaptive_avg_pool2d_backward_kernel(const T* __restrict__ gy, T* __restrict__ gx, Planes<I> n) {
  using A = acc_t<T>;
  const I total = n.B * n.H * n.W;
  const I stride = static_cast<I>(gridDim.x) * blockDim.x;
  for (I i = static_cast<I>(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
    I b, h, w;
    split3(i, n.H, n.W, b, h, w);
    // Windows holding h: floor(oh H / Ho) <= h < ceil((oh + 1) H / Ho).
    const I oh0 = (h * n.Ho) / n.H, oh1 = ((h + 1) * n.Ho + n.H - 1) / n.H;
    const I ow0 = (w * n.Wo) / n.W, ow1 = ((w + 1) * n.Wo + n.W - 1) / n.W;
    const T* gb = gy + b * n.Ho * n.Wo;
    A acc = A(0);
    for (I oh = oh0; oh < oh1; ++oh) {
      const I rows = adaptive_end(oh, n.H, n.Ho) - adaptive_start(oh, n.H, n.Ho);
      for (I ow = ow0; ow < ow1; ++ow) {
        const I cols = adaptive_end(ow, n.W, n.Wo) - adaptive_start(ow, n.W, n.Wo);
        acc += convert<A>(gb[oh * n.Wo + ow]) / static_cast<A>(rows * cols);
      }
    }
    gx[i] = convert<T>(acc);
  }
}

// ---- launchers -----------------------------------------------------------------------

// The sizes of a launch, read from the input-side view `in` (B, H, W) and the output-side
// view `out` (B, Ho, Wo).
Planes<int64_t> planes_of(const TensorView& in, const TensorView& out) {
  return {in.size(0), in.size(1), in.size(2), out.size(1), out.size(2)};
}

template <class I>
Planes<I> as_index(const Planes<int64_t>& n) {
  return {static_cast<I>(n.B), static_cast<I>(n.H), static_cast<I>(n.W), static_cast<I>(n.Ho), static_cast<I>(n.Wo)};
}

// 32-bit indices when every index a kernel forms (including a grid-stride step past the
// end, and products like (h + 1) Ho in the adaptive kernels) stays below 2^31.
bool fits_int32(const Planes<int64_t>& n) {
  const int64_t lim = INT32_MAX / 2;
  return n.B * n.H * n.W <= lim && n.B * n.Ho * n.Wo <= lim && (n.H + 1) * n.Ho <= lim && (n.W + 1) * n.Wo <= lim &&
         (n.Ho + 1) * n.H <= lim && (n.Wo + 1) * n.W <= lim;
}

// On the device of `out`, for `total` threads' worth of work: runs launch(T{}, planes,
// grid, stream) with the sizes in the narrowest safe index type, then checks the launch.
template <class F>
void dispatch(const TensorView& out, DType dtype, const Planes<int64_t>& n, int64_t total, const char* what,
              F&& launch) {
  if (total == 0) return;
  DeviceGuard guard(out.device);
  cudaStream_t stream = current_stream(out.device);
  visit_device_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    if constexpr (std::is_integral_v<T>) {
      launch_fail(what);
    } else {
      if (fits_int32(n)) launch(tag, as_index<int32_t>(n), grid_for(total), stream);
      else launch(tag, n, grid_for(total), stream);
      KILN_CUDA_CHECK_LAUNCH();
    }
  });
}

}  // namespace

void max_pool2d_forward(const TensorView& x, const TensorView& y, const TensorView& indices,
                        const Pool2dGeometry& g) {
  dispatch(y, x.dtype, planes_of(x, y), y.numel, "max_pool2d_forward: needs a floating dtype",
           [&](auto tag, auto n, unsigned grid, cudaStream_t stream) {
             using T = decltype(tag);
             using I = decltype(n.B);
             max_pool2d_forward_kernel<T, I><<<grid, kBlockSize, 0, stream>>>(x.ptr<const T>(), y.ptr<T>(),
                                                                              indices.ptr<int64_t>(), n, g);
           });
}

void max_pool2d_backward(const TensorView& gy, const TensorView& indices, const TensorView& gx,
                         const Pool2dGeometry& g) {
  dispatch(gx, gx.dtype, planes_of(gx, gy), gx.numel, "max_pool2d_backward: needs a floating dtype",
           [&](auto tag, auto n, unsigned grid, cudaStream_t stream) {
             using T = decltype(tag);
             using I = decltype(n.B);
             max_pool2d_backward_kernel<T, I><<<grid, kBlockSize, 0, stream>>>(
                 gy.ptr<const T>(), indices.ptr<const int64_t>(), gx.ptr<T>(), n, g);
           });
}

void avg_pool2d_forward(const TensorView& x, const TensorView& y, const Pool2dGeometry& g) {
  dispatch(y, x.dtype, planes_of(x, y), y.numel, "avg_pool2d_forward: needs a floating dtype",
           [&](auto tag, auto n, unsigned grid, cudaStream_t stream) {
             using T = decltype(tag);
             using I = decltype(n.B);
             avg_pool2d_forward_kernel<T, I><<<grid, kBlockSize, 0, stream>>>(x.ptr<const T>(), y.ptr<T>(), n, g);
           });
}

void avg_pool2d_backward(const TensorView& gy, const TensorView& gx, const Pool2dGeometry& g) {
  dispatch(gx, gx.dtype, planes_of(gx, gy), gx.numel, "avg_pool2d_backward: needs a floating dtype",
           [&](auto tag, auto n, unsigned grid, cudaStream_t stream) {
             using T = decltype(tag);
             using I = decltype(n.B);
             avg_pool2d_backward_kernel<T, I><<<grid, kBlockSize, 0, stream>>>(gy.ptr<const T>(), gx.ptr<T>(), n, g);
           });
}

void adaptive_avg_pool2d_forward(const TensorView& x, const TensorView& y) {
  dispatch(y, x.dtype, planes_of(x, y), y.numel, "adaptive_avg_pool2d_forward: needs a floating dtype",
           [&](auto tag, auto n, unsigned grid, cudaStream_t stream) {
             using T = decltype(tag);
             using I = decltype(n.B);
             adaptive_avg_pool2d_forward_kernel<T, I><<<grid, kBlockSize, 0, stream>>>(x.ptr<const T>(),
                                                                                       y.ptr<T>(), n);
           });
}

void adaptive_avg_pool2d_backward(const TensorView& gy, const TensorView& gx) {
  dispatch(gx, gx.dtype, planes_of(gx, gy), gx.numel, "adaptive_avg_pool2d_backward: needs a floating dtype",
           [&](auto tag, auto n, unsigned grid, cudaStream_t stream) {
             using T = decltype(tag);
             using I = decltype(n.B);
             adaptive_avg_pool2d_backward_kernel<T, I><<<grid, kBlockSize, 0, stream>>>(gy.ptr<const T>(),
                                                                                        gx.ptr<T>(), n);
           });
}

}  // namespace kiln::cuda
