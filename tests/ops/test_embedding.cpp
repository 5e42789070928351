// embedding on the CPU: rows picked for indices of any shape, the weight gradient
// summing repeated indices, padding_idx getting none, a gradient check, bad input.
#include "test_util.h"

using namespace kiln;
using V = std::vector<Tensor>;

TEST_CASE("embedding: lookup for indices of any shape", "[ops][embedding]") {
  Tensor w = arange(12, DType::F32).reshape({4, 3});
  Tensor idx = from_vector<int64_t>({3, 0, 3, 1}, {2, 2});
  Tensor e = embedding(w, idx);
  CHECK(e.sizes() == Shape{2, 2, 3});
  CHECK(test::values(e) == std::vector<double>{9, 10, 11, 0, 1, 2, 9, 10, 11, 3, 4, 5});
  CHECK(test::values(embedding(w, from_vector<int32_t>({2}))) == std::vector<double>{6, 7, 8});
  Tensor s = embedding(w, scalar_tensor(int64_t{1}, DType::I64));
  CHECK(s.sizes() == Shape{3});
  CHECK(test::values(s) == std::vector<double>{3, 4, 5});
  CHECK(embedding(w, zeros({0, 5}, DType::I64)).sizes() == Shape{0, 5, 3});
  // A non-contiguous weight and index.
  Tensor wt = test::transposed_copy(w);
  CHECK_EQUAL_T(embedding(wt, test::strided_copy(idx)), e);
  CHECK(embedding(w.to(DType::BF16), idx).dtype() == DType::BF16);
}

TEST_CASE("embedding: gradient sums repeated rows and skips padding_idx", "[ops][embedding]") {
  Tensor idx = from_vector<int64_t>({3, 0, 3, 1, 3}, {5});
  Tensor g = arange(15, DType::F64).reshape({5, 3});
  Tensor w = zeros({4, 3}, DType::F64).set_requires_grad(true);
  embedding(w, idx).backward(g);
  // Row 3 gets rows 0, 2 and 4 of g; row 2 gets nothing.
  CHECK(test::values(w.grad()) == std::vector<double>{3, 4, 5, 9, 10, 11, 0, 0, 0, 0 + 6 + 12, 1 + 7 + 13, 2 + 8 + 14});
  Tensor w2 = zeros({4, 3}, DType::F64).set_requires_grad(true);
  embedding(w2, idx, 3).backward(g);
  CHECK(test::values(w2.grad()) == std::vector<double>{3, 4, 5, 9, 10, 11, 0, 0, 0, 0, 0, 0});
  Tensor w3 = zeros({4, 3}, DType::F64).set_requires_grad(true);
  embedding(w3, idx, -4).backward(g);  // -4 is row 0
  CHECK(test::values(w3.grad()) == std::vector<double>{0, 0, 0, 9, 10, 11, 0, 0, 0, 18, 21, 24});
  // The forward still reads the padding row.
  CHECK(test::values(embedding(arange(6, DType::F32).reshape({2, 3}), from_vector<int64_t>({1}), 1)) ==
        std::vector<double>{3, 4, 5});
}

TEST_CASE("embedding: a half-precision table sums a frequent token's gradients in f32", "[ops][embedding]") {
  // 4096 lookups of token 0, each with gradient 0.01 (not an integer: bf16 rounds it to
  // 0.010009765625). Summed in bf16 one addition at a time, the row stops growing near 4
  // (from there on, +0.01 is under half a bf16 ulp); summed in f32 and rounded once it is
  // 4096 * 0.010009765625 = 41.
  for (DType dt : {DType::BF16, DType::F16}) {
    INFO(dtype_name(dt));
    const int64_t n = 4096;
    Tensor w = zeros({3, 2}, dt).set_requires_grad(true);
    Tensor idx = zeros({n}, DType::I64);
    Tensor g = full({n, 2}, 0.01, dt);
    embedding(w, idx).backward(g);
    const double step = g[0][0].item<double>();
    std::vector<double> gw = test::values(w.grad());
    CHECK(gw[0] == Approx(n * step).epsilon(dt == DType::BF16 ? 8e-3 : 1e-3));
    CHECK(gw[1] == Approx(n * step).epsilon(dt == DType::BF16 ? 8e-3 : 1e-3));
    CHECK(gw[2] == 0);
  }
}

TEST_CASE("gradcheck: embedding", "[ops][embedding][gradcheck]") {
  Tensor w = rand({5, 4}, DType::F64);
  Tensor idx = from_vector<int64_t>({4, 1, 1, 0, 4, 4}, {2, 3});
  // With padding_idx the gradient is deliberately not the derivative at the padding row, so
  // that case is checked where the padding row is not looked up (its values are above).
  for (std::optional<int64_t> pad : {std::optional<int64_t>(), std::optional<int64_t>(2)}) {
    GradcheckResult r = gradcheck([=](const V& v) { return embedding(v[0], idx, pad); }, {w});
    INFO(r.message);
    CHECK(r.ok);
  }
}

TEST_CASE("embedding: bad input throws kiln::Error naming the op", "[ops][embedding][errors]") {
  Tensor w = zeros({4, 3});
  REQUIRE_KILN_ERROR(embedding(w, from_vector<int64_t>({4})), "embedding");
  REQUIRE_KILN_ERROR(embedding(w, from_vector<int64_t>({-1})), "embedding");
  REQUIRE_KILN_ERROR(embedding(w, from_vector<float>({1})), "embedding");
  REQUIRE_KILN_ERROR(embedding(zeros({4}), from_vector<int64_t>({1})), "embedding");
  REQUIRE_KILN_ERROR(embedding(w, from_vector<int64_t>({1}), 4), "padding_idx");
  REQUIRE_KILN_ERROR(embedding(w, from_vector<int64_t>({1}), -5), "padding_idx");
}
