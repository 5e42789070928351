// CPU kernels of the sparse inference ops (slots sparse_conv2d, sparse_linear; contracts
// in ops/sparse.h).
//
// sparse_conv2d, after Park et al. (ICLR 2017): no im2col, no dense GEMM; each nonzero
// weight w[o, c, r, s] is a scale and an offset into the input (c, r, s), and a tile of
// output (4 rows x 16 columns of plane o, the second 8 columns partly outside the plane
// where it is narrower; or x 8) is the sum over the row's nonzeros of the scale times the
// input tile at that offset. The tile's accumulators stay in vector registers while the
// nonzeros stream past, so each nonzero costs one vector load and one fused multiply-add
// per 8 outputs. The input is copied once, zero-padded, with its columns split into
// `stride` phases (column q of phase p is padded column q * stride + p), so that the 8
// inputs of an output tile row are contiguous for any horizontal stride; every row ends in
// slack, so a tile may read past the row's last column (those lanes are not stored).
// Work is split over (image, output channel) pairs. (A strided 1x1 convolution arrives
// here unstrided, on the pixels it reads: ops/sparse.cpp subsamples its input first.)
//
// With a batch of 8 images or more and output planes at most 8 wide, the lanes run over the
// images instead (a row of 7 fills a vector badly; a batch always fills it): the input is
// transposed once to (C, Hp, Wp, N') with the batch innermost (N' padded to a multiple of 16), and a tile of
// 4 output pixels x one vector of images sums the nonzeros with one load and one FMA per
// vector; the output comes back from (O, Ho, Wo, N') to (N, O, Ho, Wo). That part is
// compiled once per CPU target Highway supports (AVX2, AVX-512, ...) and picked at run
// time (HWY_DYNAMIC_DISPATCH), as in vec_math.cpp.
//
// Every output element is the bias plus its nonzeros' products in CSR order, fused
// multiply-adds on every path: the result does not depend on the thread count, the batch
// path or the vector width.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kiln/ops/cpu/sparse.cpp"
#include <hwy/foreach_target.h>  // IWYU pragma: keep

#include <hwy/highway.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include <kiln/core/parallel.h>
#include <kiln/ops/op_list.h>

HWY_BEFORE_NAMESPACE();
namespace kiln::cpu::sparse_batch {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// yt (O, Ho, Wo, NP) from xt (C, Hp, Wp, NP): see the file comment. off[j]: nonzero j's
// offset into xt at output pixel (0, 0); row_step / col_step: the offset between output
// rows / columns; NP a multiple of every target's lane count.
void ConvBatch(const float* xt, const int64_t* off, const float* vals, const int64_t* ptr, const float* bias,
               float* yt, int64_t O, int64_t Ho, int64_t Wo, int64_t row_step, int64_t col_step, int64_t NP) {
  const hn::ScalableTag<float> d;
  const int64_t L = static_cast<int64_t>(hn::Lanes(d));
  // One task per (output row, vector of images): the input rows it reads (kh rows of every
  // channel, one vector of images wide) stay in cache while every output channel's nonzeros
  // stream past.
  const int64_t nb = NP / L;
  parallel_for(Ho * nb, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t y = t / nb, n0 = (t % nb) * L;
      const float* in_row = xt + y * row_step;
      for (int64_t o = 0; o < O; ++o) {
        const int64_t j0 = ptr[o], j1 = ptr[o + 1];
        const auto b0 = hn::Set(d, bias ? bias[o] : 0.0f);
        float* out_row = yt + (o * Ho + y) * Wo * NP;
        int64_t x = 0;
        for (; x + 4 <= Wo; x += 4) {
          auto a0 = b0, a1 = b0, a2 = b0, a3 = b0;
          const float* base = in_row + x * col_step + n0;
          for (int64_t j = j0; j < j1; ++j) {
            const auto v = hn::Set(d, vals[j]);
            const float* src = base + off[j];
            a0 = hn::MulAdd(v, hn::LoadU(d, src), a0);
            a1 = hn::MulAdd(v, hn::LoadU(d, src + col_step), a1);
            a2 = hn::MulAdd(v, hn::LoadU(d, src + 2 * col_step), a2);
            a3 = hn::MulAdd(v, hn::LoadU(d, src + 3 * col_step), a3);
          }
          float* dst = out_row + x * NP + n0;
          hn::StoreU(a0, d, dst);
          hn::StoreU(a1, d, dst + NP);
          hn::StoreU(a2, d, dst + 2 * NP);
          hn::StoreU(a3, d, dst + 3 * NP);
        }
        for (; x < Wo; ++x) {
          auto a0 = b0;
          const float* base = in_row + x * col_step + n0;
          for (int64_t j = j0; j < j1; ++j) a0 = hn::MulAdd(hn::Set(d, vals[j]), hn::LoadU(d, base + off[j]), a0);
          hn::StoreU(a0, d, out_row + x * NP + n0);
        }
      }
    }
  });
}

}  // namespace HWY_NAMESPACE
}  // namespace kiln::cpu::sparse_batch
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace kiln::cpu::sparse_batch {
HWY_EXPORT(ConvBatch);
void conv_batch(const float* xt, const int64_t* off, const float* vals, const int64_t* ptr, const float* bias,
                float* yt, int64_t O, int64_t Ho, int64_t Wo, int64_t row_step, int64_t col_step, int64_t NP) {
  HWY_DYNAMIC_DISPATCH(ConvBatch)(xt, off, vals, ptr, bias, yt, O, Ho, Wo, row_step, col_step, NP);
}
}  // namespace kiln::cpu::sparse_batch

