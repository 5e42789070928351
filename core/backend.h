// The one dispatch mechanism: each device type has a Backend, an object whose virtual
// methods are the kernels. The CPU reference (ops/cpu/) and the CUDA backend (cuda/)
// register themselves at load time; ops/ checks inputs, allocates outputs and calls
// backend(device).kernel(...). A build without CUDA simply has no CUDA backend, and
// asking for one throws kiln::DeviceError. Kernels get tensors that ops/ has already
// checked: right devices, dtypes and shapes.
#pragma once
#include <cstdint>

#include <kiln/core/allocator.h>
#include <kiln/core/op_kinds.h>
#include <kiln/core/tensor.h>

namespace kiln {

class Backend {
 public:
  virtual ~Backend() = default;
  virtual const char* name() const = 0;
  // Number of usable devices (1 for the CPU); 0 means the backend is present but unusable.
  virtual int device_count() = 0;
  virtual Allocator& allocator() = 0;
  // Contiguous byte copy where one side (or both) is this backend's device and the other
  // may be the host. Ordered on the current stream.
  virtual void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, size_t nbytes) = 0;
  // Waits for all work queued on the device.
  virtual void synchronize(Device device) = 0;

  // ---- kernels: all tensors on one device of this backend, outputs preallocated ----
  virtual void fill(const Tensor& out, Scalar value) = 0;
  // out = cast(src): same shape, any strides, any two dtypes.
  virtual void copy(const Tensor& src, const Tensor& out) = 0;
  // out (contiguous) element i from Philox counter `offset + i` (see core/philox.h):
  // Uniform in [a, b), Normal(mean a, std b), Int in [a, b).
  virtual void random(const Tensor& out, RandomKind kind, uint64_t seed, uint64_t offset, double a, double b) = 0;
  // y = op(x; alpha): same shape and dtype, any strides. alpha is leaky_relu's slope.
  virtual void unary(UnaryOp op, const Tensor& x, const Tensor& y, double alpha) = 0;
  // out = a op b: a and b have out's shape (broadcast by stride 0) and one dtype; out has
  // that dtype, or Bool for comparisons.
  virtual void binary(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out) = 0;
  // out = cond ? a : b, all of out's shape; cond Bool; a, b, out one dtype.
  virtual void where(const Tensor& cond, const Tensor& a, const Tensor& b, const Tensor& out) = 0;
  // x contiguous, seen as (outer, r, inner), reduced over r into out contiguous (outer, inner).
  // out dtype: x's for Sum/Mean/Max/Min (I64 for Sum of integers/bool), I64 for ArgMax/ArgMin.
  // r > 0 (ops/ rejects empty max/min/arg*).
  virtual void reduce(ReduceOp op, const Tensor& x, int64_t outer, int64_t r, int64_t inner, const Tensor& out) = 0;
  // x and out contiguous, seen as (outer, n, inner); (log-)softmax over n.
  virtual void softmax(const Tensor& x, int64_t outer, int64_t n, int64_t inner, bool log, const Tensor& out) = 0;
  // out[b] = a[b] @ b[b]: a (B, M, K), b (B, K, N), out (B, M, N) contiguous; a and b each
  // have unit stride in one of their last two dims; one dtype (floating).
  virtual void matmul(const Tensor& a, const Tensor& b, const Tensor& out) = 0;
  // x contiguous (outer, n, inner), index I64 contiguous (k) with values in [0, n):
  // out (outer, k, inner) contiguous.
  virtual void index_select(const Tensor& x, const Tensor& index, int64_t outer, int64_t n, int64_t inner,
                            const Tensor& out) = 0;
  // x contiguous (outer, n, inner); index I64 and out contiguous (outer, k, inner):
  // out[o, j, i] = x[o, index[o, j, i], i].
  virtual void gather(const Tensor& x, const Tensor& index, int64_t outer, int64_t n, int64_t k, int64_t inner,
                      const Tensor& out) = 0;
  // out contiguous (outer, n, inner) += src at index; index I64 and src contiguous (outer, k, inner).
  virtual void scatter_add(const Tensor& out, const Tensor& index, const Tensor& src, int64_t outer, int64_t n,
                           int64_t k, int64_t inner) = 0;

