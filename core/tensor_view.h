// TensorView: what a kernel sees of a tensor. A plain struct (no ownership, no STL) so that
// CUDA kernel files stay light to compile: the data pointer (at the tensor's offset), the
// dtype and device, and the geometry in elements. ops/ makes views of tensors it has
// checked (kernel_view() in core/tensor.h) and hands them to the op's kernel slot
// (core/kernel.h); kernels never re-check what ops/ checked.
#pragma once
#include <cstdint>

#include <kiln/core/device.h>
#include <kiln/core/dtype.h>

namespace kiln {

inline constexpr int kMaxDims = 8;  // dims of a kernel view: the kernels' index arithmetic is sized for this
inline constexpr int kMaxTensorDims = 64;  // dims of a tensor (PyTorch's limit too)

struct TensorView {
  void* data = nullptr;
  DType dtype = DType::F32;
  Device device;
  int ndim = 0;
  int64_t numel = 0;
  int64_t sizes[kMaxDims] = {};
  int64_t strides[kMaxDims] = {};
  bool contiguous = true;
  bool defined = false;  // false: an absent optional operand (no bias, no weight, ...)
  // The storage's identity, for overlap checks (two views alias only if equal).
  const void* storage = nullptr;

  template <class T> T* ptr() const { return static_cast<T*>(data); }
  int64_t size(int d) const { return sizes[d]; }
  int64_t stride(int d) const { return strides[d]; }
  bool shares_storage(const TensorView& o) const { return storage != nullptr && storage == o.storage; }
  bool same_geometry(const TensorView& o) const {
    if (ndim != o.ndim) return false;
    for (int d = 0; d < ndim; ++d)
      if (sizes[d] != o.sizes[d] || strides[d] != o.strides[d]) return false;
    return true;
  }
};

// The view's bytes described as a (rows, cols) matrix with unit column stride and the given
// row stride (0: one row repeated, a broadcast over the rows). The matmul_bias kernels add a
// bias vector to a product's rows with it.
inline TensorView as_matrix(TensorView v, int64_t rows, int64_t cols, int64_t row_stride) {
  v.ndim = 2;
  v.sizes[0] = rows, v.sizes[1] = cols;
  v.strides[0] = row_stride, v.strides[1] = 1;
  v.numel = rows * cols;
  v.contiguous = row_stride == cols || rows == 1;
  return v;
}

// Describes views of one shape (the iteration space of an elementwise launch) with fewer
// dims, element order unchanged: size-1 dims are dropped, then neighbours d-1, d merge
// when, in every view, stepping over all of dim d lands exactly on the next element of
// dim d-1. A contiguous tensor becomes 1-D, a transposed one 2-D. Dims past the new ndim
// are set neutral (size 1, stride 0). Header-only so that .cu files can use it.
inline void coalesce(TensorView* v, int n) {
  if (n <= 0 || v[0].numel == 0) return;  // empty: kernels return before looking
  const int ndim = v[0].ndim;
  int kept = 0;
  for (int d = 0; d < ndim; ++d) {
    if (v[0].sizes[d] == 1) continue;
    for (int k = 0; k < n; ++k) {
      v[k].sizes[kept] = v[k].sizes[d];
      v[k].strides[kept] = v[k].strides[d];
    }
    ++kept;
  }
  int out = 0;  // the dim that dim d merges into, or follows
  for (int d = 1; d < kept; ++d) {
    bool mergeable = true;
    for (int k = 0; k < n && mergeable; ++k) mergeable = v[k].strides[out] == v[k].strides[d] * v[k].sizes[d];
    if (!mergeable) ++out;
    for (int k = 0; k < n; ++k) {
      v[k].sizes[out] = mergeable ? v[k].sizes[out] * v[k].sizes[d] : v[k].sizes[d];
      v[k].strides[out] = v[k].strides[d];
    }
  }
  const int new_ndim = kept == 0 ? 0 : out + 1;
  for (int k = 0; k < n; ++k) {
    v[k].ndim = new_ndim;
    for (int d = new_ndim; d < kMaxDims; ++d) {
      v[k].sizes[d] = 1;
      v[k].strides[d] = 0;
    }
  }
}

}  // namespace kiln
