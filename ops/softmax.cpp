// softmax / log_softmax: checks, (outer, n, inner) layout, dispatch.
#include <kiln/ops/softmax.h>

#include <kiln/core/backend.h>
#include <kiln/ops/checks.h>

namespace kiln {
namespace {
Tensor softmax_impl(const char* name, const Tensor& x, int64_t dim, bool log) {
  detail::check_defined(name, x);
  detail::check_floating(name, x);
  Tensor in = x.contiguous();
  Tensor out = empty_like(in);
  if (x.numel() == 0) return out;
  int64_t outer = 1, n = 1, inner = 1;
  if (x.dim() > 0) {
    dim = wrap_dim(dim, x.dim(), name);
    for (int64_t i = 0; i < dim; ++i) outer *= x.size(i);
    n = x.size(dim);
    for (int64_t i = dim + 1; i < x.dim(); ++i) inner *= x.size(i);
  }
  backend(x.device()).softmax(in, outer, n, inner, log, out);
  return out;
}
}  // namespace

Tensor softmax(const Tensor& x, int64_t dim) { return softmax_impl("softmax", x, dim, false); }
Tensor log_softmax(const Tensor& x, int64_t dim) { return softmax_impl("log_softmax", x, dim, true); }

}  // namespace kiln
