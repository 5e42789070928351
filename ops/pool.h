// 2-D pooling over the last two dims of (N, C, H, W) or unbatched (C, H, W) inputs, with
// PyTorch's semantics and output sizes:
//   Ho = (H + 2 ph - dh (kH - 1) - 1 [+ sh - 1 with ceil_mode]) / sh + 1, and with
//   ceil_mode the last window must start inside the input or its left padding.
// Padding never wins a max (it is -inf) and counts in an average only with
// count_include_pad. The CPU loops are ops/cpu/pool.cpp, the CUDA kernels
// cuda/kernels/pool.cu. All are differentiable; max_pool2d's gradient goes to the
// argmax of each window (the last NaN when a window holds NaNs, the first maximum
// otherwise), saved as i64 indices h * W + w into each plane.
#pragma once
#include <optional>
#include <utility>

#include <kiln/core/tensor.h>
#include <kiln/ops/conv.h>  // Int2

namespace kiln {

// Kernel parameters of the pooling slots. Windows over x (B, H, W) -> y (B, Ho, Wo),
// contiguous: output (oh, ow) covers rows oh * stride_h - pad_h + i * dilation_h, i < kernel_h
// (likewise columns); Ho, Wo are y's. max: y = window max (NaN wins), indices (I64, (B, Ho,
// Wo)) = h * W + w of the max; its backward sums gy into gx at the indices. avg: the sum
// over the window's in-bounds elements divided by divisor_override when > 0, else by the
// window clipped to the padded input (count_include_pad) or to the input. adaptive_avg:
// output (oh, ow) averages rows [floor(oh H / Ho), ceil((oh + 1) H / Ho)) (likewise columns).
struct Pool2dGeometry {
  int64_t kernel_h = 1, kernel_w = 1, stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0, dilation_h = 1,
          dilation_w = 1;
  bool count_include_pad = true;
  int64_t divisor_override = 0;
};

// stride defaults to the kernel size. padding <= the effective kernel (dilation (k - 1) + 1) / 2.
Tensor max_pool2d(const Tensor& x, Int2 kernel, std::optional<Int2> stride = std::nullopt, Int2 padding = 0,
                  Int2 dilation = 1, bool ceil_mode = false);
// The values and the i64 indices of the maxima (index h * W + w within each plane).
std::pair<Tensor, Tensor> max_pool2d_with_indices(const Tensor& x, Int2 kernel,
                                                  std::optional<Int2> stride = std::nullopt, Int2 padding = 0,
                                                  Int2 dilation = 1, bool ceil_mode = false);

// padding <= kernel / 2. divisor_override > 0 replaces the window size as the divisor.
Tensor avg_pool2d(const Tensor& x, Int2 kernel, std::optional<Int2> stride = std::nullopt, Int2 padding = 0,
                  bool ceil_mode = false, bool count_include_pad = true, int64_t divisor_override = 0);

// Output (oh, ow) averages rows [floor(oh H / Ho), ceil((oh + 1) H / Ho)) and the
// matching columns.
Tensor adaptive_avg_pool2d(const Tensor& x, Int2 output_size);

// Output size of one dim by the formula above (may be < 1; the ops reject that).
int64_t pool_output_size(int64_t in, int64_t kernel, int64_t stride, int64_t pad, int64_t dilation, bool ceil_mode);

}  // namespace kiln
