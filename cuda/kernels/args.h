// Plain descriptions of tensors handed from the backend glue (cuda/*.cpp, compiled by
// the host compiler) to the kernel launchers (cuda/kernels/*.cu). No Tensor, no STL:
// the .cu files stay light to compile.
#pragma once
#include <cstdint>

#include <kiln/core/dtype.h>

namespace kiln::cuda {

inline constexpr int kArgMaxDims = 8;

// One operand of a strided kernel: base pointer (at the tensor's offset), dtype and the
// geometry, in elements. Operands of one launch share sizes (the iteration space).
struct TensorArg {
  void* data = nullptr;
  DType dtype = DType::F32;
  int ndim = 0;
  int64_t numel = 0;
  int64_t sizes[kArgMaxDims] = {};
  int64_t strides[kArgMaxDims] = {};
  bool contiguous = true;
};

}  // namespace kiln::cuda
