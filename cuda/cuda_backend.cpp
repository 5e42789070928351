// The CUDA backend's memory, transfers, fill, copy and random numbers, the TensorArg
// helpers every launcher call uses, and the backend's registration. The other kernel
// families' glue lives in ops_glue.cpp and matmul in blas.cpp. The backend registers
// itself even on a machine without a GPU: device_count() then says 0 and core turns a
// request for a CUDA tensor into kiln::DeviceError.
#include <kiln/cuda/cuda_backend.h>

#include <cstdint>
#include <utility>

#include <kiln/cuda/allocator.h>
#include <kiln/cuda/device.h>
#include <kiln/cuda/error.h>
#include <kiln/cuda/kernels/launch.h>

namespace kiln::cuda {

TensorArg make_arg(const Tensor& t) {
  KILN_CHECK(t.dim() <= kArgMaxDims, "CUDA backend: tensor of shape ", shape_str(t.sizes()), " has more than ",
             kArgMaxDims, " dims");
  TensorArg a;
  a.data = t.data_ptr();
  a.dtype = t.dtype();
  a.ndim = static_cast<int>(t.dim());
  a.numel = t.numel();
  for (int d = 0; d < a.ndim; ++d) {
    a.sizes[d] = t.size(d);
    a.strides[d] = t.stride(d);
  }
  a.contiguous = t.is_contiguous();
  return a;
}

// Size-1 dims are dropped, then neighbours d-1, d merge when, in every operand, stepping
// over all of dim d lands exactly on the next element of dim d-1. A contiguous tensor
// becomes 1-D, a transposed one 2-D, whatever view produced them.
void coalesce(TensorArg* args, int n) {
  if (n <= 0 || args[0].numel == 0) return;  // empty: launchers return before looking
  int ndim = args[0].ndim;
  int kept = 0;
  for (int d = 0; d < ndim; ++d) {
    if (args[0].sizes[d] == 1) continue;
    for (int k = 0; k < n; ++k) {
      args[k].sizes[kept] = args[k].sizes[d];
      args[k].strides[kept] = args[k].strides[d];
    }
    ++kept;
  }
  int out = 0;  // the dim that dim d merges into, or follows
  for (int d = 1; d < kept; ++d) {
    bool mergeable = true;
    for (int k = 0; k < n && mergeable; ++k) {
      mergeable = args[k].strides[out] == args[k].strides[d] * args[k].sizes[d];
    }
    if (!mergeable) ++out;
    for (int k = 0; k < n; ++k) {
      args[k].sizes[out] = mergeable ? args[k].sizes[out] * args[k].sizes[d] : args[k].sizes[d];
      args[k].strides[out] = args[k].strides[d];
    }
  }
  int new_ndim = kept == 0 ? 0 : out + 1;
  for (int k = 0; k < n; ++k) {
    args[k].ndim = new_ndim;
    for (int d = new_ndim; d < kArgMaxDims; ++d) {  // neutral for any product or sum over dims
      args[k].sizes[d] = 1;
      args[k].strides[d] = 0;
    }
  }
}

// ---- backend ---------------------------------------------------------------------

int CudaBackend::device_count() { return cuda::device_count(); }
Allocator& CudaBackend::allocator() { return cuda_allocator(); }

namespace {

// Orders `waiter` after the work queued so far on `signaller` (streams of any devices),
// without blocking the host.
void stream_wait(cudaStream_t waiter, cudaStream_t signaller, int signaller_device) {
  DeviceGuard guard(signaller_device);  // an event is recorded on its own device's stream
  cudaEvent_t ev = nullptr;
  KILN_CUDA_CHECK(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming));
  cudaError_t rec = cudaEventRecord(ev, signaller);
  cudaError_t wait = rec == cudaSuccess ? cudaStreamWaitEvent(waiter, ev, 0) : cudaSuccess;
  // Destroying a recorded event is safe: its resources go once the wait has been satisfied.
  KILN_CUDA_WARN(cudaEventDestroy(ev));
  KILN_CUDA_CHECK(rec);
  KILN_CUDA_CHECK(wait);
}

}  // namespace

