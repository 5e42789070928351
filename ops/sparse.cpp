// Sparse inference ops: checks, CSR conversion and dispatch (ops/sparse.h).
#include <kiln/ops/sparse.h>

#include <vector>

#include <kiln/core/autograd.h>
#include <kiln/core/error.h>
#include <kiln/core/kernel.h>
#include <kiln/ops/checks.h>
#include <kiln/ops/op_list.h>

namespace kiln {
namespace {

void check_common(const char* op, const Tensor& x, const CsrWeight& w, const Tensor& bias) {
  detail::check_defined(op, x, "input");
  KILN_CHECK(x.device().is_cpu(), op, ": a CPU inference kernel; got ", describe(x),
             " (on GPUs, pruned models use 2:4 masks and sparse tensor cores)");
  KILN_CHECK(x.dtype() == DType::F32, op, ": computes in f32; got ", describe(x));
  KILN_CHECK(!(grad_enabled() && x.requires_grad()), op, ": an inference kernel: it records no gradient, and ",
             describe(x), " requires one (run it under NoGradGuard)");
  KILN_CHECK(w.row_ptr.defined() && w.col.defined() && w.values.defined() && !w.shape.empty(), op,
             ": the weight is not in CSR form (use to_csr)");
  KILN_CHECK(w.row_ptr.numel() == w.shape[0] + 1 && w.col.numel() == w.values.numel(), op,
             ": inconsistent CSR arrays: row_ptr ", describe(w.row_ptr), ", col ", describe(w.col), ", values ",
             describe(w.values), " for a weight of shape ", shape_str(w.shape));
  if (bias.defined())
    KILN_CHECK(bias.dim() == 1 && bias.size(0) == w.shape[0] && bias.dtype() == DType::F32 && bias.device().is_cpu(),
               op, ": bias must be f32 (", w.shape[0], ") on the CPU, got ", describe(bias));
}

}  // namespace

double CsrWeight::density() const {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  return n > 0 ? static_cast<double>(nnz()) / static_cast<double>(n) : 0.0;
}

CsrWeight to_csr(const Tensor& weight) {
  detail::check_defined("to_csr", weight, "weight");
  KILN_CHECK(weight.dim() >= 2 && is_floating(weight.dtype()), "to_csr: expects a floating weight with >= 2 dims, got ",
             describe(weight));
  const int64_t rows = weight.size(0), cols = weight.numel() / std::max<int64_t>(rows, 1);
  std::vector<float> v = weight.to_vector<float>();
  std::vector<int64_t> ptr(static_cast<size_t>(rows) + 1, 0), col;
  std::vector<float> val;
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t j = 0; j < cols; ++j) {
      const float x = v[static_cast<size_t>(i * cols + j)];
      if (x != 0.0f) col.push_back(j), val.push_back(x);
    }
    ptr[static_cast<size_t>(i) + 1] = static_cast<int64_t>(col.size());
  }
  CsrWeight w;
  w.shape = weight.sizes();
  w.row_ptr = from_vector(ptr);
  w.col = from_vector(col);
  w.values = from_vector(val);
  return w;
}

Tensor sparse_conv2d(const Tensor& x_in, const CsrWeight& w, const Tensor& bias, Int2 stride, Int2 padding) {
  const char* op = "sparse_conv2d";
  check_common(op, x_in, w, bias);
  KILN_CHECK(w.shape.size() == 4, op, ": expects a convolution weight (O, C, kh, kw), got shape ", shape_str(w.shape));
  KILN_CHECK(x_in.dim() == 4 || x_in.dim() == 3, op, ": expects (N, C, H, W) or (C, H, W), got ", describe(x_in));
  Tensor x = (x_in.dim() == 3 ? x_in.unsqueeze(0) : x_in).contiguous();
  KILN_CHECK(x.size(1) == w.shape[1], op, ": the input has ", x.size(1), " channels, the weight ", w.shape[1],
             " (weight shape ", shape_str(w.shape), ")");
  KILN_CHECK(stride.h >= 1 && stride.w >= 1 && padding.h >= 0 && padding.w >= 0, op,
             ": stride must be >= 1 and padding >= 0");
  SparseConvParams p{w.shape[2], w.shape[3], stride.h, stride.w, padding.h, padding.w};
  if (p.kh == 1 && p.kw == 1 && p.pad_h == 0 && p.pad_w == 0 && (p.stride_h > 1 || p.stride_w > 1)) {
    // A strided 1x1 convolution (a ResNet shortcut) reads only every stride-th pixel: it is
    // the unstrided one on those pixels, so the kernel copies and visits no others.
    x = x.slice(2, 0, x.size(2), p.stride_h).slice(3, 0, x.size(3), p.stride_w).contiguous();
    p.stride_h = p.stride_w = 1;
  }
  const int64_t hp = x.size(2) + 2 * p.pad_h, wp = x.size(3) + 2 * p.pad_w;
  KILN_CHECK(hp >= p.kh && wp >= p.kw, op, ": the padded input ", hp, "x", wp, " is smaller than the kernel ", p.kh,
             "x", p.kw);
  const int64_t ho = (hp - p.kh) / p.stride_h + 1, wo = (wp - p.kw) / p.stride_w + 1;
  Tensor y = empty({x.size(0), w.shape[0], ho, wo});
  if (y.numel() > 0)
    kernel<op::sparse_conv2d>(x.device())(kernel_view(x), kernel_view(w.row_ptr), kernel_view(w.col),
                                          kernel_view(w.values), kernel_view(bias.defined() ? bias.contiguous() : bias),
                                          kernel_view(y), p);
  return x_in.dim() == 3 ? y.squeeze(0) : y;
}

Tensor sparse_linear(const Tensor& x_in, const CsrWeight& w, const Tensor& bias) {
  const char* op = "sparse_linear";
  check_common(op, x_in, w, bias);
  KILN_CHECK(w.shape.size() == 2, op, ": expects a Linear weight (out, in), got shape ", shape_str(w.shape));
  KILN_CHECK(x_in.dim() >= 1 && x_in.size(-1) == w.shape[1], op, ": input ", describe(x_in),
             " does not end in in_features = ", w.shape[1]);
  Shape lead(x_in.sizes().begin(), x_in.sizes().end() - 1);
  int64_t rows = 1;
  for (int64_t s : lead) rows *= s;
  const Tensor x = x_in.reshape({rows, w.shape[1]}).contiguous();
  Tensor y = empty({rows, w.shape[0]});
  if (y.numel() > 0)
    kernel<op::sparse_linear>(x.device())(kernel_view(x), kernel_view(w.row_ptr), kernel_view(w.col),
                                          kernel_view(w.values), kernel_view(bias.defined() ? bias.contiguous() : bias),
                                          kernel_view(y));
  lead.push_back(w.shape[0]);
  return y.view(lead);
}

}  // namespace kiln
