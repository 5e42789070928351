// Sparse inference kernels (ops/sparse.h) against the dense ops on the same masked weights:
// strides, padding, kernel sizes, odd shapes, batch 1 and more, with and without bias,
// every sparsity from dense to empty; CSR conversion; errors.
#include "test_util.h"

using namespace kiln;

namespace {

// A weight with about `sparsity` of its entries zero.
Tensor sparse_weight(const Shape& s, double sparsity, uint64_t seed) {
  Tensor w = test::random_tensor(s, DType::F32, seed);
  Tensor u = test::random_tensor(s, DType::F32, seed + 1);
  return where(lt(abs(u), sparsity * 3.0), 0.0, w);  // |N(0,1)| below 3*s: roughly that many go
}

}  // namespace

TEST_CASE("to_csr keeps exactly the nonzeros, row by row", "[sparse]") {
  Tensor w = from_vector(std::vector<float>{0, 2, 0, 0, 0, 0, 3, 4, 5}, {3, 3});
  CsrWeight c = to_csr(w);
  CHECK(test::vec<int64_t>(c.row_ptr) == std::vector<int64_t>{0, 1, 1, 4});
  CHECK(test::vec<int64_t>(c.col) == std::vector<int64_t>{1, 0, 1, 2});
  CHECK(test::vec<float>(c.values) == std::vector<float>{2, 3, 4, 5});
  CHECK(c.nnz() == 4);
  CHECK(c.density() == Approx(4.0 / 9.0));
  CHECK(to_csr(zeros({2, 3, 1, 1})).nnz() == 0);
}

TEST_CASE("sparse_conv2d equals conv2d on the same weights", "[sparse]") {
  struct Case {
    Shape x, w;
    Int2 stride, padding;
    double sparsity;
  };
  const std::vector<Case> cases = {
      {{2, 5, 11, 9}, {7, 5, 3, 3}, 1, 1, 0.9},  {{1, 16, 28, 28}, {16, 16, 3, 3}, 1, 1, 0.95},
      {{3, 6, 13, 10}, {4, 6, 3, 3}, 2, 1, 0.5}, {{2, 8, 14, 14}, {12, 8, 1, 1}, 2, 0, 0.7},
      {{2, 3, 7, 8}, {5, 3, 3, 2}, {2, 1}, {0, 1}, 0.0}, {{1, 4, 6, 6}, {3, 4, 5, 5}, 1, 2, 0.99},
      {{2, 4, 5, 5}, {3, 4, 3, 3}, 1, 1, 1.0},
      // from 8 images on, on output planes up to 8 wide, the lanes run over the batch
      // (padded to 16)
      {{9, 5, 7, 7}, {6, 5, 3, 3}, 1, 1, 0.9},  {{16, 6, 9, 8}, {4, 6, 3, 3}, 2, 1, 0.6},
      {{8, 4, 6, 6}, {5, 4, 1, 1}, {2, 1}, 0, 0.3},
      // wider planes image by image at any batch: two column blocks per tile with a
      // partial second one (11 = 8 + 3, 30 = 16 + 8 + 6), strided 1x1 on odd sizes
      {{10, 4, 20, 21}, {5, 4, 3, 3}, 2, 1, 0.8}, {{8, 3, 30, 30}, {4, 3, 3, 3}, 1, 1, 0.9},
      {{2, 8, 15, 13}, {6, 8, 1, 1}, 2, 0, 0.5}, {{3, 5, 17, 19}, {4, 5, 1, 1}, {3, 2}, 0, 0.4},
  };
  int seed = 0;
  for (const Case& k : cases) {
    CAPTURE(shape_str(k.x), shape_str(k.w), k.stride.h, k.stride.w, k.padding.h, k.sparsity);
    Tensor x = test::random_tensor(k.x, DType::F32, 10 + seed);
    Tensor w = sparse_weight(k.w, k.sparsity, 20 + seed);
    Tensor b = test::random_tensor({k.w[0]}, DType::F32, 30 + seed);
    ++seed;
    CsrWeight c = to_csr(w);
    for (bool with_bias : {true, false}) {
      Tensor ref = conv2d(x, w, with_bias ? b : Tensor(), k.stride, k.padding);
      Tensor got = sparse_conv2d(x, c, with_bias ? b : Tensor(), k.stride, k.padding);
      CHECK(test::allclose(got, ref, 1e-5, 1e-5));
    }
    // one image without the batch dim; a non-contiguous input
    CHECK(test::allclose(sparse_conv2d(x.select(0, 0), c, b, k.stride, k.padding),
                         conv2d(x.select(0, 0), w, b, k.stride, k.padding), 1e-5, 1e-5));
    CHECK(test::allclose(sparse_conv2d(test::noncontiguous(x), c, b, k.stride, k.padding),
                         conv2d(x, w, b, k.stride, k.padding), 1e-5, 1e-5));
  }
}

