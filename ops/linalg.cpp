// logdet_spd: checks, output allocation, the spd_logdet kernel slot (ops/cpu/linalg.cpp,
// cuda/kernels/linalg_cusolver.cpp) and the backward formula g * A^{-1}.
#include <kiln/ops/linalg.h>

#include <kiln/core/autograd.h>
#include <kiln/ops/binary.h>
#include <kiln/ops/checks.h>
#include <kiln/ops/op_list.h>

namespace kiln {

Tensor logdet_spd(const Tensor& a) {
  detail::check_defined("logdet_spd", a);
  KILN_CHECK(a.dtype() == DType::F32 || a.dtype() == DType::F64, "logdet_spd: needs f32 or f64 matrices, got ",
             describe(a));
  KILN_CHECK(a.dim() >= 2 && a.size(-1) == a.size(-2) && a.size(-1) >= 1,
             "logdet_spd: needs square matrices (..., n, n) with n >= 1, got ", describe(a));
  const int64_t n = a.size(-1);
  Shape lead(a.sizes().begin(), a.sizes().end() - 2);
  int64_t batch = 1;
  for (int64_t s : lead) batch *= s;
  Tensor ac = a.contiguous().reshape({batch, n, n});
  Tensor logdet = empty({batch}, TensorOptions(a.dtype(), a.device()));
  Tensor inverse = empty({batch, n, n}, TensorOptions(a.dtype(), a.device()));
  if (batch > 0)
    kernel<op::spd_logdet>(a.device())(kernel_view(ac), kernel_view(logdet), kernel_view(inverse),
                                       SpdParams{batch, n});
  Tensor out = logdet.reshape(lead);
  if (!any_requires_grad({a})) return out;
  Tensor inv = inverse.reshape(a.sizes());
  Shape gshape = lead;
  gshape.push_back(1);
  gshape.push_back(1);
  return record(
      "logdet_spd", {a}, out,
      [inv, gshape](const Tensor& g) { return std::vector<Tensor>{mul(g.reshape(gshape), inv)}; }, {a});
}

}  // namespace kiln
