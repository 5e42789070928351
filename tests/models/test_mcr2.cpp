// MCR^2 (models/eval/mcr2.h): the coding rate and the rate reduction on features with
// known answers, the class split, the gradient check, and errors.
#include <cmath>
#include <vector>

#include "test_util.h"

using namespace kiln;
using V = std::vector<Tensor>;

TEST_CASE("coding_rate and rate_reduction: known answers", "[models][mcr2]") {
  // Z (m = 4, d = 2) with Z^T Z = 2 I: R = d/2 log(1 + d/(m eps^2) * 2).
  Tensor z = from_vector(std::vector<double>{1, 0, 0, 1, -1, 0, 0, -1}, {4, 2});
  const double eps = 0.5;
  CHECK(eval::coding_rate(z, eps).item<double>() == Approx(std::log(1 + 2.0 / (4 * 0.25) * 2)).epsilon(1e-13));
  // Classes {rows 0, 2} (the x axis) and {1, 3} (the y axis): each class has Z_j^T Z_j =
  // diag(2, 0) or diag(0, 2), so Rc = 2 * (2/8) log(1 + 2/(2 * 0.25) * 2).
  Tensor labels = from_vector(std::vector<int64_t>{0, 1, 0, 1});
  eval::RateReduction rr = eval::rate_reduction(z, labels, 3, eps);  // class 2 is empty: adds 0
  const double r = std::log(1 + 2.0 / (4 * 0.25) * 2), rc = 2 * (2.0 / 8) * std::log(1 + 2.0 / (2 * 0.25) * 2);
  CHECK(rr.r.item<double>() == Approx(r).epsilon(1e-13));
  CHECK(rr.rc.item<double>() == Approx(rc).epsilon(1e-13));
  CHECK(rr.delta_r.item<double>() == Approx(r - rc).epsilon(1e-13));
  CHECK(rr.delta_r.item<double>() > 0);  // orthogonal class subspaces: a positive reduction
  // One class: Rc = R, Delta R = 0.
  eval::RateReduction one = eval::rate_reduction(z, zeros({4}, DType::I64), 1, eps);
  CHECK(std::abs(one.delta_r.item<double>()) < 1e-13);
  // Both classes on one line: no reduction from splitting what is not apart (Delta R smaller).
  Tensor same = from_vector(std::vector<double>{1, 0, 1, 0, -1, 0, -1, 0}, {4, 2});
  CHECK(eval::rate_reduction(same, labels, 2, eps).delta_r.item<double>() < rr.delta_r.item<double>());
  // f32 agrees.
  CHECK(eval::rate_reduction(z.to(DType::F32), labels, 3, eps).delta_r.item<double>() ==
        Approx(r - rc).epsilon(1e-5));
}

TEST_CASE("gradcheck: coding rate and rate reduction", "[models][mcr2][gradcheck]") {
  Generator g(9);
  Tensor z = randn({7, 3}, TensorOptions(DType::F64), &g);
  Tensor labels = from_vector(std::vector<int64_t>{0, 2, 1, 0, 2, 2, 1});
  GradcheckResult r = gradcheck([](const V& v) { return eval::coding_rate(v[0], 0.7); }, {z});
  INFO(r.message);
  CHECK(r.ok);
  r = gradcheck([&](const V& v) { return eval::rate_reduction(v[0], labels, 3, 0.7).delta_r; }, {z});
  INFO(r.message);
  CHECK(r.ok);
}

TEST_CASE("rate_reduction: bad input is a clear error", "[models][mcr2]") {
  Tensor z = zeros({4, 2}, DType::F64);
  Tensor labels = zeros({4}, DType::I64);
  CHECK_KILN_ERROR(eval::coding_rate(z, 0), "eps must be > 0");
  CHECK_KILN_ERROR(eval::coding_rate(zeros({4}, DType::F64), 0.5), "features Z (m, d)");
  CHECK_KILN_ERROR(eval::rate_reduction(z, zeros({3}, DType::I64), 2, 0.5), "integer labels of shape (4)");
  CHECK_KILN_ERROR(eval::rate_reduction(z, zeros({4}, DType::F32), 2, 0.5), "integer labels");
  CHECK_KILN_ERROR(eval::rate_reduction(z, labels, 0, 0.5), "num_classes");
  CHECK_THROWS_AS(eval::rate_reduction(z, full({4}, 5, TensorOptions(DType::I64)), 2, 0.5), Error);
}
