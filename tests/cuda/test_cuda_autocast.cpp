// Autocast on CUDA (ops/autocast.h): a GPT training step under bf16 and f16 autocast on the
// GPU against the same step in f32 on the CPU, loss and every gradient within half
// precision; f16 with the GradScaler's scaling.
#include "test_util.h"

#include <kiln/ops/autocast.h>
#include <kiln/optim/grad_scaler.h>

using namespace kiln;
using test::cuda0;

TEST_CASE("cuda autocast: a GPT step in bf16/f16 on the GPU against f32 on the CPU", "[cuda][autocast]") {
  models::GPTConfig c;
  c.n_layer = 2;
  c.n_head = 4;
  c.n_embd = 64;
  c.block_size = 32;
  c.vocab_size = 50;
  Generator gen(3);
  models::GPT cpu(c, gen);
  const Tensor idx = randint(0, 50, {4, 32}, DType::I64, &gen), tgt = randint(0, 50, {4, 32}, DType::I64, &gen);
  Tensor ref = cross_entropy(cpu(idx).reshape({-1, 50}), tgt.reshape({-1}));
  ref.backward();
  for (DType half : {DType::BF16, DType::F16}) {
    INFO(dtype_name(half));
    Generator g2(3);
    models::GPT gpu(c, g2);
    gpu.to(cuda0());
    GradScaler scaler(GradScalerOptions{.enabled = half == DType::F16});
    Tensor loss;
    {
      AutocastGuard ac(half);
      loss = cross_entropy(gpu(idx.to(cuda0())).reshape({-1, 50}), tgt.to(cuda0()).reshape({-1}));
    }
    scaler.scale(loss).backward();
    CHECK(std::fabs(loss.item<double>() - ref.item<double>()) < 2e-2);
    const auto gp = gpu.named_parameters(), cp = cpu.named_parameters();
    for (size_t i = 0; i < gp.size(); ++i) {
      INFO(gp[i].first);
      Tensor g = gp[i].second.grad().cpu();
      CHECK(g.dtype() == DType::F32);
      g = mul(g, 1.0 / scaler.get_scale());
      const Tensor r = cp[i].second.grad();
      const double rel = std::sqrt(sum(mul(sub(g, r), sub(g, r))).item<double>() / sum(mul(r, r)).item<double>());
      CHECK(rel < 5e-2);
    }
  }
}
