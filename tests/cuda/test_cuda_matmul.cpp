// matmul/bmm on CUDA (cuBLAS/cuBLASLt) against the CPU (OpenBLAS) for f32, f16, bf16
// and f64: odd sizes, transposed and strided operands, broadcast batches, the 1-D cases;
// tolerances by dtype scaled by sqrt(K) for the length of the dot products.
#include "test_util.h"

#include <array>
#include <cmath>
#include <utility>

#include <kiln/cuda/runtime.h>

using namespace kiln;
using test::cuda0;

namespace {
// Tolerance for length-K dot products in dtype t: the dtype's rtol for the rounding of
// the result, its atol scaled by sqrt(K) for the accumulation (which grows like sqrt(K)).
test::Tol mm_tol(DType t, int64_t K) {
  test::Tol tol = test::tol_for(t);
  return {tol.rtol, tol.atol * std::sqrt(static_cast<double>(std::max<int64_t>(K, 1)))};
}

void check_mm(const Tensor& g, const Tensor& c, int64_t K) {
  REQUIRE(g.is_cuda());
  CHECK(g.dtype() == c.dtype());
  test::Tol t = mm_tol(c.dtype(), K);
  CHECK_CLOSE_TOL(g, c, t.rtol, t.atol);
}
}  // namespace

TEST_CASE("cuda: matmul 2-D matches the CPU for every floating dtype", "[cuda][matmul]") {
  const std::vector<std::array<int64_t, 3>> sizes{{1, 1, 1},     {7, 33, 65},    {33, 65, 17},  {64, 64, 64},
                                                  {128, 256, 96}, {1023, 257, 129}, {5, 1000, 3}, {1, 512, 1}};
  for (DType t : test::floating_dtypes()) {
    for (auto [M, K, N] : sizes) {
      INFO(dtype_name(t) << " " << M << "x" << K << "x" << N);
      Tensor a = test::random_tensor({M, K}, t, 400 + M), b = test::random_tensor({K, N}, t, 500 + N);
      Tensor ga = a.to(cuda0()), gb = b.to(cuda0());
      Tensor c = matmul(a, b);
      check_mm(matmul(ga, gb), c, K);
      // Transposed (column-major) operands, transposed views and strided copies.
      check_mm(matmul(test::transposed_copy(ga), gb), c, K);
      check_mm(matmul(ga, test::transposed_copy(gb)), c, K);
      check_mm(matmul(gb.t(), ga.t()), c.t().contiguous(), K);
      check_mm(matmul(test::strided_copy(ga), test::strided_copy(gb)), c, K);
    }
  }
}

TEST_CASE("cuda: matmul with sub-matrix operands (leading dimension > columns)", "[cuda][matmul]") {
  for (DType t : {DType::F32, DType::F16, DType::BF16, DType::F64}) {
    INFO(dtype_name(t));
    Tensor big = test::random_tensor({300, 301}, t, 600), gbig = big.to(cuda0());
    auto pick_a = [](const Tensor& x) { return x.slice(0, 3, 260).slice(1, 5, 134); };    // [257, 129]
    auto pick_b = [](const Tensor& x) { return x.slice(0, 1, 259, 2).slice(1, 7, 40); };  // [129, 33]
    check_mm(matmul(pick_a(gbig), pick_b(gbig)), matmul(pick_a(big), pick_b(big)), 129);
    check_mm(matmul(pick_b(gbig).t(), pick_a(gbig).t()), matmul(pick_b(big).t(), pick_a(big).t()), 129);
  }
}

