// Tensor geometry, views, copies across devices, factories and printing. Anything that
// touches element values goes through a kernel slot of core's list (core/kernel_list.h).
#include <kiln/core/tensor.h>

#include <algorithm>
#include <cmath>
#include <iomanip>
#include <numeric>
#include <ostream>
#include <sstream>

#include <kiln/core/autograd.h>
#include <kiln/core/kernel_list.h>
#include <kiln/core/runtime.h>
#include <kiln/core/generator.h>

namespace kiln {

namespace {
// The adjoint of a view that picks some elements of a tensor of shape `in_sizes`: zeros,
// with g written where the view points. Recorded (its own adjoint is the view again), so
// the backward of slice/select is differentiable too.
Tensor view_adjoint(const Tensor& g, const Shape& in_sizes, const std::function<Tensor(const Tensor&)>& view) {
  Tensor z;
  {
    NoGradGuard raw;
    z = zeros(in_sizes, TensorOptions(g.dtype(), g.device()));
    view(z).copy_(g);
  }
  if (!any_requires_grad({g})) return z;
  return record("view_adjoint", {g}, z, [view](const Tensor& gg) { return std::vector<Tensor>{view(gg)}; }, {}, true);
}
}  // namespace

// ---- shapes ----------------------------------------------------------------------

std::string shape_str(const Shape& s) {
  std::ostringstream os;
  os << '[';
  for (size_t i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
  os << ']';
  return os.str();
}

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  bool overflow = false;
  for (int64_t d : s) overflow |= __builtin_mul_overflow(n, d, &n);
  if (overflow) {
    for (int64_t d : s)
      if (d == 0) return 0;  // a zero anywhere: empty, whatever the other sizes multiply to
    throw Error(detail::str("shape ", shape_str(s), " has more elements than an int64 can count"));
  }
  return n;
}

Shape contiguous_strides(const Shape& s) {
  Shape st(s.size());
  int64_t acc = 1;
  for (size_t i = s.size(); i-- > 0;) {
    st[i] = acc;
    acc *= std::max<int64_t>(s[i], 1);
  }
  return st;
}

int64_t wrap_dim(int64_t dim, int64_t ndim, const char* op) {
  int64_t lo = ndim == 0 ? -1 : -ndim, hi = ndim == 0 ? 0 : ndim - 1;
  KILN_CHECK(dim >= lo && dim <= hi, op, ": dim ", dim, " is out of range for a tensor with ", ndim,
             " dims (expected [", lo, ", ", hi, "])");
  return dim < 0 ? dim + std::max<int64_t>(ndim, 1) : dim;
}

Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op) {
  size_t n = std::max(a.size(), b.size());
  Shape out(n);
  for (size_t i = 0; i < n; ++i) {
    int64_t da = i < n - a.size() ? 1 : a[i - (n - a.size())];
    int64_t db = i < n - b.size() ? 1 : b[i - (n - b.size())];
    KILN_CHECK(da == db || da == 1 || db == 1, op, ": shapes ", shape_str(a), " and ", shape_str(b),
               " cannot be broadcast together (dim ", i, ": ", da, " vs ", db, ")");
    out[i] = da == 1 ? db : da;
  }
  return out;
}

// ---- storage ---------------------------------------------------------------------

StorageImpl::StorageImpl(size_t nbytes, Device device) : nbytes_(nbytes), device_(device) {
  allocator_ = &runtime(device).allocator();
  data_ = nbytes ? allocator_->allocate(nbytes, device) : nullptr;
}

StorageImpl::StorageImpl(void* data, size_t nbytes, Device device, std::function<void(void*)> deleter)
    : data_(data), nbytes_(nbytes), device_(device), deleter_(std::move(deleter)) {}

StorageImpl::~StorageImpl() {
  if (deleter_) {
    deleter_(data_);
  } else if (allocator_ && data_) {
    allocator_->deallocate(data_, nbytes_, device_);
  }
}

// ---- tensor geometry -------------------------------------------------------------

