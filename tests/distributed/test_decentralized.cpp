// DecentralizedDataParallel on Gloo ranks as threads: with the full topology ATC and
// gradient tracking are DDP (plain SGD on the whole batch); every mode and topology keeps
// the ranks' mean moving by the mean gradient (doubly stochastic mixing); on data that
// differs by rank, gradient tracking reaches the global least-squares optimum that plain
// decentralized SGD only approaches; DDP's hierarchical all-reduce matches its ring.
#include "test_util.h"
#include "distributed/dist_test_util.h"

#include <cmath>
#include <mutex>

using namespace kiln;
using namespace kiln::dist;
using kiln::test::error_of;
using kiln::test::ThreadChecks;

namespace {

std::shared_ptr<nn::Sequential> mlp(uint64_t seed) {
  static std::mutex mu;  // manual_seed + construction use the shared default generator
  std::lock_guard<std::mutex> lk(mu);
  manual_seed(seed);
  return std::make_shared<nn::Sequential>(std::make_shared<nn::Linear>(6, 16), std::make_shared<nn::Tanh>(),
                                          std::make_shared<nn::Linear>(16, 3));
}

std::vector<double> flat_params(nn::Module& m) {
  std::vector<double> out;
  for (auto& p : m.parameters()) {
    auto v = p.to(DType::F64).to_vector<double>();
    out.insert(out.end(), v.begin(), v.end());
  }
  return out;
}

// Rank r's data for a global batch x, y of 4 * world rows.
Tensor rows(const Tensor& t, int r) { return t.narrow(0, 4 * r, 4); }

// One decentralized step of rank r on its rows, as a trainer makes it.
void dp_step(DecentralizedDataParallel& dp, Optimizer& opt, const Tensor& x, const Tensor& y, int r) {
  opt.zero_grad();
  mse_loss(dp(rows(x, r)), rows(y, r)).backward();
  dp.before_step();
  opt.step();
  dp.after_step();
}

}  // namespace

TEST_CASE("decentralized: with the full topology ATC and gradient tracking equal DDP's SGD",
          "[distributed][decentralized]") {
  const int W = 4;
  manual_seed(5);
  Tensor x = randn({4 * W, 6}, TensorOptions(DType::F64)), y = randn({4 * W, 3}, TensorOptions(DType::F64));
  for (auto mode : {DecentralizedMode::AdaptThenCombine, DecentralizedMode::GradientTracking}) {
    std::vector<std::vector<double>> finals(W);
    kiln::test::with_gloo_groups(W, [&](const std::shared_ptr<ProcessGroup>& pg) {
      const int r = pg->rank();
      auto m = mlp(20 + r);  // replicas start different: rank 0's state is broadcast
      m->to(DType::F64);
      DecentralizedOptions o;
      o.topology = Topology::full(W);
      o.mode = mode;
      DecentralizedDataParallel dp(m, pg, o);
      SGDOptions so;
      so.lr = 0.2;
      SGD opt(m->parameters(), so);
      for (int step = 0; step < 4; ++step) {
        dp_step(dp, opt, x, y, r);
      }
      finals[r] = flat_params(*m);
      CHECK_NOTHROW(dp.consensus_distance());
    });
    for (int r = 1; r < W; ++r) CHECK(finals[r] == finals[0]);  // bit-identical: the full graph averages exactly
    auto ref = mlp(20);
    ref->to(DType::F64);
    SGDOptions so;
    so.lr = 0.2;
    SGD opt(ref->parameters(), so);
    for (int step = 0; step < 4; ++step) {
      opt.zero_grad();
      mse_loss((*ref)(x), y).backward();
      opt.step();
    }
    std::vector<double> want = flat_params(*ref);
    double err = 0;
    for (size_t i = 0; i < want.size(); ++i) err = std::max(err, std::abs(want[i] - finals[0][i]));
    INFO("mode " << decentralized_mode_name(mode) << " max |diff| " << err);
    CHECK(err < 1e-12);
  }
}

