// Gradient checking: compares the gradients autograd computes with central finite
// differences, in f64 on the CPU. Tests use it for every differentiable op.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include <kiln/core/tensor.h>

namespace kiln {

struct GradcheckResult {
  bool ok = true;
  double max_abs_error = 0;  // over all checked input elements
  std::string message;       // the first mismatch: input, element, analytic vs numeric
};

struct GradcheckOptions {
  double eps = 1e-6;
  double atol = 1e-6;
  double rtol = 1e-4;
  uint64_t seed = 1234;  // for the random projection of the output
};

// f maps the inputs to one output. Floating inputs are copied to f64 CPU leaves that
// require grad (others are passed through). With a random projection w of the output,
// checks d<f(x), w>/dx from backward(w) against (<f(x + e), w> - <f(x - e), w>) / 2e.
GradcheckResult gradcheck(const std::function<Tensor(const std::vector<Tensor>&)>& f,
                          const std::vector<Tensor>& inputs, const GradcheckOptions& options = {});

// Second-order check (PyTorch's gradgradcheck): the first-order gradient
// x -> grad(<f(x), u>, x, create_graph = true) for a fixed random u, flattened and
// concatenated over the inputs that require grad, is itself gradient-checked against
// finite differences. It fails (or throws naming the op) where a backward formula is not
// differentiable.
GradcheckResult gradgradcheck(const std::function<Tensor(const std::vector<Tensor>&)>& f,
                              const std::vector<Tensor>& inputs, const GradcheckOptions& options = {});

}  // namespace kiln
