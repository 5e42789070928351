// Topologies of neighbor averaging (distributed/topology.h) and the collectives beyond the
// ring: neighbor_allreduce and hierarchical_allreduce on Gloo ranks as threads, checked
// against the mixing matrix computed here, and their failure reports.
#include "test_util.h"
#include "distributed/dist_test_util.h"

#include <atomic>
#include <cmath>
#include <cstring>
#include <thread>

using namespace kiln;
using namespace kiln::dist;
using namespace std::chrono_literals;
using kiln::test::error_of;
using kiln::test::ThreadChecks;
using kiln::test::with_gloo;

namespace {

using Mat = std::vector<std::vector<double>>;

Mat matmul(const Mat& a, const Mat& b) {
  const size_t n = a.size();
  Mat c(n, std::vector<double>(n, 0.0));
  for (size_t i = 0; i < n; ++i)
    for (size_t k = 0; k < n; ++k)
      for (size_t j = 0; j < n; ++j) c[i][j] += a[i][k] * b[k][j];
  return c;
}

// Rank r's starting values: a pattern that differs per rank and per element.
std::vector<double> start_values(int r, int64_t n) {
  std::vector<double> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[i] = std::sin(0.7 * r + 0.31 * i) + r;
  return v;
}

}  // namespace

TEST_CASE("topology: every built-in topology is doubly stochastic for n = 1..17", "[distributed][topology]") {
  for (int n = 1; n <= 17; ++n)
    for (const std::string& name : Topology::names()) {
      INFO(name << " n=" << n);
      Topology t = Topology::named(name, n);
      REQUIRE(t.size() == n);
      for (int s = 0; s < t.period(); ++s) {
        REQUIRE_NOTHROW(Topology::check_doubly_stochastic(t.matrix(s)));
        // Rows agree with the matrix: weights, and the send lists are the transpose.
        const Mat& w = t.matrix(s);
        for (int i = 0; i < n; ++i) {
          Topology::Row row = t.row(i, s);
          double sum = row.self_weight;
          for (size_t k = 0; k < row.recv_from.size(); ++k) {
            CHECK(row.recv_weights[k] == w[i][row.recv_from[k]]);
            sum += row.recv_weights[k];
          }
          CHECK(std::abs(sum - 1.0) < 1e-12);
          for (int dst : row.send_to) CHECK(w[dst][i] > 0);
          int senders = 0;
          for (int j = 0; j < n; ++j) senders += (j != i && w[j][i] > 0);
          CHECK(static_cast<int>(row.send_to.size()) == senders);
        }
      }
      // Connected: consensus is reached (the second singular value is below 1).
      if (n > 1) CHECK(t.spectral_gap_rate() < 1.0 - 1e-9);
    }
}

TEST_CASE("topology: known degrees, periods and the one-peer graph's exact average", "[distributed][topology]") {
  CHECK(Topology::exp2(16).max_degree() == 4);  // 1, 2, 4, 8
  CHECK(Topology::exp2(17).max_degree() == 5);  // 1, 2, 4, 8, 16
  CHECK(Topology::exp2_dynamic(16).period() == 4);
  CHECK(Topology::exp2_dynamic(16).max_degree() == 1);
  CHECK(Topology::ring(2).max_degree() == 1);
  CHECK(Topology::ring(7).max_degree() == 2);
  CHECK(Topology::torus(12).max_degree() == 4);  // 3 x 4
  CHECK(Topology::torus(4).max_degree() == 2);   // 2 x 2: up = down
  CHECK(Topology::full(5).max_degree() == 4);
  CHECK(Topology::full(5).spectral_gap_rate() < 1e-6);
  // For n a power of two, one period of the one-peer exponential graph is the exact
  // average (Ying et al. 2021): W_{m-1} ... W_0 = 11^T / n.
  for (int n : {2, 4, 8, 16}) {
    Topology t = Topology::exp2_dynamic(n);
    Mat p = t.matrix(0);
    for (int s = 1; s < t.period(); ++s) p = matmul(t.matrix(s), p);
    for (int i = 0; i < n; ++i)
      for (int j = 0; j < n; ++j) CHECK(std::abs(p[i][j] - 1.0 / n) < 1e-15);
  }
  // Not for other n: then only asymptotically.
  Topology t6 = Topology::exp2_dynamic(6);
  Mat p6 = matmul(t6.matrix(2), matmul(t6.matrix(1), t6.matrix(0)));
  CHECK(std::abs(p6[0][0] - 1.0 / 6) > 1e-3);
}

