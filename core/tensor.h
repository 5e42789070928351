// Tensor: a cheap handle (shared ownership of a TensorImpl) over a Storage, with an
// element offset, sizes, strides (in elements), a dtype and a device. Views share the
// storage; every op accepts any strides. Operators on tensors live in ops/.
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <iosfwd>
#include <memory>
#include <string>
#include <vector>

#include <kiln/core/allocator.h>
#include <kiln/core/device.h>
#include <kiln/core/dtype.h>
#include <kiln/core/error.h>
#include <kiln/core/scalar.h>
#include <kiln/core/tensor_view.h>

namespace kiln {

using Shape = std::vector<int64_t>;

std::string shape_str(const Shape& s);  // "[2, 3]"
int64_t shape_numel(const Shape& s);
Shape contiguous_strides(const Shape& s);
// Wraps a possibly negative dim into [0, ndim); throws naming `op` when out of range.
int64_t wrap_dim(int64_t dim, int64_t ndim, const char* op);
// NumPy broadcasting of two shapes; throws naming `op` when they do not broadcast.
Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op);

// Memory owned by an allocator (or borrowed, with a deleter).
class StorageImpl {
 public:
  StorageImpl(size_t nbytes, Device device);  // allocates through the device's backend
  StorageImpl(void* data, size_t nbytes, Device device, std::function<void(void*)> deleter);
  ~StorageImpl();
  StorageImpl(const StorageImpl&) = delete;
  StorageImpl& operator=(const StorageImpl&) = delete;
  void* data() const { return data_; }
  size_t nbytes() const { return nbytes_; }
  Device device() const { return device_; }
  // Bumped by every in-place write into the storage (detail::mark_written): autograd
  // compares it with the value at save time to catch saved tensors modified in place.
  // Views share it, as they share the storage.
  uint64_t version() const { return version_.load(std::memory_order_relaxed); }
  void bump_version() { version_.fetch_add(1, std::memory_order_relaxed); }

 private:
  void* data_ = nullptr;
  size_t nbytes_ = 0;
  Device device_;
  Allocator* allocator_ = nullptr;
  std::function<void(void*)> deleter_;
  std::atomic<uint64_t> version_{0};
};
using Storage = std::shared_ptr<StorageImpl>;

struct AutogradMeta;  // core/autograd.cpp
class Node;           // core/autograd.h

