// CPU reference batch / layer / group norm: plain loops in double over contiguous
// (N, C, S) or (M, D) data, two-pass statistics (mean, then the mean squared deviation).
// Parameters and statistics are read into double vectors first (they are short), so the
// loops are templated on x's type only.
#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include <kiln/core/cpu_loops.h>
#include <kiln/ops/op_list.h>

namespace kiln::cpu {
namespace {

using namespace kiln::detail;

// A contiguous floating view's values as doubles (empty for an undefined view).
std::vector<double> read(const TensorView& t) {
  if (!t.defined) return {};
  std::vector<double> v(static_cast<size_t>(t.numel));
  visit_dtype(t.dtype, [&](auto tag) {
    using T = decltype(tag);
    const T* p = t.ptr<const T>();
    for (size_t i = 0; i < v.size(); ++i) v[i] = to_f64(p[i]);
  });
  return v;
}

// Writes doubles into a contiguous view (no-op for an undefined view).
void write(const TensorView& t, const std::vector<double>& v) {
  if (!t.defined) return;
  visit_dtype(t.dtype, [&](auto tag) {
    using T = decltype(tag);
    T* p = t.ptr<T>();
    for (size_t i = 0; i < v.size(); ++i) p[i] = convert<T>(v[i]);
  });
}

// Calls f(T{}) for x's floating type (ops/norm.cpp admits no other).
template <class F>
void visit_floating(DType t, F&& f) {
  visit_dtype(t, [&](auto tag) {
    using T = decltype(tag);
    if constexpr (!std::is_integral_v<T>) f(tag);
  });
}

inline double param_or(const std::vector<double>& p, int64_t i, double dflt) {
  return p.empty() ? dflt : p[static_cast<size_t>(i)];
}

// The sums below run in double with kLanes partial sums: element s of each contiguous run
// of S goes to lane s mod kLanes, and the lanes are added pairwise at the end. The lanes
// are independent chains the compiler vectorises; the order is fixed by the shapes alone,
// so results do not depend on the thread count.
constexpr int kLanes = 8;

inline double lane_total(const double* a) {
  return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
}

// acc[lane] += f(s) over s < S.
template <class F>
inline void lane_sums(int64_t S, double* acc, F&& f) {
  int64_t s = 0;
  for (; s + kLanes <= S; s += kLanes)
    for (int l = 0; l < kLanes; ++l) acc[l] += f(s + l);
  for (; s < S; ++s) acc[s % kLanes] += f(s);
}

// Mean and biased variance of the elements x[(o * C + c) * S + s] for o < outer, s < S
// (one channel of (outer, C, S); C = 1 gives a plain block), in two passes.
template <class T>
void channel_moments(const T* x, int64_t outer, int64_t C, int64_t S, int64_t c, double& mean, double& var) {
  double acc[kLanes] = {};
  for (int64_t o = 0; o < outer; ++o) {
    const T* r = x + (o * C + c) * S;
    lane_sums(S, acc, [r](int64_t s) { return to_f64(r[s]); });
  }
  const double count = static_cast<double>(outer * S);
  mean = lane_total(acc) / count;
  double sq[kLanes] = {};
  const double m = mean;
  for (int64_t o = 0; o < outer; ++o) {
    const T* r = x + (o * C + c) * S;
    lane_sums(S, sq, [r, m](int64_t s) {
      const double d = to_f64(r[s]) - m;
      return d * d;
    });
  }
  var = lane_total(sq) / count;
}

// Channels per thread so that each has about kElementwiseGrain elements of (N, C, S).
inline int64_t channel_grain(int64_t N, int64_t S) {
  return std::max<int64_t>(1, kElementwiseGrain / std::max<int64_t>(1, N * S));
}

// All C channels' moments of (N, C, S), channels split over the thread pool.
template <class T>
void batch_moments(const T* x, int64_t N, int64_t C, int64_t S, double* mean, double* var) {
  parallel_for(C, channel_grain(N, S), [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) channel_moments(x, N, C, S, c, mean[c], var[c]);
  });
}

// Batch norm backward's sums of dy and dy * xhat over (N, S) for channel c.
template <class T>
void dy_sums(const T* g, const T* x, int64_t N, int64_t C, int64_t S, int64_t c, double mean, double invstd,
             double& sum_dy, double& sum_dy_xhat) {
  double a[kLanes] = {}, m[kLanes] = {};
  for (int64_t n = 0; n < N; ++n) {
    const T* gr = g + (n * C + c) * S;
    const T* xr = x + (n * C + c) * S;
    // Both sums in one pass over the row, lane by lane as lane_sums orders them.
    int64_t s = 0;
    for (; s + kLanes <= S; s += kLanes)
      for (int l = 0; l < kLanes; ++l) {
        const double gv = to_f64(gr[s + l]);
        a[l] += gv;
        m[l] += gv * (to_f64(xr[s + l]) - mean) * invstd;
      }
    for (; s < S; ++s) {
      const double gv = to_f64(gr[s]);
      a[s % kLanes] += gv;
      m[s % kLanes] += gv * (to_f64(xr[s]) - mean) * invstd;
    }
  }
  sum_dy = lane_total(a);
  sum_dy_xhat = lane_total(m);
}

}  // namespace

