// Matrix products: cuBLASLt on CUDA, OpenBLAS on the CPU; f32 accumulation for f16/bf16.
#pragma once
#include <kiln/core/tensor.h>

namespace kiln {

// NumPy/PyTorch matmul: 1-D operands are promoted to matrices and the added dim removed
// afterwards; batch dims broadcast. Both operands must have the same floating dtype.
Tensor matmul(const Tensor& a, const Tensor& b);
// (B, M, K) @ (B, K, N) -> (B, M, N), no broadcasting.
Tensor bmm(const Tensor& a, const Tensor& b);

}  // namespace kiln
