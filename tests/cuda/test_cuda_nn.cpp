// nn on CUDA against the CPU: Module::to(device) keeps the parameter handles and moves
// grads and buffers, init draws the same Philox numbers on both devices, an MLP's
// forward and backward agree, and state dicts load across devices.
#include "test_util.h"

using namespace kiln;
using namespace kiln::nn;
using test::cuda0;

namespace {

std::shared_ptr<Sequential> mlp(uint64_t seed) {
  manual_seed(seed);
  return std::make_shared<Sequential>(std::make_shared<Linear>(33, 65), std::make_shared<GELU>("tanh"),
                                      std::make_shared<Linear>(65, 7), std::make_shared<LogSoftmax>(-1));
}

}  // namespace

TEST_CASE("cuda nn: init draws the same numbers on both devices", "[cuda][nn]") {
  Tensor c = empty({129, 257});
  Tensor g = empty({129, 257}, cuda0());
  Generator gc(3), gg(3);
  init::kaiming_uniform_(c, 0.0, init::FanMode::FanIn, init::Nonlinearity::ReLU, &gc);
  init::kaiming_uniform_(g, 0.0, init::FanMode::FanIn, init::Nonlinearity::ReLU, &gg);
  CHECK_CLOSE_TOL(g.cpu(), c, 1e-6, 1e-7);
  init::xavier_normal_(c, 1.0, &gc);
  init::xavier_normal_(g, 1.0, &gg);
  CHECK_CLOSE_TOL(g.cpu(), c, 1e-5, 1e-6);
  // A layer built on the device equals the same layer built on the CPU.
  manual_seed(8);
  Linear lc(40, 30);
  manual_seed(8);
  Linear lg(40, 30, true, cuda0());
  REQUIRE(lg.weight.is_cuda());
  CHECK_CLOSE_TOL(lg.weight.cpu(), lc.weight, 1e-6, 1e-7);
  CHECK_CLOSE_TOL(lg.bias.cpu(), lc.bias, 1e-6, 1e-7);
}

TEST_CASE("cuda nn: to(device) keeps handles; forward and backward agree with the CPU", "[cuda][nn]") {
  auto cpu = mlp(1);
  auto gpu = mlp(1);
  Tensor w = gpu->at<Linear>(0)->weight;
  gpu->to(cuda0());
  CHECK(gpu->at<Linear>(0)->weight.is_same(w));
  for (const Tensor& p : gpu->parameters()) {
    CHECK(p.is_cuda());
    CHECK(p.requires_grad());
    CHECK(p.is_leaf());
  }
  Tensor x = test::random_tensor({17, 33}, DType::F32, 2);
  Tensor yc = cpu->forward(x);
  Tensor yg = gpu->forward(x.to(cuda0()));
  REQUIRE(yg.is_cuda());
  CHECK_CLOSE_TOL(yg.cpu(), yc, 1e-4, 1e-5);

  Tensor go = test::random_tensor(yc.sizes(), DType::F32, 3);
  yc.backward(go);
  yg.backward(go.to(cuda0()));
  auto pc = cpu->named_parameters(), pg = gpu->named_parameters();
  REQUIRE(pc.size() == pg.size());
  for (size_t i = 0; i < pc.size(); ++i) {
    INFO(pc[i].first);
    REQUIRE(pg[i].second.grad().defined());
    CHECK(pg[i].second.grad().is_cuda());
    CHECK_CLOSE_TOL(pg[i].second.grad().cpu(), pc[i].second.grad(), 1e-4, 1e-4);
  }

  // Grads move with their parameters.
  gpu->to(kCPU);
  CHECK(w.device() == kCPU);
  CHECK(w.grad().device() == kCPU);
  CHECK_CLOSE_TOL(w.grad(), cpu->at<Linear>(0)->weight.grad(), 1e-4, 1e-4);
}

TEST_CASE("cuda nn: state dicts load across devices", "[cuda][nn]") {
  auto src = mlp(4);
  auto dst = mlp(5);
  dst->to(cuda0());
  dst->load_state_dict(src->state_dict());  // CPU values into CUDA parameters
  CHECK(dst->at<Linear>(2)->bias.is_cuda());
  Tensor x = test::random_tensor({9, 33}, DType::F32, 6);
  CHECK_CLOSE_TOL(dst->forward(x.to(cuda0())).cpu(), src->forward(x), 1e-4, 1e-5);
  auto back = mlp(6);
  back->load_state_dict(dst->state_dict());  // and back
  CHECK(test::bit_equal(back->at<Linear>(0)->weight, src->at<Linear>(0)->weight));
}

TEST_CASE("cuda nn: Embedding and Dropout layers on the device", "[cuda][nn]") {
  manual_seed(9);
  Embedding ec(50, 8, 3);
  manual_seed(9);
  Embedding eg(50, 8, 3);
  eg.to(cuda0());
  Tensor idx = from_vector<int64_t>({3, 7, 7, 49, 0}, {5});
  CHECK(test::bit_equal(eg.forward(idx.to(cuda0())).cpu(), ec.forward(idx)));
  Generator g1(10), g2(10);
  Dropout dc(0.3, &g1), dg(0.3, &g2);
  Tensor x = test::random_tensor({31, 67}, DType::F32, 11);
  CHECK_CLOSE(dg.forward(x.to(cuda0())).cpu(), dc.forward(x));
}