void CudaBackend::copy_bytes(void* dst, Device dd, const void* src, Device sd, size_t nbytes) {
  KILN_CHECK(dd.is_cuda() || sd.is_cuda(), "CUDA backend: copy_bytes between ", sd.str(), " and ", dd.str(),
             " involves no CUDA device");
  if (nbytes == 0) return;
  if (dd.is_cuda() && sd.is_cuda()) {
    DeviceGuard guard(dd);
    cudaStream_t dst_stream = current_stream(dd);
    if (dd == sd) {
      KILN_CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyDeviceToDevice, dst_stream));
      return;
    }
    // The source was produced on its own device's stream, and its block is freed (and
    // reusable) in that stream's order: fence both ways around the copy.
    cudaStream_t src_stream = current_stream(sd);
    stream_wait(dst_stream, src_stream, sd.index);
    KILN_CUDA_CHECK(cudaMemcpyPeerAsync(dst, dd.index, src, sd.index, nbytes, dst_stream));
    stream_wait(src_stream, dst_stream, dd.index);
    return;
  }
  // One side is the host. Waiting for the copy is required both ways: the host reads the
  // data right after a device-to-host copy, and after a host-to-device copy the caller may
  // free or reuse its buffer at once (a pinned buffer would otherwise still be read by the
  // DMA engine).
  Device cuda_side = dd.is_cuda() ? dd : sd;
  DeviceGuard guard(cuda_side);
  cudaStream_t stream = current_stream(cuda_side);
  cudaMemcpyKind kind = dd.is_cuda() ? cudaMemcpyHostToDevice : cudaMemcpyDeviceToHost;
  KILN_CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, kind, stream));
  KILN_CUDA_CHECK(cudaStreamSynchronize(stream));
}

void CudaBackend::synchronize(Device device) {
  DeviceGuard guard(device);
  KILN_CUDA_CHECK(cudaDeviceSynchronize());
}

void CudaBackend::fill(const Tensor& out, Scalar value) {
  if (out.numel() == 0) return;
  DeviceGuard guard(out.device());
  TensorArg o = make_arg(out);
  coalesce(&o, 1);
  // The CPU reference narrows the value per dtype (Scalar::to<T>, and float first for
  // the half types); passing both forms lets the kernel mirror that exactly.
  double fvalue = value.to_double();
  if (out.dtype() == DType::F16 || out.dtype() == DType::BF16 || out.dtype() == DType::F32)
    fvalue = static_cast<double>(static_cast<float>(fvalue));
  int64_t ivalue = out.dtype() == DType::Bool ? static_cast<int64_t>(value.to_bool()) : value.to_int();
  launch_fill(o, fvalue, ivalue, current_stream(out.device()));
}

namespace {
// Byte range [lo, hi) that a tensor's elements can touch.
std::pair<uintptr_t, uintptr_t> byte_span(const Tensor& t) {
  auto base = reinterpret_cast<uintptr_t>(t.data_ptr());
  int64_t last = 0;
  for (int64_t d = 0; d < t.dim(); ++d) last += (t.size(d) - 1) * t.stride(d);
  return {base, base + static_cast<uintptr_t>((last + 1) * static_cast<int64_t>(t.element_size()))};
}
}  // namespace

void CudaBackend::copy(const Tensor& src, const Tensor& out) {
  if (out.numel() == 0) return;
  KILN_CHECK(src.device() == out.device(), "CUDA copy: source on ", src.device().str(), " and destination on ",
             out.device().str(), " (cross-device copies go through copy_bytes)");
  bool same_view = src.data_ptr() == out.data_ptr() && src.strides() == out.strides() && src.sizes() == out.sizes();
  if (same_view && src.dtype() == out.dtype()) return;  // x.copy_(x)
  if (src.shares_storage(out)) {
    // Element i may read what an earlier element wrote: stage through a temporary unless
    // the two byte ranges are disjoint (slices of one buffer usually are).
    auto [slo, shi] = byte_span(src);
    auto [olo, ohi] = byte_span(out);
    if (slo < ohi && olo < shi) {
      Tensor tmp = empty(src.sizes(), TensorOptions(src.dtype(), src.device()));
      copy(src, tmp);
      copy(tmp, out);
      return;
    }
  }
  DeviceGuard guard(out.device());
  TensorArg args[2] = {make_arg(src), make_arg(out)};
  coalesce(args, 2);
  launch_copy(args[0], args[1], current_stream(out.device()));
}

void CudaBackend::random(const Tensor& out, RandomKind kind, uint64_t seed, uint64_t offset, double a, double b) {
  if (out.numel() == 0) return;
  KILN_CHECK(out.is_contiguous(), "CUDA random: output must be contiguous, got shape ", shape_str(out.sizes()),
             " strides ", shape_str(out.strides()));
  DeviceGuard guard(out.device());
  launch_random(make_arg(out), kind, seed, offset, a, b, current_stream(out.device()));
}

namespace {
struct Registrar {
  Registrar() {
    // Touches no CUDA API: loading kiln must work, and stay cheap, without a GPU.
    static CudaBackend backend;
    register_backend(DeviceType::CUDA, &backend);
  }
} registrar;
}  // namespace

}  // namespace kiln::cuda