void batch_norm_forward(const TensorView& x, const TensorView& weight, const TensorView& bias,
                        const TensorView& running_mean, const TensorView& running_var, const TensorView& y,
                        const TensorView& save_mean, const TensorView& save_invstd, const BatchNormParams& p) {
  const int64_t N = p.N, C = p.C, S = p.S;
  const bool training = p.training;
  const double momentum = p.momentum, eps = p.eps;
  const std::vector<double> w = read(weight), b = read(bias);
  std::vector<double> rm = read(running_mean), rv = read(running_var);
  std::vector<double> mean(C), invstd(C);
  visit_floating(x.dtype, [&](auto tag) {
    using T = decltype(tag);
    const T* px = x.ptr<const T>();
    T* py = y.ptr<T>();
    const double count = static_cast<double>(N * S);
    std::vector<double> vars(training ? C : 0);
    if (training) batch_moments(px, N, C, S, mean.data(), vars.data());
    for (int64_t c = 0; c < C; ++c) {
      if (training) {
        const double var = vars[c];
        invstd[c] = 1.0 / std::sqrt(var + eps);
        if (!rm.empty()) {
          rm[c] = (1 - momentum) * rm[c] + momentum * mean[c];
          rv[c] = (1 - momentum) * rv[c] + momentum * var * count / (count - 1);
        }
      } else {
        mean[c] = rm[c];
        invstd[c] = 1.0 / std::sqrt(rv[c] + eps);
      }
    }
    parallel_for(C, channel_grain(N, S), [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; ++c) {
        const double scale = invstd[c] * param_or(w, c, 1.0), shift = param_or(b, c, 0.0), m = mean[c];
        for (int64_t n = 0; n < N; ++n) {
          const T* xr = px + (n * C + c) * S;
          T* yr = py + (n * C + c) * S;
          for (int64_t s = 0; s < S; ++s) yr[s] = convert<T>((to_f64(xr[s]) - m) * scale + shift);
        }
      }
    });
  });
  write(save_mean, mean);
  write(save_invstd, invstd);
  if (training) {
    write(running_mean, rm);
    write(running_var, rv);
  }
}

void batch_norm_backward(const TensorView& dy, const TensorView& x, const TensorView& weight,
                         const TensorView& save_mean, const TensorView& save_invstd, const TensorView& dx,
                         const TensorView& dweight, const TensorView& dbias, const BatchNormParams& p) {
  const int64_t N = p.N, C = p.C, S = p.S;
  const bool training = p.training;
  const std::vector<double> w = read(weight), mean = read(save_mean), invstd = read(save_invstd);
  std::vector<double> dw(C), db(C);
  visit_floating(x.dtype, [&](auto tag) {
    using T = decltype(tag);
    const T* px = x.ptr<const T>();
    const T* pg = dy.ptr<const T>();
    T* pdx = dx.defined ? dx.ptr<T>() : nullptr;
    const double count = static_cast<double>(N * S);
    std::vector<double> sums(C), sums_xhat(C);
    parallel_for(C, channel_grain(N, S), [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; ++c) dy_sums(pg, px, N, C, S, c, mean[c], invstd[c], sums[c], sums_xhat[c]);
    });
    for (int64_t c = 0; c < C; ++c) {
      dw[c] = sums_xhat[c];
      db[c] = sums[c];
    }
    if (pdx == nullptr) return;
    parallel_for(C, channel_grain(N, S), [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; ++c) {
        const double k = param_or(w, c, 1.0) * invstd[c], m = mean[c], is = invstd[c];
        const double mdy = training ? sums[c] / count : 0.0, mdyx = training ? sums_xhat[c] / count : 0.0;
        for (int64_t n = 0; n < N; ++n) {
          const int64_t base = (n * C + c) * S;
          const T* xr = px + base;
          const T* gr = pg + base;
          T* dr = pdx + base;
          for (int64_t s = 0; s < S; ++s) {
            const double xhat = (to_f64(xr[s]) - m) * is;
            dr[s] = convert<T>(k * (to_f64(gr[s]) - mdy - xhat * mdyx));
          }
        }
      }
    });
  });
  write(dweight, dw);
  write(dbias, db);
}

