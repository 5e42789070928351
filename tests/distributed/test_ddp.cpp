// DistributedDataParallel inside one process: the bucket layout (reverse registration
// order, a small first bucket, caps, a new bucket per dtype), a world of one (gradients
// equal plain backward, no_sync accumulation), two ranks on threads over Gloo (replicas
// that start different end equal and match one process on the whole batch), and the
// errors. The multi-process tests through kiln-run are ctest entries.
#include "test_util.h"
#include "distributed/dist_test_util.h"

#include <thread>

using namespace kiln;
using namespace kiln::dist;
using namespace std::chrono_literals;
using kiln::test::vec;

namespace {

std::shared_ptr<nn::Sequential> mlp(uint64_t seed) {
  manual_seed(seed);
  return std::make_shared<nn::Sequential>(std::make_shared<nn::Linear>(6, 16), std::make_shared<nn::Tanh>(),
                                          std::make_shared<nn::Linear>(16, 16), std::make_shared<nn::Tanh>(),
                                          std::make_shared<nn::Linear>(16, 3));
}

std::shared_ptr<ProcessGroup> world_of_one() { return new_process_group("local", nullptr, 0, 1); }

}  // namespace

TEST_CASE("DDP buckets: reverse registration order, small first bucket, caps", "[distributed][ddp]") {
  auto m = mlp(1);  // 0.weight 96, 0.bias 16, 2.weight 256, 2.bias 16, 4.weight 48, 4.bias 3 floats
  DDPOptions o;
  o.first_bucket_cap_mb = 200.0 / (1 << 20);  // 200 bytes = 50 floats
  o.bucket_cap_mb = 1100.0 / (1 << 20);       // 275 floats
  DistributedDataParallel ddp(m, world_of_one(), o);
  auto b = ddp.bucket_names();
  // A bucket closes once it holds at least its cap.
  REQUIRE(b.size() == 3);
  CHECK(b[0] == std::vector<std::string>{"4.bias", "4.weight"});          // 51 floats >= 50
  CHECK(b[1] == std::vector<std::string>{"2.bias", "2.weight", "0.bias"});  // 288 >= 275
  CHECK(b[2] == std::vector<std::string>{"0.weight"});

  DistributedDataParallel one(mlp(1), world_of_one());  // defaults: everything fits
  CHECK(one.bucket_names().size() == 1);
}

TEST_CASE("DDP in a world of one: same gradients, no_sync accumulates", "[distributed][ddp]") {
  auto a = mlp(3), b = mlp(3);
  DistributedDataParallel ddp(a, world_of_one());
  Tensor x = randn({5, 6}), y = randn({5, 3});
  mse_loss(ddp(x), y).backward();
  mse_loss((*b)(x), y).backward();
  auto pa = a->parameters(), pb = b->parameters();
  for (size_t i = 0; i < pa.size(); ++i) CHECK_EQUAL_T(pa[i].grad(), pb[i].grad());
  CHECK(ddp.last_stats().launched_during_backward == ddp.last_stats().buckets);

  // Accumulation: one step under no_sync, one synced, equals two plain backwards.
  for (auto& p : pa) p.set_grad(Tensor());
  for (auto& p : pb) p.set_grad(Tensor());
  Tensor x2 = randn({5, 6});
  {
    auto guard = ddp.no_sync();
    mse_loss(ddp(x), y).backward();
  }
  mse_loss(ddp(x2), y).backward();
  mse_loss((*b)(x), y).backward();
  mse_loss((*b)(x2), y).backward();
  for (size_t i = 0; i < pa.size(); ++i) CHECK_CLOSE(pa[i].grad(), pb[i].grad());
}