  // ---- fused optimizer updates (optim/) [section:optim] ----
  // Multi-tensor updates: one call updates every tensor of the lists in place (on CUDA in
  // as few launches as the kernel-argument limit allows). All tensors are contiguous and
  // on this backend's device; params[i], grads[i] and each state list's [i] have one
  // shape; params and grads share one floating dtype; state tensors are F32 for F16/BF16
  // params and the param dtype otherwise (optim/fused.h checks all of this). Formulas are
  // PyTorch's torch.optim.SGD / Adam / AdamW (see optim/sgd.h, optim/adam.h).
  struct SgdArgs {
    double lr = 0, momentum = 0, dampening = 0, weight_decay = 0;
    bool nesterov = false, maximize = false;
    // The momentum buffers are new: buf = g (PyTorch's clone) instead of
    // buf = momentum * buf + (1 - dampening) * g. Their old contents are not read.
    bool init_momentum = false;
  };
  struct AdamArgs {
    double lr = 0, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0;
    int64_t step = 1;  // the step being taken (>= 1), for the bias corrections
    bool decoupled_weight_decay = false;  // AdamW: p *= 1 - lr * wd instead of g += wd * p
    bool amsgrad = false, maximize = false;
  };
  // momentum_buffers is empty when args.momentum == 0.
  virtual void sgd_update(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                          const std::vector<Tensor>& momentum_buffers, const SgdArgs& args) = 0;
  // max_exp_avg_sqs is empty unless args.amsgrad.
  virtual void adam_update(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                           const std::vector<Tensor>& exp_avgs, const std::vector<Tensor>& exp_avg_sqs,
                           const std::vector<Tensor>& max_exp_avg_sqs, const AdamArgs& args) = 0;
  // [end:optim]
  // ---- losses, dropout (ops/loss.h, ops/dropout.h) [section:loss] ----
  // Fused cross entropy over rows. logits (rows, C) contiguous floating, C > 0; target I64
  // (rows) contiguous; losses, lse (rows) contiguous in the accumulation dtype A (F64 for
  // F64 logits, F32 otherwise). lse[r] = logsumexp_c logits[r, c]; losses[r] = 0 where
  // target[r] == ignore_index, else (1 - eps)(lse - x[r, t]) + eps (lse - mean_c x[r, c]).
  virtual void cross_entropy_forward(const Tensor& logits, const Tensor& target, int64_t ignore_index,
                                     double label_smoothing, const Tensor& losses, const Tensor& lse) = 0;
  // dlogits (rows, C) contiguous, logits' dtype: 0 in ignored rows, else
  // (exp(x - lse[r]) - eps/C - (1 - eps)[c == t]) * grad[r], grad in A with `rows`
  // elements or one (the same value for every row).
  virtual void cross_entropy_backward(const Tensor& logits, const Tensor& target, const Tensor& lse,
                                      const Tensor& grad, int64_t ignore_index, double label_smoothing,
                                      const Tensor& dlogits) = 0;
  // x, out contiguous, one shape and floating dtype; 0 <= p < 1:
  // out[i] = x[i] * (philox_keep(seed, offset + i, philox_keep_threshold(p)) ? 1 / (1 - p) : 0)
  // (core/philox.h), the product in f32 (f64 for F64).
  virtual void dropout(const Tensor& x, double p, uint64_t seed, uint64_t offset, const Tensor& out) = 0;
  // [end:loss]
  // ---- convolution and pooling (ops/conv.h, ops/pool.h) [section:conv] ----
  // Tensors here are 4-D, contiguous (NCHW), of one floating dtype, on this device, with
  // shapes ops/ has checked. Outputs are written (=), never accumulated.
  // x (N, C, H, W), w (O, C/groups, kH, kW), y (N, O, Ho, Wo) with
  // Ho = (H + 2 pad_h - dilation_h (kH - 1) - 1) / stride_h + 1 (likewise Wo); zero padding.
  struct Conv2dGeometry {
    int64_t stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0, dilation_h = 1, dilation_w = 1, groups = 1;
  };
  // y = cross-correlation of x with w, plus bias (O) when bias is defined.
  virtual void conv2d_forward(const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& y,
                              const Conv2dGeometry& g) = 0;
  // gx = d<y, gy>/dx for y = conv2d_forward(x, w): gy (N, O, Ho, Wo) -> gx (N, C, H, W);
  // also conv_transpose2d's forward.
  virtual void conv2d_backward_data(const Tensor& gy, const Tensor& w, const Tensor& gx, const Conv2dGeometry& g) = 0;
  // gw = d<y, gy>/dw: x, gy -> gw (O, C/groups, kH, kW).
  virtual void conv2d_backward_weight(const Tensor& x, const Tensor& gy, const Tensor& gw,
                                      const Conv2dGeometry& g) = 0;
  // x (B, H, W) -> y (B, top + H + bottom, left + W + right), the border filled by `mode`
  // (pads >= 0; reflect needs pad < size, circular pad <= size).
  virtual void pad2d_forward(const Tensor& x, const Tensor& y, int64_t left, int64_t right, int64_t top,
                             int64_t bottom, PaddingMode mode) = 0;
  // The adjoint: gx (B, H, W) = sum of gy over every output position read from that input.
  virtual void pad2d_backward(const Tensor& gy, const Tensor& gx, int64_t left, int64_t right, int64_t top,
                              int64_t bottom, PaddingMode mode) = 0;
  // Pooling windows over x (B, H, W) -> y (B, Ho, Wo): output (oh, ow) covers rows
  // oh * stride_h - pad_h + i * dilation_h, i < kernel_h (likewise columns). Ho, Wo are
  // y's (ceil_mode is settled by ops/). avg: the sum over the window's in-bounds elements
  // divided by divisor_override when > 0, else by the window's size clipped to the padded
  // input (count_include_pad) or to the input (not count_include_pad).
  struct Pool2dGeometry {
    int64_t kernel_h = 1, kernel_w = 1, stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0, dilation_h = 1,
            dilation_w = 1;
    bool count_include_pad = true;
    int64_t divisor_override = 0;
  };
  // y = window max (NaN wins), indices (I64, (B, Ho, Wo)) = h * W + w of the max.
  virtual void max_pool2d_forward(const Tensor& x, const Tensor& y, const Tensor& indices,
                                  const Pool2dGeometry& g) = 0;
  // gx (B, H, W) = sum of gy over the outputs whose index points at the element.
  virtual void max_pool2d_backward(const Tensor& gy, const Tensor& indices, const Tensor& gx,
                                   const Pool2dGeometry& g) = 0;
  virtual void avg_pool2d_forward(const Tensor& x, const Tensor& y, const Pool2dGeometry& g) = 0;
  virtual void avg_pool2d_backward(const Tensor& gy, const Tensor& gx, const Pool2dGeometry& g) = 0;
  // Output (oh, ow) averages rows [floor(oh H / Ho), ceil((oh + 1) H / Ho)) (likewise
  // columns), as PyTorch's adaptive_avg_pool2d.
  virtual void adaptive_avg_pool2d_forward(const Tensor& x, const Tensor& y) = 0;
  virtual void adaptive_avg_pool2d_backward(const Tensor& gy, const Tensor& gx) = 0;
  // [end:conv]
  // ---- normalisation (ops/norm.h) [section:norm] ----
  // x, y, dy, dx: contiguous, one floating dtype; x seen as (N, C, S) (S: the product of
  // the spatial dims) for batch and group norm and as (M, D) rows for layer norm.
  // Params (weight, bias, running stats; dweight, dbias): contiguous, x's dtype or F32 for
  // F16/BF16 x, weight/dweight and bias/dbias of one dtype; an undefined weight is 1, an
  // undefined bias 0, an undefined output is not computed. Statistics (mean, invstd/rstd)
  // are contiguous in the accumulation dtype: F64 for F64 x, F32 otherwise. ops/norm.cpp
  // has checked all of this and hands over non-empty tensors (N, C, S, M, D > 0).
  //
  // Batch norm. training: mean and biased var per channel over (N, S), saved as mean
  // and invstd = 1/sqrt(var + eps); defined running stats are updated in place,
  // r = (1 - momentum) r + momentum * stat, with the unbiased var (N * S > 1).
  // Eval: mean = running_mean, invstd = 1/sqrt(running_var + eps). Both: y = (x - mean) *
  // invstd * weight + bias, per channel.
  virtual void batch_norm_forward(const Tensor& x, int64_t N, int64_t C, int64_t S, const Tensor& weight,
                                  const Tensor& bias, const Tensor& running_mean, const Tensor& running_var,
                                  bool training, double momentum, double eps, const Tensor& y,
                                  const Tensor& save_mean, const Tensor& save_invstd) = 0;
  // xhat = (x - mean) * invstd; dweight = sum dy xhat, dbias = sum dy over (N, S);
  // dx = weight invstd (dy - mean(dy) - xhat mean(dy xhat)) in training (means over
  // (N, S)), dx = weight invstd dy in eval.
  virtual void batch_norm_backward(const Tensor& dy, const Tensor& x, int64_t N, int64_t C, int64_t S,
                                   const Tensor& weight, const Tensor& save_mean, const Tensor& save_invstd,
                                   bool training, const Tensor& dx, const Tensor& dweight, const Tensor& dbias) = 0;
  // Layer norm over each row of x (M, D): mean, rstd = 1/sqrt(biased var + eps) (M), y =
  // (x - mean) * rstd * weight + bias with weight, bias (D).
  virtual void layer_norm_forward(const Tensor& x, int64_t M, int64_t D, const Tensor& weight, const Tensor& bias,
                                  double eps, const Tensor& y, const Tensor& mean, const Tensor& rstd) = 0;
  // dx = rstd (g - mean(g) - xhat mean(g xhat)) per row with g = dy weight; dweight =
  // sum over rows of dy xhat, dbias = sum over rows of dy (D).
  virtual void layer_norm_backward(const Tensor& dy, const Tensor& x, int64_t M, int64_t D, const Tensor& weight,
                                   const Tensor& mean, const Tensor& rstd, const Tensor& dx, const Tensor& dweight,
                                   const Tensor& dbias) = 0;
  // Group norm: x (N, C, S), G groups of C / G consecutive channels; mean and rstd (N, G)
  // over each (sample, group); y = (x - mean) * rstd * weight[c] + bias[c].
  virtual void group_norm_forward(const Tensor& x, int64_t N, int64_t C, int64_t S, int64_t G,
                                  const Tensor& weight, const Tensor& bias, double eps, const Tensor& y,
                                  const Tensor& mean, const Tensor& rstd) = 0;
  // As layer norm's backward over each (sample, group) with g = dy weight[c]; dweight and
  // dbias (C) summed over (N, S).
  virtual void group_norm_backward(const Tensor& dy, const Tensor& x, int64_t N, int64_t C, int64_t S, int64_t G,
                                   const Tensor& weight, const Tensor& mean, const Tensor& rstd, const Tensor& dx,
                                   const Tensor& dweight, const Tensor& dbias) = 0;
  // [end:norm]
};

void register_backend(DeviceType type, Backend* backend);
bool has_backend(DeviceType type);
// The backend for a device; throws kiln::DeviceError when it is not built or not usable.
Backend& backend(DeviceType type);
Backend& backend(Device device);

// CUDA availability without throwing: false when kiln was built without CUDA, when no
// driver is loaded or when no device is visible.
bool cuda_is_available();
int cuda_device_count();

}  // namespace kiln
