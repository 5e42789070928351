// Shared operator input checks. Index ranges are checked on the host for CPU tensors
// only; on CUDA the kernels check them (cuda/runtime.h), so no check reads values back.
#include <kiln/ops/checks.h>

#include <algorithm>
#include <string>
#include <string_view>

#include <kiln/core/autograd.h>
#include <kiln/ops/index.h>
#include <kiln/ops/reduce.h>

namespace kiln {

namespace detail {

void check_defined(const char* op, const Tensor& t, const char* name) {
  KILN_CHECK(t.defined(), op, ": ", name, " is an undefined tensor");
}

void check_same_device(const char* op, const Tensor& a, const Tensor& b) {
  KILN_CHECK(a.device() == b.device(), op, ": operands are on different devices: ", describe(a), " and ",
             describe(b), " (move one with .to(device))");
}

void check_floating(const char* op, const Tensor& t) {
  KILN_CHECK(is_floating(t.dtype()), op, ": expects a floating tensor (f16, bf16, f32, f64), got ", describe(t));
}

void check_dtype(const char* op, const Tensor& t, DType want, const char* name) {
  KILN_CHECK(t.dtype() == want, op, ": ", name, " must be ", dtype_name(want), ", got ", describe(t));
}

void check_inplace_no_grad(const char* op, std::initializer_list<Tensor> operands) {
  if (!any_requires_grad(operands)) return;
  std::string described;
  for (const Tensor& t : operands) {
    if (!t.defined()) continue;
    if (!described.empty()) described += ", ";
    described += describe(t);
  }
  std::string_view out_of_place(op);
  if (out_of_place.ends_with('_')) out_of_place.remove_suffix(1);
  throw Error(str(op, ": in-place ops on tensors that require grad are not supported (", described, "); use ",
                  out_of_place, "() or NoGradGuard"));
}

DType result_type(const Tensor& t, Scalar s) {
  DType d = t.dtype();
  if (s.is_floating() && !is_floating(d)) return DType::F32;
  if (s.is_integral() && d == DType::Bool) return DType::I64;
  return d;
}

std::vector<int64_t> reduce_dims(const char* op, const Tensor& x, const std::vector<int64_t>& dims) {
  std::vector<int64_t> out;
  if (dims.empty()) {
    for (int64_t i = 0; i < x.dim(); ++i) out.push_back(i);
    return out;
  }
  for (int64_t d : dims) out.push_back(wrap_dim(d, x.dim(), op));
  std::sort(out.begin(), out.end());
  KILN_CHECK(std::adjacent_find(out.begin(), out.end()) == out.end(), op, ": dim repeated in ", shape_str(dims));
  if (x.dim() == 0) out.clear();
  return out;
}

namespace {
thread_local bool t_indices_checked = false;
}  // namespace

IndicesChecked::IndicesChecked() : prev_(t_indices_checked) { t_indices_checked = true; }
IndicesChecked::~IndicesChecked() { t_indices_checked = prev_; }

bool host_checks_indices(const Tensor& t) { return t.device().is_cpu() && !t_indices_checked; }

void check_index_range(const char* op, const Tensor& index, int64_t n) {
  KILN_CHECK(index.dtype() == DType::I64 || index.dtype() == DType::I32, op,
             ": index must be i32 or i64, got ", describe(index));
  if (index.numel() == 0 || !host_checks_indices(index)) return;
  const std::vector<int64_t> bounds = stack({min(index), max(index)}).to_vector<int64_t>();
  const int64_t lo = bounds[0], hi = bounds[1];
  KILN_CHECK(lo >= 0 && hi < n, op, ": index values must lie in [0, ", n, "), got values in [", lo, ", ", hi, "]");
}

}  // namespace detail
}  // namespace kiln
