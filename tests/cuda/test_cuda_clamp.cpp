// clamp on CUDA against the CPU reference: f32/f16/bf16/f64/i64 on random odd-sized
// inputs in every layout (contiguous, transposed, step 2, expanded, transposed view), both
// bounds, only one, special values (NaN, inf, -0.0), integer bounds that saturate, the
// in-place form and the gradient; tolerances by dtype.
#include "cuda_test_util.h"

#include <cmath>
#include <limits>

#include <kiln/ops/clamp.h>

using namespace kiln;
using test::check_same;
using test::cuda0;
using test::layouts_for;

namespace {
struct Bounds {
  const char* name;
  std::optional<double> min, max;
};
const Bounds kBounds[] = {{"both", -0.7, 1.2}, {"min only", -0.3, std::nullopt}, {"max only", std::nullopt, 0.4},
                          {"min == max", 0.5, 0.5}};
}  // namespace

TEST_CASE("cuda: clamp matches the CPU on random, odd-sized and non-contiguous input", "[cuda][clamp]") {
  for (DType t : {DType::F32, DType::F16, DType::BF16, DType::F64, DType::I64}) {
    for (const Shape& s : test::odd_shapes()) {
      // Integers are uniform in [-50, 50): bounds scaled to cut into them (and truncated).
      const double scale = is_floating(t) ? 1.0 : 40.0;
      Tensor c = test::random_tensor(s, t, 61), g = c.to(cuda0());
      for (const Bounds& b : kBounds) {
        std::optional<double> lo = b.min, hi = b.max;
        if (lo) *lo *= scale;
        if (hi) *hi *= scale;
        for (const test::Layout& l : layouts_for(s)) {
          INFO(b.name << " " << dtype_name(t) << " " << shape_str(s) << " " << l.name);
          check_same(clamp(l.apply(g), lo, hi), clamp(l.apply(c), lo, hi));
        }
      }
    }
  }
}

TEST_CASE("cuda: clamp on special values and integer bounds", "[cuda][clamp]") {
  Tensor c = from_vector<float>({0.0f, -0.0f, INFINITY, -INFINITY, NAN, 1e-30f, -1e-30f, 88.0f, -88.0f, 1e-40f, 0.5f});
  for (DType t : test::floating_dtypes()) {
    Tensor ct = c.to(t), gt = ct.to(cuda0());
    for (const Bounds& b : kBounds) {
      INFO(b.name << " " << dtype_name(t));
      check_same(clamp(gt, b.min, b.max), clamp(ct, b.min, b.max));
      CHECK(test::bit_equal(clamp(gt, b.min, b.max), clamp(ct, b.min, b.max)));  // NaN, -0.0 included
    }
    check_same(clamp(gt, 0.0, 1.0), clamp(ct, 0.0, 1.0));  // -0.0 stays -0.0
    check_same(clamp(gt, -INFINITY, 1e30), clamp(ct, -INFINITY, 1e30));
  }
  // Integer dtypes: bounds truncate and saturate at the dtype's range, as on the CPU.
  const int64_t big = int64_t{1} << 62;
  Tensor l = from_vector<int64_t>({big, -big, 5, -7, 0});
  Tensor gl = l.to(cuda0());
  check_same(clamp(gl, -1e30, 1e30), clamp(l, -1e30, 1e30));
  check_same(clamp(gl, -3.9, 3.9), clamp(l, -3.9, 3.9));
  check_same(clamp_min(gl, 1e30), clamp_min(l, 1e30));
  check_same(clamp_max(gl, -1e19), clamp_max(l, -1e19));
  Tensor u = from_vector<uint8_t>({0, 100, 200});
  check_same(clamp(u.to(cuda0()), -5, 300), clamp(u, -5, 300));
  check_same(clamp(u.to(cuda0()), 50.5, 150.5), clamp(u, 50.5, 150.5));
  Tensor i = test::random_tensor({33, 65}, DType::I32, 62);
  check_same(clamp(i.to(cuda0()).t(), -20.5, 10.5), clamp(i.t(), -20.5, 10.5));
  // Empty and 0-d tensors.
  CHECK(clamp(zeros({0, 5}, cuda0()), 0, 1).sizes() == Shape{0, 5});
  CHECK(clamp(scalar_tensor(5.0, cuda0()), 0, 1).item<float>() == 1.0f);
  REQUIRE_KILN_ERROR(clamp(from_vector<bool>({true}, {1}, cuda0()), 0, 1), "clamp");
}

TEST_CASE("cuda: clamp_ in place", "[cuda][clamp]") {
  for (DType t : {DType::F32, DType::BF16, DType::I64}) {
    INFO(dtype_name(t));
    Tensor c = test::random_tensor({257, 33}, t, 63, 2.0), g = c.to(cuda0());
    clamp_(c, -1.5, 1.5);
    clamp_(g, -1.5, 1.5);
    check_same(g, c);
    // Through a non-contiguous view, into the base.
    Tensor cv = c.t(), gv = g.t();
    clamp_(cv, std::nullopt, 0.25);
    clamp_(gv, std::nullopt, 0.25);
    check_same(g, c);
    Tensor cs = c.select(1, 3), gs = g.select(1, 3);
    clamp_(cs, 0.0, std::nullopt);
    clamp_(gs, 0.0, std::nullopt);
    check_same(g, c);
  }
  Tensor e = zeros({1}, cuda0()).expand({3});
  REQUIRE_KILN_ERROR(clamp_(e, 0, 1), "clamp_");
}

TEST_CASE("cuda: clamp gradient matches the CPU", "[cuda][clamp][autograd]") {
  for (DType t : {DType::F32, DType::F16, DType::F64}) {
    INFO(dtype_name(t));
    Tensor c = test::random_tensor({33, 65}, t, 64), g = c.to(cuda0());
    c.set_requires_grad(true);
    g.set_requires_grad(true);
    Tensor w = test::random_tensor({33, 65}, t, 65);
    sum(mul(clamp(c, -0.5, 0.5), w)).backward();
    sum(mul(clamp(g, -0.5, 0.5), w.to(cuda0()))).backward();
    check_same(g.grad(), c.grad());
  }
}
