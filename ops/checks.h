// Input checks shared by the operators: each throws kiln::Error naming the op and the
// operands (dtype, shape, device) and what is wrong.
#pragma once
#include <initializer_list>
#include <string>
#include <vector>

#include <kiln/core/tensor.h>

namespace kiln {

namespace detail {
void check_defined(const char* op, const Tensor& t, const char* name = "input");
void check_same_device(const char* op, const Tensor& a, const Tensor& b);
void check_floating(const char* op, const Tensor& t);
void check_dtype(const char* op, const Tensor& t, DType want, const char* name = "input");
// For an in-place op `op` (named with its trailing underscore, e.g. "clamp_"): refuses
// operands that require grad, since in-place writes are not recorded by autograd. The
// message names the defined operands (an undefined one, such as a scalar operand's slot,
// is skipped) and points to the out-of-place form (`op` without the underscore).
void check_inplace_no_grad(const char* op, std::initializer_list<Tensor> operands);
// The dtype an op computes in for a tensor and a scalar operand (PyTorch's rule: the
// scalar only promotes across categories: bool -> integer -> floating (f32)).
DType result_type(const Tensor& t, Scalar s);
// Normalises a list of dims (negative allowed, empty means all) into sorted unique dims.
std::vector<int64_t> reduce_dims(const char* op, const Tensor& x, const std::vector<int64_t>& dims);
// Checks an index operand of `op`: i32 or i64 (always), and every value in [0, n)
// (negative values do not wrap). The range is checked on the host only for CPU tensors,
// at once. On a device nothing is read back (DESIGN: no hidden syncs): the op's kernel
// checks each index as it reads it and the runtime throws, naming the op, at the next
// synchronisation point (cuda/runtime.h). Skipped inside an IndicesChecked scope.
void check_index_range(const char* op, const Tensor& index, int64_t n);

// Within its scope, on the calling thread, index-range checks on the host are skipped
// (check_index_range, and the class-target checks of the losses): for the internal calls
// of backward formulas and composed ops whose indices their op has already checked.
class IndicesChecked {
 public:
  IndicesChecked();
  ~IndicesChecked();
  IndicesChecked(const IndicesChecked&) = delete;
  IndicesChecked& operator=(const IndicesChecked&) = delete;

 private:
  bool prev_;
};
// Whether the host must check index values of `t` here: a CPU tensor outside an
// IndicesChecked scope.
bool host_checks_indices(const Tensor& t);
}  // namespace detail

}  // namespace kiln
