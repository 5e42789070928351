// Sparse inference kernels on the CPU: a pruned weight kept in compressed sparse row (CSR)
// form and applied without touching its zeros.
//
// sparse_conv2d is the direct sparse convolution of Park et al. (ICLR 2017, "Faster CNNs
// with direct sparse convolutions"): each nonzero weight w[o, c, r, s] adds w times a
// shifted (strided) plane of input channel c to output plane o, with no im2col and no
// dense GEMM; its cost is proportional to the nonzeros. sparse_linear is the same for a
// Linear (y = x W^T + b with W in CSR form). Both are inference ops: f32 on the CPU, no
// gradients (an input that requires one is an error). On a GPU, pruned models use 2:4
// masks and sparse tensor cores (cuSPARSELt, which this CUDA toolkit lacks) instead.
#pragma once
#include <cstdint>

#include <kiln/core/tensor.h>
#include <kiln/ops/conv.h>

namespace kiln {

// A (rows, ...) weight in CSR form over its rows: row i holds the nonzeros of weight[i]
// flattened (for a convolution weight (O, C, kh, kw): column c * kh * kw + r * kw + s).
struct CsrWeight {
  Shape shape;     // the dense weight's shape
  Tensor row_ptr;  // i64 (rows + 1), on the CPU
  Tensor col;      // i64 (nnz)
  Tensor values;   // f32 (nnz)
  int64_t nnz() const { return values.defined() ? values.numel() : 0; }
  double density() const;  // nnz / dense size
};

// The CSR form of a CPU weight (any floating dtype; values become f32). Exact zeros go.
CsrWeight to_csr(const Tensor& weight);

// Kernel contract (slot sparse_conv2d): x (N, C, H, W) f32 contiguous; the weight's CSR
// arrays (row_ptr i64, col i64, values f32); bias (O) f32 or undefined; y (N, O, Ho, Wo)
// f32 contiguous, written (=) with the convolution of x (zero padding) by the weight.
struct SparseConvParams {
  int64_t kh = 1, kw = 1;
  int64_t stride_h = 1, stride_w = 1;
  int64_t pad_h = 0, pad_w = 0;
};

// y = conv2d(x, weight, bias, stride, padding) (dilation 1, one group), with the weight in
// CSR form. x: f32 (N, C, H, W) or (C, H, W) on the CPU.
Tensor sparse_conv2d(const Tensor& x, const CsrWeight& weight, const Tensor& bias, Int2 stride, Int2 padding);
// y = x W^T + b for x (*, in_features) f32 on the CPU and W (out_features, in_features) in CSR form.
Tensor sparse_linear(const Tensor& x, const CsrWeight& weight, const Tensor& bias);

}  // namespace kiln