Tensor Tensor::make(Storage storage, DType dtype, Shape sizes, Shape strides, int64_t offset) {
  KILN_CHECK(sizes.size() == strides.size(), "Tensor: ", sizes.size(), " sizes but ", strides.size(), " strides");
  KILN_CHECK(static_cast<int>(sizes.size()) <= kMaxTensorDims, "Tensor: ", sizes.size(),
             " dims exceed kiln's limit of ", kMaxTensorDims, " (shape ", shape_str(sizes), ")");
  int64_t lo = offset, hi = offset;
  bool empty_t = false;
  for (size_t i = 0; i < sizes.size(); ++i) {
    KILN_CHECK(sizes[i] >= 0, "Tensor: negative size in shape ", shape_str(sizes));
    if (sizes[i] == 0) empty_t = true;
    int64_t span = (sizes[i] - 1) * strides[i];
    (span < 0 ? lo : hi) += span;
  }
  if (!empty_t) {
    int64_t cap = static_cast<int64_t>(storage->nbytes() / dtype_size(dtype));
    KILN_CHECK(lo >= 0 && hi < std::max<int64_t>(cap, 1) && (cap > 0 || shape_numel(sizes) == 0),
               "Tensor: view of shape ", shape_str(sizes), " strides ", shape_str(strides), " offset ", offset,
               " reaches outside its storage of ", cap, " elements");
  }
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = std::move(storage);
  impl->offset = offset;
  impl->sizes = std::move(sizes);
  impl->strides = std::move(strides);
  impl->dtype = dtype;
  return Tensor(std::move(impl));
}

int64_t Tensor::size(int64_t d) const { return sizes()[wrap_dim(d, dim(), "size")]; }
int64_t Tensor::stride(int64_t d) const { return strides()[wrap_dim(d, dim(), "stride")]; }

void* Tensor::data_ptr() const {
  return static_cast<char*>(storage()->data()) + offset() * static_cast<int64_t>(element_size());
}

std::string describe(const Tensor& t) {
  if (!t.defined()) return "undefined tensor";
  return std::string(dtype_name(t.dtype())) + shape_str(t.sizes()) + " on " + t.device().str();
}

namespace detail {
void mark_written(const char* op, const Tensor& t) {
  for (int64_t d = 0; d < t.dim(); ++d)
    KILN_CHECK(t.size(d) <= 1 || t.stride(d) != 0, op, ": cannot write in place into a tensor whose elements share ",
               "memory (", dtype_name(t.dtype()), shape_str(t.sizes()), " with strides ", shape_str(t.strides()),
               ", e.g. an expand()ed view); clone() it first");
  t.storage()->bump_version();
}
}  // namespace detail

TensorView kernel_view(const Tensor& t) {
  TensorView v;
  if (!t.defined()) return v;
  v.data = t.data_ptr();
  v.dtype = t.dtype();
  v.device = t.device();
  v.numel = t.numel();
  v.contiguous = t.is_contiguous();
  if (t.dim() > kMaxDims) {
    // Kernels index at most kMaxDims dims. A contiguous tensor is the same elements in
    // the same order as one flat dim, which every kernel over its own elements accepts
    // (several operands of one launch are then all flat, or the others are refused here).
    KILN_CHECK(v.contiguous, "kernel_view: a ", t.dim(), "-dim tensor (", describe(t), ", strides ",
               shape_str(t.strides()), ") reaches a kernel, which takes at most ", kMaxDims,
               " dims unless the tensor is contiguous; call contiguous() first");
    v.ndim = 1;
    v.sizes[0] = v.numel;
    v.strides[0] = 1;
  } else {
    v.ndim = static_cast<int>(t.dim());
    for (int d = 0; d < v.ndim; ++d) {
      v.sizes[d] = t.size(d);
      v.strides[d] = t.stride(d);
    }
  }
  v.defined = true;
  v.storage = t.storage().get();
  return v;
}

namespace {
// Joint coalescing of tensors of one shape, as TensorView's coalesce() but over any
// number of dims: the merged sizes and each tensor's strides.
void coalesce_shapes(const std::vector<Tensor>& ts, Shape& sizes, std::vector<Shape>& strides) {
  const Shape& shape = ts[0].sizes();
  strides.assign(ts.size(), Shape());
  for (size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] == 1) continue;
    bool merge = !sizes.empty();
    for (size_t k = 0; k < ts.size() && merge; ++k) merge = strides[k].back() == ts[k].stride(d) * shape[d];
    if (merge) sizes.back() *= shape[d];
    else sizes.push_back(shape[d]);
    for (size_t k = 0; k < ts.size(); ++k) {
      if (merge) strides[k].back() = ts[k].stride(d);
      else strides[k].push_back(ts[k].stride(d));
    }
  }
}
}  // namespace

std::vector<TensorView> kernel_views(const std::vector<Tensor>& ts) {
  std::vector<TensorView> out;
  out.reserve(ts.size());
  if (ts.empty() || ts[0].dim() <= kMaxDims) {
    for (const Tensor& t : ts) out.push_back(kernel_view(t));
    return out;
  }
  const Shape& shape = ts[0].sizes();
  for (const Tensor& t : ts)
    KILN_CHECK(t.sizes() == shape, "kernel_views: operands of one launch must share a shape, got ",
               shape_str(shape), " and ", shape_str(t.sizes()));
  Shape sizes;
  std::vector<Shape> strides;
  coalesce_shapes(ts, sizes, strides);
  KILN_CHECK(static_cast<int>(sizes.size()) <= kMaxDims, "kernel_views: ", ts.size(), " tensors of shape ",
             shape_str(shape), " (first: ", describe(ts[0]), ", strides ", shape_str(ts[0].strides()),
             ") still have ", sizes.size(), " dims after merging, more than the kernels' ", kMaxDims,
             "; make them contiguous() first");
  for (size_t k = 0; k < ts.size(); ++k) {
    TensorView v = kernel_view(ts[k].as_strided_raw(sizes, strides[k], ts[k].offset()));
    out.push_back(v);
  }
  return out;
}

