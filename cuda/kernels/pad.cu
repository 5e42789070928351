// pad2d forward and backward on (B, H, W) planes.
//
//   forward:  y[b, oh, ow] = x[b, src(oh - top, H), src(ow - left, W)]   (0 where src is
//             outside, for zeros), src(j, n) = j inside [0, n); outside it -j / 2(n-1)-j
//             (reflect), clamp (replicate), j mod n (circular).
//   backward: gx[b, h, w] = sum of gy[b, oh, ow] over every (oh, ow) whose source is (h, w).
// x/gx (B, H, W) and y/gy (B, top + H + bottom, left + W + right), contiguous, one
// floating dtype; both write (=). Preconditions (ops/pad.cpp): pads >= 0, reflect pads
// < n, circular pads <= n, so a position has at most three sources per dim (itself and
// one mirror image or wrap on each side) or, for replicate, the edge plus a run of the
// border.
// The backward is a gather, one thread per input element, over the (at most 3 x 3)
// rectangles of output positions that read it: no atomics, so results are deterministic
// and f16/bf16 accumulate in f32 registers. One thread per element, grid-stride, 32-bit
// index arithmetic when the planes allow it.
// Bandwidth on H100/H200: not yet measured on a GPU.
#include <kiln/cuda/kernels/common.cuh>
#include <kiln/cuda/kernels/elementwise.cuh>
#include <kiln/ops/op_list.h>

