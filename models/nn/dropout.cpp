// Dropout.
#include <kiln/models/nn/dropout.h>

#include <kiln/ops/dropout.h>

namespace kiln::nn {

Dropout::Dropout(double p_, Generator* gen) : Module("Dropout"), p(p_), generator(gen) {
  KILN_CHECK(p >= 0.0 && p <= 1.0, "Dropout: p must lie in [0, 1], got ", p);
}

Tensor Dropout::forward(const Tensor& input) { return dropout(input, p, is_training(), generator); }

std::string Dropout::extra_repr() const { return "p=" + detail::repr_double(p); }

}  // namespace kiln::nn