TEST_CASE("decentralized: every mode and topology moves the ranks' mean by the mean gradient",
          "[distributed][decentralized]") {
  const int W = 4;
  manual_seed(6);
  Tensor x = randn({4 * W, 6}, TensorOptions(DType::F64)), y = randn({4 * W, 3}, TensorOptions(DType::F64));
  ThreadChecks tc;
  for (auto mode : {DecentralizedMode::AdaptThenCombine, DecentralizedMode::Overlap, DecentralizedMode::GradientTracking})
    for (const std::string& topo : {std::string("exp2-dynamic"), std::string("ring"), std::string("exp2")}) {
      kiln::test::with_gloo_groups(W, [&](const std::shared_ptr<ProcessGroup>& pg) {
        const int r = pg->rank();
        auto m = mlp(30);
        m->to(DType::F64);
        DecentralizedOptions o;
        o.topology = Topology::named(topo, W);
        o.mode = mode;
        DecentralizedDataParallel dp(m, pg, o);
        SGDOptions so;
        so.lr = 0.3;
        SGD opt(m->parameters(), so);
        std::vector<Tensor> raw_grads;  // GradientTracking: the sum of tracked gradients is the sum of raw ones
        for (int step = 0; step < 5; ++step) {
          Tensor before = from_vector(flat_params(*m));
          pg->all_reduce(before, dist::ReduceOp::Avg)->wait();
          opt.zero_grad();
          mse_loss(dp(rows(x, r)), rows(y, r)).backward();
          std::vector<double> g;
          for (auto& p : m->parameters()) {
            auto v = p.grad().to_vector<double>();
            g.insert(g.end(), v.begin(), v.end());
          }
          Tensor gmean = from_vector(g);
          pg->all_reduce(gmean, dist::ReduceOp::Avg)->wait();
          dp.before_step();
          opt.step();
          dp.after_step();
          Tensor after = from_vector(flat_params(*m));
          pg->all_reduce(after, dist::ReduceOp::Avg)->wait();
          // mean(x') = mean(x) - lr mean(g): exact for ATC and overlap; for gradient
          // tracking the mean of y is the mean of g by construction.
          double err = max(abs(sub(after, sub(before, mul(gmean, Scalar(0.3)))))).item<double>();
          TCHECK(tc, err < 1e-12, std::string(decentralized_mode_name(mode)) + " " + topo + " step " +
                                       std::to_string(step) + " err " + std::to_string(err));
        }
        // The ranks are not all equal on a sparse graph, but close.
        const double d = dp.consensus_distance();
        TCHECK(tc, d > 0 && d < 1.0, std::string(decentralized_mode_name(mode)) + " " + topo + " distance " +
                                        std::to_string(d));
      });
    }
  REQUIRE_THREAD_CHECKS(tc);
}

TEST_CASE("decentralized: gradient tracking reaches the global optimum on heterogeneous data",
          "[distributed][decentralized]") {
  // Least squares, each rank with its own data (a different offset in y): the global
  // optimum minimises the sum of the ranks' losses. Decentralized SGD with a constant
  // step stops at a distance O(lr) from it; gradient tracking converges to it.
  const int W = 4;
  manual_seed(7);
  Tensor x = randn({4 * W, 6}, TensorOptions(DType::F64));
  Tensor y = randn({4 * W, 1}, TensorOptions(DType::F64));
  for (int r = 0; r < W; ++r) y.narrow(0, 4 * r, 4).add_(Scalar(3.0 * r));
  // The global optimum [w; b] of mean over all rows of (x w + b - y)^2: the normal equations.
  Tensor xa = cat({x, ones({4 * W, 1}, TensorOptions(DType::F64))}, 1);
  Tensor xtx = matmul(xa.transpose(0, 1), xa), xty = matmul(xa.transpose(0, 1), y);
  // Solve by gradient descent to machine precision (7 x 7, well conditioned).
  Tensor opt_w = zeros({7, 1}, TensorOptions(DType::F64));
  for (int it = 0; it < 20000; ++it) opt_w.sub_(sub(matmul(xtx, opt_w), xty), Scalar(0.01));
  std::vector<double> wstar = opt_w.to_vector<double>();

  std::map<DecentralizedMode, double> error;
  for (auto mode : {DecentralizedMode::AdaptThenCombine, DecentralizedMode::GradientTracking}) {
    std::vector<double> errs(W);
    kiln::test::with_gloo_groups(W, [&](const std::shared_ptr<ProcessGroup>& pg) {
      const int r = pg->rank();
      std::shared_ptr<nn::Linear> m;
      {
        static std::mutex mu;
        std::lock_guard<std::mutex> lk(mu);
        manual_seed(8);
        m = std::make_shared<nn::Linear>(6, 1);
      }
      m->to(DType::F64);
      DecentralizedOptions o;
      o.topology = Topology::ring(W);
      o.mode = mode;
      DecentralizedDataParallel dp(m, pg, o);
      SGDOptions so;
      so.lr = 0.05;
      SGD opt(m->parameters(), so);
      for (int step = 0; step < 2000; ++step) {
        dp_step(dp, opt, x, y, r);
      }
      std::vector<double> w = flat_params(*m);  // weight (6), then bias (1)
      double e = 0;
      for (int i = 0; i < 7; ++i) e = std::max(e, std::abs(w[i] - wstar[i]));
      errs[r] = e;
    });
    error[mode] = *std::max_element(errs.begin(), errs.end());
  }
  INFO("ATC error " << error[DecentralizedMode::AdaptThenCombine] << ", gradient tracking error "
                    << error[DecentralizedMode::GradientTracking]);
  CHECK(error[DecentralizedMode::GradientTracking] < 1e-7);
  CHECK(error[DecentralizedMode::AdaptThenCombine] > 1e-3);
}