void layer_norm_forward(const TensorView& x, const TensorView& weight, const TensorView& bias, const TensorView& y,
                        const TensorView& mean, const TensorView& rstd, const LayerNormParams& p) {
  const int64_t M = p.M, D = p.D;
  const double eps = p.eps;
  const std::vector<double> w = read(weight), b = read(bias);
  std::vector<double> mu(M), rs(M);
  visit_floating(x.dtype, [&](auto tag) {
    using T = decltype(tag);
    const T* px = x.ptr<const T>();
    T* py = y.ptr<T>();
    parallel_for(M, std::max<int64_t>(1, kElementwiseGrain / std::max<int64_t>(1, D)), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        double var = 0;
        channel_moments(px + r * D, 1, 1, D, 0, mu[r], var);
        rs[r] = 1.0 / std::sqrt(var + eps);
        for (int64_t j = 0; j < D; ++j)
          py[r * D + j] =
              convert<T>((to_f64(px[r * D + j]) - mu[r]) * rs[r] * param_or(w, j, 1.0) + param_or(b, j, 0.0));
      }
    });
  });
  write(mean, mu);
  write(rstd, rs);
}

void layer_norm_backward(const TensorView& dy, const TensorView& x, const TensorView& weight, const TensorView& mean,
                         const TensorView& rstd, const TensorView& dx, const TensorView& dweight,
                         const TensorView& dbias, const LayerNormParams& p) {
  const int64_t M = p.M, D = p.D;
  const std::vector<double> w = read(weight), mu = read(mean), rs = read(rstd);
  std::vector<double> dw(D, 0.0), db(D, 0.0);
  visit_floating(x.dtype, [&](auto tag) {
    using T = decltype(tag);
    const T* px = x.ptr<const T>();
    const T* pg = dy.ptr<const T>();
    T* pdx = dx.defined ? dx.ptr<T>() : nullptr;
    // Rows in fixed blocks (at most 256, sized by M alone): each block sums its rows' dweight
    // and dbias terms, and the block sums are added in block order, so the result does not
    // depend on the thread count.
    std::vector<double> wv_store = w.empty() ? std::vector<double>(static_cast<size_t>(D), 1.0) : w;
    const double* wv = wv_store.data();
    const int64_t rows_per_block = std::max<int64_t>(64, (M + 255) / 256);
    const int64_t blocks = (M + rows_per_block - 1) / rows_per_block;
    std::vector<double> part_dw(static_cast<size_t>(blocks * D), 0.0), part_db(static_cast<size_t>(blocks * D), 0.0);
    parallel_chunks(blocks, [&](int64_t blk) {
      double* bdw = part_dw.data() + blk * D;
      double* bdb = part_db.data() + blk * D;
      for (int64_t r = blk * rows_per_block; r < std::min(M, (blk + 1) * rows_per_block); ++r) {
        // g = dy * weight; the row sums of g and g xhat in kLanes partial lanes (fixed order).
        const T* gr = pg + r * D;
        const T* xr = px + r * D;
        const double m = mu[r], s = rs[r];
        double ag[kLanes] = {}, agx[kLanes] = {};
        auto term = [&](int64_t j, int l) {
          const double dyv = to_f64(gr[j]), xhat = (to_f64(xr[j]) - m) * s;
          const double g = dyv * wv[j];
          ag[l] += g;
          agx[l] += g * xhat;
          bdw[j] += dyv * xhat;
          bdb[j] += dyv;
        };
        int64_t j0 = 0;
        for (; j0 + kLanes <= D; j0 += kLanes)
          for (int l = 0; l < kLanes; ++l) term(j0 + l, l);
        for (; j0 < D; ++j0) term(j0, static_cast<int>(j0 % kLanes));
        if (pdx == nullptr) continue;
        const double mg = lane_total(ag) / static_cast<double>(D), mgx = lane_total(agx) / static_cast<double>(D);
        T* dr = pdx + r * D;
        for (int64_t j = 0; j < D; ++j) {
          const double xhat = (to_f64(xr[j]) - m) * s;
          dr[j] = convert<T>(s * (to_f64(gr[j]) * wv[j] - mg - xhat * mgx));
        }
      }
    });
    for (int64_t blk = 0; blk < blocks; ++blk)
      for (int64_t j = 0; j < D; ++j) {
        dw[j] += part_dw[blk * D + j];
        db[j] += part_db[blk * D + j];
      }
  });
  write(dweight, dw);
  write(dbias, db);
}

