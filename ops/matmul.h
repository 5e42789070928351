// Matrix products: cuBLASLt on CUDA, OpenBLAS on the CPU; f32 accumulation for f16/bf16.
#pragma once
#include <kiln/core/tensor.h>

namespace kiln {

// NumPy/PyTorch matmul: 1-D operands are promoted to matrices and the added dim removed
// afterwards; batch dims broadcast. Both operands must have the same floating dtype.
Tensor matmul(const Tensor& a, const Tensor& b);
// (B, M, K) @ (B, K, N) -> (B, M, N), no broadcasting.
Tensor bmm(const Tensor& a, const Tensor& b);

// What a fused linear layer applies after its bias.
enum class LinearActivation { None, GeluTanh };

// act(x @ weight^T + bias) as one op: x (..., K), weight (N, K), bias (N) or undefined;
// under autocast all three in the half dtype, as nn::Linear. With a bias, the product,
// the bias and the activation are one kernel slot (matmul_bias): on CUDA one cuBLASLt
// matmul with the BIAS or GELU_AUX_BIAS epilogue (the tanh GELU of GPT-2), which adds the
// bias, applies the activation and stores the activation's input for backward as it
// writes the product; on the CPU the OpenBLAS product, then the bias and the activation
// in place. Backward: the activation's gradient from the stored input (one kernel), two
// products and the bias gradient's column sum; differentiable again (create_graph).
Tensor fused_linear(const Tensor& x, const Tensor& weight, const Tensor& bias,
                    LinearActivation activation = LinearActivation::None);

// The matmul_bias slot's parameters (ops/op_list.h).
struct MatmulBiasParams {
  LinearActivation activation = LinearActivation::None;
};

}  // namespace kiln
