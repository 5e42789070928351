// GradScaler (optim/grad_scaler.h): scaling, unscaling to the true gradients, skipping a
// step whose gradients overflow (the parameters and the optimizer state untouched), backoff
// and growth of the scale, the disabled pass-through, the state dict, and misuse.
#include "test_util.h"

#include <kiln/optim/grad_scaler.h>

namespace kiln {
namespace {

TEST_CASE("GradScaler: scale, unscale, skip on overflow, backoff and growth", "[optim][grad_scaler]") {
  Tensor w = from_vector<float>({1.0f, -2.0f, 3.0f}).requires_grad_(true);
  SGD opt({w}, SGDOptions{.lr = 0.1});
  GradScalerOptions o;
  o.init_scale = 1024.0;
  o.growth_interval = 3;
  GradScaler scaler(o);
  auto backward = [&](double factor) {
    opt.zero_grad();
    Tensor loss = mul(sum(mul(w, w)), factor);  // d/dw = 2 w factor
    Tensor scaled = scaler.scale(loss);
    CHECK(scaled.item<double>() == Approx(loss.item<double>() * scaler.get_scale()));
    scaled.backward();
  };
  // A clean step: the optimizer sees the true gradient 2w.
  backward(1.0);
  scaler.unscale_(opt);
  CHECK_CLOSE_TOL(w.grad(), from_vector<float>({2.0f, -4.0f, 6.0f}), 1e-6, 1e-6);
  CHECK(scaler.step(opt));
  scaler.update();
  CHECK_CLOSE_TOL(w.detach(), from_vector<float>({0.8f, -1.6f, 2.4f}), 1e-6, 1e-6);
  CHECK(scaler.get_scale() == 1024.0);
  // An overflowing step (an inf gradient): skipped, parameters unchanged, scale halved.
  const Tensor before = w.detach().clone();
  backward(std::numeric_limits<double>::infinity());
  CHECK_FALSE(scaler.step(opt));
  scaler.update();
  CHECK(test::equal(w.detach(), before));
  CHECK(scaler.get_scale() == 512.0);
  CHECK(scaler.skipped_steps() == 1);
  // growth_interval (3) clean steps double it.
  for (int i = 0; i < 3; ++i) {
    backward(1.0);
    CHECK(scaler.step(opt));
    scaler.update();
  }
  CHECK(scaler.get_scale() == 1024.0);
  // State dict round trip.
  GradScaler other(o);
  other.load_state_dict(scaler.state_dict());
  CHECK(other.get_scale() == 1024.0);
  // Misuse.
  backward(1.0);
  scaler.unscale_(opt);
  CHECK_KILN_ERROR(scaler.unscale_(opt), "called twice");
  GradScaler fresh(o);
  CHECK_KILN_ERROR(fresh.update(), "step()");
  o.backoff_factor = 1.5;
  CHECK_KILN_ERROR(GradScaler{o}, "backoff_factor");
}

TEST_CASE("GradScaler: f16 gradients that underflow unscaled survive scaling", "[optim][grad_scaler]") {
  // An f32 master weight used in f16 (as under autocast), with a loss whose gradient, 1e-8
  // per element, is below f16's smallest subnormal (6e-8).
  Tensor w = full({4}, 1.0, TensorOptions(DType::F32)).requires_grad_(true);
  SGD opt({w}, SGDOptions{.lr = 1.0});
  auto loss_of = [&] { return mul(cast(sum(cast(w, DType::F16)), DType::F32), 1e-8); };  // an f32 loss, as autocast gives
  loss_of().backward();  // unscaled: the f16 gradient rounds to 0
  CHECK(sum(abs(w.grad())).item<double>() == 0.0);
  w.set_grad(Tensor());
  GradScaler scaler;  // 65536
  scaler.scale(loss_of()).backward();
  scaler.unscale_(opt);
  CHECK(w.grad().dtype() == DType::F32);
  CHECK(w.grad().to_vector<double>()[0] == Approx(1e-8).epsilon(0.01));
}

TEST_CASE("GradScaler: disabled is a pass-through", "[optim][grad_scaler]") {
  Tensor w = from_vector<float>({1.0f}).requires_grad_(true);
  SGD opt({w}, SGDOptions{.lr = 0.5});
  GradScalerOptions o;
  o.enabled = false;
  GradScaler scaler(o);
  Tensor loss = sum(mul(w, w));
  CHECK(scaler.scale(loss).item<double>() == 1.0);
  scaler.scale(loss).backward();
  CHECK(scaler.step(opt));
  scaler.update();
  CHECK(w.detach().item<double>() == Approx(0.0));
  CHECK(scaler.get_scale() == 1.0);
}

}  // namespace
}  // namespace kiln
