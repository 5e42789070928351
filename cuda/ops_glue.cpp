// The CUDA backend's glue for the elementwise, reduction, softmax and indexing kernel
// families: each method sets the device, describes its tensors as TensorArgs (coalesced
// where the kernel is strided) or raw pointers, checks what the launcher relies on, and
// calls the launcher of cuda/kernels/*.cu on the device's current stream. ops/ has
// already checked shapes, dtypes and index ranges; the checks here guard the contract
// between the two layers and name the op and operands when it is broken.
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
  KILN_CHECK(t.is_contiguous(), "CUDA ", op, ": ", what, " must be contiguous, got ", describe_tensor(t), " with strides ",
             shape_str(t.strides()));
}

void check_index(const char* op, const Tensor& index) {
  KILN_CHECK(index.dtype() == DType::I64, "CUDA ", op, ": index must be i64, got ", describe_tensor(index));
  check_contiguous(op, index, "index");
}

}  // namespace

void CudaBackend::unary(UnaryOp op, const Tensor& x, const Tensor& y, double alpha) {
  const char* name = op_name(op);
  check_on(name, x, y);
  KILN_CHECK(x.dtype() == y.dtype() && x.sizes() == y.sizes(), "CUDA ", name, ": input ", describe_tensor(x),
             " and output ", describe_tensor(y), " must have one shape and dtype");
  KILN_CHECK(x.dtype() != DType::Bool, "CUDA ", name, ": not defined for bool tensors, got ", describe_tensor(x));
  KILN_CHECK(is_floating(x.dtype()) || unary_accepts_integers(op), "CUDA ", name,
             ": not defined for integer tensors, got ", describe_tensor(x));
  if (y.numel() == 0) return;
  DeviceGuard guard(y.device());
  TensorArg args[2] = {make_arg(x), make_arg(y)};
  coalesce(args, 2);
  launch_unary(op, args[0], args[1], alpha, current_stream(y.device()));
}

void CudaBackend::binary(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out) {
  const char* name = op_name(op);
  check_on(name, a, out);
  check_on(name, b, out);
  KILN_CHECK(a.dtype() == b.dtype(), "CUDA ", name, ": operands must share a dtype, got ", describe_tensor(a), " and ",
             describe_tensor(b));
  KILN_CHECK(a.sizes() == out.sizes() && b.sizes() == out.sizes(), "CUDA ", name,
             ": operands must be expanded to the output's shape, got ", describe_tensor(a), ", ", describe_tensor(b), " -> ",
             describe_tensor(out));
  const DType want = is_comparison(op) ? DType::Bool : a.dtype();
  KILN_CHECK(out.dtype() == want, "CUDA ", name, ": output must be ", dtype_name(want), ", got ", describe_tensor(out));
  if (!is_comparison(op) && op != BinaryOp::Maximum && op != BinaryOp::Minimum) {
    KILN_CHECK(a.dtype() != DType::Bool, "CUDA ", name, ": arithmetic on bool tensors is not supported (",
               describe_tensor(a), ")");
    KILN_CHECK(op != BinaryOp::Div || is_floating(a.dtype()), "CUDA ", name,
               ": integer division reached the kernel (ops/ divides in f32), got ", describe_tensor(a));
  }
  if (out.numel() == 0) return;
  DeviceGuard guard(out.device());
  TensorArg args[3] = {make_arg(a), make_arg(b), make_arg(out)};
  coalesce(args, 3);
  launch_binary(op, args[0], args[1], args[2], current_stream(out.device()));
}

void CudaBackend::where(const Tensor& cond, const Tensor& a, const Tensor& b, const Tensor& out) {
  check_on("where", cond, out);
  check_on("where", a, out);
  check_on("where", b, out);
  KILN_CHECK(cond.dtype() == DType::Bool, "CUDA where: condition must be bool, got ", describe_tensor(cond));
  KILN_CHECK(a.dtype() == out.dtype() && b.dtype() == out.dtype(), "CUDA where: operands ", describe_tensor(a), ", ",
             describe_tensor(b), " and output ", describe_tensor(out), " must share a dtype");
  KILN_CHECK(cond.sizes() == out.sizes() && a.sizes() == out.sizes() && b.sizes() == out.sizes(),
             "CUDA where: operands must be expanded to the output's shape ", shape_str(out.sizes()));
  if (out.numel() == 0) return;
  DeviceGuard guard(out.device());
  TensorArg args[4] = {make_arg(cond), make_arg(a), make_arg(b), make_arg(out)};
  coalesce(args, 4);
  launch_where(args[0], args[1], args[2], args[3], current_stream(out.device()));
}

