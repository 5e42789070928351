// ops/'s kernel slots: one line per operator kernel, `X(name, function type)`. The name is
// the slot (kiln::op::<name>) and the kernel functions that fill it: kiln::cpu::<name> in
// ops/cpu/<stem>.cpp and kiln::cuda::<name> in cuda/kernels/<stem>.cu (core/kernel.h has
// the mechanism, ops/README.md the recipe). Views are checked by the op's entry point in
// ops/<stem>.cpp; the parameter structs and the kernels' contracts are in ops/<stem>.h.
#pragma once
#include <span>

#include <kiln/core/kernel.h>
#include <kiln/ops/attention.h>
#include <kiln/ops/binary.h>
#include <kiln/ops/clamp.h>
#include <kiln/ops/conv.h>
#include <kiln/ops/dropout.h>
#include <kiln/ops/index.h>
#include <kiln/ops/linalg.h>
#include <kiln/ops/loss.h>
#include <kiln/ops/matmul.h>
#include <kiln/ops/norm.h>
#include <kiln/ops/pad.h>
#include <kiln/ops/pool.h>
#include <kiln/ops/reduce.h>
#include <kiln/ops/softmax.h>
#include <kiln/ops/sparse.h>
#include <kiln/ops/unary.h>

namespace kiln {

using TV = const TensorView&;

#define KILN_OPS_KERNELS(X)                                                                         \
  /* unary.h */                                                                                     \
  X(unary, void(TV x, TV y, const UnaryParams& p))                                                  \
  X(unary_backward, void(TV s, TV g, TV gx, const UnaryParams& p))                                  \
  /* binary.h */                                                                                    \
  X(binary, void(TV a, TV b, TV out, const BinaryParams& p))                                        \
  X(where, void(TV cond, TV a, TV b, TV out))                                                       \
  /* clamp.h */                                                                                     \
  X(clamp, void(TV x, TV y, const ClampParams& p))                                                  \
  /* reduce.h: the `reduce` slot is in core/kernel_list.h */                                      \
  /* linalg.h */                                                                                    \
  X(spd_logdet, void(TV a, TV logdet, TV inverse, const SpdParams& p))                              \
  /* softmax.h */                                                                                   \
  X(softmax, void(TV x, TV out, const SoftmaxParams& p))                                            \
  X(softmax_backward, void(TV y, TV g, TV gx, const SoftmaxParams& p))                              \
  /* matmul.h: out[b] = a[b] @ b[b], a (B, M, K), b (B, K, N), out (B, M, N) contiguous; a and b */ \
  /* each have unit stride in one of their last two dims; one floating dtype. */                    \
  X(matmul, void(TV a, TV b, TV out))                                                               \
  /* out = act(a @ b + bias): a, b, out as matmul's with B = 1; bias (N) contiguous; pre (1, M, N) */ \
  /* contiguous receives a @ b + bias (the activation's input, for backward) or is undefined. */   \
  X(matmul_bias, void(TV a, TV b, TV bias, TV out, TV pre, const MatmulBiasParams& p))              \
  /* index.h */                                                                                     \
  X(index_select, void(TV x, TV index, TV out, const IndexParams& p))                               \
  X(gather, void(TV x, TV index, TV out, const IndexParams& p))                                     \
  X(scatter_add, void(TV out, TV index, TV src, const IndexParams& p))                              \
  /* loss.h */                                                                                      \
  X(cross_entropy_forward, void(TV logits, TV target, TV losses, TV lse, const CrossEntropyParams& p)) \
  X(cross_entropy_backward,                                                                         \
    void(TV logits, TV target, TV lse, TV grad, TV dlogits, const CrossEntropyParams& p))           \
  /* dropout.h */                                                                                   \
  X(dropout, void(TV x, TV out, const DropoutParams& p))                                            \
  /* attention.h */                                                                                 \
  X(attention_forward, void(TV q, TV k, TV v, TV out, TV lse, const AttentionParams& p))            \
  X(attention_backward, void(TV q, TV k, TV v, TV out, TV dout, TV lse, TV dq, TV dk, TV dv,        \
                             const AttentionParams& p))                                             \
  /* conv.h */                                                                                      \
  X(conv2d_forward, void(TV x, TV w, TV bias, TV y, const Conv2dGeometry& g))                       \
  X(conv2d_backward_data, void(TV gy, TV w, TV gx, const Conv2dGeometry& g))                        \
  X(conv2d_backward_weight, void(TV x, TV gy, TV gw, const Conv2dGeometry& g))                      \
  /* pad.h */                                                                                       \
  X(pad2d_forward, void(TV x, TV y, const Pad2dParams& p))                                          \
  X(pad2d_backward, void(TV gy, TV gx, const Pad2dParams& p))                                       \
  /* pool.h */                                                                                      \
  X(max_pool2d_forward, void(TV x, TV y, TV indices, const Pool2dGeometry& g))                      \
  X(max_pool2d_backward, void(TV gy, TV indices, TV gx, const Pool2dGeometry& g))                   \
  X(avg_pool2d_forward, void(TV x, TV y, const Pool2dGeometry& g))                                  \
  X(avg_pool2d_backward, void(TV gy, TV gx, const Pool2dGeometry& g))                               \
  X(adaptive_avg_pool2d_forward, void(TV x, TV y))                                                  \
  X(adaptive_avg_pool2d_backward, void(TV gy, TV gx))                                               \
  /* norm.h */                                                                                      \
  X(batch_norm_forward, void(TV x, TV weight, TV bias, TV running_mean, TV running_var, TV y,       \
                             TV save_mean, TV save_invstd, const BatchNormParams& p))               \
  X(batch_norm_backward, void(TV dy, TV x, TV weight, TV save_mean, TV save_invstd, TV dx,          \
                              TV dweight, TV dbias, const BatchNormParams& p))                      \
  X(layer_norm_forward, void(TV x, TV weight, TV bias, TV y, TV mean, TV rstd, const LayerNormParams& p)) \
  X(layer_norm_backward, void(TV dy, TV x, TV weight, TV mean, TV rstd, TV dx, TV dweight, TV dbias, \
                              const LayerNormParams& p))                                            \
  X(group_norm_forward, void(TV x, TV weight, TV bias, TV y, TV mean, TV rstd, const GroupNormParams& p)) \
  X(group_norm_backward, void(TV dy, TV x, TV weight, TV mean, TV rstd, TV dx, TV dweight, TV dbias, \
                              const GroupNormParams& p))

KILN_DECLARE_KERNELS(KILN_OPS_KERNELS)

// Kernels only the CPU has (the list's loader registers no CUDA function; on a GPU the op
// entry points refuse the tensor with their own message, and the slot would report a
// missing kernel).
#define KILN_OPS_CPU_ONLY_KERNELS(X)                                                                \
  /* sparse.h: direct sparse convolution and CSR linear (inference) */                              \
  X(sparse_conv2d, void(TV x, TV row_ptr, TV col, TV values, TV bias, TV y, const SparseConvParams& p)) \
  X(sparse_linear, void(TV x, TV row_ptr, TV col, TV values, TV bias, TV y))

KILN_DECLARE_KERNELS(KILN_OPS_CPU_ONLY_KERNELS)

}  // namespace kiln