TEST_CASE("cuda: batched matmul, broadcast batches, 1-D operands and bmm", "[cuda][matmul]") {
  for (DType t : test::floating_dtypes()) {
    INFO(dtype_name(t));
    Tensor a = test::random_tensor({2, 1, 33, 65}, t, 700), b = test::random_tensor({5, 65, 17}, t, 701);
    Tensor ga = a.to(cuda0()), gb = b.to(cuda0());
    Tensor c = matmul(a, b);
    REQUIRE(c.sizes() == Shape{2, 5, 33, 17});
    check_mm(matmul(ga, gb), c, 65);
    check_mm(matmul(ga.transpose(2, 3).contiguous().transpose(2, 3), gb.transpose(1, 2).contiguous().transpose(1, 2)),
             c, 65);
    // Batch broadcast by stride 0.
    Tensor e = test::random_tensor({1, 7, 9}, t, 702), f = test::random_tensor({6, 9, 11}, t, 703);
    check_mm(matmul(e.to(cuda0()).expand({6, 7, 9}), f.to(cuda0())), matmul(e.expand({6, 7, 9}), f), 9);
    // 3-D @ 2-D and 2-D @ 3-D.
    Tensor m = test::random_tensor({65, 3}, t, 704);
    check_mm(matmul(gb.transpose(1, 2), m.to(cuda0())), matmul(b.transpose(1, 2), m), 65);
    check_mm(matmul(m.t().to(cuda0()), gb), matmul(m.t(), b), 65);
    // 1-D operands.
    Tensor v = test::random_tensor({65}, t, 705), w = test::random_tensor({65}, t, 706);
    Tensor gv = v.to(cuda0()), gw = w.to(cuda0());
    Tensor mat = test::random_tensor({65, 19}, t, 707), gmat = mat.to(cuda0());
    check_mm(matmul(gv, gmat), matmul(v, mat), 65);
    check_mm(matmul(gmat.t(), gv), matmul(mat.t(), v), 65);
    Tensor dot = matmul(gv, gw);
    CHECK(dot.dim() == 0);
    check_mm(dot, matmul(v, w), 65);
    check_mm(matmul(gv, gb), matmul(v, b), 65);
    check_mm(matmul(gb.transpose(1, 2), test::strided_copy(gv)), matmul(b.transpose(1, 2), v), 65);
    // bmm.
    Tensor p = test::random_tensor({4, 31, 33}, t, 708), q = test::random_tensor({4, 33, 29}, t, 709);
    check_mm(bmm(p.to(cuda0()), q.to(cuda0())), bmm(p, q), 33);
    check_mm(bmm(p.to(cuda0()).transpose(1, 2).contiguous().transpose(1, 2), q.to(cuda0()).transpose(1, 2).contiguous().transpose(1, 2)),
             bmm(p, q), 33);
  }
}

TEST_CASE("cuda: matmul edge cases and bad input", "[cuda][matmul]") {
  Tensor z = matmul(zeros({3, 0}, cuda0()), zeros({0, 4}, cuda0()));
  CHECK(z.is_cuda());
  CHECK(z.sizes() == Shape{3, 4});
  CHECK(test::values(z) == std::vector<double>(12, 0));
  CHECK(matmul(zeros({0, 5}, cuda0()), zeros({5, 2}, cuda0())).sizes() == Shape{0, 2});
  // Exact small-integer products.
  Tensor a = from_vector<float>({1, 2, 3, 4, 5, 6}, {2, 3}, cuda0()), b = from_vector<float>({7, 8, 9, 10, 11, 12}, {3, 2}, cuda0());
  CHECK(matmul(a, b).cpu().to_vector<float>() == std::vector<float>{58, 64, 139, 154});
  CHECK(matmul(a.to(DType::F16), b.to(DType::F16)).cpu().to_vector<float>() == std::vector<float>{58, 64, 139, 154});
  CHECK(matmul(a.to(DType::BF16), b.to(DType::BF16)).cpu().to_vector<float>() == std::vector<float>{58, 64, 139, 154});
  REQUIRE_KILN_ERROR(matmul(zeros({2, 3}, cuda0()), zeros({4, 2}, cuda0())), "matmul");
  REQUIRE_KILN_ERROR(matmul(zeros({2, 3}, cuda0()), zeros({3, 2}, TensorOptions(DType::F16, cuda0()))), "matmul");
  REQUIRE_KILN_ERROR(matmul(zeros({2, 3}, TensorOptions(DType::I32, cuda0())), zeros({3, 2}, TensorOptions(DType::I32, cuda0()))),
                     "matmul");
  REQUIRE_KILN_ERROR(bmm(zeros({2, 2, 3}, cuda0()), zeros({3, 3, 2}, cuda0())), "bmm");
}