struct TensorImpl {
  Storage storage;
  int64_t offset = 0;  // in elements
  Shape sizes, strides;
  DType dtype = DType::F32;
  std::shared_ptr<AutogradMeta> autograd;  // null until autograd touches the tensor
};

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}
  // A tensor over `storage` with the given geometry (checked to lie inside it).
  static Tensor make(Storage storage, DType dtype, Shape sizes, Shape strides, int64_t offset = 0);

  bool defined() const { return impl_ != nullptr; }
  const Shape& sizes() const { return impl().sizes; }
  const Shape& shape() const { return impl().sizes; }
  const Shape& strides() const { return impl().strides; }
  int64_t dim() const { return static_cast<int64_t>(impl().sizes.size()); }
  int64_t size(int64_t d) const;
  int64_t stride(int64_t d) const;
  int64_t numel() const { return shape_numel(impl().sizes); }
  int64_t offset() const { return impl().offset; }
  DType dtype() const { return impl().dtype; }
  size_t element_size() const { return dtype_size(dtype()); }
  Device device() const { return impl().storage->device(); }
  bool is_cuda() const { return device().is_cuda(); }
  const Storage& storage() const { return impl().storage; }
  // Address of element [0, 0, ...] (storage base + offset).
  void* data_ptr() const;
  template <class T> T* data() const {
    KILN_CHECK(dtype_of<T> == dtype(), "Tensor::data<", dtype_name(dtype_of<T>), ">: tensor is ", dtype_name(dtype()));
    return static_cast<T*>(data_ptr());
  }
  bool is_contiguous() const;
  bool is_same(const Tensor& o) const { return impl_ == o.impl_; }
  bool shares_storage(const Tensor& o) const { return storage() == o.storage(); }
  // Whether nothing but this handle refers to the tensor or to its memory (no other
  // handle, no view): it may then be changed in place without anyone seeing it.
  bool is_unique() const { return impl_ && impl_.use_count() == 1 && impl_->storage.use_count() == 1; }

  // ---- views (share storage; differentiable: each records its backward) ----
  // as_strided has no backward: it throws for a tensor that requires grad in grad mode.
  Tensor as_strided(Shape sizes, Shape strides, int64_t offset) const;
  Tensor view(Shape sizes) const;     // throws when the strides do not allow it
  Tensor reshape(Shape sizes) const;  // a view when possible, else a contiguous copy
  Tensor permute(Shape dims) const;
  Tensor transpose(int64_t d0, int64_t d1) const;
  Tensor t() const;  // 2-D transpose
  Tensor slice(int64_t dim, int64_t start, int64_t end, int64_t step = 1) const;
  Tensor narrow(int64_t dim, int64_t start, int64_t length) const;
  Tensor select(int64_t dim, int64_t index) const;
  Tensor operator[](int64_t index) const { return select(0, index); }
  Tensor expand(Shape sizes) const;  // -1 keeps a size
  Tensor expand_as(const Tensor& other) const { return expand(other.sizes()); }
  Tensor squeeze() const;
  Tensor squeeze(int64_t dim) const;
  Tensor unsqueeze(int64_t dim) const;
  Tensor flatten(int64_t start_dim = 0, int64_t end_dim = -1) const;

  // ---- copies ----
  Tensor contiguous() const;  // itself when already contiguous
  Tensor clone() const;       // always a new contiguous tensor
  Tensor to(Device device) const;
  Tensor to(DType dtype) const;
  Tensor to(Device device, DType dtype) const;
  Tensor cpu() const { return to(kCPU); }
  // Copies src (broadcast to this shape, cast to this dtype) into this tensor, across devices.
  Tensor& copy_(const Tensor& src);
  Tensor& fill_(Scalar value);
  Tensor& zero_() { return fill_(0); }
  // In-place arithmetic, as in libtorch (x.mul_(2).add_(y)); other may broadcast to this
  // tensor's shape. add_/sub_ with alpha: x += alpha * other. These are ops: defined in
  // ops/tensor_methods.cpp (core only declares them). Refused on tensors that require
  // grad in grad mode, and on tensors whose elements share memory.
  Tensor& add_(const Tensor& other, Scalar alpha = 1);
  Tensor& add_(Scalar other);
  Tensor& sub_(const Tensor& other, Scalar alpha = 1);
  Tensor& sub_(Scalar other);
  Tensor& mul_(const Tensor& other);
  Tensor& mul_(Scalar other);
  Tensor& div_(const Tensor& other);
  Tensor& div_(Scalar other);

  // ---- reading back (synchronises with the device) ----
  Scalar item() const;
  template <class T> T item() const { return item().to<T>(); }
  template <class T> std::vector<T> to_vector() const;  // row-major values, cast to T
  std::string str() const;  // dtype, device, shape and values (elided when large)

  // ---- autograd (core/autograd.h) ----
  bool requires_grad() const;
  // Marks a leaf as needing gradients (floating dtypes only).
  Tensor& set_requires_grad(bool requires_grad = true);
  Tensor& requires_grad_(bool r = true) { return set_requires_grad(r); }
  bool is_leaf() const;
  Tensor grad() const;  // undefined until a backward reaches this leaf
  void set_grad(const Tensor& grad);  // Tensor() clears it
  std::shared_ptr<Node> grad_fn() const;
  // Backpropagates from this tensor; `grad` defaults to 1 for a one-element tensor.
  // create_graph: the gradients accumulated into .grad are differentiable (higher-order
  // gradients; see kiln::grad in core/autograd.h).
  void backward(const Tensor& grad = Tensor(), bool retain_graph = false, bool create_graph = false) const;
  // The same data, cut from the graph.
  Tensor detach() const;
  // Leaf hooks run with the leaf's .grad once a backward pass has finished summing into it.
  int register_hook(std::function<void(const Tensor& grad)> hook);
  void remove_hook(int id);

  // ---- internals ----
  AutogradMeta* autograd_meta(bool create) const;
  const std::shared_ptr<TensorImpl>& impl_ptr() const {
    KILN_CHECK(impl_ != nullptr, "kiln: use of an undefined Tensor");
    return impl_;
  }
  // A view that records nothing (for kiln's own code and backward formulas).
  Tensor as_strided_raw(Shape sizes, Shape strides, int64_t offset) const;

 private:
  const TensorImpl& impl() const {
    KILN_CHECK(impl_ != nullptr, "kiln: use of an undefined Tensor");
    return *impl_;
  }
  std::shared_ptr<TensorImpl> impl_;
};