void CudaBackend::reduce(ReduceOp op, const Tensor& x, int64_t outer, int64_t r, int64_t inner, const Tensor& out) {
  const char* name = op_name(op);
  check_on(name, x, out);
  check_contiguous(name, x, "input");
  check_contiguous(name, out, "output");
  KILN_CHECK(outer >= 0 && r >= 0 && inner >= 0 && outer * r * inner == x.numel() && outer * inner == out.numel(),
             "CUDA ", name, ": layout (", outer, ", ", r, ", ", inner, ") does not match input ", describe_tensor(x),
             " and output ", describe_tensor(out));
  const bool arg = op == ReduceOp::ArgMax || op == ReduceOp::ArgMin;
  DType want = x.dtype();
  if (arg || (op == ReduceOp::Sum && !is_floating(x.dtype()))) want = DType::I64;
  KILN_CHECK(out.dtype() == want, "CUDA ", name, ": output must be ", dtype_name(want), " for input ", describe_tensor(x),
             ", got ", describe_tensor(out));
  KILN_CHECK(op != ReduceOp::Mean || is_floating(x.dtype()), "CUDA ", name, ": needs a floating input, got ",
             describe_tensor(x));
  KILN_CHECK(op == ReduceOp::Sum || op == ReduceOp::Mean || x.dtype() != DType::Bool, "CUDA ", name,
             ": not supported for bool tensors, got ", describe_tensor(x));
  if (out.numel() == 0) return;
  KILN_CHECK(r > 0, "CUDA ", name, ": cannot reduce over an empty dimension of ", describe_tensor(x));
  DeviceGuard guard(x.device());
  launch_reduce(op, x.data_ptr(), x.dtype(), out.data_ptr(), out.dtype(), outer, r, inner,
                current_stream(x.device()));
}

void CudaBackend::softmax(const Tensor& x, int64_t outer, int64_t n, int64_t inner, bool log, const Tensor& out) {
  const char* name = log ? "log_softmax" : "softmax";
  check_on(name, x, out);
  check_contiguous(name, x, "input");
  check_contiguous(name, out, "output");
  KILN_CHECK(is_floating(x.dtype()) && out.dtype() == x.dtype(), "CUDA ", name,
             ": needs floating input and output of one dtype, got ", describe_tensor(x), " -> ", describe_tensor(out));
  KILN_CHECK(outer * n * inner == x.numel() && out.numel() == x.numel(), "CUDA ", name, ": layout (", outer, ", ",
             n, ", ", inner, ") does not match ", describe_tensor(x));
  if (x.numel() == 0) return;
  DeviceGuard guard(x.device());
  launch_softmax(x.data_ptr(), out.data_ptr(), x.dtype(), outer, n, inner, log, current_stream(x.device()));
}

void CudaBackend::index_select(const Tensor& x, const Tensor& index, int64_t outer, int64_t n, int64_t inner,
                               const Tensor& out) {
  check_on("index_select", x, out);
  check_on("index_select", index, out);
  check_contiguous("index_select", x, "input");
  check_contiguous("index_select", out, "output");
  check_index("index_select", index);
  KILN_CHECK(x.dtype() == out.dtype(), "CUDA index_select: input ", describe_tensor(x), " and output ", describe_tensor(out),
             " must share a dtype");
  const int64_t k = index.numel();
  KILN_CHECK(outer * n * inner == x.numel() && outer * k * inner == out.numel(), "CUDA index_select: layout (",
             outer, ", ", n, ", ", inner, ") with ", k, " indices does not match ", describe_tensor(x), " -> ",
             describe_tensor(out));
  if (out.numel() == 0) return;
  DeviceGuard guard(x.device());
  launch_index_select(x.data_ptr(), index.data<int64_t>(), out.data_ptr(), x.element_size(), outer, n, k, inner,
                      current_stream(x.device()));
}

void CudaBackend::gather(const Tensor& x, const Tensor& index, int64_t outer, int64_t n, int64_t k, int64_t inner,
                         const Tensor& out) {
  check_on("gather", x, out);
  check_on("gather", index, out);
  check_contiguous("gather", x, "input");
  check_contiguous("gather", out, "output");
  check_index("gather", index);
  KILN_CHECK(x.dtype() == out.dtype(), "CUDA gather: input ", describe_tensor(x), " and output ", describe_tensor(out),
             " must share a dtype");
  KILN_CHECK(outer * n * inner == x.numel() && outer * k * inner == out.numel() && index.numel() == out.numel(),
             "CUDA gather: layout (", outer, ", ", n, "/", k, ", ", inner, ") does not match input ", describe_tensor(x),
             ", index ", describe_tensor(index), " and output ", describe_tensor(out));
  if (out.numel() == 0) return;
  DeviceGuard guard(x.device());
  launch_gather(x.data_ptr(), index.data<int64_t>(), out.data_ptr(), x.element_size(), outer, n, k, inner,
                current_stream(x.device()));
}

void CudaBackend::scatter_add(const Tensor& out, const Tensor& index, const Tensor& src, int64_t outer, int64_t n,
                              int64_t k, int64_t inner) {
  check_on("scatter_add", index, out);
  check_on("scatter_add", src, out);
  check_contiguous("scatter_add", out, "output");
  check_contiguous("scatter_add", src, "src");
  check_index("scatter_add", index);
  KILN_CHECK(src.dtype() == out.dtype(), "CUDA scatter_add: src ", describe_tensor(src), " and output ", describe_tensor(out),
             " must share a dtype");
  KILN_CHECK(out.dtype() != DType::Bool, "CUDA scatter_add: not supported for bool tensors");
  KILN_CHECK(outer * n * inner == out.numel() && outer * k * inner == src.numel() && index.numel() == src.numel(),
             "CUDA scatter_add: layout (", outer, ", ", n, "/", k, ", ", inner, ") does not match output ",
             describe_tensor(out), ", index ", describe_tensor(index), " and src ", describe_tensor(src));
  if (src.numel() == 0) return;
  DeviceGuard guard(out.device());
  launch_scatter_add(out.data_ptr(), index.data<int64_t>(), src.data_ptr(), out.dtype(), outer, n, k, inner,
                     current_stream(out.device()));
}

}  // namespace kiln::cuda