TEST_CASE("DDP on 2 ranks (threads, Gloo): replicas end equal and match one process", "[distributed][ddp]") {
  Tensor x = randn({8, 6}), y = randn({8, 3});
  std::vector<std::vector<float>> finals(2);
  kiln::test::with_gloo_groups(2, [&](const std::shared_ptr<ProcessGroup>& pg) {
    const int r = pg->rank();
    std::shared_ptr<nn::Sequential> m;
    {
      static std::mutex mu;  // manual_seed + construction use the shared default generator
      std::lock_guard<std::mutex> lk(mu);
      m = mlp(10 + r);  // replicas start different
    }
    DDPOptions o;
    o.bucket_cap_mb = 400.0 / (1 << 20);
    o.first_bucket_cap_mb = 100.0 / (1 << 20);
    DistributedDataParallel ddp(m, pg, o);
    SGDOptions so;
    so.lr = 0.1;
    so.momentum = 0.9;
    SGD opt(m->parameters(), so);
    for (int step = 0; step < 3; ++step) {
      opt.zero_grad();
      mse_loss(ddp(x.narrow(0, 4 * r, 4)), y.narrow(0, 4 * r, 4)).backward();
      opt.step();
    }
    for (auto& p : m->parameters()) {
      auto v = p.to_vector<float>();
      finals[r].insert(finals[r].end(), v.begin(), v.end());
    }
  });
  CHECK(finals[0] == finals[1]);  // bit-identical

  auto ref = mlp(10);  // rank 0's initial weights, the whole batch
  SGDOptions so;
  so.lr = 0.1;
  so.momentum = 0.9;
  SGD opt(ref->parameters(), so);
  for (int step = 0; step < 3; ++step) {
    opt.zero_grad();
    mse_loss((*ref)(x), y).backward();
    opt.step();
  }
  std::vector<float> want;
  for (auto& p : ref->parameters()) {
    auto v = p.to_vector<float>();
    want.insert(want.end(), v.begin(), v.end());
  }
  REQUIRE(want.size() == finals[0].size());
  for (size_t i = 0; i < want.size(); ++i) CHECK(finals[0][i] == Approx(want[i]).epsilon(1e-4).margin(1e-6));
}

TEST_CASE("DDP errors", "[distributed][ddp]") {
  REQUIRE_KILN_ERROR(DistributedDataParallel(nullptr, world_of_one()), "null module");
  auto frozen = std::make_shared<nn::Linear>(2, 2);
  for (auto& p : frozen->parameters()) p.set_requires_grad(false);
  REQUIRE_KILN_ERROR(DistributedDataParallel(frozen, world_of_one()), "no parameters that require grad");
  DDPOptions bad;
  bad.bucket_cap_mb = 0;
  REQUIRE_KILN_ERROR(DistributedDataParallel(mlp(1), world_of_one(), bad), "bucket caps must be positive");
  // Converting the module after wrapping it: the gradient no longer fits its bucket.
  auto m = mlp(1);
  DistributedDataParallel ddp(m, world_of_one());
  m->to(DType::F64);
  Tensor x = randn({2, 6}, TensorOptions(DType::F64));
  REQUIRE_KILN_ERROR(sum(ddp(x)).backward(), "convert the module before wrapping it");
}

TEST_CASE("DDP writes gradients straight into its buckets (gradient as bucket view)", "[distributed][ddp]") {
  auto m = mlp(1);
  DDPOptions o;
  o.first_bucket_cap_mb = 100;  // one bucket: every gradient is a slice of the same buffer
  DistributedDataParallel ddp(m, world_of_one(), o);
  auto params = m->parameters();
  REQUIRE(params.size() >= 2);
  std::vector<const void*> seen(params.size(), nullptr);
  std::vector<int> ids;
  for (size_t i = 0; i < params.size(); ++i)
    ids.push_back(params[i].register_hook([&seen, i](const Tensor& g) { seen[i] = g.storage().get(); }));
  Tensor x = randn({4, 6});
  for (int step = 0; step < 2; ++step) {
    m->zero_grad();  // set_to_none: the next backward writes into the bucket directly
    mean(ddp(x)).backward();
    // Already inside the hooks (before DDP's end-of-backward), each .grad is a view of the
    // one bucket: written there by autograd, not cloned and copied.
    for (size_t i = 0; i < params.size(); ++i) {
      INFO("param " << i << ", step " << step);
      CHECK(seen[i] == seen[0]);
      CHECK(params[i].grad().storage().get() == seen[0]);
    }
  }
  for (size_t i = 0; i < params.size(); ++i) params[i].remove_hook(ids[i]);
  // The wrapper is a Module: the wrapped model is its child "module", as in PyTorch.
  CHECK(ddp.named_children().at(0).first == "module");
  CHECK(ddp.parameters().size() == params.size());
  std::shared_ptr<nn::Module> as_module = std::make_shared<DistributedDataParallel>(mlp(2), world_of_one());
  CHECK((*as_module)(x).sizes() == mlp(3)->forward(x).sizes());
}
