// CPU kernels of the sparse inference ops (slots sparse_conv2d, sparse_linear; contracts
// in ops/sparse.h).
//
// sparse_conv2d, after Park et al. (ICLR 2017): no im2col, no dense GEMM; each nonzero
// weight w[o, c, r, s] is a scale and an offset into the input (c, r, s), and a tile of
// output (4 rows x 16 columns of plane o, or x 8) is the sum over the row's nonzeros of the
// scale times the input tile at that offset. The tile's accumulators stay in vector
// registers while the nonzeros stream past, so each nonzero costs one vector load and one
// fused multiply-add per 8 outputs. The input is copied once, zero-padded, with its columns split into
// `stride` phases (column q of phase p is padded column q * stride + p), so that the 8
// inputs of an output tile row are contiguous for any horizontal stride; every row ends in
// slack, so a tile may read past the row's last column (those lanes are not stored).
// Work is split over (image, output channel) pairs; every output is summed by one thread
// in CSR order, so the result does not depend on the thread count.
#include <algorithm>
#include <cstring>
#include <vector>

#include <kiln/core/parallel.h>
#include <kiln/ops/op_list.h>

namespace kiln::cpu {
namespace {

typedef float v8 __attribute__((vector_size(32)));
constexpr int64_t kLanes = 8, kRows = 4;

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

}  // namespace

void sparse_conv2d(TV x, TV row_ptr, TV col, TV values, TV bias, TV y, const SparseConvParams& p) {
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t O = y.size(1), Ho = y.size(2), Wo = y.size(3);
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
            float* dst = row + ph * Wq;
            for (int64_t i = 0; i < Wq; ++i) {
              const int64_t w = i * sw + ph - p.pad_w;
              dst[i] = (i * sw + ph < Wp && w >= 0 && w < W) ? src[w] : 0.0f;
            }
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
  parallel_for(N * O, 1, [&](int64_t begin, int64_t end) {
    for (int64_t no = begin; no < end; ++no) {
      const int64_t n = no / O, o = no % O;
      const float* img = inp + n * C * plane;
      float* dst = out + no * Ho * Wo;
      const v8 b0 = splat(b ? b[o] : 0.0f);
      const int64_t j0 = ptr[o], j1 = ptr[o + 1];
      int64_t x0 = 0;
      // two column blocks at a time while the row has them: 8 independent sums in flight
      for (; x0 + 2 * kLanes <= Wo; x0 += 2 * kLanes) {
        int64_t y0 = 0;
        for (; y0 + kRows <= Ho; y0 += kRows) {
          v8 a[2 * kRows];
          for (auto& t : a) t = b0;
          const float* base = img + y0 * row_step + x0;
          for (int64_t j = j0; j < j1; ++j) {
            const v8 v = splat(vals[j]);
            const float* s = base + off[static_cast<size_t>(j)];
            for (int64_t r = 0; r < kRows; ++r) {
              a[2 * r] = fma8(v, load8(s + r * row_step), a[2 * r]);
              a[2 * r + 1] = fma8(v, load8(s + r * row_step + kLanes), a[2 * r + 1]);
            }
          }
          for (int64_t r = 0; r < kRows; ++r) {
            store(dst + (y0 + r) * Wo + x0, a[2 * r], kLanes);
            store(dst + (y0 + r) * Wo + x0 + kLanes, a[2 * r + 1], kLanes);
          }
        }
        for (; y0 < Ho; ++y0) {
          v8 a0 = b0, a1 = b0;
          const float* base = img + y0 * row_step + x0;
          for (int64_t j = j0; j < j1; ++j) {
            const v8 v = splat(vals[j]);
            const float* s = base + off[static_cast<size_t>(j)];
            a0 = fma8(v, load8(s), a0);
            a1 = fma8(v, load8(s + kLanes), a1);
          }
          store(dst + y0 * Wo + x0, a0, kLanes);
          store(dst + y0 * Wo + x0 + kLanes, a1, kLanes);
        }
      }
      for (; x0 < Wo; x0 += kLanes) {
        const int64_t lanes = std::min(kLanes, Wo - x0);
        int64_t y0 = 0;
        for (; y0 + kRows <= Ho; y0 += kRows) {
          v8 a0 = b0, a1 = b0, a2 = b0, a3 = b0;
          const float* base = img + y0 * row_step + x0;
          for (int64_t j = j0; j < j1; ++j) {
            const v8 v = splat(vals[j]);
            const float* s = base + off[static_cast<size_t>(j)];
            a0 = fma8(v, load8(s), a0);
            a1 = fma8(v, load8(s + row_step), a1);
            a2 = fma8(v, load8(s + 2 * row_step), a2);
            a3 = fma8(v, load8(s + 3 * row_step), a3);
          }
          store(dst + y0 * Wo + x0, a0, lanes);
          store(dst + (y0 + 1) * Wo + x0, a1, lanes);
          store(dst + (y0 + 2) * Wo + x0, a2, lanes);
          store(dst + (y0 + 3) * Wo + x0, a3, lanes);
        }
        for (; y0 < Ho; ++y0) {
          v8 a0 = b0;
          const float* base = img + y0 * row_step + x0;
          for (int64_t j = j0; j < j1; ++j) a0 = fma8(splat(vals[j]), load8(base + off[static_cast<size_t>(j)]), a0);
          store(dst + y0 * Wo + x0, a0, lanes);
        }
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