bool Tensor::is_contiguous() const {
  int64_t expected = 1;
  for (int64_t i = dim() - 1; i >= 0; --i) {
    if (sizes()[i] == 1) continue;
    if (strides()[i] != expected) return numel() == 0;
    expected *= sizes()[i];
  }
  return true;
}

// ---- views -----------------------------------------------------------------------

Tensor Tensor::as_strided_raw(Shape sizes, Shape strides, int64_t offset) const {
  return make(storage(), dtype(), std::move(sizes), std::move(strides), offset);
}

Tensor Tensor::as_strided(Shape sizes, Shape strides, int64_t offset) const {
  KILN_CHECK(!any_requires_grad({*this}), "as_strided: has no backward; call it on a tensor that does not "
             "require grad (detach()) or under NoGradGuard");
  return as_strided_raw(std::move(sizes), std::move(strides), offset);
}

namespace {
// The backward of views whose inverse is a reshape (view, squeeze, unsqueeze).
Tensor record_reshape_view(const char* name, const Tensor& in, Tensor out) {
  return record(
      name, {in}, std::move(out),
      [in_sizes = in.sizes()](const Tensor& g) { return std::vector<Tensor>{g.reshape(in_sizes)}; }, {}, true);
}
}  // namespace

namespace {
// Resolves one -1 in a requested shape against numel.
Shape infer_shape(const Shape& req, int64_t numel, const char* op, const Shape& from) {
  Shape s = req;
  int64_t known = 1, infer = -1;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == -1) {
      KILN_CHECK(infer < 0, op, ": only one dimension can be -1 in ", shape_str(req));
      infer = static_cast<int64_t>(i);
    } else {
      KILN_CHECK(s[i] >= 0, op, ": invalid size ", s[i], " in ", shape_str(req));
      known *= s[i];
    }
  }
  if (infer >= 0) {
    KILN_CHECK(known != 0 && numel % known == 0, op, ": shape ", shape_str(req), " is invalid for input of shape ",
               shape_str(from), " (", numel, " elements)");
    s[infer] = numel / known;
  }
  KILN_CHECK(shape_numel(s) == numel, op, ": shape ", shape_str(req), " is invalid for input of shape ",
             shape_str(from), " (", numel, " elements)");
  return s;
}

// Strides for viewing (sizes, strides) as `target` without copying, if possible
// (PyTorch's computeStride): each run of merged input dims must be contiguous in itself.
bool view_strides(const Shape& sizes, const Shape& strides, const Shape& target, Shape& out) {
  out.assign(target.size(), 0);
  if (sizes.empty()) {
    out = contiguous_strides(target);
    return true;
  }
  if (shape_numel(sizes) == 0) {
    out = contiguous_strides(target);
    return true;
  }
  int64_t view_d = static_cast<int64_t>(target.size()) - 1;
  int64_t chunk_base_stride = strides.back();
  int64_t tensor_numel = 1, view_numel = 1;
  for (int64_t td = static_cast<int64_t>(sizes.size()) - 1; td >= 0; --td) {
    tensor_numel *= sizes[td];
    if (td == 0 || (sizes[td - 1] != 1 && strides[td - 1] != tensor_numel * chunk_base_stride)) {
      while (view_d >= 0 && (view_numel < tensor_numel || target[view_d] == 1)) {
        out[view_d] = view_numel * chunk_base_stride;
        view_numel *= target[view_d];
        --view_d;
      }
      if (view_numel != tensor_numel) return false;
      if (td > 0) {
        chunk_base_stride = strides[td - 1];
        tensor_numel = 1;
        view_numel = 1;
      }
    }
  }
  return view_d == -1;
}
}  // namespace

Tensor Tensor::view(Shape req) const {
  Shape s = infer_shape(req, numel(), "view", sizes());
  Shape st;
  KILN_CHECK(view_strides(sizes(), strides(), s, st), "view: shape ", shape_str(sizes()), " with strides ",
             shape_str(strides()), " cannot be viewed as ", shape_str(s),
             " without a copy (use reshape, or contiguous() first)");
  return record_reshape_view("view", *this, as_strided_raw(s, st, offset()));
}

