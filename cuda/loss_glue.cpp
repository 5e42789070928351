// The CUDA backend's glue for the loss and dropout kernels (cuda/kernels/loss.cu,
// cuda/kernels/dropout.cu): checks the layout contract with ops/ (ops/loss.cpp,
// ops/dropout.cpp), sets the device and launches on its current stream.
#include <cstdint>

#include <kiln/core/error.h>
#include <kiln/cuda/cuda_backend.h>
#include <kiln/cuda/device.h>
#include <kiln/cuda/kernels/launch.h>

namespace kiln::cuda {
namespace {

std::string describe_tensor(const Tensor& t) {
  return detail::str(dtype_name(t.dtype()), shape_str(t.sizes()), " on ", t.device().str());
}

void check_on(const char* op, const Tensor& t, const Tensor& ref) {
  KILN_CHECK(t.device() == ref.device(), "CUDA ", op, ": operands on different devices (", describe_tensor(t), " vs ",
             describe_tensor(ref), ")");
}

void check_contiguous(const char* op, const Tensor& t, const char* what) {
  KILN_CHECK(t.is_contiguous(), "CUDA ", op, ": ", what, " must be contiguous, got ", describe_tensor(t),
             " with strides ", shape_str(t.strides()));
}

DType acc_dtype(DType t) { return t == DType::F64 ? DType::F64 : DType::F32; }

// logits (rows, C) floating contiguous, target i64 (rows) contiguous, and the per-row
// tensors of the accumulation dtype.
void check_rows(const char* op, const Tensor& logits, const Tensor& target, std::initializer_list<Tensor> per_row) {
  KILN_CHECK(logits.dim() == 2 && is_floating(logits.dtype()), "CUDA ", op,
             ": logits must be a floating (rows, C) matrix, got ", describe_tensor(logits));
  check_contiguous(op, logits, "logits");
  check_on(op, target, logits);
  check_contiguous(op, target, "target");
  KILN_CHECK(target.dtype() == DType::I64 && target.numel() == logits.size(0), "CUDA ", op,
             ": target must be i64 with one value per row, got ", describe_tensor(target), " for logits ",
             describe_tensor(logits));
  for (const Tensor& t : per_row) {
    check_on(op, t, logits);
    check_contiguous(op, t, "per-row tensor");
    KILN_CHECK(t.dtype() == acc_dtype(logits.dtype()) && t.numel() == logits.size(0), "CUDA ", op,
               ": per-row tensors must be ", dtype_name(acc_dtype(logits.dtype())), " with ", logits.size(0),
               " elements, got ", describe_tensor(t));
  }
}

}  // namespace

void CudaBackend::cross_entropy_forward(const Tensor& logits, const Tensor& target, int64_t ignore_index,
                                        double label_smoothing, const Tensor& losses, const Tensor& lse) {
  const char* op = "cross_entropy";
  check_rows(op, logits, target, {losses, lse});
  const int64_t rows = logits.size(0), classes = logits.size(1);
  if (rows == 0) return;
  KILN_CHECK(classes > 0, "CUDA ", op, ": logits ", describe_tensor(logits), " have no classes");
  DeviceGuard guard(logits.device());
  launch_cross_entropy_forward(logits.data_ptr(), logits.dtype(), target.data<int64_t>(), losses.data_ptr(),
                               lse.data_ptr(), rows, classes, ignore_index, label_smoothing,
                               current_stream(logits.device()));
}

void CudaBackend::cross_entropy_backward(const Tensor& logits, const Tensor& target, const Tensor& lse,
                                         const Tensor& grad, int64_t ignore_index, double label_smoothing,
                                         const Tensor& dlogits) {
  const char* op = "cross_entropy backward";
  check_rows(op, logits, target, {lse});
  const int64_t rows = logits.size(0), classes = logits.size(1);
  check_on(op, grad, logits);
  check_contiguous(op, grad, "grad");
  KILN_CHECK(grad.dtype() == acc_dtype(logits.dtype()) && (grad.numel() == rows || grad.numel() == 1), "CUDA ", op,
             ": grad must be ", dtype_name(acc_dtype(logits.dtype())), " with 1 or ", rows, " elements, got ",
             describe_tensor(grad));
  check_on(op, dlogits, logits);
  check_contiguous(op, dlogits, "dlogits");
  KILN_CHECK(dlogits.dtype() == logits.dtype() && dlogits.sizes() == logits.sizes(), "CUDA ", op,
             ": dlogits must match logits ", describe_tensor(logits), ", got ", describe_tensor(dlogits));
  if (dlogits.numel() == 0) return;
  const int64_t grad_stride = grad.numel() == 1 ? 0 : 1;
  DeviceGuard guard(logits.device());
  launch_cross_entropy_backward(logits.data_ptr(), logits.dtype(), target.data<int64_t>(), lse.data_ptr(),
                                grad.data_ptr(), grad_stride, dlogits.data_ptr(), rows, classes, ignore_index,
                                label_smoothing, current_stream(logits.device()));
}

void CudaBackend::dropout(const Tensor& x, double p, uint64_t seed, uint64_t offset, const Tensor& out) {
  const char* op = "dropout";
  check_on(op, x, out);
  check_contiguous(op, x, "input");
  check_contiguous(op, out, "output");
  KILN_CHECK(is_floating(x.dtype()) && out.dtype() == x.dtype() && out.sizes() == x.sizes(), "CUDA ", op,
             ": needs floating input and output of one shape and dtype, got ", describe_tensor(x), " -> ",
             describe_tensor(out));
  KILN_CHECK(p >= 0.0 && p < 1.0, "CUDA ", op, ": p must lie in [0, 1) here, got ", p);
  if (x.numel() == 0) return;
  DeviceGuard guard(x.device());
  launch_dropout(x.data_ptr(), out.data_ptr(), x.dtype(), x.numel(), p, seed, offset, current_stream(x.device()));
}

}  // namespace kiln::cuda
