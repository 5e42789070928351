// Declarations of every kernel launcher in cuda/kernels/*.cu. Launchers take a stream,
// return early for empty input and check the launch (throwing kiln::Error). Inputs
// were validated by ops/ and the backend glue.
#pragma once
#include <cstdint>

#include <cuda_runtime_api.h>

#include <kiln/core/op_kinds.h>
#include <kiln/cuda/kernels/args.h>

namespace kiln::cuda {

// copy.cu
void launch_fill(const TensorArg& out, double value, int64_t ivalue, cudaStream_t stream);
void launch_copy(const TensorArg& src, const TensorArg& out, cudaStream_t stream);  // strided + cast
void launch_random(const TensorArg& out, RandomKind kind, uint64_t seed, uint64_t offset, double a, double b,
                   cudaStream_t stream);  // out contiguous
// unary.cu
void launch_unary(UnaryOp op, const TensorArg& x, const TensorArg& y, double alpha, cudaStream_t stream);
// binary.cu
void launch_binary(BinaryOp op, const TensorArg& a, const TensorArg& b, const TensorArg& out, cudaStream_t stream);
void launch_where(const TensorArg& cond, const TensorArg& a, const TensorArg& b, const TensorArg& out,
                  cudaStream_t stream);
// reduce.cu: x contiguous (outer, r, inner) -> out contiguous (outer, inner)
void launch_reduce(ReduceOp op, const void* x, DType x_dtype, void* out, DType out_dtype, int64_t outer, int64_t r,
                   int64_t inner, cudaStream_t stream);
// softmax.cu: contiguous (outer, n, inner)
void launch_softmax(const void* x, void* out, DType dtype, int64_t outer, int64_t n, int64_t inner, bool log,
                    cudaStream_t stream);
// index.cu
void launch_index_select(const void* x, const int64_t* index, void* out, size_t elem_size, int64_t outer, int64_t n,
                         int64_t k, int64_t inner, cudaStream_t stream);
void launch_gather(const void* x, const int64_t* index, void* out, size_t elem_size, int64_t outer, int64_t n,
                   int64_t k, int64_t inner, cudaStream_t stream);
void launch_scatter_add(void* out, const int64_t* index, const void* src, DType dtype, int64_t outer, int64_t n,
                        int64_t k, int64_t inner, cudaStream_t stream);

// ---- fused optimizer updates (optim/) [section:optim] ----
// [end:optim]
// ---- losses, dropout (ops/loss.h, ops/dropout.h) [section:loss] ----
// [end:loss]
// ---- convolution and pooling (ops/conv.h, ops/pool.h) [section:conv] ----
// [end:conv]
// ---- normalisation (ops/norm.h) [section:norm] ----
// [end:norm]

}  // namespace kiln::cuda
