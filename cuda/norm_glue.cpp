// The CUDA backend's glue for batch / layer / group norm: checks the contract with
// ops/norm.cpp (devices, contiguity, dtypes, sizes: see core/backend.h), sets the device
// and calls the launchers of cuda/kernels/norm.cu on the device's current stream.
#include <cstdint>
#include <initializer_list>
#include <string>

#include <kiln/core/error.h>
#include <kiln/cuda/cuda_backend.h>
#include <kiln/cuda/device.h>
#include <kiln/cuda/kernels/launch.h>

namespace kiln::cuda {
namespace {

std::string describe_tensor(const Tensor& t) {
  if (!t.defined()) return "undefined tensor";
  return detail::str(dtype_name(t.dtype()), shape_str(t.sizes()), " on ", t.device().str());
}

DType stats_dtype(DType x) { return x == DType::F64 ? DType::F64 : DType::F32; }
bool is_half(DType t) { return t == DType::F16 || t == DType::BF16; }

// Checks one tensor of a norm call. kind: 'x' (x's dtype), 'p' (parameter dtype rule),
// 's' (statistics dtype). Undefined tensors pass when optional.
void check_tensor(const char* op, const Tensor& t, const char* what, const Tensor& x, char kind, int64_t numel,
                  bool optional) {
  if (!t.defined()) {
    KILN_CHECK(optional, "CUDA ", op, ": ", what, " is undefined");
    return;
  }
  KILN_CHECK(t.device() == x.device(), "CUDA ", op, ": ", what, " ", describe_tensor(t), " is not on the input's device (",
             describe_tensor(x), ")");
  KILN_CHECK(t.is_contiguous(), "CUDA ", op, ": ", what, " must be contiguous, got ", describe_tensor(t), " with strides ",
             shape_str(t.strides()));
  KILN_CHECK(t.numel() == numel, "CUDA ", op, ": ", what, " ", describe_tensor(t), " must have ", numel, " elements");
  bool ok = false;
  switch (kind) {
    case 'x': ok = t.dtype() == x.dtype(); break;
    case 'p': ok = t.dtype() == x.dtype() || (t.dtype() == DType::F32 && is_half(x.dtype())); break;
    default: ok = t.dtype() == stats_dtype(x.dtype()); break;
  }
  KILN_CHECK(ok, "CUDA ", op, ": ", what, " has dtype ", dtype_name(t.dtype()), ", which does not fit input ",
             describe_tensor(x));
}

void check_input(const char* op, const Tensor& x, int64_t numel) {
  KILN_CHECK(x.defined() && is_floating(x.dtype()), "CUDA ", op, ": needs a floating input, got ", describe_tensor(x));
  KILN_CHECK(x.is_contiguous(), "CUDA ", op, ": input must be contiguous, got ", describe_tensor(x));
  KILN_CHECK(x.numel() == numel && numel > 0, "CUDA ", op, ": layout does not match the non-empty input ",
             describe_tensor(x));
}

// The dtype shared by the defined ones of some parameter-like tensors (x's dtype when
// none is defined).
DType param_dtype(const char* op, const Tensor& x, std::initializer_list<Tensor> ts) {
  const Tensor* first = nullptr;
  for (const Tensor& t : ts) {
    if (!t.defined()) continue;
    if (first == nullptr) first = &t;
    KILN_CHECK(t.dtype() == first->dtype(), "CUDA ", op, ": ", describe_tensor(*first), " and ", describe_tensor(t),
               " must share a dtype");
  }
  return first != nullptr ? first->dtype() : x.dtype();
}

void* ptr(const Tensor& t) { return t.defined() ? t.data_ptr() : nullptr; }

}  // namespace

void CudaBackend::batch_norm_forward(const Tensor& x, int64_t N, int64_t C, int64_t S, const Tensor& weight,
                                     const Tensor& bias, const Tensor& running_mean, const Tensor& running_var,
                                     bool training, double momentum, double eps, const Tensor& y,
                                     const Tensor& save_mean, const Tensor& save_invstd) {
  const char* op = "batch_norm";
  check_input(op, x, N * C * S);
  check_tensor(op, y, "output", x, 'x', x.numel(), false);
  check_tensor(op, weight, "weight", x, 'p', C, true);
  check_tensor(op, bias, "bias", x, 'p', C, true);
  check_tensor(op, running_mean, "running_mean", x, 'p', C, training);
  check_tensor(op, running_var, "running_var", x, 'p', C, training);
  check_tensor(op, save_mean, "save_mean", x, 's', C, false);
  check_tensor(op, save_invstd, "save_invstd", x, 's', C, false);
  KILN_CHECK(running_mean.defined() == running_var.defined(), "CUDA batch_norm: running_mean and running_var must both be given");
  const DType pdt = param_dtype(op, x, {weight, bias});
  const DType rdt = param_dtype(op, x, {running_mean, running_var});
  KILN_CHECK(!training || N * S > 1, "CUDA batch_norm: training needs more than one value per channel");
  DeviceGuard guard(x.device());
  launch_batch_norm_forward(x.data_ptr(), ptr(weight), ptr(bias), ptr(running_mean), ptr(running_var), y.data_ptr(),
                            save_mean.data_ptr(), save_invstd.data_ptr(), x.dtype(), pdt, rdt, N, C, S, training,
                            momentum, eps, current_stream(x.device()));
}

void CudaBackend::batch_norm_backward(const Tensor& dy, const Tensor& x, int64_t N, int64_t C, int64_t S,
                                      const Tensor& weight, const Tensor& save_mean, const Tensor& save_invstd,
                                      bool training, const Tensor& dx, const Tensor& dweight, const Tensor& dbias) {
  const char* op = "batch_norm backward";
  check_input(op, x, N * C * S);
  check_tensor(op, dy, "grad_output", x, 'x', x.numel(), false);
  check_tensor(op, dx, "grad_input", x, 'x', x.numel(), true);
  check_tensor(op, weight, "weight", x, 'p', C, true);
  check_tensor(op, dweight, "grad_weight", x, 'p', C, true);
  check_tensor(op, dbias, "grad_bias", x, 'p', C, true);
  check_tensor(op, save_mean, "save_mean", x, 's', C, false);
  check_tensor(op, save_invstd, "save_invstd", x, 's', C, false);
  const DType pdt = param_dtype(op, x, {weight, dweight, dbias});
  DeviceGuard guard(x.device());
  launch_batch_norm_backward(dy.data_ptr(), x.data_ptr(), ptr(weight), save_mean.data_ptr(), save_invstd.data_ptr(),
                             ptr(dx), ptr(dweight), ptr(dbias), x.dtype(), pdt, N, C, S, training,
                             current_stream(x.device()));
}

void CudaBackend::layer_norm_forward(const Tensor& x, int64_t M, int64_t D, const Tensor& weight, const Tensor& bias,
                                     double eps, const Tensor& y, const Tensor& mean, const Tensor& rstd) {
  const char* op = "layer_norm";
  check_input(op, x, M * D);
  check_tensor(op, y, "output", x, 'x', x.numel(), false);
  check_tensor(op, weight, "weight", x, 'p', D, true);
  check_tensor(op, bias, "bias", x, 'p', D, true);
  check_tensor(op, mean, "mean", x, 's', M, false);
  check_tensor(op, rstd, "rstd", x, 's', M, false);
  const DType pdt = param_dtype(op, x, {weight, bias});
  DeviceGuard guard(x.device());
  launch_layer_norm_forward(x.data_ptr(), ptr(weight), ptr(bias), y.data_ptr(), mean.data_ptr(), rstd.data_ptr(),
                            x.dtype(), pdt, M, D, eps, current_stream(x.device()));
}

void CudaBackend::layer_norm_backward(const Tensor& dy, const Tensor& x, int64_t M, int64_t D, const Tensor& weight,
                                      const Tensor& mean, const Tensor& rstd, const Tensor& dx, const Tensor& dweight,
                                      const Tensor& dbias) {
  const char* op = "layer_norm backward";
  check_input(op, x, M * D);
  check_tensor(op, dy, "grad_output", x, 'x', x.numel(), false);
  check_tensor(op, dx, "grad_input", x, 'x', x.numel(), true);
  check_tensor(op, weight, "weight", x, 'p', D, true);
  check_tensor(op, dweight, "grad_weight", x, 'p', D, true);
  check_tensor(op, dbias, "grad_bias", x, 'p', D, true);
  check_tensor(op, mean, "mean", x, 's', M, false);
  check_tensor(op, rstd, "rstd", x, 's', M, false);
  const DType pdt = param_dtype(op, x, {weight, dweight, dbias});
  DeviceGuard guard(x.device());
  launch_layer_norm_backward(dy.data_ptr(), x.data_ptr(), ptr(weight), mean.data_ptr(), rstd.data_ptr(), ptr(dx),
                             ptr(dweight), ptr(dbias), x.dtype(), pdt, M, D, current_stream(x.device()));
}

void CudaBackend::group_norm_forward(const Tensor& x, int64_t N, int64_t C, int64_t S, int64_t G,
                                     const Tensor& weight, const Tensor& bias, double eps, const Tensor& y,
                                     const Tensor& mean, const Tensor& rstd) {
  const char* op = "group_norm";
  check_input(op, x, N * C * S);
  KILN_CHECK(G > 0 && C % G == 0, "CUDA group_norm: ", C, " channels do not split into ", G, " groups");
  check_tensor(op, y, "output", x, 'x', x.numel(), false);
  check_tensor(op, weight, "weight", x, 'p', C, true);
  check_tensor(op, bias, "bias", x, 'p', C, true);
  check_tensor(op, mean, "mean", x, 's', N * G, false);
  check_tensor(op, rstd, "rstd", x, 's', N * G, false);
  const DType pdt = param_dtype(op, x, {weight, bias});
  DeviceGuard guard(x.device());
  launch_group_norm_forward(x.data_ptr(), ptr(weight), ptr(bias), y.data_ptr(), mean.data_ptr(), rstd.data_ptr(),
                            x.dtype(), pdt, N, C, S, G, eps, current_stream(x.device()));
}

void CudaBackend::group_norm_backward(const Tensor& dy, const Tensor& x, int64_t N, int64_t C, int64_t S, int64_t G,
                                      const Tensor& weight, const Tensor& mean, const Tensor& rstd, const Tensor& dx,
                                      const Tensor& dweight, const Tensor& dbias) {
  const char* op = "group_norm backward";
  check_input(op, x, N * C * S);
  KILN_CHECK(G > 0 && C % G == 0, "CUDA group_norm backward: ", C, " channels do not split into ", G, " groups");
  check_tensor(op, dy, "grad_output", x, 'x', x.numel(), false);
  check_tensor(op, dx, "grad_input", x, 'x', x.numel(), true);
  check_tensor(op, weight, "weight", x, 'p', C, true);
  check_tensor(op, dweight, "grad_weight", x, 'p', C, true);
  check_tensor(op, dbias, "grad_bias", x, 'p', C, true);
  check_tensor(op, mean, "mean", x, 's', N * G, false);
  check_tensor(op, rstd, "rstd", x, 's', N * G, false);
  const DType pdt = param_dtype(op, x, {weight, dweight, dbias});
  DeviceGuard guard(x.device());
  launch_group_norm_backward(dy.data_ptr(), x.data_ptr(), ptr(weight), mean.data_ptr(), rstd.data_ptr(), ptr(dx),
                             ptr(dweight), ptr(dbias), x.dtype(), pdt, N, C, S, G, current_stream(x.device()));
}

}  // namespace kiln::cuda