Tensor Tensor::reshape(Shape req) const {
  Shape s = infer_shape(req, numel(), "reshape", sizes());
  Shape st;
  if (view_strides(sizes(), strides(), s, st)) return record_reshape_view("reshape", *this, as_strided_raw(s, st, offset()));
  return clone().view(s);
}

Tensor Tensor::permute(Shape dims) const {
  KILN_CHECK(static_cast<int64_t>(dims.size()) == dim(), "permute: got ", dims.size(), " dims ", shape_str(dims),
             " for a tensor of ", dim(), " dims");
  Shape s(dims.size()), st(dims.size());
  std::vector<bool> seen(dims.size(), false);
  for (size_t i = 0; i < dims.size(); ++i) {
    int64_t d = wrap_dim(dims[i], dim(), "permute");
    KILN_CHECK(!seen[d], "permute: dim ", d, " repeated in ", shape_str(dims));
    seen[d] = true;
    s[i] = sizes()[d];
    st[i] = strides()[d];
  }
  Shape inverse(dims.size());
  for (size_t i = 0; i < dims.size(); ++i) inverse[wrap_dim(dims[i], dim(), "permute")] = static_cast<int64_t>(i);
  return record("permute", {*this}, as_strided_raw(s, st, offset()),
                [inverse](const Tensor& g) { return std::vector<Tensor>{g.permute(inverse)}; }, {}, true);
}

Tensor Tensor::transpose(int64_t d0, int64_t d1) const {
  if (dim() == 0) return *this;
  d0 = wrap_dim(d0, dim(), "transpose");
  d1 = wrap_dim(d1, dim(), "transpose");
  Shape s = sizes(), st = strides();
  std::swap(s[d0], s[d1]);
  std::swap(st[d0], st[d1]);
  return record("transpose", {*this}, as_strided_raw(s, st, offset()),
                [d0, d1](const Tensor& g) { return std::vector<Tensor>{g.transpose(d0, d1)}; }, {}, true);
}

Tensor Tensor::t() const {
  KILN_CHECK(dim() <= 2, "t: expects a tensor with <= 2 dims, got shape ", shape_str(sizes()));
  return dim() < 2 ? *this : transpose(0, 1);
}

Tensor Tensor::slice(int64_t d, int64_t start, int64_t end, int64_t step) const {
  d = wrap_dim(d, dim(), "slice");
  KILN_CHECK(step > 0, "slice: step must be positive, got ", step);
  int64_t n = sizes()[d];
  if (start < 0) start += n;
  if (end < 0) end += n;
  start = std::clamp<int64_t>(start, 0, n);
  end = std::clamp<int64_t>(end, start, n);
  Shape s = sizes(), st = strides();
  s[d] = (end - start + step - 1) / step;
  st[d] *= step;
  return record("slice", {*this}, as_strided_raw(s, st, offset() + start * strides()[d]),
                [in_sizes = sizes(), d, start, end, step](const Tensor& g) {
                  return std::vector<Tensor>{
                      view_adjoint(g, in_sizes, [=](const Tensor& t) { return t.slice(d, start, end, step); })};
                },
                {}, true);
}

Tensor Tensor::narrow(int64_t d, int64_t start, int64_t length) const {
  d = wrap_dim(d, dim(), "narrow");
  int64_t n = sizes()[d];
  if (start < 0) start += n;
  KILN_CHECK(start >= 0 && length >= 0 && start + length <= n, "narrow: start ", start, " length ", length,
             " is out of range for dim ", d, " of size ", n, " (shape ", shape_str(sizes()), ")");
  return slice(d, start, start + length);
}

Tensor Tensor::select(int64_t d, int64_t index) const {
  KILN_CHECK(dim() > 0, "select: cannot select from a 0-dim tensor");
  d = wrap_dim(d, dim(), "select");
  int64_t n = sizes()[d];
  KILN_CHECK(index >= -n && index < n, "select: index ", index, " is out of range for dim ", d, " of size ", n,
             " (shape ", shape_str(sizes()), ")");
  if (index < 0) index += n;
  Shape s = sizes(), st = strides();
  int64_t off = offset() + index * st[d];
  s.erase(s.begin() + d);
  st.erase(st.begin() + d);
  return record(
      "select", {*this}, as_strided_raw(s, st, off),
      [in_sizes = sizes(), d, index](const Tensor& g) {
        return std::vector<Tensor>{view_adjoint(g, in_sizes, [=](const Tensor& t) { return t.select(d, index); })};
      },
      {}, true);
}

