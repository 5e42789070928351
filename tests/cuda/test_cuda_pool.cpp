// max_pool2d, avg_pool2d and adaptive_avg_pool2d on CUDA (cuda/kernels/pool.cu) against
// the CPU reference: values, max indices (exactly), and input gradients through
// autograd, on odd shapes (N = 3, C = 5, 13x13), strides, padding, dilation, ceil_mode,
// count_include_pad, divisor_override, up- and down-sampling adaptive sizes, NaN
// handling, every floating dtype and non-contiguous inputs.
#include "test_util.h"

#include <cmath>
#include <limits>

using namespace kiln;
using test::cuda0;
using V = std::vector<Tensor>;

namespace {

// f(x) on the CPU and on CUDA from the same values of dtype dt: outputs within the
// dtype's tolerance (max pooling picks elements, so exactly), then the gradients of the
// same upstream gradient.
void compare(const std::function<Tensor(const Tensor&)>& f, const Shape& shape, DType dt, uint64_t seed,
             bool exact = false) {
  Tensor x = test::random_tensor(shape, dt, seed);
  Tensor xc = x.clone().set_requires_grad(true), xg = x.to(cuda0()).set_requires_grad(true);
  Tensor yc = f(xc), yg = f(xg);
  REQUIRE(yg.is_cuda());
  if (exact) CHECK_EQUAL_T(yg.cpu(), yc);
  else CHECK_CLOSE(yg.cpu(), yc);
  Tensor w = test::random_tensor(yc.sizes(), dt, seed + 100);
  yc.backward(w);
  yg.backward(w.to(cuda0()));
  REQUIRE(xg.grad().defined());
  // Both sum the same few terms per element (the CPU in double, CUDA in f32).
  const test::Tol t = test::tol_for(dt);
  CHECK_CLOSE_TOL(xg.grad().cpu(), xc.grad(), t.rtol * 4, t.atol * 4);
}

struct P {
  Int2 k, s, p, d;
  bool ceil;
};

}  // namespace

TEST_CASE("cuda max_pool2d: values, indices and gradients", "[cuda][pool]") {
  const std::vector<P> cfgs{{2, 2, 0, 1, false},         {3, 2, 1, 1, false}, {3, 2, 1, 1, true},
                            {{3, 2}, {1, 2}, {1, 0}, 1, false}, {3, 1, 1, 2, false}, {{2, 3}, {2, 1}, {1, 1}, {3, 2}, true},
                            {{5, 1}, {3, 1}, {2, 0}, 1, true}};
  uint64_t seed = 1;
  for (DType dt : test::floating_dtypes()) {
    for (const P& c : cfgs) {
      INFO(dtype_name(dt) << " kernel (" << c.k.h << "," << c.k.w << ") stride (" << c.s.h << "," << c.s.w
                          << ") padding (" << c.p.h << "," << c.p.w << ") dilation (" << c.d.h << "," << c.d.w
                          << ") ceil " << c.ceil);
      compare([&](const Tensor& x) { return max_pool2d(x, c.k, c.s, c.p, c.d, c.ceil); }, {3, 5, 13, 13}, dt, ++seed,
              true);
      Tensor x = test::random_tensor({3, 5, 13, 11}, dt, ++seed);
      auto [yc, ic] = max_pool2d_with_indices(x, c.k, c.s, c.p, c.d, c.ceil);
      auto [yg, ig] = max_pool2d_with_indices(test::noncontiguous(x.to(cuda0())), c.k, c.s, c.p, c.d, c.ceil);
      CHECK_EQUAL_T(yg.cpu(), yc);
      CHECK(test::vec<int64_t>(ig) == test::vec<int64_t>(ic));
    }
  }
  // NaN wins its window (the last NaN), all -inf keeps the first tap.
  const double nan = std::numeric_limits<double>::quiet_NaN();
  Tensor x = from_vector<float>({1, static_cast<float>(nan), 3, static_cast<float>(nan), -INFINITY, -INFINITY, 2, 5},
                                {1, 1, 2, 4});
  auto [yc, ic] = max_pool2d_with_indices(x, {1, 2}, Int2{1, 2});
  auto [yg, ig] = max_pool2d_with_indices(x.to(cuda0()), {1, 2}, Int2{1, 2});
  CHECK_EQUAL_T(yg.cpu(), yc);
  CHECK(test::vec<int64_t>(ig) == test::vec<int64_t>(ic));
  CHECK(test::vec<int64_t>(ig) == std::vector<int64_t>{1, 3, 4, 7});
}

TEST_CASE("cuda avg_pool2d: values and gradients", "[cuda][pool]") {
  const std::vector<P> cfgs{{2, 2, 0, 1, false}, {3, 2, 1, 1, false}, {3, 2, 1, 1, true},
                            {{3, 2}, {1, 2}, {1, 1}, 1, false}, {{4, 3}, {3, 2}, {2, 1}, 1, true}, {3, 3, 0, 1, true}};
  uint64_t seed = 50;
  for (DType dt : test::floating_dtypes()) {
    for (const P& c : cfgs) {
      for (bool include : {true, false}) {
        for (int64_t div : {int64_t{0}, int64_t{7}}) {
          INFO(dtype_name(dt) << " kernel (" << c.k.h << "," << c.k.w << ") stride (" << c.s.h << "," << c.s.w
                              << ") padding (" << c.p.h << "," << c.p.w << ") ceil " << c.ceil << " include_pad "
                              << include << " divisor " << div);
          compare([&](const Tensor& x) { return avg_pool2d(x, c.k, c.s, c.p, c.ceil, include, div); },
                  {3, 5, 13, 13}, dt, ++seed);
        }
      }
    }
  }
  compare([](const Tensor& x) { return avg_pool2d(test::noncontiguous(x), 3, 2, 1); }, {3, 5, 13, 11}, DType::F32, 99);
}

TEST_CASE("cuda adaptive_avg_pool2d: values and gradients", "[cuda][pool]") {
  uint64_t seed = 200;
  for (DType dt : test::floating_dtypes()) {
    for (Int2 o : {Int2{1, 1}, Int2{3, 4}, Int2{7, 7}, Int2{13, 13}, Int2{20, 5}, Int2{6, 17}}) {
      INFO(dtype_name(dt) << " output " << o.h << "x" << o.w);
      compare([o](const Tensor& x) { return adaptive_avg_pool2d(x, o); }, {3, 5, 13, 13}, dt, ++seed);
    }
  }
  compare([](const Tensor& x) { return adaptive_avg_pool2d(x.transpose(-1, -2), {4, 3}); }, {5, 11, 9}, DType::F32,
          300);
}