void group_norm_forward(const TensorView& x, const TensorView& weight, const TensorView& bias, const TensorView& y,
                        const TensorView& mean, const TensorView& rstd, const GroupNormParams& p) {
  const int64_t N = p.N, C = p.C, S = p.S, G = p.G;
  const double eps = p.eps;
  const std::vector<double> w = read(weight), b = read(bias);
  const int64_t Cg = C / G, D = Cg * S;
  std::vector<double> mu(N * G), rs(N * G);
  visit_floating(x.dtype, [&](auto tag) {
    using T = decltype(tag);
    const T* px = x.ptr<const T>();
    T* py = y.ptr<T>();
    for (int64_t r = 0; r < N * G; ++r) {  // row r = (n, g): D consecutive elements
      const int64_t g = r % G;
      double var = 0;
      channel_moments(px + r * D, 1, 1, D, 0, mu[r], var);
      rs[r] = 1.0 / std::sqrt(var + eps);
      for (int64_t cl = 0; cl < Cg; ++cl) {
        const int64_t c = g * Cg + cl;
        const double scale = rs[r] * param_or(w, c, 1.0), shift = param_or(b, c, 0.0);
        for (int64_t s = 0; s < S; ++s) {
          const int64_t i = r * D + cl * S + s;
          py[i] = convert<T>((to_f64(px[i]) - mu[r]) * scale + shift);
        }
      }
    }
  });
  write(mean, mu);
  write(rstd, rs);
}

void group_norm_backward(const TensorView& dy, const TensorView& x, const TensorView& weight, const TensorView& mean,
                         const TensorView& rstd, const TensorView& dx, const TensorView& dweight,
                         const TensorView& dbias, const GroupNormParams& p) {
  const int64_t N = p.N, C = p.C, S = p.S, G = p.G;
  const std::vector<double> w = read(weight), mu = read(mean), rs = read(rstd);
  const int64_t Cg = C / G, D = Cg * S;
  std::vector<double> dw(C, 0.0), db(C, 0.0);
  visit_floating(x.dtype, [&](auto tag) {
    using T = decltype(tag);
    const T* px = x.ptr<const T>();
    const T* pg = dy.ptr<const T>();
    T* pdx = dx.defined ? dx.ptr<T>() : nullptr;
    for (int64_t r = 0; r < N * G; ++r) {
      const int64_t g = r % G;
      double sum_g = 0, sum_gx = 0;
      for (int64_t cl = 0; cl < Cg; ++cl) {
        const int64_t c = g * Cg + cl;
        for (int64_t s = 0; s < S; ++s) {
          const int64_t i = r * D + cl * S + s;
          const double dyv = to_f64(pg[i]), xhat = (to_f64(px[i]) - mu[r]) * rs[r];
          sum_g += dyv * param_or(w, c, 1.0);
          sum_gx += dyv * param_or(w, c, 1.0) * xhat;
          dw[c] += dyv * xhat;
          db[c] += dyv;
        }
      }
      if (pdx == nullptr) continue;
      const double mg = sum_g / static_cast<double>(D), mgx = sum_gx / static_cast<double>(D);
      for (int64_t cl = 0; cl < Cg; ++cl) {
        const int64_t c = g * Cg + cl;
        for (int64_t s = 0; s < S; ++s) {
          const int64_t i = r * D + cl * S + s;
          const double xhat = (to_f64(px[i]) - mu[r]) * rs[r];
          pdx[i] = convert<T>(rs[r] * (to_f64(pg[i]) * param_or(w, c, 1.0) - mg - xhat * mgx));
        }
      }
    }
  });
  write(dweight, dw);
  write(dbias, db);
}

}  // namespace kiln::cpu
