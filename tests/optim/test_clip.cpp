// clip_grad_norm_ and total_grad_norm: known values for the 1-, 2-, 3- and inf-norms,
// scaling only when the norm exceeds max_norm, params without gradients, and errors.
#include <cmath>

#include "test_util.h"

using namespace kiln;

namespace {

// Two params with gradients [3, -4] and [[12]], and one without a gradient.
struct Fixture {
  Tensor a = zeros({2}, DType::F64).set_requires_grad(true);
  Tensor b = zeros({1, 1}, DType::F64).set_requires_grad(true);
  Tensor c = zeros({3}, DType::F64).set_requires_grad(true);
  Fixture() {
    a.set_grad(from_vector<double>({3, -4}));
    b.set_grad(from_vector<double>({12}, {1, 1}));
  }
  std::vector<Tensor> params() const { return {a, b, c}; }
};

}  // namespace

TEST_CASE("clip_grad_norm_ scales gradients to max_norm", "[optim]") {
  Fixture f;
  Tensor n = clip_grad_norm_(f.params(), 6.5);
  CHECK(n.dim() == 0);
  CHECK(n.dtype() == DType::F64);
  CHECK(n.item<double>() == Approx(13.0).epsilon(1e-15));
  const double coef = 6.5 / (13.0 + 1e-6);
  CHECK_CLOSE_TOL(f.a.grad(), from_vector<double>({3 * coef, -4 * coef}), 1e-15, 0);
  CHECK_CLOSE_TOL(f.b.grad(), from_vector<double>({12 * coef}, {1, 1}), 1e-15, 0);
  CHECK_FALSE(f.c.grad().defined());
  // The clipped gradients have norm max_norm (up to the 1e-6 guard).
  CHECK(total_grad_norm(f.params()).item<double>() == Approx(6.5).epsilon(1e-6));
}

TEST_CASE("clip_grad_norm_ leaves small gradients alone", "[optim]") {
  Fixture f;
  Tensor n = clip_grad_norm_(f.params(), 100.0);
  CHECK(n.item<double>() == Approx(13.0));
  CHECK(test::values(f.a.grad()) == std::vector<double>{3, -4});
  CHECK(test::values(f.b.grad()) == std::vector<double>{12});
}

TEST_CASE("clip_grad_norm_ supports other norms", "[optim]") {
  {
    Fixture f;
    CHECK(clip_grad_norm_(f.params(), 1e9, 1.0).item<double>() == Approx(19.0));
  }
  {
    Fixture f;
    Tensor n = clip_grad_norm_(f.params(), 6.0, kInfNorm);
    CHECK(n.item<double>() == 12.0);
    CHECK(test::values(f.b.grad())[0] == Approx(12.0 * 6.0 / (12.0 + 1e-6)));
  }
  {
    Fixture f;
    CHECK(total_grad_norm(f.params(), 3.0).item<double>() == Approx(std::cbrt(27.0 + 64.0 + 1728.0)));
  }
}

TEST_CASE("clip_grad_norm_ with f32 gradients and no gradients", "[optim]") {
  Tensor p = zeros({4}).set_requires_grad(true);
  p.set_grad(from_vector<float>({1, 1, 1, 1}));
  Tensor n = clip_grad_norm_({p}, 1.0);
  CHECK(n.dtype() == DType::F32);
  CHECK(n.item<double>() == Approx(2.0));
  CHECK_CLOSE(p.grad(), full({4}, 0.5f / (1.0f + 0.5e-6f) * 1.0f));
  Tensor q = zeros({2}).set_requires_grad(true);
  CHECK(clip_grad_norm_({q}, 1.0).item<double>() == 0.0);
}

TEST_CASE("clip_grad_norm_ rejects bad arguments and reports non-finite norms", "[optim]") {
  Fixture f;
  REQUIRE_KILN_ERROR(clip_grad_norm_(f.params(), 1.0, 0.0), "norm_type");
  REQUIRE_KILN_ERROR(clip_grad_norm_(f.params(), 1.0, -2.0), "norm_type");
  REQUIRE_KILN_ERROR(clip_grad_norm_(f.params(), -1.0), "max_norm");
  f.a.set_grad(from_vector<double>({std::nan(""), 1.0}));
  REQUIRE_KILN_ERROR(clip_grad_norm_(f.params(), 1.0, 2.0, /*error_if_nonfinite=*/true), "clip_grad_norm_");
  CHECK(test::values(f.b.grad()) == std::vector<double>{12});  // left unscaled
  // Without the check the NaN propagates, as in PyTorch.
  CHECK(std::isnan(clip_grad_norm_(f.params(), 1.0).item<double>()));
}