TEST_CASE("decentralized: exact averaging every k steps and average_exactly", "[distributed][decentralized]") {
  const int W = 3;
  manual_seed(9);
  Tensor x = randn({4 * W, 6}), y = randn({4 * W, 3});
  std::vector<double> dist_after_exact(W), dist_after_neighbor(W), dist_after_average(W);
  kiln::test::with_gloo_groups(W, [&](const std::shared_ptr<ProcessGroup>& pg) {
    const int r = pg->rank();
    auto m = mlp(40);
    DecentralizedOptions o;
    o.topology = Topology::ring(W);  // for 3 ranks the ring is full: use exp2-dynamic's one peer instead
    o.topology = Topology::exp2_dynamic(W);
    o.exact_average_every = 3;
    DecentralizedDataParallel dp(m, pg, o);
    SGDOptions so;
    so.lr = 0.1;
    SGD opt(m->parameters(), so);
    for (int step = 0; step < 4; ++step) {
      dp_step(dp, opt, x, y, r);
      if (step == 2) dist_after_exact[r] = dp.consensus_distance();     // steps 0, 1: one peer; 2: exact
      if (step == 3) dist_after_neighbor[r] = dp.consensus_distance();  // one peer again
    }
    dp.average_exactly();
    dist_after_average[r] = dp.consensus_distance();
    CHECK(dp.step() == 4);
  });
  CHECK(dist_after_exact[0] < 1e-12);
  CHECK(dist_after_neighbor[0] > 1e-10);
  CHECK(dist_after_average[0] < 1e-12);
}

TEST_CASE("decentralized: errors", "[distributed][decentralized]") {
  auto one = new_process_group("local", nullptr, 0, 1);
  DecentralizedOptions o;
  o.topology = Topology::ring(2);
  REQUIRE_KILN_ERROR(DecentralizedDataParallel(mlp(1), one, o), "has 2 ranks but the process group has 1");
  REQUIRE_KILN_ERROR(parse_decentralized_mode("gossip"), "unknown decentralized mode 'gossip'");
  CHECK(parse_decentralized_mode("gradient-tracking") == DecentralizedMode::GradientTracking);
  // A world of one: the wrapper is the model.
  DecentralizedDataParallel dp(mlp(1), one, {});
  Tensor in = randn({2, 6});
  CHECK(dp(in).sizes() == std::vector<int64_t>{2, 3});
  dp.before_step();
  dp.after_step();
  CHECK(dp.consensus_distance() == 0.0);
}

TEST_CASE("DDP with hierarchical all-reduce matches the ring on 4 ranks (2 nodes)", "[distributed][ddp][hierarchical]") {
  const int W = 4;
  manual_seed(11);
  Tensor x = randn({4 * W, 6}), y = randn({4 * W, 3});
  std::map<std::string, std::vector<std::vector<double>>> finals;
  for (std::string how : {"ring", "sharded", "leader"}) {
    finals[how].resize(W);
    ProcessGroupOptions po;
    po.ranks_per_node = 2;
    kiln::test::with_gloo_groups(
        W,
        [&](const std::shared_ptr<ProcessGroup>& pg) {
          const int r = pg->rank();
          auto m = mlp(50);
          DDPOptions o;
          o.hierarchical = how != "ring";
          o.hierarchical_algorithm = how == "leader" ? HierarchicalAlgorithm::Leader : HierarchicalAlgorithm::Sharded;
          o.first_bucket_cap_mb = 100.0 / (1 << 20);
          DistributedDataParallel ddp(m, pg, o);
          SGDOptions so;
          so.lr = 0.1;
          SGD opt(m->parameters(), so);
          for (int step = 0; step < 3; ++step) {
            opt.zero_grad();
            mse_loss(ddp(rows(x, r)), rows(y, r)).backward();
            opt.step();
          }
          finals[how][r] = flat_params(*m);
        },
        po);
  }
  for (auto& [how, f] : finals) {
    INFO(how);
    for (int r = 1; r < W; ++r) CHECK(f[r] == f[0]);
    for (size_t i = 0; i < f[0].size(); ++i) CHECK(f[0][i] == Approx(finals["ring"][0][i]).epsilon(1e-5).margin(1e-7));
  }
}
