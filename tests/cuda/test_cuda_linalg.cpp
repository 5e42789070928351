// logdet_spd on CUDA (cuSOLVER, cuda/kernels/linalg_cusolver.cpp) against the CPU
// reference (LAPACK): values and gradients of a batch in f32 and f64, the error for a
// matrix that is not positive definite, and MCR^2's rate reduction on both devices.
#include "test_util.h"

using namespace kiln;
using test::cuda0;

namespace {

// A batch of symmetric positive-definite (b, n, n) matrices X X^T / n + I.
Tensor spd_batch(int64_t b, int64_t n, DType dt, uint64_t seed) {
  Tensor x = test::random_tensor({b, n, n}, DType::F64, seed);
  return add(div(matmul(x, x.transpose(1, 2)), double(n)), eye(n, -1, TensorOptions(DType::F64))).to(dt);
}

}  // namespace

TEST_CASE("cuda: logdet_spd matches the CPU reference, values and gradients", "[cuda][linalg]") {
  for (DType dt : {DType::F64, DType::F32}) {
    for (int64_t n : {1, 7, 64, 129}) {
      INFO(dtype_name(dt) << " n " << n);
      Tensor a = spd_batch(3, n, dt, 7 + n);
      Tensor ac = a.clone().set_requires_grad(true), ag = a.to(cuda0()).set_requires_grad(true);
      Tensor lc = logdet_spd(ac), lg = logdet_spd(ag);
      REQUIRE(lg.is_cuda());
      const double tol = dt == DType::F64 ? 1e-10 : 2e-4;
      CHECK_CLOSE_TOL(lg.cpu(), lc, tol, tol);
      sum(lc).backward();
      sum(lg).backward();
      CHECK_CLOSE_TOL(ag.grad().cpu(), ac.grad(), tol, tol);
    }
  }
}

TEST_CASE("cuda: logdet_spd refuses a matrix that is not positive definite", "[cuda][linalg]") {
  Tensor bad = cat({eye(3, -1, TensorOptions(DType::F32)).reshape({1, 3, 3}), zeros({1, 3, 3})}, 0).to(cuda0());
  CHECK_KILN_ERROR(logdet_spd(bad), "matrix 1 of 2 is not positive definite");
  // The device keeps working afterwards.
  CHECK(logdet_spd(eye(4, -1, TensorOptions(DType::F32, cuda0()))).item<double>() == 0.0);
}

TEST_CASE("cuda: MCR^2 rate reduction matches the CPU", "[cuda][linalg][mcr2]") {
  Tensor z = test::random_tensor({200, 16}, DType::F32, 3);
  std::vector<int64_t> lab(200);
  for (int64_t i = 0; i < 200; ++i) lab[static_cast<size_t>(i)] = (i * 7) % 10;
  Tensor labels = from_vector(lab);
  Tensor zc = z.clone().set_requires_grad(true), zg = z.to(cuda0()).set_requires_grad(true);
  eval::RateReduction rc = eval::rate_reduction(zc, labels, 10, 0.5);
  eval::RateReduction rg = eval::rate_reduction(zg, labels.to(cuda0()), 10, 0.5);
  CHECK(rg.delta_r.item<double>() == Approx(rc.delta_r.item<double>()).epsilon(1e-4));
  rc.delta_r.backward();
  rg.delta_r.backward();
  CHECK_CLOSE_TOL(zg.grad().cpu(), zc.grad(), 1e-3, 1e-4);
}
