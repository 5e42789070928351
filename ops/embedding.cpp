// embedding: a row gather of the weight table (the index_select kernel slot) whose
// backward scatter-adds the output gradient's rows (the scatter_add slot), skipping
// padding_idx. Indices are range-checked once: on the host for CPU tensors, by the
// index_select kernel on CUDA (reported at the next synchronisation point); the backward
// calls the slot directly and does not check again.
#include <kiln/ops/embedding.h>

#include <kiln/core/autograd.h>
#include <kiln/ops/binary.h>
#include <kiln/ops/checks.h>
#include <kiln/ops/op_list.h>

namespace kiln {

Tensor embedding(const Tensor& weight, const Tensor& indices, std::optional<int64_t> padding_idx) {
  const char* op = "embedding";
  detail::check_defined(op, weight, "weight");
  detail::check_defined(op, indices, "indices");
  detail::check_same_device(op, weight, indices);
  KILN_CHECK(weight.dim() == 2, op, ": weight must be 2-D (num_embeddings, dim), got ", describe(weight));
  KILN_CHECK(indices.dtype() == DType::I64 || indices.dtype() == DType::I32, op,
             ": indices must be i32 or i64, got ", describe(indices));
  const int64_t V = weight.size(0), D = weight.size(1);
  std::optional<int64_t> pad;
  if (padding_idx) {
    KILN_CHECK(*padding_idx >= -V && *padding_idx < V, op, ": padding_idx ", *padding_idx,
               " must lie in [-", V, ", ", V, ") for weight ", describe(weight));
    pad = *padding_idx < 0 ? *padding_idx + V : *padding_idx;
  }
  detail::check_index_range(op, indices, V);

  Tensor idx = cast(indices, DType::I64).reshape({-1}).contiguous();
  const int64_t K = idx.numel();
  Shape out_shape = indices.sizes();
  out_shape.push_back(D);
  Tensor out = empty({K, D}, TensorOptions(weight.dtype(), weight.device()));
  {
    NoGradGuard raw;
    if (out.numel() > 0) {
      Tensor w = weight.contiguous();
      kernel<op::index_select>(weight.device())(kernel_view(w), kernel_view(idx), kernel_view(out),
                                                IndexParams{1, V, K, D});
    }
    out = out.view(out_shape);
  }
  if (!any_requires_grad({weight})) return out;
  // dweight[v] = sum of the gradient rows whose index is v (none for padding_idx).
  return record(op, {weight}, out, [idx, pad, V, D](const Tensor& g) {
    const int64_t k = idx.numel();
    Tensor rows = g.reshape({k, D});
    if (pad) rows = where(ne(idx, *pad).unsqueeze(1), rows, 0.0);
    Tensor dw = zeros({V, D}, TensorOptions(g.dtype(), g.device()));
    if (k > 0 && D > 0) {
      Tensor index = idx.unsqueeze(1).expand({k, D}).contiguous();
      Tensor src = rows.contiguous();
      kernel<op::scatter_add>(g.device())(kernel_view(dw), kernel_view(index), kernel_view(src),
                                          IndexParams{1, V, k, D});
    }
    return std::vector<Tensor>{dw};
  });
}

}  // namespace kiln
