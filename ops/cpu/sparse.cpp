// CPU kernels of the sparse inference ops (slots sparse_conv2d, sparse_linear; contracts
// in ops/sparse.h).
//
// sparse_conv2d, after Park et al. (ICLR 2017): the input is zero-padded once; each
// nonzero weight w[o, c, r, s] becomes an offset into the padded input (c, r, s) and a
// scale; an output row y of plane o is the sum over the row's nonzeros of scale times the
// input row at y * stride + r, shifted by s. The row being summed stays in L1 while the
// nonzeros stream past, and the input rows it reads are a few KB around row y. Work is
// split over (image, output channel) pairs; every output element is written by one
// thread in a fixed order, so the result does not depend on the thread count.
#include <algorithm>
#include <cstring>
#include <vector>

#include <kiln/core/parallel.h>
#include <kiln/ops/op_list.h>

namespace kiln::cpu {

void sparse_conv2d(TV x, TV row_ptr, TV col, TV values, TV bias, TV y, const SparseConvParams& p) {
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t O = y.size(1), Ho = y.size(2), Wo = y.size(3);
  const int64_t Hp = H + 2 * p.pad_h, Wp = W + 2 * p.pad_w;
  const float* xs = x.ptr<const float>();
  // the padded input (the input itself when there is no padding)
  std::vector<float> padded;
  const float* xp = xs;
  if (p.pad_h > 0 || p.pad_w > 0) {
    padded.assign(static_cast<size_t>(N * C * Hp * Wp), 0.0f);
    parallel_for(N * C, 4, [&](int64_t b, int64_t e) {
      for (int64_t nc = b; nc < e; ++nc)
        for (int64_t h = 0; h < H; ++h)
          std::memcpy(&padded[static_cast<size_t>((nc * Hp + h + p.pad_h) * Wp + p.pad_w)], xs + (nc * H + h) * W,
                      static_cast<size_t>(W) * sizeof(float));
    });
    xp = padded.data();
  }
  const int64_t* ptr = row_ptr.ptr<const int64_t>();
  const int64_t* cols = col.ptr<const int64_t>();
  const float* vals = values.ptr<const float>();
  const int64_t nnz = col.numel, khw = p.kh * p.kw;
  // each nonzero as an offset into one image's padded input
  std::vector<int64_t> off(static_cast<size_t>(nnz));
  for (int64_t j = 0; j < nnz; ++j) {
    const int64_t c = cols[j] / khw, r = (cols[j] % khw) / p.kw, s = cols[j] % p.kw;
    off[static_cast<size_t>(j)] = (c * Hp + r) * Wp + s;
  }
  const float* b = bias.defined ? bias.ptr<const float>() : nullptr;
  float* out = y.ptr<float>();
  const int64_t row_step = p.stride_h * Wp, sw = p.stride_w;
  parallel_for(N * O, 1, [&](int64_t begin, int64_t end) {
    for (int64_t no = begin; no < end; ++no) {
      const int64_t n = no / O, o = no % O;
      const float* img = xp + n * C * Hp * Wp;
      float* plane = out + no * Ho * Wo;
      const float b0 = b ? b[o] : 0.0f;
      const int64_t j0 = ptr[o], j1 = ptr[o + 1];
      for (int64_t yy = 0; yy < Ho; ++yy) {
        float* dst = plane + yy * Wo;
        for (int64_t xx = 0; xx < Wo; ++xx) dst[xx] = b0;
        const float* base = img + yy * row_step;
        if (sw == 1) {
          for (int64_t j = j0; j < j1; ++j) {
            const float v = vals[j];
            const float* src = base + off[static_cast<size_t>(j)];
            for (int64_t xx = 0; xx < Wo; ++xx) dst[xx] += v * src[xx];
          }
        } else {
          for (int64_t j = j0; j < j1; ++j) {
            const float v = vals[j];
            const float* src = base + off[static_cast<size_t>(j)];
            for (int64_t xx = 0; xx < Wo; ++xx) dst[xx] += v * src[xx * sw];
          }
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
