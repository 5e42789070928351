// CPU kernels of scaled_dot_product_attention (slots attention_forward, attention_backward;
// ops/attention.h has the contract). Flash-attention's tiling on the CPU: no Tq x Tk
// matrix is ever held, only one (query tile) x (key tile) block of scores at a time.
//
// Forward, per (batch, head, tile of kQ query rows) — the unit of work split over the
// thread pool: the keys in tiles of kK, each tile transposed once (D, kK) so that a row of
// scores is a loop over keys that vectorises; the online softmax keeps per query row the
// running max m, the running sum l of exp(s - m) (undropped) and the running output,
// rescaled by exp(m_old - m_new) when the max grows. At the end out = acc / l and
// lse = m + log l.
// Backward (FlashAttention-2's formulas), per (batch, head) — split over the threads,
// each head's sums in a fixed order: D_i = dout_i . out_i; for each key tile and query row
// the probabilities p_ij = exp(s_ij - lse_i) are recomputed, then
//   dv_j += p~_ij dout_i,  dp_ij = z~_ij (dout_i . v_j),  ds_ij = p_ij (dp_ij - D_i),
//   dq_i += scale ds_ij k_j,  dk_j += scale ds_ij q_i
// with z~ = keep / (1 - p) and p~ = p z~ under dropout.
// f32 computes in float, f64 in double; f16/bf16 are widened to f32 and narrowed back.
#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <vector>

#include <kiln/core/cpu_loops.h>
#include <kiln/core/philox.h>
#include <kiln/ops/op_list.h>

