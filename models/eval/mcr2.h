// Maximal coding rate reduction, MCR^2 (Yu, Chan, You, Song & Ma, "Learning diverse and
// discriminative representations via the principle of maximal coding rate reduction",
// NeurIPS 2020), as differentiable functions of a batch of features.
//
// Z is (m, d): m samples of d-dimensional features (rows; the paper's Z is d x m, its
// Z Z^T is this Z^T Z). With eps the allowed distortion:
//   R(Z, eps)   = 1/2 logdet(I_d + d / (m eps^2) Z^T Z)                 (coding rate)
//   Rc(Z, eps | Pi) = sum_j m_j / (2 m) logdet(I_d + d / (m_j eps^2) Z_j^T Z_j)
//               (Z_j: the rows of class j, m_j of them; classes without rows add 0)
//   Delta R     = R - Rc    (rate reduction: large when the whole is spread out and each
//                            class is compressed; the paper maximises it, loss = -Delta R)
// The paper trains features on the unit sphere (normalise Z's rows first). The
// log-determinants go through logdet_spd (ops/linalg.h): a Cholesky factorisation, LAPACK
// on the CPU and cuSOLVER on CUDA; the class terms are one batched call (Z_j^T Z_j =
// Z^T Pi_j Z with the one-hot Pi_j), so nothing but the factorisation's status is read
// back to the host.
#pragma once
#include <cstdint>

#include <kiln/core/tensor.h>

namespace kiln::eval {

// R(Z, eps) as a 0-d tensor of Z's dtype (f32 or f64). Throws kiln::Error for a Z that is
// not 2-d with m, d >= 1, or eps <= 0.
Tensor coding_rate(const Tensor& z, double eps);

struct RateReduction {
  Tensor delta_r, r, rc;  // 0-d, differentiable in Z
};
// R, Rc and Delta R of Z (m, d) with integer labels (m) in [0, num_classes).
RateReduction rate_reduction(const Tensor& z, const Tensor& labels, int64_t num_classes, double eps);

}  // namespace kiln::eval
