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
// optim.cu: multi-tensor SGD and Adam/AdamW. Each list holds n device pointers (one per
// tensor, contiguous), numels[i] elements each; params and grads have dtype `dtype`
// (f16/bf16/f32/f64), state tensors f32 (f64 for f64 params). The launcher packs up to
// a fixed number of tensors and chunks into one by-value kernel argument per launch.
struct SgdKernelArgs {
  double lr, momentum, dampening, weight_decay;
  bool nesterov, maximize, init_momentum;
};
struct AdamKernelArgs {
  double lr, beta1, beta2, eps, weight_decay;
  double step_size;              // lr / (1 - beta1^step)
  double bias_correction2_sqrt;  // sqrt(1 - beta2^step)
  double decay;                  // 1 - lr * weight_decay (AdamW)
  bool decoupled_weight_decay, amsgrad, maximize;
};
// momentum_buffers is null when momentum == 0.
void launch_multi_tensor_sgd(int n, void* const* params, void* const* grads, void* const* momentum_buffers,
                             const int64_t* numels, DType dtype, const SgdKernelArgs& args, cudaStream_t stream);
// max_exp_avg_sqs is null unless amsgrad.
void launch_multi_tensor_adam(int n, void* const* params, void* const* grads, void* const* exp_avgs,
                              void* const* exp_avg_sqs, void* const* max_exp_avg_sqs, const int64_t* numels,
                              DType dtype, const AdamKernelArgs& args, cudaStream_t stream);
// [end:optim]
// ---- losses, dropout (ops/loss.h, ops/dropout.h) [section:loss] ----
// loss.cu: logits/dlogits contiguous (rows, classes) of `dtype`; target i64 (rows);
// losses, lse, grad in the accumulation dtype (f64 for f64 logits, f32 otherwise); grad
// has `rows` elements (grad_stride 1) or one (grad_stride 0).
void launch_cross_entropy_forward(const void* logits, DType dtype, const int64_t* target, void* losses, void* lse,
                                  int64_t rows, int64_t classes, int64_t ignore_index, double label_smoothing,
                                  cudaStream_t stream);
void launch_cross_entropy_backward(const void* logits, DType dtype, const int64_t* target, const void* lse,
                                   const void* grad, int64_t grad_stride, void* dlogits, int64_t rows,
                                   int64_t classes, int64_t ignore_index, double label_smoothing,
                                   cudaStream_t stream);
// dropout.cu: x, out contiguous (n), one floating dtype; 0 <= p < 1
void launch_dropout(const void* x, void* out, DType dtype, int64_t n, double p, uint64_t seed, uint64_t offset,
                    cudaStream_t stream);
// [end:loss]
// ---- convolution and pooling (ops/conv.h, ops/pool.h) [section:conv] ----
// (Convolutions themselves are cuDNN's, called from cuda/conv_glue.cpp.)
// pad.cu: x (B, H, W) and y (B, top + H + bottom, left + W + right), contiguous.
void launch_pad2d_forward(const void* x, void* y, DType dtype, int64_t B, int64_t H, int64_t W, int64_t left,
                          int64_t right, int64_t top, int64_t bottom, PaddingMode mode, cudaStream_t stream);
void launch_pad2d_backward(const void* gy, void* gx, DType dtype, int64_t B, int64_t H, int64_t W, int64_t left,
                           int64_t right, int64_t top, int64_t bottom, PaddingMode mode, cudaStream_t stream);
// pool.cu: x/gx (B, H, W), y/gy/indices (B, Ho, Wo), contiguous; see Backend::Pool2dGeometry.
struct Pool2dArgs {
  int64_t B, H, W, Ho, Wo;
  int64_t kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w;
  bool count_include_pad;
  int64_t divisor_override;  // > 0: divide by this
};
void launch_max_pool2d_forward(const void* x, void* y, int64_t* indices, DType dtype, const Pool2dArgs& a,
                               cudaStream_t stream);
void launch_max_pool2d_backward(const void* gy, const int64_t* indices, void* gx, DType dtype, const Pool2dArgs& a,
                                cudaStream_t stream);
void launch_avg_pool2d_forward(const void* x, void* y, DType dtype, const Pool2dArgs& a, cudaStream_t stream);
void launch_avg_pool2d_backward(const void* gy, void* gx, DType dtype, const Pool2dArgs& a, cudaStream_t stream);
void launch_adaptive_avg_pool2d_forward(const void* x, void* y, DType dtype, int64_t B, int64_t H, int64_t W,
                                        int64_t Ho, int64_t Wo, cudaStream_t stream);
void launch_adaptive_avg_pool2d_backward(const void* gy, void* gx, DType dtype, int64_t B, int64_t H, int64_t W,
                                         int64_t Ho, int64_t Wo, cudaStream_t stream);
// [end:conv]
// ---- normalisation (ops/norm.h) [section:norm] ----
// norm.cu. x, y, dy, dx contiguous of `dtype` (floating); weight, bias, dweight, dbias of
// `param_dtype` (dtype, or F32 for F16/BF16) and running stats of `running_dtype` (the
// same rule), contiguous, null when absent; statistics (mean, rstd/invstd) in f32 (f64
// for F64 x). Layer norm: x (M, D), stats (M). Batch norm: x (N, C, S), stats (C).
// Group norm: x (N, C, S), G groups, stats (N, G). Formulas in core/backend.h.
void launch_layer_norm_forward(const void* x, const void* weight, const void* bias, void* y, void* mean, void* rstd,
                               DType dtype, DType param_dtype, int64_t M, int64_t D, double eps, cudaStream_t stream);
void launch_layer_norm_backward(const void* dy, const void* x, const void* weight, const void* mean, const void* rstd,
                                void* dx, void* dweight, void* dbias, DType dtype, DType param_dtype, int64_t M,
                                int64_t D, cudaStream_t stream);
void launch_batch_norm_forward(const void* x, const void* weight, const void* bias, void* running_mean,
                               void* running_var, void* y, void* save_mean, void* save_invstd, DType dtype,
                               DType param_dtype, DType running_dtype, int64_t N, int64_t C, int64_t S, bool training,
                               double momentum, double eps, cudaStream_t stream);
void launch_batch_norm_backward(const void* dy, const void* x, const void* weight, const void* save_mean,
                                const void* save_invstd, void* dx, void* dweight, void* dbias, DType dtype,
                                DType param_dtype, int64_t N, int64_t C, int64_t S, bool training,
                                cudaStream_t stream);
void launch_group_norm_forward(const void* x, const void* weight, const void* bias, void* y, void* mean, void* rstd,
                               DType dtype, DType param_dtype, int64_t N, int64_t C, int64_t S, int64_t G, double eps,
                               cudaStream_t stream);
void launch_group_norm_backward(const void* dy, const void* x, const void* weight, const void* mean, const void* rstd,
                                void* dx, void* dweight, void* dbias, DType dtype, DType param_dtype, int64_t N,
                                int64_t C, int64_t S, int64_t G, cudaStream_t stream);
// [end:norm]

}  // namespace kiln::cuda