namespace kiln::cpu {
namespace {

typedef float v8 __attribute__((vector_size(32)));
constexpr int64_t kLanes = 8, kRows = 4;
// From this batch on, and for output planes at most this wide, the lanes run over the
// images: a row of 7 fills a vector of 8 columns badly, but wider rows fill it well enough
// that the batch path's two transposes (as long as the kernel itself on 28 x 28 planes)
// cost more than they save.
constexpr int64_t kBatchLanes = 8, kBatchMaxWidth = 8;

inline v8 load8(const float* p) {
  v8 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline v8 splat(float x) { return v8{x, x, x, x, x, x, x, x}; }
// a + v * x, fused where the CPU has FMA (the build's x86-64-v3 does): one rounding, the
// same on every run and thread count.
inline v8 fma8(const v8& v, const v8& x, const v8& a) {
#if defined(__FMA__)
  return __builtin_ia32_vfmaddps256(v, x, a);
#else
  return a + v * x;
#endif
}
inline void store(float* dst, const v8& v, int64_t n) {
  if (n == kLanes) {
    std::memcpy(dst, &v, sizeof v);
  } else {
    float t[kLanes];
    std::memcpy(t, &v, sizeof v);
    for (int64_t i = 0; i < n; ++i) dst[i] = t[i];
  }
}

// The per-image path's tiles over one output plane: R rows x B column blocks of 8 at
// output (y0, x0), each the bias plus every nonzero of the row [j0, j1) in CSR order; of
// the last block, `lanes` are stored.
struct PlaneTiles {
  const float* vals;
  const int64_t* off;  // each nonzero's offset into one image's phase-split input
  int64_t row_step;    // input floats between output rows
  int64_t Wo;
  template <int R, int B>
  void run(const float* img, float* dst, int64_t y0, int64_t x0, int64_t lanes, const v8& b0, int64_t j0,
           int64_t j1) const {
    v8 a[R * B];
    for (auto& t : a) t = b0;
    const float* base = img + y0 * row_step + x0;
    for (int64_t j = j0; j < j1; ++j) {
      const v8 v = splat(vals[j]);
      const float* src = base + off[j];
      for (int r = 0; r < R; ++r)
        for (int c = 0; c < B; ++c) a[r * B + c] = fma8(v, load8(src + r * row_step + c * kLanes), a[r * B + c]);
    }
    for (int r = 0; r < R; ++r)
      for (int c = 0; c < B; ++c)
        store(dst + (y0 + r) * Wo + x0 + c * kLanes, a[r * B + c], c + 1 < B ? kLanes : lanes);
  }
};

}  // namespace

namespace {

// The batch path (see the file comment): transposes in, runs ConvBatch, transposes back.
void sparse_conv2d_batch(TV x, TV row_ptr, TV col, TV values, TV bias, TV y, const SparseConvParams& p) {
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t O = y.size(1), Ho = y.size(2), Wo = y.size(3);
  const int64_t Hp = H + 2 * p.pad_h, Wp = W + 2 * p.pad_w, NP = (N + 15) / 16 * 16;
  Tensor in_buf = empty({C * Hp * Wp * NP}), out_buf = empty({O * Ho * Wo * NP});
  float* const xt = in_buf.data<float>();
  float* const yt = out_buf.data<float>();
  const float* xs = x.ptr<const float>();
  // (C, H, W) planes of N images -> (C, Hp, Wp, NP), in 16 x 16 tiles (16 images x 16
  // columns) so that reads and writes both run along cache lines
  constexpr int64_t T = 16;
  parallel_for(C * Hp, 1, [&](int64_t begin, int64_t end) {
    for (int64_t ch = begin; ch < end; ++ch) {
      const int64_t c = ch / Hp, hp = ch % Hp, h = hp - p.pad_h;
      float* row = xt + ch * Wp * NP;
      std::fill(row, row + Wp * NP, 0.0f);
      if (h < 0 || h >= H) continue;
      for (int64_t n0 = 0; n0 < N; n0 += T)
        for (int64_t w0 = 0; w0 < W; w0 += T) {
          const int64_t nn = std::min(T, N - n0), ww = std::min(T, W - w0);
          for (int64_t n = 0; n < nn; ++n) {
            const float* src = xs + (((n0 + n) * C + c) * H + h) * W + w0;
            for (int64_t w = 0; w < ww; ++w) row[(w0 + w + p.pad_w) * NP + n0 + n] = src[w];
          }
        }
    }
  });
  const int64_t* cols = col.ptr<const int64_t>();
  const int64_t nnz = col.numel, khw = p.kh * p.kw;
  std::vector<int64_t> off(static_cast<size_t>(nnz));
  for (int64_t j = 0; j < nnz; ++j) {
    const int64_t c = cols[j] / khw, r = (cols[j] % khw) / p.kw, s = cols[j] % p.kw;
    off[static_cast<size_t>(j)] = ((c * Hp + r) * Wp + s) * NP;
  }
  sparse_batch::conv_batch(xt, off.data(), values.ptr<const float>(),
                                                 row_ptr.ptr<const int64_t>(),
                                                 bias.defined ? bias.ptr<const float>() : nullptr, yt, O, Ho, Wo,
                                                 p.stride_h * Wp * NP, p.stride_w * NP, NP);
  float* out = y.ptr<float>();
  // (O, Ho, Wo, NP) -> (N, O, Ho, Wo), in tiles of 16 pixels x 16 images
  const int64_t P = Ho * Wo;
  parallel_for(O, 1, [&](int64_t begin, int64_t end) {
    for (int64_t o = begin; o < end; ++o)
      for (int64_t i0 = 0; i0 < P; i0 += T)
        for (int64_t n0 = 0; n0 < N; n0 += T) {
          const int64_t ii = std::min(T, P - i0), nn = std::min(T, N - n0);
          for (int64_t n = 0; n < nn; ++n) {
            float* dst = out + ((n0 + n) * O + o) * P + i0;
            const float* src = yt + (o * P + i0) * NP + n0 + n;
            for (int64_t i = 0; i < ii; ++i) dst[i] = src[i * NP];
          }
        }
  });
}

}  // namespace

void sparse_conv2d(TV x, TV row_ptr, TV col, TV values, TV bias, TV y, const SparseConvParams& p) {
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t O = y.size(1), Ho = y.size(2), Wo = y.size(3);
  if (N >= kBatchLanes && Wo <= kBatchMaxWidth) return sparse_conv2d_batch(x, row_ptr, col, values, bias, y, p);
  const int64_t Hp = H + 2 * p.pad_h, Wp = W + 2 * p.pad_w, sw = p.stride_w;
  // phase-split padded rows: phase q of a row holds padded columns q, q + sw, ...; each
  // phase has Wq entries, slack included (a tile reads up to kLanes past an output row)
  const int64_t Wq = (Wp + sw - 1) / sw + kLanes, row_len = sw * Wq, plane = Hp * row_len;
  // (from kiln's CPU allocator, whose cache hands the same block back on the next call:
  // no fresh pages each time; every element is written below, padding and slack too)
  Tensor buffer = empty({N * C * plane + kLanes});
  float* const inp = buffer.data<float>();
  std::fill(inp + N * C * plane, inp + N * C * plane + kLanes, 0.0f);
  const float* xs = x.ptr<const float>();
  parallel_for(N * C, 4, [&](int64_t b, int64_t e) {
    for (int64_t nc = b; nc < e; ++nc) {
      float* pl = inp + nc * plane;
      for (int64_t hp = 0; hp < Hp; ++hp) {
        float* row = pl + hp * row_len;
        const int64_t h = hp - p.pad_h;
        if (h < 0 || h >= H) {
          std::fill(row, row + row_len, 0.0f);
          continue;
        }
        const float* src = xs + (nc * H + h) * W;
        if (sw == 1) {
          std::fill(row, row + p.pad_w, 0.0f);
          std::memcpy(row + p.pad_w, src, static_cast<size_t>(W) * sizeof(float));
          std::fill(row + p.pad_w + W, row + row_len, 0.0f);
        } else {
          for (int64_t ph = 0; ph < sw; ++ph) {
            // entry i holds column w = i * sw + ph - pad_w: inside the image for i in [lo, hi)
            float* dst = row + ph * Wq;
            const int64_t first = p.pad_w - ph, lo = std::max<int64_t>(0, (first + sw - 1) / sw);
            const int64_t hi = std::max(lo, std::min(Wq, (W + p.pad_w - ph + sw - 1) / sw));
            std::fill(dst, dst + lo, 0.0f);
            const float* s0 = src + lo * sw + ph - p.pad_w;
            for (int64_t i = lo; i < hi; ++i) dst[i] = s0[(i - lo) * sw];
            std::fill(dst + hi, dst + Wq, 0.0f);
          }
        }
      }
    }
  });
  const int64_t* ptr = row_ptr.ptr<const int64_t>();
  const int64_t* cols = col.ptr<const int64_t>();
  const float* vals = values.ptr<const float>();
  const int64_t nnz = col.numel, khw = p.kh * p.kw;
  std::vector<int64_t> off(static_cast<size_t>(nnz));  // each nonzero's offset into one image's input
  for (int64_t j = 0; j < nnz; ++j) {
    const int64_t c = cols[j] / khw, r = (cols[j] % khw) / p.kw, s = cols[j] % p.kw;
    off[static_cast<size_t>(j)] = c * plane + r * row_len + (s % sw) * Wq + s / sw;
  }
  const float* b = bias.defined ? bias.ptr<const float>() : nullptr;
  float* out = y.ptr<float>();
  const int64_t row_step = p.stride_h * row_len;  // input rows between output rows
  const PlaneTiles t{vals, off.data(), row_step, Wo};
  parallel_for(N * O, 1, [&](int64_t begin, int64_t end) {
    for (int64_t no = begin; no < end; ++no) {
      const int64_t n = no / O, o = no % O;
      const float* img = inp + n * C * plane;
      float* dst = out + no * Ho * Wo;
      const v8 b0 = splat(b ? b[o] : 0.0f);
      const int64_t j0 = ptr[o], j1 = ptr[o + 1];
      // tiles of 4 rows x 2 column blocks while the plane has more than one block's
      // columns left (8 independent sums in flight; of the second block, the lanes inside
      // the plane are stored), then one block and shorter tiles at the edges
      int64_t x0 = 0;
      for (; x0 + kLanes < Wo; x0 += 2 * kLanes) {
        const int64_t lanes = std::min(kLanes, Wo - x0 - kLanes);
        int64_t y0 = 0;
        for (; y0 + kRows <= Ho; y0 += kRows) t.run<kRows, 2>(img, dst, y0, x0, lanes, b0, j0, j1);
        for (; y0 < Ho; ++y0) t.run<1, 2>(img, dst, y0, x0, lanes, b0, j0, j1);
      }
      for (; x0 < Wo; x0 += kLanes) {
        const int64_t lanes = std::min(kLanes, Wo - x0);
        int64_t y0 = 0;
        for (; y0 + kRows <= Ho; y0 += kRows) t.run<kRows, 1>(img, dst, y0, x0, lanes, b0, j0, j1);
        for (; y0 < Ho; ++y0) t.run<1, 1>(img, dst, y0, x0, lanes, b0, j0, j1);
      }
    }
  });
}

// y[n, o] = b[o] + sum over row o's nonzeros of v * x[n, col]: rows of x in blocks, so a
// block of inputs stays in cache while every output feature's nonzeros stream past.
void sparse_linear(TV x, TV row_ptr, TV col, TV values, TV bias, TV y) {
  const int64_t N = x.size(0), I = x.size(1), O = y.size(1);
  const float* xs = x.ptr<const float>();
  const int64_t* ptr = row_ptr.ptr<const int64_t>();
  const int64_t* cols = col.ptr<const int64_t>();
  const float* vals = values.ptr<const float>();
  const float* b = bias.defined ? bias.ptr<const float>() : nullptr;
  float* out = y.ptr<float>();
  parallel_for(N, 8, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) {
      const float* row = xs + n * I;
      for (int64_t o = 0; o < O; ++o) {
        float acc = b ? b[o] : 0.0f;
        for (int64_t j = ptr[o]; j < ptr[o + 1]; ++j) acc += vals[j] * row[cols[j]];
        out[n * O + o] = acc;
      }
    }
  });
}

}  // namespace kiln::cpu
#endif  // HWY_ONCE
