// Shared operator input checks.
#include <kiln/ops/checks.h>

#include <algorithm>

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

void check_index_range(const char* op, const Tensor& index, int64_t n) {
  KILN_CHECK(index.dtype() == DType::I64 || index.dtype() == DType::I32, op,
             ": index must be i32 or i64, got ", describe(index));
  if (index.numel() == 0) return;
  // One read-back for both bounds: on CUDA this is the op's only host sync.
  std::vector<int64_t> bounds = stack({min(index), max(index)}).to_vector<int64_t>();
  int64_t lo = bounds[0], hi = bounds[1];
  KILN_CHECK(lo >= 0 && hi < n, op, ": index values must lie in [0, ", n, "), got values in [", lo, ", ", hi, "]");
}

}  // namespace detail
}  // namespace kiln