Tensor Tensor::expand(Shape req) const {
  KILN_CHECK(req.size() >= sizes().size(), "expand: cannot expand shape ", shape_str(sizes()), " to ",
             shape_str(req), " (fewer dims)");
  size_t lead = req.size() - sizes().size();
  Shape s(req.size()), st(req.size());
  for (size_t i = 0; i < req.size(); ++i) {
    if (i < lead) {
      KILN_CHECK(req[i] >= 0, "expand: size -1 not allowed in a new leading dim of ", shape_str(req));
      s[i] = req[i];
      st[i] = 0;
      continue;
    }
    int64_t have = sizes()[i - lead];
    int64_t want = req[i] == -1 ? have : req[i];
    KILN_CHECK(have == want || have == 1, "expand: shape ", shape_str(sizes()), " cannot be expanded to ",
               shape_str(req), " (dim ", i, ": ", have, " vs ", want, ")");
    s[i] = want;
    st[i] = have == want ? strides()[i - lead] : 0;
  }
  if (s == sizes()) return *this;
  return record(
      "expand", {*this}, as_strided_raw(s, st, offset()),
      [in_sizes = sizes()](const Tensor& g) { return std::vector<Tensor>{detail::sum_to_shape(g, in_sizes)}; }, {},
      true);
}

Tensor Tensor::squeeze() const {
  Shape s, st;
  for (int64_t i = 0; i < dim(); ++i)
    if (sizes()[i] != 1) {
      s.push_back(sizes()[i]);
      st.push_back(strides()[i]);
    }
  return record_reshape_view("squeeze", *this, as_strided_raw(s, st, offset()));
}

Tensor Tensor::squeeze(int64_t d) const {
  if (dim() == 0) return *this;
  d = wrap_dim(d, dim(), "squeeze");
  if (sizes()[d] != 1) return *this;
  Shape s = sizes(), st = strides();
  s.erase(s.begin() + d);
  st.erase(st.begin() + d);
  return record_reshape_view("squeeze", *this, as_strided_raw(s, st, offset()));
}

Tensor Tensor::unsqueeze(int64_t d) const {
  d = wrap_dim(d, dim() + 1, "unsqueeze");
  Shape s = sizes(), st = strides();
  int64_t stride = d < dim() ? sizes()[d] * strides()[d] : 1;
  s.insert(s.begin() + d, 1);
  st.insert(st.begin() + d, stride);
  return record_reshape_view("unsqueeze", *this, as_strided_raw(s, st, offset()));
}

Tensor Tensor::flatten(int64_t start, int64_t end) const {
  if (dim() == 0) return reshape({1});
  start = wrap_dim(start, dim(), "flatten");
  end = wrap_dim(end, dim(), "flatten");
  KILN_CHECK(start <= end, "flatten: start_dim ", start, " is after end_dim ", end);
  Shape s(sizes().begin(), sizes().begin() + start);
  int64_t n = 1;
  for (int64_t i = start; i <= end; ++i) n *= sizes()[i];
  s.push_back(n);
  s.insert(s.end(), sizes().begin() + end + 1, sizes().end());
  return reshape(s);
}

// ---- copies ----------------------------------------------------------------------

Tensor Tensor::contiguous() const { return is_contiguous() ? *this : clone(); }

Tensor Tensor::clone() const {
  Tensor out = empty(sizes(), TensorOptions(dtype(), device()));
  {
    NoGradGuard raw;
    out.copy_(*this);
  }
  return record("clone", {*this}, out, [](const Tensor& g) { return std::vector<Tensor>{g}; }, {}, true);
}

Tensor Tensor::to(Device d) const { return to(d, dtype()); }
Tensor Tensor::to(DType t) const { return to(device(), t); }
Tensor Tensor::to(Device d, DType t) const {
  if (d == device() && t == dtype()) return *this;
  Tensor out = empty(sizes(), TensorOptions(t, d));
  {
    NoGradGuard raw;
    out.copy_(*this);
  }
  if (!is_floating(t)) return out;  // a cast to an integer type ends the graph
  return record(
      "to", {*this}, out,
      [in_device = device(), in_dtype = dtype()](const Tensor& g) { return std::vector<Tensor>{g.to(in_device, in_dtype)}; },
      {}, true);
}

