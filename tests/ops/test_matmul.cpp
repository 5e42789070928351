// matmul/bmm on the CPU against a naive triple loop in double: 2-D, the 1-D cases,
// broadcast batch dims, transposed and strided operands, every floating dtype, empty
// inner dim; bad input throws kiln::Error naming the op.
#include "test_util.h"

#include <kiln/ops/op_list.h>

#include <array>
#include <cmath>

using namespace kiln;

namespace {
// Naive (M, K) @ (K, N) of row-major values, in double.
std::vector<double> naive_mm(const std::vector<double>& a, const std::vector<double>& b, int64_t M, int64_t K,
                             int64_t N) {
  std::vector<double> c(M * N, 0.0);
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) {
      double s = 0;
      for (int64_t k = 0; k < K; ++k) s += a[i * K + k] * b[k * N + j];
      c[i * N + j] = s;
    }
  return c;
}

// Reference for a batched product with broadcast batch dims: a [..., M, K], b [..., K, N].
Tensor ref_matmul(const Tensor& a, const Tensor& b) {
  Shape ba(a.sizes().begin(), a.sizes().end() - 2), bb(b.sizes().begin(), b.sizes().end() - 2);
  Shape batch = broadcast_shapes(ba, bb, "ref");
  int64_t M = a.size(-2), K = a.size(-1), N = b.size(-1);
  Shape ea = batch, eb = batch;
  ea.insert(ea.end(), {M, K});
  eb.insert(eb.end(), {K, N});
  std::vector<double> av = test::values(a.expand(ea)), bv = test::values(b.expand(eb)), out;
  int64_t nb = shape_numel(batch);
  for (int64_t i = 0; i < nb; ++i) {
    std::vector<double> sa(av.begin() + i * M * K, av.begin() + (i + 1) * M * K);
    std::vector<double> sb(bv.begin() + i * K * N, bv.begin() + (i + 1) * K * N);
    std::vector<double> c = naive_mm(sa, sb, M, K, N);
    out.insert(out.end(), c.begin(), c.end());
  }
  Shape os = batch;
  os.insert(os.end(), {M, N});
  return from_vector<double>(out, os);
}

// Tolerance for length-K dot products in dtype t: the dtype's rtol for the rounding of
// the result, its atol scaled by sqrt(K) for the accumulation (which grows like sqrt(K)).
test::Tol mm_tol(DType t, int64_t K) {
  test::Tol tol = test::tol_for(t);
  return {tol.rtol, tol.atol * std::sqrt(static_cast<double>(std::max<int64_t>(K, 1)))};
}
std::vector<double> d(const Tensor& t) { return test::values(t); }
}  // namespace

