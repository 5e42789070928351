// The topologies of neighbor averaging (see topology.h): their mixing matrices, each
// rank's row, and the doubly-stochastic check every topology passes before it is used.
#include <kiln/distributed/topology.h>

#include <algorithm>
#include <cmath>
#include <set>

#include <kiln/core/error.h>

namespace kiln::dist {

namespace {

using Mat = std::vector<std::vector<double>>;

Mat zeros(int n) { return Mat(static_cast<size_t>(n), std::vector<double>(static_cast<size_t>(n), 0.0)); }

void check_n(const char* what, int n) {
  KILN_CHECK(n >= 1 && n <= 65536, "topology ", what, ": the number of ranks must be in [1, 65536], got ", n);
}

// Uniform weights over each rank's neighbor set plus itself. For the vertex-transitive
// graphs here (every rank sees the same offsets) every row and column then sums to 1.
Mat uniform_from_offsets(int n, const std::vector<int>& offsets) {
  Mat w = zeros(n);
  for (int i = 0; i < n; ++i) {
    std::set<int> nb;
    for (int o : offsets) {
      int j = ((i + o) % n + n) % n;
      if (j != i) nb.insert(j);
    }
    const double u = 1.0 / static_cast<double>(nb.size() + 1);
    w[i][i] = u;
    for (int j : nb) w[i][j] = u;
  }
  return w;
}

// The powers of two below n: 1, 2, 4, ... (empty for n = 1).
std::vector<int> powers_below(int n) {
  std::vector<int> p;
  for (int64_t k = 1; k < n; k *= 2) p.push_back(static_cast<int>(k));
  return p;
}

}  // namespace

void Topology::check_doubly_stochastic(const Mat& w, double tol, const std::string& what) {
  const size_t n = w.size();
  KILN_CHECK(n >= 1, what, ": the weight matrix is empty");
  for (size_t i = 0; i < n; ++i)
    KILN_CHECK(w[i].size() == n, what, ": the weight matrix must be square; row ", i, " has ", w[i].size(),
               " entries, not ", n);
  for (size_t i = 0; i < n; ++i) {
    double s = 0;
    for (size_t j = 0; j < n; ++j) {
      KILN_CHECK(std::isfinite(w[i][j]) && w[i][j] >= 0, what, ": weight W[", i, "][", j, "] = ", w[i][j],
                 " is not a finite non-negative number");
      s += w[i][j];
    }
    KILN_CHECK(std::abs(s - 1.0) <= tol, what, ": row ", i, " of the weight matrix sums to ", s,
               ", not 1 (rank ", i, "'s weights must add up to 1)");
  }
  for (size_t j = 0; j < n; ++j) {
    double s = 0;
    for (size_t i = 0; i < n; ++i) s += w[i][j];
    KILN_CHECK(std::abs(s - 1.0) <= tol, what, ": column ", j, " of the weight matrix sums to ", s,
               ", not 1 (the matrix is not doubly stochastic: averaging would move the ranks' mean)");
  }
}

Topology Topology::from_matrices(const std::vector<Mat>& ws, const std::string& name, double tol) {
  KILN_CHECK(!ws.empty(), "topology '", name, "': no weight matrix");
  const size_t n = ws[0].size();
  for (size_t k = 0; k < ws.size(); ++k) {
    KILN_CHECK(ws[k].size() == n, "topology '", name, "': matrix ", k, " is ", ws[k].size(), " x ... but matrix 0 is ",
               n, " x ", n, " (every step's matrix covers the same ranks)");
    check_doubly_stochastic(ws[k], tol,
                            ws.size() > 1 ? detail::str("topology '", name, "' (matrix ", k, ")")
                                          : detail::str("topology '", name, "'"));
  }
  check_n(name.c_str(), static_cast<int>(n));
  Topology t;
  t.n_ = static_cast<int>(n);
  t.name_ = name;
  t.mats_ = ws;
  return t;
}

Topology Topology::from_matrix(const Mat& w, const std::string& name, double tol) {
  return from_matrices({w}, name, tol);
}

Topology Topology::ring(int n) {
  check_n("ring", n);
  return from_matrix(uniform_from_offsets(n, {-1, 1}), "ring");
}

Topology Topology::torus(int n) {
  check_n("torus", n);
  int rows = static_cast<int>(std::sqrt(static_cast<double>(n)));
  while (rows > 1 && n % rows != 0) --rows;
  const int cols = n / rows;
  Mat w = zeros(n);
  for (int i = 0; i < n; ++i) {
    const int r = i / cols, c = i % cols;
    std::set<int> nb;
    for (int j : {((r + 1) % rows) * cols + c, ((r - 1 + rows) % rows) * cols + c, r * cols + (c + 1) % cols,
                  r * cols + (c - 1 + cols) % cols})
      if (j != i) nb.insert(j);
    const double u = 1.0 / static_cast<double>(nb.size() + 1);
    w[i][i] = u;
    for (int j : nb) w[i][j] = u;
  }
  return from_matrix(w, "torus");
}

Topology Topology::exp2(int n) {
  check_n("exp2", n);
  // Rank i sends to i + 2^k, so it receives from i - 2^k: row i holds the offsets -2^k.
  std::vector<int> offsets;
  for (int p : powers_below(n)) offsets.push_back(-p);
  return from_matrix(uniform_from_offsets(n, offsets), "exp2");
}

Topology Topology::exp2_dynamic(int n) {
  check_n("exp2-dynamic", n);
  std::vector<Mat> ws;
  for (int p : powers_below(n)) {
    Mat w = zeros(n);
    for (int i = 0; i < n; ++i) {
      const int j = ((i - p) % n + n) % n;  // the one peer i receives from at this step
      w[i][i] = 0.5;
      w[i][j] += 0.5;
    }
    ws.push_back(std::move(w));
  }
  if (ws.empty()) ws.push_back({{1.0}});
  return from_matrices(ws, "exp2-dynamic");
}

Topology Topology::full(int n) {
  check_n("full", n);
  Mat w(static_cast<size_t>(n), std::vector<double>(static_cast<size_t>(n), 1.0 / n));
  return from_matrix(w, "full");
}

const std::vector<std::string>& Topology::names() {
  static const std::vector<std::string> n{"exp2", "exp2-dynamic", "ring", "torus", "full"};
  return n;
}

Topology Topology::named(const std::string& name, int n) {
  if (name == "ring") return ring(n);
  if (name == "torus") return torus(n);
  if (name == "exp2") return exp2(n);
  if (name == "exp2-dynamic") return exp2_dynamic(n);
  if (name == "full") return full(n);
  std::string known;
  for (const auto& k : names()) known += (known.empty() ? "" : ", ") + k;
  throw Error(detail::str("unknown topology '", name, "' (known: ", known, ")"));
}

const Mat& Topology::matrix(int64_t step) const {
  KILN_CHECK(step >= 0, "topology '", name_, "': step ", step, " is negative");
  return mats_[static_cast<size_t>(step % period())];
}

Topology::Row Topology::row(int rank, int64_t step) const {
  KILN_CHECK(rank >= 0 && rank < n_, "topology '", name_, "' has ", n_, " ranks; rank ", rank, " is not one of them");
  const Mat& w = matrix(step);
  Row r;
  r.self_weight = w[rank][rank];
  for (int j = 0; j < n_; ++j) {
    if (j == rank) continue;
    if (w[rank][j] > 0) {
      r.recv_from.push_back(j);
      r.recv_weights.push_back(w[rank][j]);
    }
    if (w[j][rank] > 0) r.send_to.push_back(j);
  }
  return r;
}

int Topology::max_degree() const {
  int d = 0;
  for (const Mat& w : mats_)
    for (int i = 0; i < n_; ++i) {
      int k = 0;
      for (int j = 0; j < n_; ++j) k += (j != i && w[i][j] > 0);
      d = std::max(d, k);
    }
  return d;
}

double Topology::spectral_gap_rate() const {
  if (n_ == 1) return 0.0;
  // P = W_{p-1} ... W_1 W_0 (one period); its top singular value is 1 (the all-ones
  // vector); power iteration on P^T P restricted to vectors of mean zero finds the next.
  const size_t n = static_cast<size_t>(n_);
  auto apply = [&](const Mat& w, const std::vector<double>& x, bool transpose) {
    std::vector<double> y(n, 0.0);
    for (size_t i = 0; i < n; ++i)
      for (size_t j = 0; j < n; ++j) y[i] += (transpose ? w[j][i] : w[i][j]) * x[j];
    return y;
  };
  std::vector<double> x(n);
  for (size_t i = 0; i < n; ++i) x[i] = std::sin(1.0 + 3.7 * static_cast<double>(i)) + 0.1 * static_cast<double>(i);
  double sigma2 = 0;
  for (int it = 0; it < 500; ++it) {
    double mean = 0;
    for (double v : x) mean += v;
    mean /= static_cast<double>(n);
    double norm = 0;
    for (double& v : x) v -= mean, norm += v * v;
    norm = std::sqrt(norm);
    if (norm == 0) return 0.0;
    for (double& v : x) v /= norm;
    std::vector<double> y = x;
    for (const Mat& w : mats_) y = apply(w, y, false);
    for (auto it2 = mats_.rbegin(); it2 != mats_.rend(); ++it2) y = apply(*it2, y, true);
    double s = 0;
    for (size_t i = 0; i < n; ++i) s += x[i] * y[i];
    const bool done = std::abs(s - sigma2) <= 1e-12 * std::max(1.0, s);
    sigma2 = s;
    x = std::move(y);
    if (done) break;
  }
  return std::pow(std::sqrt(std::max(sigma2, 0.0)), 1.0 / period());
}

}  // namespace kiln::dist
