// Communication topologies for decentralized (neighbor) averaging, as in BlueFog: which
// ranks each rank averages with, and with what weights. A topology over n ranks is a
// mixing matrix W (n x n, doubly stochastic: non-negative, every row and every column
// sums to 1) per step; neighbor averaging replaces rank i's tensor x_i by
// sum_j W[i][j] x_j. Doubly stochastic W keeps the ranks' mean unchanged, and when W is
// connected its powers drive every rank to that mean (consensus). A dynamic topology
// has a period of matrices that it cycles through (matrix step mod period).
//
//   ring          i <-> i +- 1, weights 1/3 (n = 2: 1/2; n = 1: itself)
//   torus         a 2-D torus of rows x cols = n (the factorisation closest to square),
//                 up/down/left/right neighbors, uniform weights 1/(degree + 1)
//   exp2          static exponential graph: i -> i + 2^k (mod n) for every 2^k < n,
//                 uniform weights 1/(neighbors + 1) (directed; in- and out-degree equal)
//   exp2-dynamic  one-peer exponential graph: at step t only i -> i + 2^(t mod m),
//                 m = the number of powers of two below n; weights 1/2 and 1/2
//   full          every rank with every rank, weights 1/n (the exact average)
//
// Or any matrix (from_matrix), checked to be doubly stochastic.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace kiln::dist {

class Topology {
 public:
  // One rank's row of W at one step: its own weight and its in-neighbors j != i with
  // W[i][j] > 0 (ascending rank order), and the out-neighbors it sends to (ranks k with
  // W[k][i] > 0, k != i, ascending).
  struct Row {
    double self_weight = 1.0;
    std::vector<int> recv_from;
    std::vector<double> recv_weights;
    std::vector<int> send_to;
  };

  Topology() = default;  // the trivial topology of one rank
  static Topology ring(int n);
  static Topology torus(int n);
  static Topology exp2(int n);
  static Topology exp2_dynamic(int n);
  static Topology full(int n);
  // The topology named by `name` ("ring", "torus", "exp2", "exp2-dynamic", "full").
  static Topology named(const std::string& name, int n);
  static const std::vector<std::string>& names();
  // A static topology from W (n x n), or a dynamic one from several. Throws kiln::Error
  // unless every matrix is n x n and doubly stochastic (within `tol`).
  static Topology from_matrix(const std::vector<std::vector<double>>& w, const std::string& name = "custom",
                              double tol = 1e-9);
  static Topology from_matrices(const std::vector<std::vector<std::vector<double>>>& ws,
                                const std::string& name = "custom", double tol = 1e-9);

  int size() const { return n_; }
  const std::string& name() const { return name_; }
  int period() const { return static_cast<int>(mats_.size()); }
  bool is_dynamic() const { return period() > 1; }
  // W at `step` (the matrix step mod period()), dense.
  const std::vector<std::vector<double>>& matrix(int64_t step) const;
  Row row(int rank, int64_t step) const;
  // The largest number of in-neighbors any rank has at any step (messages per rank per
  // averaging; 1 for exp2-dynamic, n - 1 for full).
  int max_degree() const;
  // The second-largest singular value of W (for a dynamic topology, of the product over
  // one period, to the power 1/period): how fast consensus is reached. 0 for full.
  double spectral_gap_rate() const;

  // Throws kiln::Error naming the first row or column that does not sum to 1 (or the
  // negative weight, or the wrong shape).
  static void check_doubly_stochastic(const std::vector<std::vector<double>>& w, double tol = 1e-9,
                                      const std::string& what = "topology");

 private:
  int n_ = 1;
  std::string name_ = "single";
  std::vector<std::vector<std::vector<double>>> mats_{{{1.0}}};
};

}  // namespace kiln::dist