TEST_CASE("sparse_linear equals linear on the same weights", "[sparse]") {
  for (double s : {0.0, 0.6, 0.95, 1.0}) {
    Tensor x = test::random_tensor({5, 3, 17}, DType::F32, 1);
    Tensor w = sparse_weight({9, 17}, s, 2);
    Tensor b = test::random_tensor({9}, DType::F32, 3);
    CsrWeight c = to_csr(w);
    CHECK(test::allclose(sparse_linear(x, c, b), nn::linear(x, w, b), 1e-5, 1e-5));
    CHECK(test::allclose(sparse_linear(x.select(0, 1), c, Tensor()), nn::linear(x.select(0, 1), w), 1e-5, 1e-5));
  }
}

TEST_CASE("sparse kernels: the same bits at 1, 2 and 3 threads, image by image or as a batch",
          "[sparse][parallel]") {
  const int saved = num_threads();
  CsrWeight c = to_csr(sparse_weight({10, 8, 3, 3}, 0.8, 5));
  Tensor b = test::random_tensor({10}, DType::F32, 6);
  for (int64_t hw : {7, 12}) {  // 7 x 7 planes: the batch path; 12 x 12: image by image
    CAPTURE(hw);
    Tensor x = test::random_tensor({11, 8, hw, hw}, DType::F32, 4);
    set_num_threads(1);
    Tensor one = sparse_conv2d(x, c, b, 1, 1);
    for (int t : {2, 3}) {
      set_num_threads(t);
      CHECK(test::bit_equal(sparse_conv2d(x, c, b, 1, 1), one));
      CHECK(test::bit_equal(sparse_conv2d(x.narrow(0, 0, 3), c, b, 1, 1), one.narrow(0, 0, 3)));  // per image
    }
  }
  set_num_threads(saved);
}

TEST_CASE("sparse kernels refuse what they cannot do", "[sparse]") {
  CsrWeight c = to_csr(sparse_weight({4, 3, 3, 3}, 0.5, 1));
  Tensor x = test::random_tensor({1, 3, 8, 8}, DType::F32, 2);
  CHECK_THROWS_WITH(sparse_conv2d(test::random_tensor({1, 2, 8, 8}, DType::F32, 1), c, Tensor(), 1, 1),
                    Catch::Contains("the input has 2 channels, the weight 3"));
  CHECK_THROWS_WITH(sparse_conv2d(cast(x, DType::F64), c, Tensor(), 1, 1), Catch::Contains("computes in f32"));
  Tensor xg = x.clone().requires_grad_();
  CHECK_THROWS_WITH(sparse_conv2d(xg, c, Tensor(), 1, 1), Catch::Contains("inference kernel"));
  {
    NoGradGuard ng;
    CHECK(sparse_conv2d(xg, c, Tensor(), 1, 1).sizes() == Shape{1, 4, 8, 8});
  }
  CHECK_THROWS_WITH(sparse_conv2d(x, c, zeros({3}), 1, 1), Catch::Contains("bias must be f32 (4)"));
  CHECK_THROWS_WITH(sparse_conv2d(x, c, Tensor(), 0, 1), Catch::Contains("stride must be >= 1"));
  CHECK_THROWS_WITH(sparse_linear(test::random_tensor({2, 5}, DType::F32, 1), to_csr(zeros({3, 4})), Tensor()),
                    Catch::Contains("in_features = 4"));
  CHECK_THROWS_WITH(sparse_conv2d(x, CsrWeight{}, Tensor(), 1, 1), Catch::Contains("not in CSR form"));
}
