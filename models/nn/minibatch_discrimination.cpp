#include <kiln/models/nn/minibatch_discrimination.h>

#include <cmath>

#include <kiln/core/autograd.h>
#include <kiln/core/error.h>
#include <kiln/ops/checks.h>
#include <kiln/models/nn/init.h>
#include <kiln/ops/binary.h>
#include <kiln/ops/index.h>
#include <kiln/ops/matmul.h>
#include <kiln/ops/reduce.h>
#include <kiln/ops/unary.h>

namespace kiln::nn {

Tensor minibatch_discrimination(const Tensor& x, const Tensor& T, int64_t B, int64_t C) {
  const char* op = "minibatch_discrimination";
  kiln::detail::check_defined(op, x);
  kiln::detail::check_defined(op, T, "T");
  KILN_CHECK(B >= 1 && C >= 1, op, ": num_kernels and kernel_dim must be >= 1, got ", B, " and ", C);
  KILN_CHECK(x.dim() == 2, op, ": expects input (N, A), got ", describe(x));
  KILN_CHECK(T.dim() == 2 && T.size(0) == x.size(1) && T.size(1) == B * C, op, ": T must have shape (", x.size(1),
             ", ", B * C, "), got ", describe(T));
  const int64_t N = x.size(0);
  Tensor M = matmul(x, T).reshape({N, 1, B, C});
  Tensor l1 = kiln::sum(abs(sub(M, M.reshape({1, N, B, C}))), {3});  // (N, N, B)
  Tensor o = sub(kiln::sum(exp(neg(l1)), {1}), 1.0);                 // without j == i
  return cat({x, o}, 1);
}

MinibatchDiscrimination::MinibatchDiscrimination(int64_t in, int64_t b, int64_t c, double init_std, Generator* gen)
    : Module("MinibatchDiscrimination"), in_features(in), num_kernels(b), kernel_dim(c) {
  KILN_CHECK(in >= 1 && b >= 1 && c >= 1,
             "MinibatchDiscrimination: in_features, num_kernels and kernel_dim must be >= 1, got ", in, ", ", b,
             ", ", c);
  T = register_parameter("T", empty({in, b * c}));
  init::normal_(T, 0.0, init_std > 0 ? init_std : 1.0 / std::sqrt(static_cast<double>(in)), gen);
}

Tensor MinibatchDiscrimination::forward(const Tensor& input) {
  return minibatch_discrimination(input, T, num_kernels, kernel_dim);
}

std::string MinibatchDiscrimination::extra_repr() const {
  return kiln::detail::str("in_features=", in_features, ", num_kernels=", num_kernels, ", kernel_dim=", kernel_dim);
}

}  // namespace kiln::nn
