// CPU kernels of scaled_dot_product_attention (slots attention_forward, attention_backward;
// ops/attention.h has the contract). Flash-attention's tiling on the CPU: no Tq x Tk
// matrix is ever held, only one (query tile) x (key tile) block of scores at a time.
//
// Forward, per (batch, head, tile of kQ query rows) — the unit of work split over the
// thread pool: the keys in tiles of kK; a (kQ, kK) block of scores is one GEMM (OpenBLAS,
// on the calling thread), exponentiated with the vector exp; the online softmax keeps per
// query row the running max m, the running sum l of exp(s - m) (undropped) and the
// running output (one more GEMM per block), rescaled by exp(m_old - m_new) when the max
// grows. At the end out = acc / l and lse = m + log l.
// Backward (FlashAttention-2's formulas), per (batch, head) — split over the threads,
// each head's sums in a fixed order: D_i = dout_i . out_i; for each (key tile, query tile)
// block the probabilities p_ij = exp(s_ij - lse_i) are recomputed (GEMMs again), then
//   dv_j += p~_ij dout_i,  dp_ij = z~_ij (dout_i . v_j),  ds_ij = p_ij (dp_ij - D_i),
//   dq_i += scale ds_ij k_j,  dk_j += scale ds_ij q_i
// with z~ = keep / (1 - p) and p~ = p z~ under dropout.
// f32 computes in float, f64 in double; f16/bf16 are widened to f32 and narrowed back.
#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <limits>
#include <vector>

#include <kiln/ops/cpu/blas.h>

#include <kiln/core/cpu_loops.h>
#include <kiln/core/philox.h>
#include <kiln/ops/cpu/vec_math.h>
#include <kiln/ops/op_list.h>

