// Tensor's in-place arithmetic members (declared in core/tensor.h): thin forwards to the
// binary ops' in-place entry points, which check, mark the write and dispatch.
#include <kiln/ops/binary.h>

namespace kiln {

Tensor& Tensor::add_(const Tensor& other, Scalar alpha) {
  if (alpha.to_double() == 1.0) return kiln::add_(*this, other);
  return kiln::add_(*this, kiln::mul(other, alpha));
}
Tensor& Tensor::add_(Scalar other) { return kiln::add_(*this, other); }
Tensor& Tensor::sub_(const Tensor& other, Scalar alpha) {
  if (alpha.to_double() == 1.0) return kiln::sub_(*this, other);
  return kiln::sub_(*this, kiln::mul(other, alpha));
}
Tensor& Tensor::sub_(Scalar other) { return kiln::sub_(*this, other); }
Tensor& Tensor::mul_(const Tensor& other) { return kiln::mul_(*this, other); }
Tensor& Tensor::mul_(Scalar other) { return kiln::mul_(*this, other); }
Tensor& Tensor::div_(const Tensor& other) { return kiln::div_(*this, other); }
Tensor& Tensor::div_(Scalar other) { return kiln::div_(*this, other); }

}  // namespace kiln
