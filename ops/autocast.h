// Mixed precision by autocast (PyTorch's torch.autocast): inside an AutocastGuard the ops
// that gain from half precision compute in it, and the ops that need range or precision
// compute in f32, whatever dtype their inputs arrive in:
//
//   half (bf16 or f16)  matmul (and so nn::linear, whose bias follows), bmm, conv2d,
//                       conv_transpose2d, scaled_dot_product_attention: floating f32 inputs
//                       are cast to the autocast dtype (kernels accumulate in f32)
//   f32                 softmax, log_softmax, layer/batch/group norm, cross_entropy,
//                       nll_loss, binary_cross_entropy_with_logits, mse_loss, sum, mean:
//                       f16/bf16 inputs are cast to f32
//   everything else     runs in the dtype it is given (elementwise ops promote: a half
//                       activation added to an f32 residual gives f32)
//
// The casts are ordinary differentiable ops, so gradients reach the parameters in their own
// dtype: keep the parameters f32 and they are the f32 master weights, the optimizer never
// sees half (the recipe of Micikevicius et al., "Mixed Precision Training", ICLR 2018). Run
// the forward pass and the loss inside the guard and backward() after it, as with PyTorch.
// For f16, scale the loss (optim/grad_scaler.h): its gradients underflow otherwise; bf16
// has f32's range and needs no scaling.
//
// The state is per thread and nests; AutocastGuard(dtype, false) turns it off in a scope.
// On the CPU it is correct but not faster (the CPU kernels widen half to f32); it pays on
// GPUs, whose tensor cores run bf16/f16 products.
#pragma once
#include <kiln/core/dtype.h>
#include <kiln/core/tensor.h>

namespace kiln {

class AutocastGuard {
 public:
  // dtype: DType::BF16 or DType::F16 (kiln::Error otherwise).
  explicit AutocastGuard(DType dtype = DType::BF16, bool enabled = true);
  ~AutocastGuard();
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  bool prev_enabled_;
  DType prev_dtype_;
};

bool autocast_enabled();
DType autocast_dtype();  // meaningful while autocast_enabled()

namespace detail {
// For the ops' entry points: a floating f32 tensor cast to the autocast dtype when autocast
// is on (anything else, or autocast off: the tensor itself).
Tensor autocast_half(const Tensor& t);
// f16 / bf16 cast to f32 when autocast is on (anything else: the tensor itself).
Tensor autocast_f32(const Tensor& t);
}  // namespace detail

}  // namespace kiln