TEST_CASE("topology: bad matrices and names give clear errors", "[distributed][topology]") {
  std::string e = error_of([] { Topology::from_matrix({{0.5, 0.5}, {0.5, 0.4}}); });
  CHECK(e.find("row 1") != std::string::npos);
  CHECK(e.find("sums to 0.9") != std::string::npos);
  e = error_of([] { Topology::from_matrix({{0.5, 0.5, 0}, {0.5, 0.5, 0}, {0.5, 0, 0.5}}); });
  CHECK(e.find("column 0") != std::string::npos);
  CHECK(e.find("not doubly stochastic") != std::string::npos);
  e = error_of([] { Topology::from_matrix({{1.5, -0.5}, {-0.5, 1.5}}); });
  CHECK(e.find("not a finite non-negative") != std::string::npos);
  e = error_of([] { Topology::from_matrix({{1, 0}, {0}}); });
  CHECK(e.find("square") != std::string::npos);
  e = error_of([] { Topology::from_matrices({{{1.0}}, {{0.5, 0.5}, {0.5, 0.5}}}); });
  CHECK(e.find("matrix 1") != std::string::npos);
  e = error_of([] { Topology::named("hypercube", 4); });
  CHECK(e.find("unknown topology 'hypercube'") != std::string::npos);
  CHECK(e.find("exp2-dynamic") != std::string::npos);
  e = error_of([] { Topology::ring(0); });
  CHECK(e.find("number of ranks") != std::string::npos);
  e = error_of([] { Topology::ring(4).row(4, 0); });
  CHECK(e.find("rank 4") != std::string::npos);
}

TEST_CASE("gloo: neighbor_allreduce computes W x for every topology on 5 ranks", "[distributed][gloo][neighbor]") {
  const int W = 5;
  const int64_t n = 37;
  ThreadChecks tc;
  with_gloo(W, [&](ProcessGroup& pg) {
    const int r = pg.rank();
    for (const std::string& name : Topology::names()) {
      Topology topo = Topology::named(name, W);
      for (int64_t step : {0, 1, 2}) {
        for (DType dt : {DType::F64, DType::F32}) {
          Tensor x = from_vector(start_values(r, n)).to(dt);
          pg.neighbor_allreduce(x, topo, step)->wait();
          const Mat& w = topo.matrix(step);
          std::vector<double> got = x.to(DType::F64).to_vector<double>();
          double err = 0;
          for (int64_t i = 0; i < n; ++i) {
            double want = 0;
            for (int j = 0; j < W; ++j)
              if (w[r][j] > 0) want += w[r][j] * start_values(j, n)[i];
            err = std::max(err, std::abs(got[i] - want));
          }
          TCHECK(tc, err < (dt == DType::F64 ? 1e-14 : 1e-5),
                 name + " step " + std::to_string(step) + " rank " + std::to_string(r) + " " + dtype_name(dt) +
                     " err " + std::to_string(err));
        }
      }
    }
    // A non-floating tensor and a topology of another size are refused.
    Tensor ints = zeros({4}, TensorOptions(DType::I32));
    std::string e = error_of([&] { pg.neighbor_allreduce(ints, Topology::ring(W), 0); });
    TCHECK(tc, e.find("floating") != std::string::npos, e);
    Tensor f = zeros({4});
    e = error_of([&] { pg.neighbor_allreduce(f, Topology::ring(W + 1), 0); });
    TCHECK(tc, e.find("has 6 ranks but this process group has 5") != std::string::npos, e);
    pg.barrier()->wait();
  });
  REQUIRE_THREAD_CHECKS(tc);
}

TEST_CASE("gloo: the full topology gives bit-identical averages; sparse ones reach consensus",
          "[distributed][gloo][neighbor]") {
  const int W = 4;
  const int64_t n = 1001;
  std::vector<std::vector<float>> full_result(W);
  std::vector<std::vector<double>> distance(W);
  std::vector<std::vector<double>> ring_distance(W);
  ThreadChecks tc;
  with_gloo(W, [&](ProcessGroup& pg) {
    const int r = pg.rank();
    Tensor x = from_vector(start_values(r, n)).to(DType::F32);
    pg.neighbor_allreduce(x, Topology::full(W), 0)->wait();
    full_result[r] = x.to_vector<float>();
    // Consensus distance (mean over ranks of |x_i - mean|^2) after each step, for the
    // one-peer exponential graph (exact after log2(4) = 2 steps) and the ring.
    for (const std::string& name : {std::string("exp2-dynamic"), std::string("ring")}) {
      Topology topo = Topology::named(name, W);
      Tensor y = from_vector(start_values(r, n));
      for (int step = 0; step < 6; ++step) {
        pg.neighbor_allreduce(y, topo, step)->wait();
        Tensor mean = y.clone();
        pg.all_reduce(mean, dist::ReduceOp::Avg)->wait();
        Tensor d = sum(mul(sub(y, mean), sub(y, mean))).reshape({1});
        pg.all_reduce(d, dist::ReduceOp::Avg)->wait();
        (name == "ring" ? ring_distance : distance)[r].push_back(d.item<double>());
      }
    }
  });
  for (int r = 1; r < W; ++r)
    CHECK(std::memcmp(full_result[r].data(), full_result[0].data(), sizeof(float) * n) == 0);
  for (int64_t i = 0; i < n; i += 100) {
    double want = 0;
    for (int j = 0; j < W; ++j) want += start_values(j, n)[i] / W;
    CHECK(std::abs(full_result[0][i] - want) < 1e-5);
  }
  INFO("exp2-dynamic distances " << distance[0][0] << " " << distance[0][1] << " " << distance[0][2]);
  CHECK(distance[0][0] > 1e-2);
  CHECK(distance[0][1] < 1e-25);  // two one-peer steps average 4 ranks exactly
  for (size_t s = 1; s < ring_distance[0].size(); ++s) CHECK(ring_distance[0][s] < ring_distance[0][s - 1] * 0.9);
  CHECK(ring_distance[0].back() < 1e-2 * ring_distance[0].front());
  (void)tc;
}