TEST_CASE("matmul: 2-D by hand", "[ops][matmul]") {
  Tensor a = from_vector<float>({1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor b = from_vector<float>({7, 8, 9, 10, 11, 12}, {3, 2});
  Tensor c = matmul(a, b);
  CHECK(c.sizes() == Shape{2, 2});
  CHECK(c.dtype() == DType::F32);
  // [1 2 3; 4 5 6] @ [7 8; 9 10; 11 12] = [58 64; 139 154]
  CHECK(d(c) == std::vector<double>{58, 64, 139, 154});
  CHECK(d(matmul(b, a)) == std::vector<double>{39, 54, 69, 49, 68, 87, 59, 82, 105});
  CHECK(d(matmul(eye(3), b)) == d(b));
}

TEST_CASE("matmul: 1-D operands", "[ops][matmul]") {
  Tensor v = from_vector<double>({1, 2, 3});
  Tensor m = from_vector<double>({1, 0, 2, -1, 3, 1}, {3, 2});
  Tensor vm = matmul(v, m);  // [3] @ [3, 2] -> [2]
  CHECK(vm.sizes() == Shape{2});
  CHECK(d(vm) == std::vector<double>{1 * 1 + 2 * 2 + 3 * 3, 0 - 2 + 3});
  Tensor mv = matmul(m.t(), v);  // [2, 3] @ [3] -> [2]
  CHECK(mv.sizes() == Shape{2});
  CHECK(d(mv) == d(vm));
  Tensor vv = matmul(v, from_vector<double>({4, 5, 6}));  // -> 0-d
  CHECK(vv.dim() == 0);
  CHECK(vv.item<double>() == 32);
  // 1-D with batched: [3] @ [2, 3, 2] -> [2, 2]; [2, 2, 3] @ [3] -> [2, 2].
  Tensor bm = stack({m, mul(m, 2)});
  Tensor r1 = matmul(v, bm);
  CHECK(r1.sizes() == Shape{2, 2});
  CHECK(d(r1) == std::vector<double>{14, 1, 28, 2});
  Tensor r2 = matmul(bm.transpose(1, 2), v);
  CHECK(r2.sizes() == Shape{2, 2});
  CHECK(d(r2) == std::vector<double>{14, 1, 28, 2});
}

TEST_CASE("matmul: batched with broadcast batch dims", "[ops][matmul]") {
  Tensor a = test::random_tensor({2, 1, 3, 4}, DType::F64, 51), b = test::random_tensor({5, 4, 2}, DType::F64, 52);
  Tensor c = matmul(a, b);
  CHECK(c.sizes() == Shape{2, 5, 3, 2});
  CHECK_CLOSE(c, ref_matmul(a, b));
  Tensor a3 = test::random_tensor({3, 4, 5}, DType::F64, 53), m = test::random_tensor({5, 6}, DType::F64, 54);
  CHECK(matmul(a3, m).sizes() == Shape{3, 4, 6});
  CHECK_CLOSE(matmul(a3, m), ref_matmul(a3, m));
  CHECK_CLOSE(matmul(m.t(), a3.transpose(1, 2)), ref_matmul(m.t(), a3.transpose(1, 2)));
  Tensor x = test::random_tensor({1, 7, 3}, DType::F32, 55), y = test::random_tensor({4, 1, 3, 2}, DType::F32, 56);
  CHECK(matmul(x, y).sizes() == Shape{4, 1, 7, 2});
  CHECK_CLOSE(matmul(x, y), ref_matmul(x, y));
  // A batch dim broadcast by stride 0.
  Tensor e = test::random_tensor({1, 3, 4}, DType::F64, 57).expand({6, 3, 4});
  Tensor f = test::random_tensor({6, 4, 2}, DType::F64, 58);
  CHECK_CLOSE(matmul(e, f), ref_matmul(e, f));
}

TEST_CASE("matmul: transposed and strided operands", "[ops][matmul]") {
  Tensor a = test::random_tensor({9, 7}, DType::F64, 61), b = test::random_tensor({7, 5}, DType::F64, 62);
  Tensor ref = ref_matmul(a, b);
  CHECK_CLOSE(matmul(test::transposed_copy(a), b), ref);
  CHECK_CLOSE(matmul(a, test::transposed_copy(b)), ref);
  CHECK_CLOSE(matmul(test::transposed_copy(a), test::transposed_copy(b)), ref);
  CHECK_CLOSE(matmul(test::strided_copy(a), test::strided_copy(b)), ref);
  CHECK_CLOSE(matmul(b.t(), a.t()), ref.t());
  // Slices of a bigger matrix (leading dimension > columns) and row-strided slices.
  Tensor big = test::random_tensor({20, 30}, DType::F64, 63);
  Tensor sa = big.slice(0, 2, 11).slice(1, 3, 10);   // [9, 7], ld 30
  Tensor sb = big.slice(0, 1, 15, 2).slice(1, 5, 10);  // [7, 5], row stride 60
  CHECK_CLOSE(matmul(sa, sb), ref_matmul(sa, sb));
  CHECK_CLOSE(matmul(sb.t(), sa.t()), ref_matmul(sb.t(), sa.t()));
  // Batched transposed: [B, K, M]^T.
  Tensor ba = test::random_tensor({3, 7, 4}, DType::F64, 64).transpose(1, 2);
  Tensor bb = test::random_tensor({3, 5, 7}, DType::F64, 65).transpose(1, 2);
  CHECK_CLOSE(matmul(ba, bb), ref_matmul(ba, bb));
  CHECK_CLOSE(bmm(ba, bb), ref_matmul(ba, bb));
  // Operands with a stride-0 dim inside the matrix.
  Tensor row = test::random_tensor({1, 7}, DType::F64, 68).expand({9, 7});
  Tensor colb = test::random_tensor({7, 1}, DType::F64, 69).expand({7, 5});
  CHECK_CLOSE(matmul(row, b), ref_matmul(row, b));
  CHECK_CLOSE(matmul(a, colb), ref_matmul(a, colb));
  CHECK_CLOSE(matmul(row, colb), ref_matmul(row, colb));
  // Degenerate sizes: M, N or K of 1.
  for (Shape sh : {Shape{1, 7}, Shape{9, 1}}) {
    Tensor l = test::random_tensor(sh, DType::F64, 66), r = test::random_tensor({sh[1], 1}, DType::F64, 67);
    CHECK_CLOSE(matmul(l, r), ref_matmul(l, r));
    CHECK_CLOSE(matmul(test::transposed_copy(l), test::transposed_copy(r)), ref_matmul(l, r));
  }
}

TEST_CASE("matmul: f64 against the triple loop on random data", "[ops][matmul]") {
  const std::vector<std::array<int64_t, 3>> sizes{{1, 1, 1}, {17, 33, 9}, {64, 65, 63}, {3, 200, 2}};
  for (auto [M, K, N] : sizes) {
    INFO(M << "x" << K << "x" << N);
    Tensor a = test::random_tensor({M, K}, DType::F64, 70 + M), b = test::random_tensor({K, N}, DType::F64, 80 + N);
    Tensor c = matmul(a, b);
    CHECK(c.dtype() == DType::F64);
    test::Tol t = mm_tol(DType::F64, K);
    CHECK_CLOSE_TOL(c, from_vector<double>(naive_mm(d(a), d(b), M, K, N), {M, N}), t.rtol, t.atol);
  }
}

TEST_CASE("matmul: f32, f16 and bf16 within tolerance", "[ops][matmul]") {
  for (DType dt : {DType::F32, DType::F16, DType::BF16}) {
    INFO(dtype_name(dt));
    const int64_t M = 13, K = 37, N = 11;
    Tensor a = test::random_tensor({M, K}, dt, 90), b = test::random_tensor({K, N}, dt, 91);
    Tensor c = matmul(a, b);
    CHECK(c.dtype() == dt);
    Tensor ref = from_vector<double>(naive_mm(d(a), d(b), M, K, N), {M, N});  // exact inputs, double sums
    test::Tol t = mm_tol(dt, K);
    CHECK_CLOSE_TOL(c, ref, t.rtol, t.atol);
    CHECK_CLOSE_TOL(matmul(test::transposed_copy(a), b), ref, t.rtol, t.atol);
    Tensor ab = test::random_tensor({2, M, K}, dt, 92), bb = test::random_tensor({2, K, N}, dt, 93);
    CHECK_CLOSE_TOL(bmm(ab, bb), ref_matmul(ab, bb), t.rtol, t.atol);
  }
}

TEST_CASE("bmm", "[ops][matmul]") {
  Tensor a = test::random_tensor({4, 3, 5}, DType::F64, 101), b = test::random_tensor({4, 5, 2}, DType::F64, 102);
  Tensor c = bmm(a, b);
  CHECK(c.sizes() == Shape{4, 3, 2});
  CHECK_CLOSE(c, ref_matmul(a, b));
  CHECK_CLOSE(c, matmul(a, b));
  for (int64_t i = 0; i < 4; ++i) CHECK_CLOSE(c[i], matmul(a[i], b[i]));
}

TEST_CASE("matmul: empty dims", "[ops][matmul]") {
  Tensor z = matmul(zeros({2, 0}), zeros({0, 3}));
  CHECK(z.sizes() == Shape{2, 3});
  CHECK(d(z) == std::vector<double>(6, 0));
  CHECK(matmul(zeros({0, 4}), zeros({4, 3})).sizes() == Shape{0, 3});
  CHECK(matmul(zeros({2, 4}), zeros({4, 0})).sizes() == Shape{2, 0});
  CHECK(bmm(zeros({0, 2, 3}), zeros({0, 3, 4})).sizes() == Shape{0, 2, 4});
}

TEST_CASE("matmul: bad input throws kiln::Error naming the op", "[ops][matmul][errors]") {
  REQUIRE_KILN_ERROR(matmul(zeros({2, 3}), zeros({4, 2})), "matmul");
  REQUIRE_THROWS_WITH(matmul(zeros({2, 3}), zeros({4, 2})), Catch::Contains("[2, 3]") && Catch::Contains("[4, 2]"));
  REQUIRE_KILN_ERROR(matmul(zeros({3}), zeros({4})), "matmul");
  REQUIRE_KILN_ERROR(matmul(zeros({2, 3}), zeros({3, 2}, DType::F64)), "matmul");
  REQUIRE_KILN_ERROR(matmul(zeros({2, 3}, DType::F16), zeros({3, 2}, DType::BF16)), "matmul");
  REQUIRE_KILN_ERROR(matmul(zeros({2, 3}, DType::I32), zeros({3, 2}, DType::I32)), "matmul");
  REQUIRE_KILN_ERROR(matmul(zeros({2, 3}, DType::I64), zeros({3, 2}, DType::I64)), "matmul");
  REQUIRE_KILN_ERROR(matmul(zeros({2, 3}, DType::Bool), zeros({3, 2}, DType::Bool)), "matmul");
  REQUIRE_KILN_ERROR(matmul(scalar_tensor(2.0), zeros({3, 2})), "matmul");
  REQUIRE_KILN_ERROR(matmul(zeros({3}), scalar_tensor(2.0)), "matmul");
  REQUIRE_KILN_ERROR(matmul(zeros({2, 2, 3}), zeros({3, 3, 2})), "matmul");  // batch 2 vs 3
  REQUIRE_KILN_ERROR(matmul(Tensor(), zeros({2})), "matmul");
  REQUIRE_KILN_ERROR(bmm(zeros({2, 3}), zeros({3, 2})), "bmm");
  REQUIRE_KILN_ERROR(bmm(zeros({2, 2, 3}), zeros({3, 3, 2})), "bmm");
  REQUIRE_KILN_ERROR(bmm(zeros({2, 2, 3}), zeros({2, 4, 2})), "bmm");
  REQUIRE_KILN_ERROR(bmm(zeros({2, 2, 3}, DType::I32), zeros({2, 3, 2}, DType::I32)), "bmm");
}

namespace {
std::vector<int64_t> g_gemm_batches;  // the batch count of each matmul kernel call
void counting_matmul(const TensorView& a, const TensorView& b, const TensorView& out) {
  g_gemm_batches.push_back(a.sizes[0]);
  cpu::matmul(a, b, out);
}
}  // namespace

TEST_CASE("matmul: (B, T, K) @ (K, N) is one GEMM forward and one per gradient", "[ops][matmul]") {
  // A linear layer over a sequence batch: the weight gradient must be one GEMM over B*T
  // rows, not B GEMMs and a sum over B.
  Tensor x = test::random_tensor({4, 5, 3}, DType::F64, 1).set_requires_grad(true);
  Tensor w = test::random_tensor({3, 2}, DType::F64, 2).set_requires_grad(true);
  auto* original = kernel<op::matmul>(kCPU);
  set_kernel<op::matmul>(DeviceType::CPU, &counting_matmul);
  g_gemm_batches.clear();
  Tensor y = matmul(x, w);
  kiln::sum(y).backward();
  set_kernel<op::matmul>(DeviceType::CPU, original);
  CHECK(y.sizes() == Shape{4, 5, 2});
  CHECK(g_gemm_batches == std::vector<int64_t>{1, 1, 1});  // forward, dX, dW
  // The values still match the batched definition.
  Tensor xr = x.detach(), wr = w.detach();
  CHECK_CLOSE(y.detach(), matmul(xr, wr.unsqueeze(0).expand({4, 3, 2})));
  CHECK_CLOSE(w.grad(), kiln::sum(matmul(xr.transpose(1, 2), ones({4, 5, 2}, DType::F64)), {0}));
  CHECK_CLOSE(x.grad(), matmul(ones({4, 5, 2}, DType::F64), wr.t()));
}

// fused_linear (the matmul_bias slot): act(x W^T + b) in one op. On the CPU it must give
// the bits of matmul, add and gelu_tanh one after another (the GPT's numbers do not move),
// and its gradients those of the composition; first- and second-order gradient checks.
TEST_CASE("fused_linear: the bits of matmul + add + gelu_tanh, and their gradients", "[ops][matmul][linear]") {
  for (LinearActivation act : {LinearActivation::None, LinearActivation::GeluTanh}) {
    for (DType t : {DType::F32, DType::BF16, DType::F64}) {
      for (Shape xs : {Shape{5, 7}, Shape{2, 3, 16}, Shape{1, 8}}) {
        const int64_t K = xs.back(), N = 24;
        INFO(dtype_name(t) << " act " << static_cast<int>(act) << " x " << shape_str(xs));
        Tensor x = test::random_tensor(xs, t, 11), w = test::random_tensor({N, K}, t, 12),
               b = test::random_tensor({N}, t, 13);
        auto composed = [&](const Tensor& xx, const Tensor& ww, const Tensor& bb) {
          Tensor y = add(matmul(xx, ww.t()), bb);
          return act == LinearActivation::GeluTanh ? gelu_tanh(y) : y;
        };
        CHECK(test::values(fused_linear(x, w, b, act)) == test::values(composed(x, w, b)));
        // Gradients: the same formulas in other kernels, so equal within rounding.
        Tensor x1 = x.clone().set_requires_grad(true), w1 = w.clone().set_requires_grad(true),
               b1 = b.clone().set_requires_grad(true);
        Tensor x2 = x.clone().set_requires_grad(true), w2 = w.clone().set_requires_grad(true),
               b2 = b.clone().set_requires_grad(true);
        Tensor g = test::random_tensor(fused_linear(x, w, b, act).sizes(), t, 14);
        fused_linear(x1, w1, b1, act).backward(g);
        composed(x2, w2, b2).backward(g);
        const test::Tol tol = test::tol_for(t);
        CHECK_CLOSE_TOL(x1.grad(), x2.grad(), tol.rtol, tol.atol);
        CHECK_CLOSE_TOL(w1.grad(), w2.grad(), tol.rtol, tol.atol);
        CHECK_CLOSE_TOL(b1.grad(), b2.grad(), tol.rtol, tol.atol);
      }
    }
  }
}

TEST_CASE("fused_linear: gradient checks of every input, first and second order", "[ops][matmul][linear][gradcheck]") {
  using V = std::vector<Tensor>;
  for (LinearActivation act : {LinearActivation::None, LinearActivation::GeluTanh}) {
    INFO("act " << static_cast<int>(act));
    auto f = [act](const V& in) { return fused_linear(in[0], in[1], in[2], act); };
    const V inputs{test::random_tensor({2, 3, 5}, DType::F64, 21), test::random_tensor({6, 5}, DType::F64, 22),
                   test::random_tensor({6}, DType::F64, 23)};
    GradcheckResult r = gradcheck(f, inputs);
    INFO(r.message);
    CHECK(r.ok);
    GradcheckOptions o2;
    o2.atol = 1e-5;
    o2.rtol = 1e-3;
    GradcheckResult r2 = gradgradcheck(f, inputs, o2);
    INFO(r2.message);
    CHECK(r2.ok);
  }
  // Only some inputs requiring grad (a frozen weight, an input without grad).
  Tensor x = test::random_tensor({4, 5}, DType::F64, 31), w = test::random_tensor({3, 5}, DType::F64, 32),
         b = test::random_tensor({3}, DType::F64, 33).set_requires_grad(true);
  kiln::sum(fused_linear(x, w, b, LinearActivation::GeluTanh)).backward();
  CHECK(b.grad().defined());
  CHECK(!x.grad().defined());
  CHECK(!w.grad().defined());
}

TEST_CASE("fused_linear: no bias, empty sizes, nn::Linear's activation, bad input", "[ops][matmul][linear][errors]") {
  Tensor x = test::random_tensor({4, 5}, DType::F32, 41), w = test::random_tensor({3, 5}, DType::F32, 42);
  CHECK(test::values(fused_linear(x, w, Tensor(), LinearActivation::GeluTanh)) ==
        test::values(gelu_tanh(matmul(x, w.t()))));
  Tensor b = test::random_tensor({3}, DType::F32, 43);
  // K = 0: the bias alone; M = 0: an empty result.
  CHECK(test::values(fused_linear(zeros({2, 0}), zeros({3, 0}), b)) == test::values(add(zeros({2, 3}), b)));
  CHECK(fused_linear(zeros({0, 5}), w, b).sizes() == Shape{0, 3});
  // A bias view at an odd offset.
  Tensor big = test::random_tensor({7}, DType::F32, 44);
  Tensor bv = big.narrow(0, 1, 3);
  CHECK(test::values(fused_linear(x, w, bv)) == test::values(add(matmul(x, w.t()), bv)));
  // nn::Linear with an activation: same state dict, the activation applied in the op.
  nn::Linear lin(5, 3);
  lin.activation = LinearActivation::GeluTanh;
  CHECK(test::values(lin(x)) == test::values(gelu_tanh(add(matmul(x, lin.weight.t()), lin.bias))));
  CHECK(lin.state_dict().size() == 2);
  REQUIRE_KILN_ERROR(fused_linear(x, test::random_tensor({3, 4}, DType::F32, 45), b), "in_features");
  REQUIRE_KILN_ERROR(fused_linear(x, w, test::random_tensor({4}, DType::F32, 46)), "bias");
  REQUIRE_KILN_ERROR(fused_linear(x, w, b.to(DType::F64)), "dtype");
}