namespace kiln::cuda {
namespace {

// ---- device helpers ------------------------------------------------------------------

template <class I>
__device__ __forceinline__ I pad_source(I o, I n, I before, PaddingMode mode) {
  const I j = o - before;
  if (j >= 0 && j < n) return j;
  switch (mode) {
    case PaddingMode::Reflect: return j < 0 ? -j : 2 * (n - 1) - j;
    case PaddingMode::Replicate: return j < 0 ? I(0) : n - 1;
    case PaddingMode::Circular: return j < 0 ? j + n : j - n;  // one wrap: pads <= n
    default: return I(-1);
  }
}

// The output positions of one dim that read input position i: three half-open ranges
// (the position itself, the border before it, the border after it), empty when lo >= hi.
// Fixed slots, unrolled loops: the ranges stay in registers.
template <class I>
struct Sources {
  I lo[3], hi[3];
};

template <class I>
__device__ __forceinline__ Sources<I> pad_sources(I i, I n, I before, I after, PaddingMode mode) {
  Sources<I> s;
  s.lo[0] = i + before;
  s.hi[0] = i + before + 1;
  s.lo[1] = s.hi[1] = s.lo[2] = s.hi[2] = 0;
  switch (mode) {
    case PaddingMode::Reflect: {
      if (i >= 1 && i <= before) {
        s.lo[1] = before - i;
        s.hi[1] = before - i + 1;
      }
      const I o = before + 2 * (n - 1) - i;
      if (o >= before + n && o < before + n + after) {
        s.lo[2] = o;
        s.hi[2] = o + 1;
      }
      break;
    }
    case PaddingMode::Replicate:
      if (i == 0) s.hi[1] = before;
      if (i == n - 1) {
        s.lo[2] = before + n;
        s.hi[2] = before + n + after;
      }
      break;
    case PaddingMode::Circular: {
      const I left = i + before - n;
      if (left >= 0) {
        s.lo[1] = left;
        s.hi[1] = left + 1;
      }
      const I right = i + before + n;
      if (right < before + n + after) {
        s.lo[2] = right;
        s.hi[2] = right + 1;
      }
      break;
    }
    default: break;
  }
  return s;
}

// ---- kernels -------------------------------------------------------------------------

template <class T, class I>
__global__ void pad2d_forward_kernel(const T* __restrict__ x, T* __restrict__ y, I B, I H, I W, I left, I top, I Ho,
                                     I Wo, PaddingMode mode) {
  const I total = B * Ho * Wo;
  const I stride = static_cast<I>(gridDim.x) * blockDim.x;
  for (I o = static_cast<I>(blockIdx.x) * blockDim.x + threadIdx.x; o < total; o += stride) {
    const I ow = o % Wo;
    const I t = o / Wo;
    const I oh = t % Ho;
    const I b = t / Ho;
    const I ih = pad_source(oh, H, top, mode), iw = pad_source(ow, W, left, mode);
    y[o] = ih < 0 || iw < 0 ? convert<T>(0.0f) : x[(b * H + ih) * W + iw];
  }
}

template <class T, class I>
__global__ void pad2d_backward_kernel(const T* __restrict__ gy, T* __restrict__ gx, I B, I H, I W, I left, I right,
                                      I top, I bottom, I Ho, I Wo, PaddingMode mode) {
  using A = acc_t<T>;
  const I total = B * H * W;
  const I stride = static_cast<I>(gridDim.x) * blockDim.x;
  for (I i = static_cast<I>(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
    const I w = i % W;
    const I t = i / W;
    const I h = t % H;
    const I b = t / H;
    const Sources<I> sh = pad_sources(h, H, top, bottom, mode), sw = pad_sources(w, W, left, right, mode);
    const T* g = gy + b * Ho * Wo;
    A acc = A(0);
#pragma unroll
    for (int rh = 0; rh < 3; ++rh)
      for (I oh = sh.lo[rh]; oh < sh.hi[rh]; ++oh)
#pragma unroll
        for (int rw = 0; rw < 3; ++rw)
          for (I ow = sw.lo[rw]; ow < sw.hi[rw]; ++ow) acc += convert<A>(g[oh * Wo + ow]);
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

// 32-bit indices when a grid-stride loop over n elements cannot overflow them.
bool fits_int32(int64_t n) { return n <= INT32_MAX / 2; }

}  // namespace

void pad2d_forward(const TensorView& x, const TensorView& y, const Pad2dParams& p) {
  const int64_t B = x.size(0), H = x.size(1), W = x.size(2), Ho = y.size(1), Wo = y.size(2);
  const int64_t total = y.numel;
  if (total == 0) return;
  DeviceGuard guard(y.device);
  cudaStream_t stream = current_stream(y.device);
  visit_floating(x.dtype, "pad2d_forward: needs a floating dtype", [&](auto tag) {
    using T = decltype(tag);
    const T* px = x.ptr<const T>();
    T* py = y.ptr<T>();
    if (fits_int32(total) && fits_int32(x.numel)) {
      pad2d_forward_kernel<T, int32_t><<<grid_for(total), kBlockSize, 0, stream>>>(
          px, py, static_cast<int32_t>(B), static_cast<int32_t>(H), static_cast<int32_t>(W),
          static_cast<int32_t>(p.left), static_cast<int32_t>(p.top), static_cast<int32_t>(Ho),
          static_cast<int32_t>(Wo), p.mode);
    } else {
      pad2d_forward_kernel<T, int64_t><<<grid_for(total), kBlockSize, 0, stream>>>(px, py, B, H, W, p.left, p.top,
                                                                                   Ho, Wo, p.mode);
    }
    KILN_CUDA_CHECK_LAUNCH();
  });
}

void pad2d_backward(const TensorView& gy, const TensorView& gx, const Pad2dParams& p) {
  const int64_t B = gx.size(0), H = gx.size(1), W = gx.size(2), Ho = gy.size(1), Wo = gy.size(2);
  const int64_t total = gx.numel;
  if (total == 0) return;
  DeviceGuard guard(gx.device);
  cudaStream_t stream = current_stream(gx.device);
  visit_floating(gx.dtype, "pad2d_backward: needs a floating dtype", [&](auto tag) {
    using T = decltype(tag);
    const T* pg = gy.ptr<const T>();
    T* px = gx.ptr<T>();
    if (fits_int32(total) && fits_int32(gy.numel)) {
      pad2d_backward_kernel<T, int32_t><<<grid_for(total), kBlockSize, 0, stream>>>(
          pg, px, static_cast<int32_t>(B), static_cast<int32_t>(H), static_cast<int32_t>(W),
          static_cast<int32_t>(p.left), static_cast<int32_t>(p.right), static_cast<int32_t>(p.top),
          static_cast<int32_t>(p.bottom), static_cast<int32_t>(Ho), static_cast<int32_t>(Wo), p.mode);
    } else {
      pad2d_backward_kernel<T, int64_t><<<grid_for(total), kBlockSize, 0, stream>>>(
          pg, px, B, H, W, p.left, p.right, p.top, p.bottom, Ho, Wo, p.mode);
    }
    KILN_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace kiln::cuda