TEST_CASE("gloo: a rank that skips neighbor_allreduce is named by its neighbors", "[distributed][gloo][neighbor]") {
  ProcessGroupOptions opts;
  opts.timeout = 1500ms;
  std::atomic<int> failed{0};
  std::vector<std::string> errs(3);
  with_gloo(
      3,
      [&](ProcessGroup& pg) {
        Tensor t = ones({16});
        Topology topo = Topology::ring(3);
        pg.neighbor_allreduce(t, topo, 0)->wait();  // #0: all call it
        if (pg.rank() != 2) {
          errs[pg.rank()] = error_of([&] { pg.neighbor_allreduce(t, topo, 1)->wait(); });  // #1: rank 2 never comes
          ++failed;
        } else {
          while (failed < 2) std::this_thread::sleep_for(10ms);
        }
      },
      opts);
  for (int r : {0, 1}) {
    INFO(errs[r]);
    CHECK(errs[r].find("neighbor_allreduce #1") != std::string::npos);
    CHECK(errs[r].find("ring, step 1") != std::string::npos);
    CHECK(errs[r].find("timed out") != std::string::npos);
    CHECK(errs[r].find("ranks that did not call it: 2 (last at #0)") != std::string::npos);
  }
}

TEST_CASE("gloo: hierarchical_allreduce equals all_reduce on 2 nodes x 3 ranks", "[distributed][gloo][hierarchical]") {
  const int W = 6;
  ProcessGroupOptions opts;
  opts.ranks_per_node = 3;
  ThreadChecks tc;
  std::vector<std::vector<std::vector<double>>> results(W);
  with_gloo(
      W,
      [&](ProcessGroup& pg) {
        const int r = pg.rank();
        TCHECK(tc, pg.ranks_per_node() == 3, "");
        for (auto algo : {HierarchicalAlgorithm::Sharded, HierarchicalAlgorithm::Leader}) {
          const std::string an = algo == HierarchicalAlgorithm::Sharded ? "sharded" : "leader";
          for (DType dt : {DType::I64, DType::F64}) {
            // 7 elements: not a multiple of the 3 ranks per node (the shards are padded).
            Tensor t = (arange(1, 8, 1, TensorOptions(DType::F64)) * double(r + 1)).to(dt);
            pg.hierarchical_allreduce(t, dist::ReduceOp::Sum, algo)->wait();
            std::vector<double> want;
            for (int i = 1; i <= 7; ++i) want.push_back(21.0 * i);  // sum of r + 1 over 6 ranks
            TCHECK(tc, (t.to(DType::F64).to_vector<double>() == want), an + " sum " + dtype_name(dt));
            Tensor m = (arange(1, 8, 1, TensorOptions(DType::F64)) * double((r * 5) % 6)).to(dt);
            pg.hierarchical_allreduce(m, dist::ReduceOp::Max, algo)->wait();
            std::vector<double> wm;
            for (int i = 1; i <= 7; ++i) wm.push_back(5.0 * i);
            TCHECK(tc, (m.to(DType::F64).to_vector<double>() == wm), an + " max " + dtype_name(dt));
          }
          Tensor a = from_vector(start_values(r, 1000)).to(DType::F32);
          pg.hierarchical_allreduce(a, dist::ReduceOp::Avg, algo)->wait();
          results[r].push_back(a.to(DType::F64).to_vector<double>());
        }
        pg.barrier()->wait();
      },
      opts);
  REQUIRE_THREAD_CHECKS(tc);
  for (int k = 0; k < 2; ++k) {
    for (int r = 1; r < W; ++r) CHECK(results[r][k] == results[0][k]);  // the same bits on every rank
    double err = 0;
    for (int i = 0; i < 1000; ++i) {
      double want = 0;
      for (int j = 0; j < W; ++j) want += start_values(j, 1000)[i] / W;
      err = std::max(err, std::abs(results[0][k][i] - want));
    }
    CHECK(err < 1e-5);
  }
}

TEST_CASE("hierarchical_allreduce: ranks per node must divide the world", "[distributed][gloo][hierarchical]") {
  ProcessGroupOptions opts;
  opts.ranks_per_node = 2;
  std::vector<std::string> errs(3);
  with_gloo(
      3,
      [&](ProcessGroup& pg) {
        Tensor t = ones({4});
        errs[pg.rank()] = error_of([&] { pg.hierarchical_allreduce(t); });
      },
      opts);
  for (auto& e : errs) CHECK(e.find("3 ranks do not split into nodes of 2") != std::string::npos);
}
