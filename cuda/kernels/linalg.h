// Small device helpers of the cuSOLVER glue (cuda/kernels/linalg_cusolver.cpp), kernels in
// cuda/kernels/linalg.cu. Plain C++ declarations, so the host-compiled glue includes them
// without CUDA's device headers.
#pragma once
#include <cstdint>

#include <cuda_runtime_api.h>

namespace kiln::cuda::linalg {

// out[b] = 2 * sum_i log(factor[b][i][i]) for `batch` contiguous n x n Cholesky factors.
void cholesky_logdet(const float* factor, float* out, int64_t batch, int64_t n, cudaStream_t stream);
void cholesky_logdet(const double* factor, double* out, int64_t batch, int64_t n, cudaStream_t stream);
// `batch` contiguous n x n identity matrices.
void fill_identity(float* a, int64_t batch, int64_t n, cudaStream_t stream);
void fill_identity(double* a, int64_t batch, int64_t n, cudaStream_t stream);

}  // namespace kiln::cuda::linalg
