// No hidden host synchronisation in a training step on CUDA (DESIGN: "The host never
// synchronises in a training step unless a value is read back"): a step of train_cnn's
// model — host batch copied to the device, forward, cross entropy, backward, AdamW — adds
// nothing to host_sync_count(); reading the loss back adds exactly one.
#include "test_util.h"

using namespace kiln;
using test::cuda0;

TEST_CASE("cuda: a train_cnn step performs no host synchronisation", "[cuda][runtime]") {
  Generator gen(5);
  models::ResNetCNNOptions mo;
  auto model = models::resnet_cnn(mo, gen);
  model->to(cuda0());
  model->train();
  AdamWOptions oo;
  oo.lr = 3e-3;
  oo.weight_decay = 1e-2;
  AdamW opt(model->parameters(), oo);
  // Host batches, as the data loader gives them.
  Tensor x = randn({32, 1, 28, 28}, DType::F32, &gen);
  Tensor y = randint(0, mo.num_classes, {32}, DType::I64, &gen);

  auto step = [&] {
    opt.zero_grad();
    Tensor loss = cross_entropy((*model)(x.to(cuda0())), y.to(cuda0()));
    loss.backward();
    opt.step();
    return loss;
  };
  (void)step().item<double>();  // warm-up: cuDNN plans, handles, pools
  synchronize(cuda0());

  const int64_t before = host_sync_count();
  Tensor loss = step();
  CHECK(host_sync_count() == before);
  const double value = loss.item<double>();
  CHECK(std::isfinite(value));
  CHECK(host_sync_count() == before + 1);
}
