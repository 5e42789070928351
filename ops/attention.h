// Scaled dot-product attention as one fused operator (PyTorch's
// F.scaled_dot_product_attention), forward and backward, without ever holding the
// Tq x Tk matrix of scores: the kernels walk the keys in tiles with an online softmax
// (Milakov & Gimelshein 2018; Dao et al., FlashAttention, 2022) and save only the
// log-sum-exp of each query row for the backward pass, which recomputes the
// probabilities tile by tile.
//
//   out[b, h, i] = sum_j P[i, j] Z[i, j] / (1 - p) v[b, h, j]
//   P[i, j] = softmax_j(scale q[b, h, i] . k[b, h, j] + mask[i, j])
// with mask = -inf above the causal diagonal (query i sees keys j <= i + Tk - Tq: the
// last query sees every key; for Tq == Tk this is PyTorch's is_causal) and Z the
// dropout mask (keep with probability 1 - p, drawn from the Philox stream of the
// generator, so the backward pass redraws it instead of storing it).
//
// CPU: ops/cpu/attention.cpp (tiles of keys, threads over (batch, head, query tiles));
// CUDA: cuda/kernels/attention.cu.
#pragma once
#include <optional>

#include <kiln/core/generator.h>
#include <kiln/core/tensor.h>

namespace kiln {

// Kernel parameters of the slots attention_forward / attention_backward. q (B, H, Tq, D),
// k (B, H, Tk, D), v (B, H, Tk, Dv), out and dout (B, H, Tq, Dv), lse (B, H, Tq) in
// accumulate_dtype; dq, dk, dv like q, k, v. Contiguous, one floating dtype, Tq, Tk, D,
// Dv >= 1, Tq <= Tk when causal, 0 <= dropout_p < 1 (ops/attention.cpp checks them).
// Forward writes out and lse = log sum_j exp(s_ij) of the masked, scaled scores (-inf
// for a row with no key, whose output is 0). Backward writes dq, dk, dv (=).
// The dropout mask of (b, h, i, j) is philox_keep(seed, offset + ((b H + h) Tq + i) Tk + j).
struct AttentionParams {
  int64_t B = 1, H = 1, Tq = 1, Tk = 1, D = 1, Dv = 1;
  bool causal = false;
  double scale = 1.0;
  double dropout_p = 0.0;
  uint64_t seed = 0, offset = 0;
};

// q (B, H, Tq, D), k (B, H, Tk, D), v (B, H, Tk, Dv) -> (B, H, Tq, Dv); also 3-D
// (H, T, D) inputs (no batch). scale defaults to 1 / sqrt(D). dropout_p applies only
// when > 0 (pass 0 in evaluation); its mask comes from `gen` (default: the global
// generator). Differentiable in q, k and v, twice too (the second order through the
// composite formula).
Tensor scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v, bool causal = false,
                                    double dropout_p = 0.0, std::optional<double> scale = std::nullopt,
                                    Generator* gen = nullptr);

// Which implementation scaled_dot_product_attention runs (PyTorch's sdpa_kernel):
//   Fused      the slots attention_forward / attention_backward above: O(T) memory;
//   Composite  naive_attention below (matmul, mask, softmax, dropout as ops, the (Tq, Tk)
//              scores materialised; its gradient through those ops); the same function,
//              the same dropout mask (drawn from the same generator counters);
//   Auto       (the default) Fused on the CPU; on CUDA Composite while the scores hold at
//              most kAttentionCompositeMaxScores elements, Fused beyond. Why: on the one
//              GPU kiln has run on (an H200, 2026-12-04), the CUDA fused kernel (a warp per
//              row, no tensor cores yet) took 3.3-3.6x as long forward + backward as the
//              composite on cuBLAS (f32, causal, B 1, H 4, D 64: T 1024 1.53 vs 0.47 ms,
//              T 4096 13.8 vs 3.8 ms), at 2.1 GB against 21 MB of memory for T 4096.
// The choice is per thread and nests, like AutocastGuard.
enum class AttentionBackend { Auto, Fused, Composite };
inline constexpr int64_t kAttentionCompositeMaxScores = int64_t{1} << 27;  // 512 MiB of f32 scores

class AttentionBackendGuard {
 public:
  explicit AttentionBackendGuard(AttentionBackend backend);
  ~AttentionBackendGuard();
  AttentionBackendGuard(const AttentionBackendGuard&) = delete;
  AttentionBackendGuard& operator=(const AttentionBackendGuard&) = delete;

 private:
  AttentionBackend prev_;
};
AttentionBackend attention_backend();
const char* attention_backend_name(AttentionBackend b);
// Whether scaled_dot_product_attention runs the composite for a problem of this size on
// this device under the current backend.
bool attention_uses_composite(const AttentionParams& p, Device device);

// The same function from plain ops (matmul, a -inf mask, softmax, dropout's mask): the
// reference the fused kernels are tested against, materialising the (Tq, Tk) scores.
Tensor naive_attention(const Tensor& q, const Tensor& k, const Tensor& v, bool causal = false,
                       double dropout_p = 0.0, std::optional<double> scale = std::nullopt, uint64_t seed = 0,
                       uint64_t offset = 0);

}  // namespace kiln
