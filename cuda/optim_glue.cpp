// The CUDA backend's glue for the fused optimizer updates: checks the list contract that
// the kernels rely on (one device, contiguous tensors, matching sizes and dtypes), turns
// the tensor lists into plain pointer and size arrays, computes the step-dependent
// scalars on the host (the step count lives on the host, so nothing is read back), and
// calls the multi-tensor launchers of cuda/kernels/optim.cu on the current stream.
#include <cmath>
#include <cstdint>
#include <vector>

#include <kiln/core/error.h>
#include <kiln/cuda/cuda_backend.h>
#include <kiln/cuda/device.h>
#include <kiln/cuda/kernels/launch.h>

namespace kiln::cuda {
namespace {

std::string describe_tensor(const Tensor& t) {
  return detail::str(dtype_name(t.dtype()), shape_str(t.sizes()), " on ", t.device().str());
}

DType state_dtype_for(DType param) { return param == DType::F64 ? DType::F64 : DType::F32; }

// Checks one list against the params and returns its data pointers.
std::vector<void*> pointers(const char* op, const char* what, const std::vector<Tensor>& list,
                            const std::vector<Tensor>& params, DType want) {
  KILN_CHECK(list.size() == params.size(), "CUDA ", op, ": ", params.size(), " params but ", list.size(), " ", what);
  std::vector<void*> out(list.size());
  for (size_t i = 0; i < list.size(); ++i) {
    const Tensor& t = list[i];
    KILN_CHECK(t.defined(), "CUDA ", op, ": ", what, " ", i, " is undefined");
    KILN_CHECK(t.device() == params[0].device(), "CUDA ", op, ": ", what, " ", i, " is ", describe_tensor(t),
               ", params are on ", params[0].device().str());
    KILN_CHECK(t.is_contiguous(), "CUDA ", op, ": ", what, " ", i, " must be contiguous, got ", describe_tensor(t));
    KILN_CHECK(t.dtype() == want, "CUDA ", op, ": ", what, " ", i, " must be ", dtype_name(want), ", got ",
               describe_tensor(t));
    KILN_CHECK(t.numel() == params[i].numel(), "CUDA ", op, ": ", what, " ", i, " ", describe_tensor(t),
               " does not match param ", describe_tensor(params[i]));
    out[i] = t.data_ptr();
  }
  return out;
}

DType check_params(const char* op, const std::vector<Tensor>& params) {
  if (params.empty()) return DType::F32;
  DType dtype = params[0].dtype();
  KILN_CHECK(dtype == DType::F16 || dtype == DType::BF16 || dtype == DType::F32 || dtype == DType::F64, "CUDA ", op,
             ": params must be f16, bf16, f32 or f64, got ", describe_tensor(params[0]));
  KILN_CHECK(params.size() <= static_cast<size_t>(INT32_MAX), "CUDA ", op, ": too many tensors (", params.size(), ")");
  return dtype;
}

std::vector<int64_t> numels_of(const std::vector<Tensor>& params) {
  std::vector<int64_t> n(params.size());
  for (size_t i = 0; i < params.size(); ++i) n[i] = params[i].numel();
  return n;
}

}  // namespace

void CudaBackend::sgd_update(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                             const std::vector<Tensor>& momentum_buffers, const SgdArgs& a) {
  const DType dtype = check_params("sgd_update", params);
  if (params.empty()) return;
  std::vector<void*> p = pointers("sgd_update", "params", params, params, dtype);
  std::vector<void*> g = pointers("sgd_update", "grads", grads, params, dtype);
  std::vector<void*> buf;
  if (a.momentum != 0.0) buf = pointers("sgd_update", "momentum buffers", momentum_buffers, params, state_dtype_for(dtype));
  std::vector<int64_t> n = numels_of(params);
  SgdKernelArgs k{a.lr, a.momentum, a.dampening, a.weight_decay, a.nesterov, a.maximize, a.init_momentum};
  DeviceGuard guard(params[0].device());
  launch_multi_tensor_sgd(static_cast<int>(params.size()), p.data(), g.data(), buf.empty() ? nullptr : buf.data(),
                          n.data(), dtype, k, current_stream(params[0].device()));
}

void CudaBackend::adam_update(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                              const std::vector<Tensor>& exp_avgs, const std::vector<Tensor>& exp_avg_sqs,
                              const std::vector<Tensor>& max_exp_avg_sqs, const AdamArgs& a) {
  const DType dtype = check_params("adam_update", params);
  if (params.empty()) return;
  KILN_CHECK(a.step >= 1, "CUDA adam_update: step must be >= 1, got ", a.step);
  const DType sdt = state_dtype_for(dtype);
  std::vector<void*> p = pointers("adam_update", "params", params, params, dtype);
  std::vector<void*> g = pointers("adam_update", "grads", grads, params, dtype);
  std::vector<void*> m = pointers("adam_update", "exp_avgs", exp_avgs, params, sdt);
  std::vector<void*> v = pointers("adam_update", "exp_avg_sqs", exp_avg_sqs, params, sdt);
  std::vector<void*> vmax;
  if (a.amsgrad) vmax = pointers("adam_update", "max_exp_avg_sqs", max_exp_avg_sqs, params, sdt);
  std::vector<int64_t> n = numels_of(params);
  const double step = static_cast<double>(a.step);
  AdamKernelArgs k{};
  k.lr = a.lr;
  k.beta1 = a.beta1;
  k.beta2 = a.beta2;
  k.eps = a.eps;
  k.weight_decay = a.weight_decay;
  k.step_size = a.lr / (1.0 - std::pow(a.beta1, step));
  k.bias_correction2_sqrt = std::sqrt(1.0 - std::pow(a.beta2, step));
  k.decay = 1.0 - a.lr * a.weight_decay;
  k.decoupled_weight_decay = a.decoupled_weight_decay;
  k.amsgrad = a.amsgrad;
  k.maximize = a.maximize;
  DeviceGuard guard(params[0].device());
  launch_multi_tensor_adam(static_cast<int>(params.size()), p.data(), g.data(), m.data(), v.data(),
                           vmax.empty() ? nullptr : vmax.data(), n.data(), dtype, k,
                           current_stream(params[0].device()));
}

}  // namespace kiln::cuda
