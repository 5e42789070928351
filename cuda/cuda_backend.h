// The CUDA backend: kiln's Backend on CUDA devices. The methods are the host-side glue
// (compiled by the host compiler, in cuda/*.cpp): they set the device, describe tensors
// as TensorArgs and call the launchers of cuda/kernels/*.cu on the current stream.
#pragma once
#include <kiln/core/backend.h>
#include <kiln/cuda/kernels/args.h>

namespace kiln::cuda {

// Describes a tensor for a launcher; kernels of one launch get coalesced geometry from
// make_args.
TensorArg make_arg(const Tensor& t);
// Describes tensors of one shape, merging dims that are contiguous in all of them, so
// strided kernels do less index arithmetic.
void coalesce(TensorArg* args, int n);

class CudaBackend final : public Backend {
 public:
  const char* name() const override { return "cuda"; }
  int device_count() override;
  Allocator& allocator() override;
  void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, size_t nbytes) override;
  void synchronize(Device device) override;

  void fill(const Tensor& out, Scalar value) override;
  void copy(const Tensor& src, const Tensor& out) override;
  void random(const Tensor& out, RandomKind kind, uint64_t seed, uint64_t offset, double a, double b) override;
  void unary(UnaryOp op, const Tensor& x, const Tensor& y, double alpha) override;
  void binary(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out) override;
  void where(const Tensor& cond, const Tensor& a, const Tensor& b, const Tensor& out) override;
  void reduce(ReduceOp op, const Tensor& x, int64_t outer, int64_t r, int64_t inner, const Tensor& out) override;
  void softmax(const Tensor& x, int64_t outer, int64_t n, int64_t inner, bool log, const Tensor& out) override;
  void matmul(const Tensor& a, const Tensor& b, const Tensor& out) override;
  void index_select(const Tensor& x, const Tensor& index, int64_t outer, int64_t n, int64_t inner,
                    const Tensor& out) override;
  void gather(const Tensor& x, const Tensor& index, int64_t outer, int64_t n, int64_t k, int64_t inner,
              const Tensor& out) override;
  void scatter_add(const Tensor& out, const Tensor& index, const Tensor& src, int64_t outer, int64_t n, int64_t k,
                   int64_t inner) override;

  // ---- fused optimizer updates (optim/) [section:optim] ----
  void sgd_update(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                  const std::vector<Tensor>& momentum_buffers, const SgdArgs& args) override;
  void adam_update(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                   const std::vector<Tensor>& exp_avgs, const std::vector<Tensor>& exp_avg_sqs,
                   const std::vector<Tensor>& max_exp_avg_sqs, const AdamArgs& args) override;
  // [end:optim]
  // ---- losses, dropout (ops/loss.h, ops/dropout.h) [section:loss] ----
  void cross_entropy_forward(const Tensor& logits, const Tensor& target, int64_t ignore_index, double label_smoothing,
                             const Tensor& losses, const Tensor& lse) override;
  void cross_entropy_backward(const Tensor& logits, const Tensor& target, const Tensor& lse, const Tensor& grad,
                              int64_t ignore_index, double label_smoothing, const Tensor& dlogits) override;
  void dropout(const Tensor& x, double p, uint64_t seed, uint64_t offset, const Tensor& out) override;
  // [end:loss]
  // ---- convolution and pooling (ops/conv.h, ops/pool.h) [section:conv] ----
  void conv2d_forward(const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& y,
                      const Conv2dGeometry& g) override;
  void conv2d_backward_data(const Tensor& gy, const Tensor& w, const Tensor& gx, const Conv2dGeometry& g) override;
  void conv2d_backward_weight(const Tensor& x, const Tensor& gy, const Tensor& gw, const Conv2dGeometry& g) override;
  void pad2d_forward(const Tensor& x, const Tensor& y, int64_t left, int64_t right, int64_t top, int64_t bottom,
                     PaddingMode mode) override;
  void pad2d_backward(const Tensor& gy, const Tensor& gx, int64_t left, int64_t right, int64_t top, int64_t bottom,
                      PaddingMode mode) override;
  void max_pool2d_forward(const Tensor& x, const Tensor& y, const Tensor& indices, const Pool2dGeometry& g) override;
  void max_pool2d_backward(const Tensor& gy, const Tensor& indices, const Tensor& gx,
                           const Pool2dGeometry& g) override;
  void avg_pool2d_forward(const Tensor& x, const Tensor& y, const Pool2dGeometry& g) override;
  void avg_pool2d_backward(const Tensor& gy, const Tensor& gx, const Pool2dGeometry& g) override;
  void adaptive_avg_pool2d_forward(const Tensor& x, const Tensor& y) override;
  void adaptive_avg_pool2d_backward(const Tensor& gy, const Tensor& gx) override;
  // [end:conv]
  // ---- normalisation (ops/norm.h) [section:norm] ----
  void batch_norm_forward(const Tensor& x, int64_t N, int64_t C, int64_t S, const Tensor& weight, const Tensor& bias,
                          const Tensor& running_mean, const Tensor& running_var, bool training, double momentum,
                          double eps, const Tensor& y, const Tensor& save_mean, const Tensor& save_invstd) override;
  void batch_norm_backward(const Tensor& dy, const Tensor& x, int64_t N, int64_t C, int64_t S, const Tensor& weight,
                           const Tensor& save_mean, const Tensor& save_invstd, bool training, const Tensor& dx,
                           const Tensor& dweight, const Tensor& dbias) override;
  void layer_norm_forward(const Tensor& x, int64_t M, int64_t D, const Tensor& weight, const Tensor& bias, double eps,
                          const Tensor& y, const Tensor& mean, const Tensor& rstd) override;
  void layer_norm_backward(const Tensor& dy, const Tensor& x, int64_t M, int64_t D, const Tensor& weight,
                           const Tensor& mean, const Tensor& rstd, const Tensor& dx, const Tensor& dweight,
                           const Tensor& dbias) override;
  void group_norm_forward(const Tensor& x, int64_t N, int64_t C, int64_t S, int64_t G, const Tensor& weight,
                          const Tensor& bias, double eps, const Tensor& y, const Tensor& mean,
                          const Tensor& rstd) override;
  void group_norm_backward(const Tensor& dy, const Tensor& x, int64_t N, int64_t C, int64_t S, int64_t G,
                           const Tensor& weight, const Tensor& mean, const Tensor& rstd, const Tensor& dx,
                           const Tensor& dweight, const Tensor& dbias) override;
  // [end:norm]
};

}  // namespace kiln::cuda