// TF32 (cuda::set_allow_tf32 / KILN_ALLOW_TF32): off by default, so f32 matmuls and
// convolutions track the CPU to f32 tolerance; on, they run on tensor cores with 10-bit
// mantissas: still close to the CPU at TF32's tolerance, and measurably less exact than
// f32 (which shows TF32 really ran); switching back restores f32 (the plan and algorithm
// caches key on the flag).
TEST_CASE("cuda: TF32 is off by default and, when allowed, runs matmul and conv2d in TF32", "[cuda][matmul]") {
  struct Restore {
    bool was = cuda::allow_tf32();
    ~Restore() { cuda::set_allow_tf32(was); }
  } restore;
  cuda::set_allow_tf32(false);
  const int64_t M = 512, K = 1024, N = 512;
  Tensor a = test::random_tensor({M, K}, DType::F32, 31), b = test::random_tensor({K, N}, DType::F32, 32);
  Tensor x = test::random_tensor({8, 64, 32, 32}, DType::F32, 33), w = test::random_tensor({64, 64, 3, 3}, DType::F32, 34);
  const Tensor mm_ref = matmul(a.to(DType::F64), b.to(DType::F64));
  const Tensor conv_ref = conv2d(x.to(DType::F64), w.to(DType::F64), Tensor(), 1, 1);
  auto err = [](const Tensor& g, const Tensor& ref) {
    return max(abs(sub(g.to(kCPU).to(DType::F64), ref))).item<double>() / max(abs(ref)).item<double>();
  };
  auto run = [&] {
    return std::pair{err(matmul(a.to(cuda0()), b.to(cuda0())), mm_ref),
                     err(conv2d(x.to(cuda0()), w.to(cuda0()), Tensor(), 1, 1), conv_ref)};
  };
  const auto [mm_f32, conv_f32] = run();
  cuda::set_allow_tf32(true);
  CHECK(cuda::allow_tf32());
  const auto [mm_tf32, conv_tf32] = run();
  cuda::set_allow_tf32(false);
  const auto [mm_again, conv_again] = run();
  INFO("max error / max |ref|: matmul f32 " << mm_f32 << ", tf32 " << mm_tf32 << ", f32 again " << mm_again
                                            << "; conv f32 " << conv_f32 << ", tf32 " << conv_tf32 << ", f32 again "
                                            << conv_again);
  CHECK(mm_f32 < 1e-5);
  CHECK(conv_f32 < 1e-5);
  CHECK(mm_again < 1e-5);
  CHECK(conv_again < 1e-5);
  CHECK(mm_tf32 < 1e-2);  // 2^-11 per product, accumulated in f32
  CHECK(conv_tf32 < 1e-2);
  CHECK(mm_tf32 > 4 * mm_f32);  // TF32 really ran
  CHECK(conv_tf32 > 4 * conv_f32);
}

// fused_linear on CUDA: the matmul_bias slot's cuBLASLt epilogues (BIAS, GELU_BIAS without
// gradients, GELU_AUX_BIAS with them) against the CPU's product + bias + GELU, forward and
// backward; N not a multiple of 8 takes the composed path; f64 too.
TEST_CASE("cuda: fused_linear (cuBLASLt bias and GELU epilogues) matches the CPU", "[cuda][matmul][linear]") {
  const std::vector<std::array<int64_t, 3>> sizes{{7, 33, 64}, {128, 96, 384}, {1, 16, 8}, {5, 17, 13}, {64, 64, 1536}};
  for (DType t : test::floating_dtypes()) {
    for (LinearActivation act : {LinearActivation::None, LinearActivation::GeluTanh}) {
      for (auto [M, K, N] : sizes) {
        for (bool grad : {false, true}) {
          INFO(dtype_name(t) << " act " << static_cast<int>(act) << " " << M << "x" << K << "x" << N << " grad "
                             << grad);
          Tensor x = test::random_tensor({M, K}, t, 600 + M), w = test::random_tensor({N, K}, t, 700 + N),
                 b = test::random_tensor({N}, t, 800 + K);
          Tensor gx = x.to(cuda0()).set_requires_grad(grad), gw = w.to(cuda0()).set_requires_grad(grad),
                 gb = b.to(cuda0()).set_requires_grad(grad);
          Tensor cx = x.clone().set_requires_grad(grad), cw = w.clone().set_requires_grad(grad),
                 cb = b.clone().set_requires_grad(grad);
          Tensor gy = fused_linear(gx, gw, gb, act), cy = fused_linear(cx, cw, cb, act);
          check_mm(gy, cy, K);
          if (!grad) continue;
          Tensor g = test::random_tensor({M, N}, t, 900 + M);
          gy.backward(g.to(cuda0()));
          cy.backward(g);
          check_mm(gx.grad(), cx.grad(), N);
          check_mm(gw.grad(), cw.grad(), M);
          check_mm(gb.grad(), cb.grad(), M);
        }
      }
    }
  }
}

TEST_CASE("cuda: GPT's MLP through the fused GELU epilogue, in bf16 autocast", "[cuda][matmul][linear]") {
  nn::Linear fc(64, 256), proj(256, 64);
  fc.activation = LinearActivation::GeluTanh;
  Tensor x = test::random_tensor({4, 16, 64}, DType::F32, 1001);
  Tensor cpu_y = proj(fc(x));
  fc.to(cuda0());
  proj.to(cuda0());
  Tensor gy;
  {
    AutocastGuard autocast(DType::BF16);
    gy = proj(fc(x.to(cuda0())));
  }
  CHECK(gy.dtype() == DType::BF16);
  CHECK_CLOSE_TOL(gy.to(DType::F32), cpu_y, 3e-2, 3e-2);
}
