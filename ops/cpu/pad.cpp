// CPU reference of pad2d: each output position reads one input position (or zero); the
// backward walks the same map and adds each output gradient into the position it read.
#include <kiln/core/cpu_loops.h>
#include <kiln/ops/op_list.h>

#include <vector>

namespace kiln::cpu {

using namespace kiln::detail;

namespace {

// The input index that output index o (of a dim of size n padded by `before`) reads,
// or -1 for a zero.
int64_t pad_source(int64_t o, int64_t n, int64_t before, PaddingMode mode) {
  int64_t j = o - before;
  if (j >= 0 && j < n) return j;
  switch (mode) {
    case PaddingMode::Zeros: return -1;
    case PaddingMode::Reflect: return j < 0 ? -j : 2 * (n - 1) - j;
    case PaddingMode::Replicate: return j < 0 ? 0 : n - 1;
    case PaddingMode::Circular: return ((j % n) + n) % n;
  }
  return -1;
}

template <class F>
void for_each_source(int64_t B, int64_t H, int64_t W, int64_t left, int64_t right, int64_t top, int64_t bottom,
                     PaddingMode mode, F&& f) {
  const int64_t Ho = H + top + bottom, Wo = W + left + right;
  std::vector<int64_t> src_w(Wo);
  for (int64_t ow = 0; ow < Wo; ++ow) src_w[ow] = pad_source(ow, W, left, mode);
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t oh = 0; oh < Ho; ++oh) {
      const int64_t ih = pad_source(oh, H, top, mode);
      for (int64_t ow = 0; ow < Wo; ++ow) {
        const int64_t iw = src_w[ow];
        const int64_t out = (b * Ho + oh) * Wo + ow;
        f(out, ih < 0 || iw < 0 ? int64_t{-1} : (b * H + ih) * W + iw);
      }
    }
  }
}

}  // namespace

void pad2d_forward(const TensorView& x, const TensorView& y, const Pad2dParams& p) {
  visit_dtype(x.dtype, [&](auto tag) {
    using T = decltype(tag);
    const T* px = x.ptr<const T>();
    T* py = y.ptr<T>();
    for_each_source(x.size(0), x.size(1), x.size(2), p.left, p.right, p.top, p.bottom, p.mode,
                    [&](int64_t o, int64_t i) { py[o] = i < 0 ? convert<T>(0.0) : px[i]; });
  });
}

void pad2d_backward(const TensorView& gy, const TensorView& gx, const Pad2dParams& p) {
  visit_dtype(gy.dtype, [&](auto tag) {
    using T = decltype(tag);
    if constexpr (std::is_integral_v<T>) {
      throw Error("pad2d backward: integer gradient reached the CPU kernel");
    } else {
      const T* pg = gy.ptr<const T>();
      T* px = gx.ptr<T>();
      std::vector<double> acc(static_cast<size_t>(gx.numel), 0.0);
      for_each_source(gx.size(0), gx.size(1), gx.size(2), p.left, p.right, p.top, p.bottom, p.mode,
                      [&](int64_t o, int64_t i) {
                        if (i >= 0) acc[i] += to_f64(pg[o]);
                      });
      for (int64_t i = 0; i < gx.numel; ++i) px[i] = convert<T>(acc[i]);
    }
  });
}

}  // namespace kiln::cpu
