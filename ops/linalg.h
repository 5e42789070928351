// Linear algebra of symmetric positive-definite matrices: the log-determinant through a
// Cholesky factorisation (the coding rate of MCR^2, Gaussian log-likelihoods).
//
//   logdet_spd(A) = log det A = 2 * sum_i log L_ii,   A = L L^T   (A: (..., n, n))
//   d logdet / dA = A^{-1}   (A symmetric; the gradient is symmetric)
//
// Only the lower triangle of A is read (as LAPACK's uplo = 'L'); pass a symmetric matrix.
// A matrix that is not positive definite is a kiln::Error naming the batch entry and
// the leading minor that failed (a NaN entry gives that error or a NaN result, as the
// library's factorisation finds it). First-order differentiable (the backward
// uses the inverse the forward computed; a create_graph pass through it is an error).
#pragma once
#include <cstdint>

#include <kiln/core/tensor.h>

namespace kiln {

// Kernel contract (slot spd_logdet, ops/op_list.h): a contiguous (batch, n, n) f32 or f64,
// n >= 1; writes logdet (batch) and inverse (batch, n, n), both contiguous of a's dtype,
// inverse = A^{-1} in full (both triangles). CPU: LAPACK ?potrf + ?potri (OpenBLAS);
// CUDA: cuSOLVER potrf + potrs against the identity. A failed factorisation throws
// kiln::Error with the batch entry and LAPACK's info (the order of the failing minor);
// on CUDA the kernel reads the info back (one synchronisation per call).
struct SpdParams {
  int64_t batch = 0, n = 0;
};

// log det A for each n x n matrix of A (..., n, n), f32 or f64; the result has A's
// leading dims.
Tensor logdet_spd(const Tensor& a);

}  // namespace kiln