Tensor& Tensor::copy_(const Tensor& src) {
  KILN_CHECK(src.defined(), "copy_: source tensor is undefined");
  KILN_CHECK(!any_requires_grad({*this, src}), "copy_: in-place copies do not propagate gradients; the ",
             requires_grad() ? "destination" : "source",
             " requires grad (use clone()/to() to copy with gradients, or copy under NoGradGuard)");
  KILN_CHECK(broadcast_shapes(src.sizes(), sizes(), "copy_") == sizes(), "copy_: source of shape ",
             shape_str(src.sizes()), " does not broadcast to the destination's shape ", shape_str(sizes()));
  Tensor s = src.expand(sizes());
  if (numel() == 0) return *this;
  detail::mark_written("copy_", *this);
  if (s.device() == device()) {
    if (dim() > kMaxDims) {
      // A layout the kernels cannot take in one launch: copy slice by slice along dim 0.
      Shape merged;
      std::vector<Shape> st;
      coalesce_shapes({s, *this}, merged, st);
      if (static_cast<int>(merged.size()) > kMaxDims) {
        for (int64_t i = 0; i < size(0); ++i) select(0, i).copy_(s.select(0, i));
        return *this;
      }
    }
    std::vector<TensorView> v = kernel_views({s, *this});
    kernel<op::copy>(device())(v[0], v[1]);
    return *this;
  }
  // Across devices: move a contiguous block of the source's bytes, then cast/scatter on
  // the destination. The non-CPU side's backend does the transfer.
  Tensor sc = src.contiguous();
  Tensor staged = empty(src.sizes(), TensorOptions(src.dtype(), device()));
  Device xfer = device().is_cpu() ? src.device() : device();
  if (device().is_cpu()) detail::count_host_sync();  // the host waits for the device's bytes
  runtime(xfer).copy_bytes(staged.data_ptr(), device(), sc.data_ptr(), sc.device(),
                           static_cast<size_t>(sc.numel()) * sc.element_size());
  std::vector<TensorView> v = kernel_views({staged.expand(sizes()), *this});
  kernel<op::copy>(device())(v[0], v[1]);
  return *this;
}

Tensor& Tensor::fill_(Scalar v) {
  KILN_CHECK(!any_requires_grad({*this}), "fill_: in-place fill of a tensor that requires grad (",
             dtype_name(dtype()), shape_str(sizes()), "); do it under NoGradGuard");
  if (numel() == 0) return *this;
  detail::mark_written("fill_", *this);
  kernel<op::fill>(device())(kernel_view(*this), FillParams{v});
  return *this;
}

Scalar Tensor::item() const {
  KILN_CHECK(numel() == 1, "item: expects a tensor with one element, got shape ", shape_str(sizes()));
  Tensor c = to(kCPU);
  return visit_dtype(dtype(), [&](auto tag) -> Scalar {
    using T = decltype(tag);
    T v = *static_cast<const T*>(c.data_ptr());
    if constexpr (std::is_same_v<T, Half> || std::is_same_v<T, BFloat16>) return Scalar(static_cast<float>(v));
    else return Scalar(v);
  });
}

template <class T>
std::vector<T> Tensor::to_vector() const {
  Tensor c = to(kCPU, dtype_of<T>).contiguous();
  const T* p = static_cast<const T*>(c.data_ptr());
  return std::vector<T>(p, p + c.numel());
}
template std::vector<bool> Tensor::to_vector<bool>() const;
template std::vector<uint8_t> Tensor::to_vector<uint8_t>() const;
template std::vector<int32_t> Tensor::to_vector<int32_t>() const;
template std::vector<int64_t> Tensor::to_vector<int64_t>() const;
template std::vector<Half> Tensor::to_vector<Half>() const;
template std::vector<BFloat16> Tensor::to_vector<BFloat16>() const;
template std::vector<float> Tensor::to_vector<float>() const;
template std::vector<double> Tensor::to_vector<double>() const;

// ---- printing --------------------------------------------------------------------

namespace {
constexpr int64_t kPrintThreshold = 1000, kEdgeItems = 3;

// `shown` holds at most 2*kEdgeItems entries along dims that `full` elides.
void print_values(std::ostream& os, const std::vector<double>& v, const Shape& shown, const Shape& full, size_t d,
                  int64_t base, bool is_float, int indent) {
  int64_t n = shown[d];
  bool cut = full[d] != shown[d];
  int64_t step = 1;
  for (size_t i = d + 1; i < shown.size(); ++i) step *= shown[i];
  bool last = d + 1 == shown.size();
  std::string sep = last ? ", " : ",\n" + std::string(indent + 1, ' ');
  os << '[';
  for (int64_t i = 0; i < n; ++i) {
    if (cut && i == kEdgeItems) os << "..." << sep;
    if (last) {
      double x = v[base + i];
      if (is_float) os << std::setprecision(6) << x;
      else os << static_cast<int64_t>(x);
    } else {
      print_values(os, v, shown, full, d + 1, base + i * step, is_float, indent + 1);
    }
    if (i + 1 < n) os << sep;
  }
  os << ']';
}
}  // namespace

