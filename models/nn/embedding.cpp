// Embedding.
#include <kiln/models/nn/embedding.h>

#include <kiln/core/autograd.h>
#include <kiln/models/nn/init.h>
#include <kiln/ops/embedding.h>

namespace kiln::nn {

namespace {
std::optional<int64_t> wrap_padding_idx(std::optional<int64_t> idx, int64_t n) {
  if (!idx) return idx;
  KILN_CHECK(*idx >= -n && *idx < n, "Embedding: padding_idx ", *idx, " must lie in [", -n, ", ", n, ")");
  return *idx < 0 ? *idx + n : *idx;
}
}  // namespace

Embedding::Embedding(int64_t n, int64_t dim, std::optional<int64_t> pad, TensorOptions options)
    : Module("Embedding"), num_embeddings(n), embedding_dim(dim), padding_idx(wrap_padding_idx(pad, n)) {
  KILN_CHECK(n >= 0 && dim >= 0, "Embedding: num_embeddings and embedding_dim must be >= 0, got ", n, " and ", dim);
  KILN_CHECK(is_floating(options.dtype), "Embedding: the weight needs a floating dtype, got ",
             dtype_name(options.dtype));
  weight = register_parameter("weight", empty({n, dim}, options));
  reset_parameters();
}

void Embedding::reset_parameters(Generator* gen) {
  init::normal_(weight, 0.0, 1.0, gen);
  NoGradGuard no_grad;
  if (padding_idx) init::zeros_(weight.select(0, *padding_idx));
}

Tensor Embedding::forward(const Tensor& indices) { return embedding(weight, indices, padding_idx); }

std::string Embedding::extra_repr() const {
  std::string s = kiln::detail::str(num_embeddings, ", ", embedding_dim);
  if (padding_idx) s += ", padding_idx=" + std::to_string(*padding_idx);
  return s;
}

}  // namespace kiln::nn
