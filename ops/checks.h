// Input checks shared by the operators: each throws kiln::Error naming the op and the
// operands (dtype, shape, device) and what is wrong.
#pragma once
#include <string>
#include <vector>

#include <kiln/core/tensor.h>

namespace kiln {

namespace detail {
void check_defined(const char* op, const Tensor& t, const char* name = "input");
void check_same_device(const char* op, const Tensor& a, const Tensor& b);
void check_floating(const char* op, const Tensor& t);
void check_dtype(const char* op, const Tensor& t, DType want, const char* name = "input");
// The dtype an op computes in for a tensor and a scalar operand (PyTorch's rule: the
// scalar only promotes across categories: bool -> integer -> floating (f32)).
DType result_type(const Tensor& t, Scalar s);
// Normalises a list of dims (negative allowed, empty means all) into sorted unique dims.
std::vector<int64_t> reduce_dims(const char* op, const Tensor& x, const std::vector<int64_t>& dims);
// Throws unless every value of an integer index tensor lies in [-n, n) (wrapping is not
// allowed: values must be in [0, n)). Reads the index's min and max back from the device.
void check_index_range(const char* op, const Tensor& index, int64_t n);
}  // namespace detail

}  // namespace kiln
