// cat/stack/split/chunk, index_select, gather, scatter_add (their kernel slots:
// ops/cpu/index.cpp, cuda/kernels/index.cu), one_hot (through the scatter_add slot).
// Index values are checked once, by the entry point: on the host for CPU tensors, by the
// kernel on CUDA (reported at the next synchronisation point, no host sync). Backward
// formulas reuse the checked indices inside detail::IndicesChecked, so they do not
// check again.
#include <kiln/ops/index.h>

#include <kiln/core/autograd.h>
#include <kiln/ops/binary.h>
#include <kiln/ops/checks.h>
#include <kiln/ops/op_list.h>
#include <kiln/ops/reduce.h>

namespace kiln {

Tensor cat(const std::vector<Tensor>& ts, int64_t dim) {
  KILN_CHECK(!ts.empty(), "cat: expects a non-empty list of tensors");
  const Tensor& ref = ts.front();
  detail::check_defined("cat", ref);
  int64_t d = wrap_dim(dim, ref.dim(), "cat");
  KILN_CHECK(ref.dim() > 0, "cat: zero-dim tensors cannot be concatenated (", describe(ref), ")");
  DType t = ref.dtype();
  int64_t total = 0;
  for (size_t i = 0; i < ts.size(); ++i) {
    detail::check_defined("cat", ts[i]);
    detail::check_same_device("cat", ref, ts[i]);
    KILN_CHECK(ts[i].dim() == ref.dim(), "cat: tensor ", i, " has ", ts[i].dim(), " dims but tensor 0 has ",
               ref.dim(), " (", describe(ts[i]), " vs ", describe(ref), ")");
    for (int64_t k = 0; k < ref.dim(); ++k)
      KILN_CHECK(k == d || ts[i].size(k) == ref.size(k), "cat: sizes must match except in dim ", d, ": tensor ", i,
                 " is ", describe(ts[i]), ", tensor 0 is ", describe(ref));
    t = promote_types(t, ts[i].dtype());
    total += ts[i].size(d);
  }
  Shape s = ref.sizes();
  s[d] = total;
  Tensor out = empty(s, TensorOptions(t, ref.device()));
  {
    NoGradGuard raw;
    int64_t off = 0;
    for (const Tensor& x : ts) {
      if (x.size(d) > 0) out.narrow(d, off, x.size(d)).copy_(x);
      off += x.size(d);
    }
  }
  if (!any_requires_grad(ts)) return out;
  std::vector<int64_t> lengths;
  for (const Tensor& x : ts) lengths.push_back(x.size(d));
  // (split_with_sizes gives views, which are differentiable again.)
  return record(
      "cat", ts, out, [d, lengths](const Tensor& g) { return split_with_sizes(g, lengths, d); }, {}, true);
}

Tensor stack(const std::vector<Tensor>& ts, int64_t dim) {
  KILN_CHECK(!ts.empty(), "stack: expects a non-empty list of tensors");
  detail::check_defined("stack", ts.front());
  int64_t d = wrap_dim(dim, ts.front().dim() + 1, "stack");
  std::vector<Tensor> u;
  for (size_t i = 0; i < ts.size(); ++i) {
    detail::check_defined("stack", ts[i]);
    KILN_CHECK(ts[i].sizes() == ts.front().sizes(), "stack: all tensors must have one shape; tensor ", i, " is ",
               describe(ts[i]), ", tensor 0 is ", describe(ts.front()));
    u.push_back(ts[i].unsqueeze(d));
  }
  return cat(u, d);
}

std::vector<Tensor> split_with_sizes(const Tensor& x, const std::vector<int64_t>& sizes, int64_t dim) {
  detail::check_defined("split", x);
  int64_t d = wrap_dim(dim, x.dim(), "split");
  int64_t total = 0;
  for (int64_t s : sizes) {
    KILN_CHECK(s >= 0, "split: negative size in ", shape_str(sizes));
    total += s;
  }
  KILN_CHECK(total == x.size(d), "split: sizes ", shape_str(sizes), " sum to ", total, " but dim ", d, " of ",
             describe(x), " has ", x.size(d));
  std::vector<Tensor> out;
  int64_t off = 0;
  for (int64_t s : sizes) {
    out.push_back(x.narrow(d, off, s));
    off += s;
  }
  return out;
}

std::vector<Tensor> split(const Tensor& x, int64_t split_size, int64_t dim) {
  detail::check_defined("split", x);
  KILN_CHECK(split_size > 0, "split: split_size must be positive, got ", split_size);
  int64_t d = wrap_dim(dim, x.dim(), "split");
  std::vector<int64_t> sizes;
  for (int64_t off = 0; off < x.size(d); off += split_size) sizes.push_back(std::min(split_size, x.size(d) - off));
  if (sizes.empty()) sizes.push_back(0);
  return split_with_sizes(x, sizes, d);
}

std::vector<Tensor> chunk(const Tensor& x, int64_t chunks, int64_t dim) {
  detail::check_defined("chunk", x);
  KILN_CHECK(chunks > 0, "chunk: chunks must be positive, got ", chunks);
  int64_t d = wrap_dim(dim, x.dim(), "chunk");
  int64_t n = x.size(d);
  return split(x, std::max<int64_t>((n + chunks - 1) / chunks, 1), d);
}

namespace {
// (outer, n, inner) around dim d.
void around(const Tensor& x, int64_t d, int64_t& outer, int64_t& inner) {
  outer = 1;
  inner = 1;
  for (int64_t i = 0; i < d; ++i) outer *= x.size(i);
  for (int64_t i = d + 1; i < x.dim(); ++i) inner *= x.size(i);
}

void check_index_like(const char* op, const Tensor& x, int64_t d, const Tensor& index, const char* what) {
  KILN_CHECK(index.dim() == x.dim(), op, ": ", what, " must have as many dims as the input: ", describe(index),
             " vs ", describe(x));
  for (int64_t k = 0; k < x.dim(); ++k)
    KILN_CHECK(k == d || index.size(k) == x.size(k), op, ": ", what, " must match the input's shape except in dim ",
               d, ": ", describe(index), " vs ", describe(x));
}
}  // namespace

Tensor index_select(const Tensor& x, int64_t dim, const Tensor& index) {
  detail::check_defined("index_select", x);
  detail::check_defined("index_select", index, "index");
  detail::check_same_device("index_select", x, index);
  KILN_CHECK(index.dim() <= 1, "index_select: index must be 0-D or 1-D, got ", describe(index));
  KILN_CHECK(x.dim() > 0, "index_select: input must have at least 1 dim, got ", describe(x));
  int64_t d = wrap_dim(dim, x.dim(), "index_select");
  detail::check_index_range("index_select", index, x.size(d));
  Tensor idx = cast(index, DType::I64).reshape({-1}).contiguous();
  Shape s = x.sizes();
  s[d] = idx.numel();
  Tensor out = empty(s, TensorOptions(x.dtype(), x.device()));
  if (out.numel() == 0) return out;
  int64_t outer, inner;
  around(x, d, outer, inner);
  {
    NoGradGuard raw;
    Tensor xc = x.contiguous();
    kernel<op::index_select>(x.device())(kernel_view(xc), kernel_view(idx), kernel_view(out),
                                         IndexParams{outer, x.size(d), idx.numel(), inner});
  }
  if (!any_requires_grad({x})) return out;
  // dx: the rows of g added back at their indices (repeated indices accumulate).
  return record("index_select", {x}, out, [d, idx, x_sizes = x.sizes()](const Tensor& g) {
    Shape s(g.dim(), 1);
    s[d] = idx.numel();
    Tensor index = idx.view(s).expand(g.sizes()).contiguous();
    detail::IndicesChecked checked;  // in forward
    return std::vector<Tensor>{scatter_add(zeros(x_sizes, TensorOptions(g.dtype(), g.device())), d, index, g)};
  });
}

Tensor gather(const Tensor& x, int64_t dim, const Tensor& index) {
  detail::check_defined("gather", x);
  detail::check_defined("gather", index, "index");
  detail::check_same_device("gather", x, index);
  KILN_CHECK(x.dim() > 0, "gather: input must have at least 1 dim, got ", describe(x));
  int64_t d = wrap_dim(dim, x.dim(), "gather");
  check_index_like("gather", x, d, index, "index");
  detail::check_index_range("gather", index, x.size(d));
  Tensor out = empty(index.sizes(), TensorOptions(x.dtype(), x.device()));
  if (out.numel() == 0) return out;
  int64_t outer, inner;
  around(x, d, outer, inner);
  Tensor idx = cast(index, DType::I64).contiguous();
  {
    NoGradGuard raw;
    Tensor xc = x.contiguous();
    kernel<op::gather>(x.device())(kernel_view(xc), kernel_view(idx), kernel_view(out),
                                   IndexParams{outer, x.size(d), index.size(d), inner});
  }
  if (!any_requires_grad({x})) return out;
  return record("gather", {x}, out, [d, idx, x_sizes = x.sizes()](const Tensor& g) {
    detail::IndicesChecked checked;  // in forward
    return std::vector<Tensor>{scatter_add(zeros(x_sizes, TensorOptions(g.dtype(), g.device())), d, idx, g)};
  });
}

Tensor& scatter_add_(Tensor& x, int64_t dim, const Tensor& index, const Tensor& src) {
  detail::check_defined("scatter_add", x);
  detail::check_defined("scatter_add", index, "index");
  detail::check_defined("scatter_add", src, "src");
  detail::check_same_device("scatter_add", x, index);
  detail::check_same_device("scatter_add", x, src);
  KILN_CHECK(x.dim() > 0, "scatter_add: input must have at least 1 dim, got ", describe(x));
  detail::check_inplace_no_grad("scatter_add_", {x, src});
  KILN_CHECK(src.dtype() == x.dtype(), "scatter_add: src must have the input's dtype: ", describe(src), " vs ",
             describe(x));
  KILN_CHECK(x.dtype() != DType::Bool, "scatter_add: not supported for bool tensors");
  KILN_CHECK(index.sizes() == src.sizes(), "scatter_add: index and src must have one shape: ", describe(index),
             " vs ", describe(src));
  int64_t d = wrap_dim(dim, x.dim(), "scatter_add");
  check_index_like("scatter_add", x, d, index, "index");
  detail::check_index_range("scatter_add", index, x.size(d));
  if (index.numel() == 0) return x;
  detail::mark_written("scatter_add_", x);
  int64_t outer, inner;
  around(x, d, outer, inner);
  Tensor target = x.is_contiguous() ? x : x.contiguous();
  Tensor idx = cast(index, DType::I64).contiguous(), srcc = src.contiguous();
  kernel<op::scatter_add>(x.device())(kernel_view(target), kernel_view(idx), kernel_view(srcc),
                                      IndexParams{outer, x.size(d), index.size(d), inner});
  if (!target.is_same(x)) x.copy_(target);
  return x;
}

// dx = g; dsrc = g gathered at index.
Tensor scatter_add(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& src) {
  detail::check_defined("scatter_add", x);
  detail::check_defined("scatter_add", src, "src");
  Tensor out;
  {
    NoGradGuard raw;
    out = x.clone();
    scatter_add_(out, dim, index, src);
  }
  if (!any_requires_grad({x, src})) return out;
  int64_t d = wrap_dim(dim, x.dim(), "scatter_add");
  return record("scatter_add", {x, src}, out, [d, idx = index.detach()](const Tensor& g) {
    detail::IndicesChecked checked;  // in forward
    return std::vector<Tensor>{g, gather(g, d, idx)};
  });
}

Tensor one_hot(const Tensor& index, int64_t num_classes) {
  detail::check_defined("one_hot", index, "index");
  KILN_CHECK(index.dtype() == DType::I64 || index.dtype() == DType::I32, "one_hot: index must be i32 or i64, got ",
             describe(index));
  if (num_classes < 0) {  // an explicit read-back (a host sync on a device): pass num_classes to avoid it
    KILN_CHECK(index.numel() > 0, "one_hot: cannot infer num_classes from an empty index; pass it");
    num_classes = max(index).item<int64_t>() + 1;
  }
  detail::check_index_range("one_hot", index, num_classes);
  Shape s = index.sizes();
  s.push_back(num_classes);
  Tensor out = zeros(s, TensorOptions(DType::I64, index.device()));
  const int64_t k = index.numel();
  if (k == 0) return out;
  // out (k, C) += 1 at (r, index[r]): the scatter_add slot, whose CUDA kernel checks each
  // index on the device (an out-of-range one leaves its row 0 and is reported).
  Tensor idx = cast(index, DType::I64).reshape({k, 1}).contiguous();
  Tensor src = ones({k, 1}, TensorOptions(DType::I64, index.device()));
  kernel<op::scatter_add>(index.device())(kernel_view(out), kernel_view(idx), kernel_view(src),
                                          IndexParams{k, num_classes, 1, 1});
  return out;
}

}  // namespace kiln