namespace kiln::cpu {
namespace {

constexpr int64_t kQ = 16;  // query rows per unit of forward work
constexpr int64_t kK = 64;  // keys per tile

// The last key query row i may see (exclusive bound), Tk when not causal.
inline int64_t key_end(const AttentionParams& p, int64_t i) {
  return p.causal ? std::min<int64_t>(p.Tk, i + p.Tk - p.Tq + 1) : p.Tk;
}

// Dropout's factor for score (bh, i, j): keep / (1 - p), or 1 without dropout.
template <class T>
inline T drop_factor(const AttentionParams& p, uint32_t threshold, int64_t bh, int64_t i, int64_t j) {
  if (p.dropout_p <= 0) return T(1);
  const uint64_t c = p.offset + static_cast<uint64_t>((bh * p.Tq + i) * p.Tk + j);
  return philox_keep(p.seed, c, threshold) ? static_cast<T>(1.0 / (1.0 - p.dropout_p)) : T(0);
}

// kt (D, n) = k rows [j0, j0 + n) transposed.
template <class T>
void transpose_tile(const T* k, int64_t D, int64_t j0, int64_t n, T* kt) {
  for (int64_t jj = 0; jj < n; ++jj)
    for (int64_t d = 0; d < D; ++d) kt[d * kK + jj] = k[(j0 + jj) * D + d];
}

// s[jj] = scale q . kt[:, jj] for jj < n.
template <class T>
inline void scores(const T* q, const T* kt, int64_t D, int64_t n, T scale, T* s) {
  std::fill(s, s + n, T(0));
  for (int64_t d = 0; d < D; ++d) {
    const T a = q[d];
    const T* kr = kt + d * kK;
    for (int64_t jj = 0; jj < n; ++jj) s[jj] += a * kr[jj];
  }
  for (int64_t jj = 0; jj < n; ++jj) s[jj] *= scale;
}

template <class T>
void forward_impl(const TensorView& qv, const TensorView& kv, const TensorView& vv, const TensorView& ov,
                  const TensorView& lv, const AttentionParams& p) {
  const T* q = qv.ptr<const T>();
  const T* k = kv.ptr<const T>();
  const T* v = vv.ptr<const T>();
  T* out = ov.ptr<T>();
  T* lse = lv.ptr<T>();
  const int64_t D = p.D, Dv = p.Dv, Tq = p.Tq, Tk = p.Tk;
  const int64_t tiles = (Tq + kQ - 1) / kQ;
  const T scale = static_cast<T>(p.scale);
  const uint32_t threshold = philox_keep_threshold(p.dropout_p);
  parallel_for(p.B * p.H * tiles, 1, [&](int64_t u0, int64_t u1) {
    std::vector<T> kt(static_cast<size_t>(D * kK)), s(kK), acc(static_cast<size_t>(kQ * Dv)), m(kQ), l(kQ);
    for (int64_t u = u0; u < u1; ++u) {
      const int64_t bh = u / tiles, i0 = (u % tiles) * kQ, i1 = std::min(Tq, i0 + kQ);
      const T* qb = q + bh * Tq * D;
      const T* kb = k + bh * Tk * D;
      const T* vb = v + bh * Tk * Dv;
      std::fill(acc.begin(), acc.end(), T(0));
      std::fill(m.begin(), m.end(), -std::numeric_limits<T>::infinity());
      std::fill(l.begin(), l.end(), T(0));
      const int64_t jend = key_end(p, i1 - 1);  // the tile's last row sees the most keys
      for (int64_t j0 = 0; j0 < jend; j0 += kK) {
        const int64_t n = std::min(kK, jend - j0);
        transpose_tile(kb, D, j0, n, kt.data());
        for (int64_t i = i0; i < i1; ++i) {
          const int64_t r = i - i0;
          const int64_t nr = std::min(n, key_end(p, i) - j0);  // keys of this tile row i sees
          if (nr <= 0) continue;
          scores(qb + i * D, kt.data(), D, nr, scale, s.data());
          T mx = m[r];
          for (int64_t jj = 0; jj < nr; ++jj) mx = std::max(mx, s[jj]);
          if (mx == -std::numeric_limits<T>::infinity()) continue;  // nothing seen yet
          const T corr = std::exp(m[r] - mx);  // 0 while m was -inf
          T* a = acc.data() + r * Dv;
          if (corr != T(1)) {
            l[r] *= corr;
            for (int64_t e = 0; e < Dv; ++e) a[e] *= corr;
          }
          m[r] = mx;
          T sum = 0;
          for (int64_t jj = 0; jj < nr; ++jj) {
            const T pj = std::exp(s[jj] - mx);
            sum += pj;
            const T pz = pj * drop_factor<T>(p, threshold, bh, i, j0 + jj);
            if (pz == T(0)) continue;
            const T* vr = vb + (j0 + jj) * Dv;
            for (int64_t e = 0; e < Dv; ++e) a[e] += pz * vr[e];
          }
          l[r] += sum;
        }
      }
      for (int64_t i = i0; i < i1; ++i) {
        const int64_t r = i - i0;
        T* o = out + (bh * Tq + i) * Dv;
        const T inv = l[r] > 0 ? T(1) / l[r] : T(0);
        for (int64_t e = 0; e < Dv; ++e) o[e] = acc[r * Dv + e] * inv;
        lse[bh * Tq + i] = l[r] > 0 ? m[r] + std::log(l[r]) : -std::numeric_limits<T>::infinity();
      }
    }
  });
}

template <class T>
void backward_impl(const TensorView& qv, const TensorView& kv, const TensorView& vv, const TensorView& ov,
                   const TensorView& gv, const TensorView& lv, const TensorView& dqv, const TensorView& dkv,
                   const TensorView& dvv, const AttentionParams& p) {
  const T* q = qv.ptr<const T>();
  const T* k = kv.ptr<const T>();
  const T* v = vv.ptr<const T>();
  const T* out = ov.ptr<const T>();
  const T* dout = gv.ptr<const T>();
  const T* lse = lv.ptr<const T>();
  T* dq = dqv.ptr<T>();
  T* dk = dkv.ptr<T>();
  T* dv = dvv.ptr<T>();
  const int64_t D = p.D, Dv = p.Dv, Tq = p.Tq, Tk = p.Tk;
  const T scale = static_cast<T>(p.scale);
  const uint32_t threshold = philox_keep_threshold(p.dropout_p);
  parallel_for(p.B * p.H, 1, [&](int64_t bh0, int64_t bh1) {
    std::vector<T> kt(static_cast<size_t>(D * kK)), vt(static_cast<size_t>(Dv * kK)), s(kK), dp(kK), Di(Tq);
    for (int64_t bh = bh0; bh < bh1; ++bh) {
      const T* qb = q + bh * Tq * D;
      const T* kb = k + bh * Tk * D;
      const T* vb = v + bh * Tk * Dv;
      const T* ob = out + bh * Tq * Dv;
      const T* gb = dout + bh * Tq * Dv;
      const T* lb = lse + bh * Tq;
      T* dqb = dq + bh * Tq * D;
      T* dkb = dk + bh * Tk * D;
      T* dvb = dv + bh * Tk * Dv;
      std::fill(dqb, dqb + Tq * D, T(0));
      std::fill(dkb, dkb + Tk * D, T(0));
      std::fill(dvb, dvb + Tk * Dv, T(0));
      for (int64_t i = 0; i < Tq; ++i) {
        T d = 0;
        for (int64_t e = 0; e < Dv; ++e) d += gb[i * Dv + e] * ob[i * Dv + e];
        Di[i] = d;
      }
      for (int64_t j0 = 0; j0 < Tk; j0 += kK) {
        const int64_t n = std::min(kK, Tk - j0);
        transpose_tile(kb, D, j0, n, kt.data());
        transpose_tile(vb, Dv, j0, n, vt.data());
        for (int64_t i = 0; i < Tq; ++i) {
          const int64_t nr = std::min(n, key_end(p, i) - j0);
          if (nr <= 0 || lb[i] == -std::numeric_limits<T>::infinity()) continue;
          const T* qi = qb + i * D;
          const T* gi = gb + i * Dv;
          scores(qi, kt.data(), D, nr, scale, s.data());
          scores(gi, vt.data(), Dv, nr, T(1), dp.data());  // dout_i . v_j
          T* dqi = dqb + i * D;
          for (int64_t jj = 0; jj < nr; ++jj) {
            const T pj = std::exp(s[jj] - lb[i]);
            const T z = drop_factor<T>(p, threshold, bh, i, j0 + jj);
            const T pz = pj * z;
            const int64_t j = j0 + jj;
            if (pz != T(0)) {
              T* dvj = dvb + j * Dv;
              for (int64_t e = 0; e < Dv; ++e) dvj[e] += pz * gi[e];
            }
            const T ds = pj * (dp[jj] * z - Di[i]) * scale;
            if (ds == T(0)) continue;
            const T* kj = kb + j * D;
            T* dkj = dkb + j * D;
            for (int64_t e = 0; e < D; ++e) {
              dqi[e] += ds * kj[e];
              dkj[e] += ds * qi[e];
            }
          }
        }
      }
    }
  });
}

// Runs f(T{}, views) with T float or double, widening f16/bf16 views to f32 first and
// narrowing the outputs (the views at the indices in `outs`) back.
template <class F>
void dispatch(std::vector<TensorView> views, std::initializer_list<size_t> outs, F&& f) {
  const DType dt = views[0].dtype;
  if (dt == DType::F32) return f(float{}, views);
  if (dt == DType::F64) return f(double{}, views);
  std::vector<Tensor> wide;
  const std::vector<TensorView> orig = views;
  for (TensorView& v : views) {
    wide.push_back(empty(detail::shape_of(v), DType::F32));
    if (v.dtype != DType::F32) kiln::cpu::copy(v, kernel_view(wide.back()));
    else kiln::cpu::copy(v, kernel_view(wide.back()));
    v = kernel_view(wide.back());
  }
  f(float{}, views);
  for (size_t o : outs) kiln::cpu::copy(views[o], orig[o]);
}

}  // namespace

void attention_forward(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                       const TensorView& lse, const AttentionParams& p) {
  dispatch({q, k, v, out, lse}, {3, 4}, [&](auto tag, const std::vector<TensorView>& x) {
    forward_impl<decltype(tag)>(x[0], x[1], x[2], x[3], x[4], p);
  });
}

void attention_backward(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                        const TensorView& dout, const TensorView& lse, const TensorView& dq, const TensorView& dk,
                        const TensorView& dv, const AttentionParams& p) {
  dispatch({q, k, v, out, dout, lse, dq, dk, dv}, {6, 7, 8}, [&](auto tag, const std::vector<TensorView>& x) {
    backward_impl<decltype(tag)>(x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7], x[8], p);
  });
}

}  // namespace kiln::cpu