std::string Tensor::str() const {
  if (!defined()) return "tensor(undefined)";
  std::ostringstream os;
  os << "tensor(";
  Tensor shown = *this;
  if (numel() > kPrintThreshold) {
    // Keep only the first and last kEdgeItems along each long dim, so printing a huge
    // tensor copies a few values, not the whole tensor.
    for (int64_t d = 0; d < dim(); ++d) {
      int64_t n = shown.size(d);
      if (n <= 2 * kEdgeItems) continue;
      Shape s = shown.sizes();
      s[d] = 2 * kEdgeItems;
      Tensor r = empty(s, TensorOptions(dtype(), device()));
      r.narrow(d, 0, kEdgeItems).copy_(shown.narrow(d, 0, kEdgeItems));
      r.narrow(d, kEdgeItems, kEdgeItems).copy_(shown.narrow(d, n - kEdgeItems, kEdgeItems));
      shown = r;
    }
  }
  if (numel() == 0) {
    os << "[]";
  } else if (dim() == 0) {
    double x = item().to_double();
    if (is_floating(dtype())) os << std::setprecision(6) << x;
    else os << static_cast<int64_t>(x);
  } else {
    std::vector<double> vals = shown.to(kCPU, DType::F64).contiguous().to_vector<double>();
    print_values(os, vals, shown.sizes(), sizes(), 0, 0, is_floating(dtype()), 7);
  }
  os << ", dtype=" << dtype_name(dtype()) << ", device=" << device().str() << ", shape=" << shape_str(sizes())
     << ")";
  return os.str();
}

std::ostream& operator<<(std::ostream& os, const Tensor& t) { return os << t.str(); }

// ---- factories -------------------------------------------------------------------

Tensor empty(const Shape& sizes, TensorOptions o) {
  for (int64_t s : sizes) KILN_CHECK(s >= 0, "empty: negative size in shape ", shape_str(sizes));
  const int64_t numel = shape_numel(sizes);
  int64_t nbytes_i = 0;
  KILN_CHECK(!__builtin_mul_overflow(numel, static_cast<int64_t>(dtype_size(o.dtype)), &nbytes_i), "empty: shape ",
             shape_str(sizes), " of ", dtype_name(o.dtype), " needs more bytes than an int64 can count");
  size_t nbytes = static_cast<size_t>(nbytes_i);
  auto storage = std::make_shared<StorageImpl>(nbytes, o.device);
  return Tensor::make(std::move(storage), o.dtype, sizes, contiguous_strides(sizes), 0);
}
Tensor zeros(const Shape& s, TensorOptions o) { return full(s, 0, o); }
Tensor ones(const Shape& s, TensorOptions o) { return full(s, 1, o); }
Tensor full(const Shape& s, Scalar v, TensorOptions o) {
  Tensor t = empty(s, o);
  t.fill_(v);
  return t;
}
Tensor scalar_tensor(Scalar v, TensorOptions o) { return full({}, v, o); }

namespace {
DType default_arange_dtype(Scalar a, Scalar b, Scalar c) {
  return a.is_floating() || b.is_floating() || c.is_floating() ? DType::F32 : DType::I64;
}
}  // namespace

Tensor arange(Scalar end) { return arange(0, end, 1); }
Tensor arange(Scalar end, TensorOptions o) { return arange(0, end, 1, o); }
Tensor arange(Scalar start, Scalar end, Scalar step) {
  return arange(start, end, step, TensorOptions(default_arange_dtype(start, end, step)));
}
Tensor arange(Scalar start, Scalar end, Scalar step, TensorOptions o) {
  if (!is_floating(o.dtype) && !start.is_floating() && !end.is_floating() && !step.is_floating()) {
    // Integer ranges in int64, exact beyond 2^53.
    int64_t a = start.to_int(), b = end.to_int(), s = step.to_int();
    KILN_CHECK(s != 0, "arange: invalid range start=", a, " end=", b, " step=", s);
    KILN_CHECK(a == b || ((b - a) > 0) == (s > 0), "arange: step ", s, " does not lead from ", a, " to ", b);
    int64_t n = a == b ? 0 : (b - a + s + (s > 0 ? -1 : 1)) / s;  // ceil((b - a) / s)
    std::vector<int64_t> v(n);
    for (int64_t i = 0; i < n; ++i) v[i] = a + i * s;
    return from_vector(v, {n}).to(o.device, o.dtype);
  }
  double a = start.to_double(), b = end.to_double(), s = step.to_double();
  KILN_CHECK(s != 0 && std::isfinite(a) && std::isfinite(b) && std::isfinite(s), "arange: invalid range start=", a,
             " end=", b, " step=", s);
  KILN_CHECK((b - a) / s >= 0 || a == b, "arange: step ", s, " does not lead from ", a, " to ", b);
  int64_t n = static_cast<int64_t>(std::ceil((b - a) / s));
  std::vector<double> v(std::max<int64_t>(n, 0));
  for (int64_t i = 0; i < n; ++i) v[i] = a + static_cast<double>(i) * s;
  return from_vector(v, {n}).to(o.device, o.dtype);
}

