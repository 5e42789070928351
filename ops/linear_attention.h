// Attention in time linear in the sequence length through random features: the kernel
// exp(q . k) of softmax attention is replaced by an inner product of feature maps,
// k(q, k) ~ phi(q) . phi(k), so that
//
//   out_i = sum_j phi(q_i) . phi(k_j) v_j / sum_j phi(q_i) . phi(k_j)
//         = phi(q_i)^T (sum_j phi(k_j) v_j^T) / phi(q_i)^T (sum_j phi(k_j))
//
// costs O(T m D) instead of O(T^2 D) for m features.
//
// Performer's FAVOR+ (Choromanski et al., "Rethinking Attention with Performers", ICLR
// 2021): positive random features phi(x) = exp(W x - |x|^2 / 2) / sqrt(m), x = q or k
// scaled by scale^(1/2), with the rows of W (m, D) Gaussian and orthogonal in blocks of D
// (orthogonal random features; gaussian_features below). E[phi(q) . phi(k)] = exp(scale
// q . k): an unbiased estimate of softmax attention's kernel, positive everywhere, so the
// normaliser never changes sign. A stabiliser (the largest exponent of each query row and of
// all the keys of a head) is subtracted before exp; it cancels in the ratio.
//
// Random Feature Attention (Peng et al., "Random Feature Attention", ICLR 2021):
// trigonometric random features phi(x) = [sin(W x / sigma), cos(W x / sigma)] / sqrt(m)
// of the unit vectors q / |q| and k / |k|, for which E[phi(q) . phi(k)] =
// exp(-|q^ - k^|^2 / (2 sigma^2)) = exp((q^ . k^ - 1) / sigma^2): RFA approximates softmax
// attention over the normalised queries and keys at temperature sigma^2
// (rfa_exact_attention gives that target exactly). These features can make the normaliser
// small or negative; it is clamped at eps, as RFA's implementation does. (RFA's gated,
// recency-weighted variant is not included.)
//
// Causal attention (query i sees keys j <= i + Tk - Tq, the alignment of
// scaled_dot_product_attention) runs in chunks of `chunk` positions: within a chunk the
// masked (chunk x chunk) products, across chunks the running sums of phi(k) v^T and phi(k),
// formed for all chunks at once as a product with a triangular matrix of ones. Extra
// memory O(T (chunk + m D / chunk)) per head; never a T x T matrix.
//
// Both are composites of differentiable ops (matmul, exp, sin/cos, reductions), so they run
// on every backend those ops have (the CPU and CUDA kernels), differentiate to any order and
// are checked against their exact counterparts in tests/ops/test_linear_attention.cpp.
#pragma once
#include <cstdint>

#include <kiln/core/generator.h>
#include <kiln/core/tensor.h>

namespace kiln {

// (m, d) random projection, f32 on the CPU: rows drawn N(0, I_d) from `gen`; orthogonal:
// each block of d rows made orthonormal (Gram-Schmidt in f64) and each row rescaled to the
// norm of an independent N(0, I_d) vector, so every row is still N(0, I_d) in distribution
// (Performer's orthogonal random features, which lower the estimator's variance).
Tensor gaussian_features(int64_t m, int64_t d, Generator& gen, bool orthogonal = true);

// q (B, H, Tq, D), k (B, H, Tk, D), v (B, H, Tk, Dv) -> (B, H, Tq, Dv) (also 3-D, no batch);
// features (m, D) from gaussian_features. scale defaults to 1 / sqrt(D). Throws kiln::Error
// for mismatched shapes, dtypes or devices, Tq > Tk when causal, chunk < 1.
Tensor performer_attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& features, bool causal,
                           double scale = -1.0, int64_t chunk = 64);

// RFA with 2m features from features (m, D); sigma > 0 (the kernel's width on unit vectors).
Tensor rfa_attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& features, bool causal,
                     double sigma = 1.0, int64_t chunk = 64, double eps = 1e-6);

// What rfa_attention estimates: softmax attention of q / |q| and k / |k| at scale 1 / sigma^2.
Tensor rfa_exact_attention(const Tensor& q, const Tensor& k, const Tensor& v, bool causal, double sigma = 1.0);

// The shared core: out = phi_q (sum phi_k v^T) / phi_q (sum phi_k), with causality as above.
// phi_q (B, H, Tq, F), phi_k (B, H, Tk, F), v (B, H, Tk, Dv). The normaliser: + eps for
// features that are positive (Performer: smooth, differentiable to any order), clamped at
// eps when it may change sign (RFA: clamp_normaliser).
Tensor feature_attention(const Tensor& phi_q, const Tensor& phi_k, const Tensor& v, bool causal, int64_t chunk = 64,
                         double eps = 1e-6, bool clamp_normaliser = false);

}  // namespace kiln