namespace kiln::cpu {
namespace {

double exp_reference(UnaryOp, double x, double) { return std::exp(x); }


constexpr int64_t kQ = 64;   // query rows per tile
constexpr int64_t kK = 128;  // keys per tile


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

// e^x in place over a row (f32: Highway's vector exp; masked -inf entries give 0).
inline void exp_row(float* x, int64_t n) { vec::unary_f32(UnaryOp::Exp, x, x, n, &exp_reference, 0.0); }
inline void exp_row(double* x, int64_t n) {
  for (int64_t j = 0; j < n; ++j) x[j] = std::exp(x[j]);
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
  const T ninf = -std::numeric_limits<T>::infinity();
  const uint32_t threshold = philox_keep_threshold(p.dropout_p);
  parallel_for(p.B * p.H * tiles, 1, [&](int64_t u0, int64_t u1) {
    std::vector<T> S(static_cast<size_t>(kQ * kK)), acc(static_cast<size_t>(kQ * Dv)), m(kQ), l(kQ);
    for (int64_t u = u0; u < u1; ++u) {
      const int64_t bh = u / tiles, i0 = (u % tiles) * kQ, rows = std::min(Tq, i0 + kQ) - i0;
      const T* qt = q + (bh * Tq + i0) * D;
      const T* kb = k + bh * Tk * D;
      const T* vb = v + bh * Tk * Dv;
      std::fill(acc.begin(), acc.end(), T(0));
      std::fill(m.begin(), m.end(), ninf);
      std::fill(l.begin(), l.end(), T(0));
      const int64_t jend = key_end(p, i0 + rows - 1);  // the tile's last row sees the most keys
      for (int64_t j0 = 0; j0 < jend; j0 += kK) {
        const int64_t n = std::min(kK, jend - j0);
        // S = scale Q_tile K_block^T (rows, n)
        gemm(false, true, rows, n, D, scale, qt, D, kb + j0 * D, D, T(0), S.data(), n);
        for (int64_t r = 0; r < rows; ++r) {
          T* sr = S.data() + r * n;
          const int64_t nr = std::max<int64_t>(0, std::min(n, key_end(p, i0 + r) - j0));
          for (int64_t jj = nr; jj < n; ++jj) sr[jj] = ninf;  // masked (causal)
          T mx = m[r];
          for (int64_t jj = 0; jj < nr; ++jj) mx = std::max(mx, sr[jj]);
          if (mx == ninf) {  // nothing seen yet: this block adds nothing
            std::fill(sr, sr + n, T(0));
            continue;
          }
          const T corr = std::exp(m[r] - mx);  // 0 while m was -inf
          m[r] = mx;
          for (int64_t jj = 0; jj < n; ++jj) sr[jj] -= mx;
          exp_row(sr, n);
          T sum = 0;
          for (int64_t jj = 0; jj < n; ++jj) sum += sr[jj];
          l[r] = l[r] * corr + sum;
          if (corr != T(1)) {
            T* a = acc.data() + r * Dv;
            for (int64_t e = 0; e < Dv; ++e) a[e] *= corr;
          }
          if (p.dropout_p > 0)
            for (int64_t jj = 0; jj < n; ++jj) sr[jj] *= drop_factor<T>(p, threshold, bh, i0 + r, j0 + jj);
        }
        // acc += P V_block (rows, Dv)
        gemm(false, false, rows, Dv, n, T(1), S.data(), n, vb + j0 * Dv, Dv, T(1), acc.data(), Dv);
      }
      for (int64_t r = 0; r < rows; ++r) {
        T* o = out + (bh * Tq + i0 + r) * Dv;
        const T inv = l[r] > 0 ? T(1) / l[r] : T(0);
        for (int64_t e = 0; e < Dv; ++e) o[e] = acc[r * Dv + e] * inv;
        lse[bh * Tq + i0 + r] = l[r] > 0 ? m[r] + std::log(l[r]) : ninf;
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
  const T ninf = -std::numeric_limits<T>::infinity();
  const uint32_t threshold = philox_keep_threshold(p.dropout_p);
  parallel_for(p.B * p.H, 1, [&](int64_t bh0, int64_t bh1) {
    std::vector<T> P(static_cast<size_t>(kQ * kK)), dP(static_cast<size_t>(kQ * kK)), Di(Tq);
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
        for (int64_t i0 = 0; i0 < Tq; i0 += kQ) {
          const int64_t rows = std::min(kQ, Tq - i0);
          if (key_end(p, i0 + rows - 1) <= j0) continue;  // the whole tile is masked
          // P = exp(scale Q K^T - lse) (masked: 0); dP = dout V^T.
          gemm(false, true, rows, n, D, scale, qb + i0 * D, D, kb + j0 * D, D, T(0), P.data(), n);
          gemm(false, true, rows, n, Dv, T(1), gb + i0 * Dv, Dv, vb + j0 * Dv, Dv, T(0), dP.data(), n);
          for (int64_t r = 0; r < rows; ++r) {
            const int64_t i = i0 + r;
            T* pr = P.data() + r * n;
            T* dpr = dP.data() + r * n;
            const int64_t nr = lb[i] == ninf ? 0 : std::max<int64_t>(0, std::min(n, key_end(p, i) - j0));
            for (int64_t jj = 0; jj < nr; ++jj) pr[jj] -= lb[i];
            exp_row(pr, nr);
            std::fill(pr + nr, pr + n, T(0));
            // dS = P (z dP - D_i) scale, into dP; P becomes P z (dropout) for dV.
            for (int64_t jj = 0; jj < n; ++jj) {
              const T z = drop_factor<T>(p, threshold, bh, i, j0 + jj);
              dpr[jj] = pr[jj] * (dpr[jj] * z - Di[i]) * scale;
              pr[jj] *= z;
            }
          }
          // dV_j += (P z)^T dout_i; dQ_i += dS K_j; dK_j += dS^T Q_i.
          gemm(true, false, n, Dv, rows, T(1), P.data(), n, gb + i0 * Dv, Dv, T(1), dvb + j0 * Dv, Dv);
          gemm(false, false, rows, D, n, T(1), dP.data(), n, kb + j0 * D, D, T(1), dqb + i0 * D, D);
          gemm(true, false, n, D, rows, T(1), dP.data(), n, qb + i0 * D, D, T(1), dkb + j0 * D, D);
        }
      }
    }
  });
}

// Runs f(T{}, views) with T float or double. f16/bf16: the half views get f32 buffers
// (the inputs widened into them; the outputs, at the indices in `outs`, narrowed back
// after); views already f32 (the log-sum-exp) are used as they are.
template <class F>
void dispatch(std::vector<TensorView> views, std::initializer_list<size_t> outs, F&& f) {
  const DType dt = views[0].dtype;
  if (dt == DType::F32) return f(float{}, views);
  if (dt == DType::F64) return f(double{}, views);
  std::vector<Tensor> wide;
  const std::vector<TensorView> orig = views;
  for (size_t i = 0; i < views.size(); ++i) {
    if (views[i].dtype == DType::F32) continue;
    wide.push_back(empty(detail::shape_of(views[i]), DType::F32));
    const bool is_output = std::find(outs.begin(), outs.end(), i) != outs.end();
    if (!is_output) kiln::cpu::copy(views[i], kernel_view(wide.back()));
    views[i] = kernel_view(wide.back());
  }
  f(float{}, views);
  for (size_t o : outs)
    if (orig[o].dtype != DType::F32) kiln::cpu::copy(views[o], orig[o]);
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