Tensor linspace(double start, double end, int64_t steps, TensorOptions o) {
  KILN_CHECK(steps >= 0, "linspace: steps must be non-negative, got ", steps);
  std::vector<double> v(steps);
  double step = steps > 1 ? (end - start) / static_cast<double>(steps - 1) : 0.0;
  // Fill from both ends, as PyTorch does, so the last value is exactly `end`.
  for (int64_t i = 0; i < steps; ++i)
    v[i] = i < steps / 2 || steps == 1 ? start + step * static_cast<double>(i)
                                        : end - step * static_cast<double>(steps - 1 - i);
  return from_vector(v, {steps}).to(o.device, o.dtype);
}

Tensor eye(int64_t n, int64_t m, TensorOptions o) {
  if (m < 0) m = n;
  KILN_CHECK(n >= 0, "eye: n must be non-negative, got ", n);
  std::vector<double> v(static_cast<size_t>(n * m), 0.0);
  for (int64_t i = 0; i < std::min(n, m); ++i) v[i * m + i] = 1.0;
  return from_vector(v, {n, m}).to(o.device, o.dtype);
}

namespace {
Tensor random_tensor(const char* op, const Shape& sizes, TensorOptions o, Generator* gen, RandomKind kind, double a,
                     double b) {
  Tensor t = empty(sizes, o);
  Generator& g = gen ? *gen : default_generator();
  uint64_t off = g.reserve(static_cast<uint64_t>(t.numel()));
  if (t.numel() > 0) kernel<op::random>(o.device)(kernel_view(t), RandomParams{kind, g.seed(), off, a, b});
  return t;
}
}  // namespace

Tensor rand(const Shape& s, TensorOptions o, Generator* gen) {
  KILN_CHECK(is_floating(o.dtype), "rand: dtype must be floating, got ", dtype_name(o.dtype));
  return random_tensor("rand", s, o, gen, RandomKind::Uniform, 0.0, 1.0);
}
Tensor randn(const Shape& s, TensorOptions o, Generator* gen) {
  KILN_CHECK(is_floating(o.dtype), "randn: dtype must be floating, got ", dtype_name(o.dtype));
  return random_tensor("randn", s, o, gen, RandomKind::Normal, 0.0, 1.0);
}
Tensor randint(int64_t low, int64_t high, const Shape& s, TensorOptions o, Generator* gen) {
  KILN_CHECK(high > low, "randint: high (", high, ") must be greater than low (", low, ")");
  KILN_CHECK(o.dtype != DType::Bool, "randint: dtype bool is not supported");
  return random_tensor("randint", s, o, gen, RandomKind::Int, static_cast<double>(low), static_cast<double>(high));
}

template <class T>
Tensor from_vector(const std::vector<T>& values, const Shape& sizes, Device device) {
  KILN_CHECK(static_cast<int64_t>(values.size()) == shape_numel(sizes), "from_vector: ", values.size(),
             " values do not fill shape ", shape_str(sizes));
  Tensor t = empty(sizes, TensorOptions(dtype_of<T>, kCPU));
  T* p = static_cast<T*>(t.data_ptr());
  for (size_t i = 0; i < values.size(); ++i) p[i] = values[i];
  return device.is_cpu() ? t : t.to(device);
}
template Tensor from_vector(const std::vector<bool>&, const Shape&, Device);
template Tensor from_vector(const std::vector<uint8_t>&, const Shape&, Device);
template Tensor from_vector(const std::vector<int32_t>&, const Shape&, Device);
template Tensor from_vector(const std::vector<int64_t>&, const Shape&, Device);
template Tensor from_vector(const std::vector<Half>&, const Shape&, Device);
template Tensor from_vector(const std::vector<BFloat16>&, const Shape&, Device);
template Tensor from_vector(const std::vector<float>&, const Shape&, Device);
template Tensor from_vector(const std::vector<double>&, const Shape&, Device);

Tensor empty_like(const Tensor& t) { return empty(t.sizes(), TensorOptions(t.dtype(), t.device())); }
Tensor empty_like(const Tensor& t, TensorOptions o) { return empty(t.sizes(), o); }
Tensor zeros_like(const Tensor& t) { return zeros(t.sizes(), TensorOptions(t.dtype(), t.device())); }
Tensor ones_like(const Tensor& t) { return ones(t.sizes(), TensorOptions(t.dtype(), t.device())); }
Tensor full_like(const Tensor& t, Scalar v) { return full(t.sizes(), v, TensorOptions(t.dtype(), t.device())); }
Tensor rand_like(const Tensor& t, Generator* g) { return rand(t.sizes(), TensorOptions(t.dtype(), t.device()), g); }
Tensor randn_like(const Tensor& t, Generator* g) { return randn(t.sizes(), TensorOptions(t.dtype(), t.device()), g); }

Generator& default_generator() {
  static Generator g;
  return g;
}

}  // namespace kiln
