// Autocast (ops/autocast.h) on the CPU: which ops run in half and which in f32, gradients
// reaching f32 parameters in f32, nesting and turning it off, and a GPT step under bf16 and
// f16 autocast against the same step in f32, with half tolerances.
#include "test_util.h"

#include <kiln/ops/autocast.h>

namespace kiln {
namespace {

TEST_CASE("autocast: half for products, f32 for softmax, norms, losses and sums", "[ops][autocast]") {
  const Tensor a = test::random_tensor({4, 8}, DType::F32, 1), b = test::random_tensor({8, 3}, DType::F32, 2);
  CHECK_FALSE(autocast_enabled());
  {
    AutocastGuard ac(DType::BF16);
    CHECK(autocast_enabled());
    CHECK(autocast_dtype() == DType::BF16);
    const Tensor y = matmul(a, b);
    CHECK(y.dtype() == DType::BF16);
    CHECK(bmm(a.unsqueeze(0), b.unsqueeze(0)).dtype() == DType::BF16);
    CHECK(softmax(y, 1).dtype() == DType::F32);
    CHECK(log_softmax(y, 1).dtype() == DType::F32);
    CHECK(sum(y).dtype() == DType::F32);
    CHECK(mean(y).dtype() == DType::F32);
    CHECK(layer_norm(y, {3}, Tensor(), Tensor()).dtype() == DType::F32);
    CHECK(cross_entropy(y, from_vector<int64_t>({0, 1, 2, 0})).dtype() == DType::F32);
    const Tensor q = test::random_tensor({1, 2, 5, 4}, DType::F32, 3);
    CHECK(scaled_dot_product_attention(q, q, q, true).dtype() == DType::BF16);
    CHECK(conv2d(test::random_tensor({1, 2, 5, 5}, DType::F32, 4), test::random_tensor({3, 2, 3, 3}, DType::F32, 5))
              .dtype() == DType::BF16);
    CHECK(add(y, ones({4, 3})).dtype() == DType::F32);  // elementwise ops promote as always
    {
      AutocastGuard off(DType::BF16, false);  // nested: off in this scope
      CHECK(matmul(a, b).dtype() == DType::F32);
    }
    {
      AutocastGuard f16(DType::F16);
      CHECK(matmul(a, b).dtype() == DType::F16);
    }
    CHECK(matmul(a, b).dtype() == DType::BF16);  // restored
    // Values: the half product of the rounded inputs, within bf16's precision.
    CHECK_CLOSE_TOL(cast(y, DType::F32), matmul(cast(cast(a, DType::BF16), DType::F32), cast(cast(b, DType::BF16), DType::F32)),
                    1e-2, 1e-2);
  }
  CHECK_FALSE(autocast_enabled());
  CHECK(matmul(a, b).dtype() == DType::F32);
  CHECK(matmul(cast(a, DType::F64), cast(b, DType::F64)).dtype() == DType::F64);
  CHECK_KILN_ERROR(AutocastGuard(DType::F32), "bf16 or f16");
}

TEST_CASE("autocast: gradients reach f32 parameters in f32", "[ops][autocast]") {
  nn::Linear lin(8, 5);
  Generator g(1);
  const Tensor x = test::random_tensor({6, 8}, DType::F32, 7);
  const Tensor t = randint(0, 5, {6}, DType::I64, &g);
  Tensor loss;
  {
    AutocastGuard ac(DType::BF16);
    Tensor y = lin(x);
    CHECK(y.dtype() == DType::BF16);  // the bias follows the product
    loss = cross_entropy(y, t);
    CHECK(loss.dtype() == DType::F32);
  }
  loss.backward();
  REQUIRE(lin.weight.grad().defined());
  CHECK(lin.weight.grad().dtype() == DType::F32);
  CHECK(lin.bias.grad().dtype() == DType::F32);
  // Against f32: the same gradients to bf16 precision.
  Tensor w = lin.weight.detach().clone().requires_grad_(true), b = lin.bias.detach().clone().requires_grad_(true);
  cross_entropy(add(matmul(x, w.t()), b), t).backward();
  CHECK_CLOSE_TOL(lin.weight.grad(), w.grad(), 3e-2, 3e-3);
  CHECK_CLOSE_TOL(lin.bias.grad(), b.grad(), 3e-2, 3e-3);
}

// The relative difference |a - b| / |b| of two gradients, over all elements.
double rel_diff(const Tensor& a, const Tensor& b) {
  const double d = std::sqrt(sum(mul(sub(a, b), sub(a, b))).item<double>());
  return d / std::sqrt(sum(mul(b, b)).item<double>());
}

TEST_CASE("autocast: a GPT step in bf16 and f16 agrees with f32 within half precision", "[ops][autocast][gpt]") {
  models::GPTConfig c;
  c.n_layer = 2;
  c.n_head = 2;
  c.n_embd = 32;
  c.block_size = 16;
  c.vocab_size = 23;
  Generator gen(5);
  models::GPT m(c, gen);
  const Tensor idx = randint(0, 23, {3, 16}, DType::I64, &gen), tgt = randint(0, 23, {3, 16}, DType::I64, &gen);
  auto step = [&](std::optional<DType> half, Tensor& logits) {
    m.zero_grad();
    Tensor loss;
    {
      std::optional<AutocastGuard> ac;
      if (half) ac.emplace(*half);
      logits = m(idx);
      loss = cross_entropy(logits.reshape({-1, 23}), tgt.reshape({-1}));
    }
    loss.backward();
    std::map<std::string, Tensor> grads;
    for (const auto& [name, p] : m.named_parameters()) grads[name] = p.grad().clone();
    return std::make_pair(loss.item<double>(), grads);
  };
  Tensor l32, lh;
  const auto [loss32, g32] = step(std::nullopt, l32);
  for (DType half : {DType::BF16, DType::F16}) {
    INFO(dtype_name(half));
    const auto [lossh, gh] = step(half, lh);
    CHECK(lh.dtype() == half);  // the head is a product
    CHECK(std::fabs(lossh - loss32) < 2e-2);
    CHECK_CLOSE_TOL(cast(lh, DType::F32), l32, 5e-2, 5e-2);
    for (const auto& [name, g] : g32) {
      INFO(name);
      CHECK(gh.at(name).dtype() == DType::F32);  // f32 master weights get f32 gradients
      CHECK(rel_diff(gh.at(name), g) < (half == DType::BF16 ? 5e-2 : 1e-2));
    }
  }
}

}  // namespace
}  // namespace kiln