std::ostream& operator<<(std::ostream& os, const Tensor& t);
// "f32[2, 3] on cuda:0" (for error messages); "undefined tensor" for an undefined one.
std::string describe(const Tensor& t);

// ---- factories ----
struct TensorOptions {
  DType dtype = DType::F32;
  Device device = kCPU;
  TensorOptions() = default;
  TensorOptions(DType d) : dtype(d) {}                 // NOLINT
  TensorOptions(Device dev) : device(dev) {}           // NOLINT
  TensorOptions(const char* dev) : device(dev) {}      // NOLINT
  TensorOptions(DType d, Device dev) : dtype(d), device(dev) {}
  TensorOptions with_dtype(DType d) const { return {d, device}; }
  TensorOptions with_device(Device dev) const { return {dtype, dev}; }
};

class Generator;

Tensor empty(const Shape& sizes, TensorOptions opts = {});
Tensor zeros(const Shape& sizes, TensorOptions opts = {});
Tensor ones(const Shape& sizes, TensorOptions opts = {});
Tensor full(const Shape& sizes, Scalar value, TensorOptions opts = {});
// arange's dtype is i64 when start, end and step are integers and f32 otherwise, unless
// options are given.
Tensor arange(Scalar end);
Tensor arange(Scalar end, TensorOptions opts);
Tensor arange(Scalar start, Scalar end, Scalar step = 1);
Tensor arange(Scalar start, Scalar end, Scalar step, TensorOptions opts);
Tensor linspace(double start, double end, int64_t steps, TensorOptions opts = {});
Tensor eye(int64_t n, int64_t m = -1, TensorOptions opts = {});
// Uniform in [0, 1), standard normal, and integers in [low, high), from the Philox stream
// of `gen` (the default generator when null): the same values on CPU and CUDA.
Tensor rand(const Shape& sizes, TensorOptions opts = {}, Generator* gen = nullptr);
Tensor randn(const Shape& sizes, TensorOptions opts = {}, Generator* gen = nullptr);
Tensor randint(int64_t low, int64_t high, const Shape& sizes, TensorOptions opts = DType::I64,
               Generator* gen = nullptr);
template <class T>
Tensor from_vector(const std::vector<T>& values, const Shape& sizes, Device device = kCPU);
template <class T>
Tensor from_vector(const std::vector<T>& values) {
  return from_vector(values, Shape{static_cast<int64_t>(values.size())});
}
Tensor scalar_tensor(Scalar value, TensorOptions opts = {});

namespace detail {
// Every in-place write into `t` goes through this first: it refuses a tensor whose
// elements share memory (a stride-0 dim of size > 1, as an expanded view has: writing
// each element would hit the same memory several times), naming `op`, and bumps the
// storage's version counter so that autograd can tell a saved tensor was modified.
void mark_written(const char* op, const Tensor& t);
}  // namespace detail

// What a kernel sees of `t` (core/tensor_view.h): an undefined tensor gives an undefined
// view (an absent optional operand).
TensorView kernel_view(const Tensor& t);
// Views of tensors of one shape for one elementwise launch. Up to kMaxDims dims these are
// kernel_view()s; beyond, the dims are first merged where every tensor is contiguous
// across them (dropping size-1 dims), so a permuted or broadcast 10-dim tensor still
// reaches the kernels when its layout allows it (else a clear kiln::Error).
std::vector<TensorView> kernel_views(const std::vector<Tensor>& same_shape);

Tensor empty_like(const Tensor& t);
Tensor empty_like(const Tensor& t, TensorOptions opts);
Tensor zeros_like(const Tensor& t);
Tensor ones_like(const Tensor& t);
Tensor full_like(const Tensor& t, Scalar value);
Tensor rand_like(const Tensor& t, Generator* gen = nullptr);
Tensor randn_like(const Tensor& t, Generator* gen = nullptr);

}  // namespace kiln
