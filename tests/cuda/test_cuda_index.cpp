// Joining, splitting and indexing on CUDA against the CPU: cat/stack (promotion, empty
// pieces, non-contiguous pieces), split/chunk views, index_select, gather, scatter_add
// (duplicates accumulate), one_hot; out-of-range indices on the device throw.
#include "test_util.h"

using namespace kiln;
using test::cuda0;

TEST_CASE("cuda: cat and stack", "[cuda][index]") {
  for (DType t : test::all_dtypes()) {
    INFO(dtype_name(t));
    Tensor a = test::random_tensor({33, 65}, t, 801), b = test::random_tensor({7, 65}, t, 802);
    Tensor c = test::random_tensor({33, 3}, t, 803);
    Tensor ga = a.to(cuda0()), gb = b.to(cuda0()), gc = c.to(cuda0());
    Tensor r = cat({ga, gb});
    CHECK(r.is_cuda());
    CHECK(test::bit_equal(r, cat({a, b})));
    CHECK(test::bit_equal(cat({ga, gc, ga}, 1), cat({a, c, a}, 1)));
    CHECK(test::bit_equal(cat({ga.t(), gc.t()}, 0), cat({a.t(), c.t()}, 0)));
    CHECK(test::bit_equal(cat({zeros({0, 65}, TensorOptions(t, cuda0())), ga}), a));
    CHECK(test::bit_equal(stack({ga, ga.slice(0, 0, 33, 1)}, 1), stack({a, a}, 1)));
    CHECK(test::bit_equal(stack({gb, test::strided_copy(gb)}, -1), stack({b, b}, -1)));
  }
  // Promotion.
  Tensor i = test::random_tensor({5, 3}, DType::I32, 804), f = test::random_tensor({2, 3}, DType::F16, 805);
  Tensor gp = cat({i.to(cuda0()), f.to(cuda0())});
  CHECK(gp.dtype() == DType::F16);
  CHECK(test::bit_equal(gp, cat({i, f})));
  Tensor big = test::random_tensor({(1 << 20) + 3}, DType::F32, 806);
  CHECK(test::bit_equal(cat({big.to(cuda0()), big.to(cuda0())}), cat({big, big})));
}

TEST_CASE("cuda: split and chunk are views of the device tensor", "[cuda][index]") {
  Tensor x = arange(14, TensorOptions(DType::F32, cuda0())).view({7, 2});
  std::vector<Tensor> p = split(x, 3);
  REQUIRE(p.size() == 3);
  CHECK(p[2].sizes() == Shape{1, 2});
  for (const Tensor& t : p) {
    CHECK(t.is_cuda());
    CHECK(t.shares_storage(x));
  }
  CHECK(p[1].to_vector<float>() == std::vector<float>{6, 7, 8, 9, 10, 11});
  std::vector<Tensor> c = chunk(x, 2, 1);
  c[1].fill_(-1);
  CHECK(x.to_vector<float>() == std::vector<float>{0, -1, 2, -1, 4, -1, 6, -1, 8, -1, 10, -1, 12, -1});
  std::vector<Tensor> w = split_with_sizes(x, {2, 5});
  CHECK(sum(w[1]).item<float>() == 4 + 6 + 8 + 10 + 12 - 5);
}

TEST_CASE("cuda: index_select", "[cuda][index]") {
  for (DType t : test::all_dtypes()) {
    for (const Shape& s : {Shape{7}, Shape{33, 65}, Shape{3, 5, 7, 9}, Shape{1023, 257}}) {
      Tensor x = test::random_tensor(s, t, 811), gx = x.to(cuda0());
      for (int64_t d = 0; d < x.dim(); ++d) {
        INFO(dtype_name(t) << " " << shape_str(s) << " dim " << d);
        Generator gen(812 + d);
        Tensor idx = randint(0, x.size(d), {2 * x.size(d) + 1}, DType::I64, &gen);  // with repeats
        Tensor r = index_select(gx, d, idx.to(cuda0()));
        CHECK(r.is_cuda());
        CHECK(test::bit_equal(r, index_select(x, d, idx)));
        CHECK(test::bit_equal(index_select(test::transposed_copy(gx), d, idx.to(DType::I32).to(cuda0())),
                              index_select(x, d, idx)));
      }
    }
  }
  Tensor gx = ones({3, 4}, cuda0());
  REQUIRE_KILN_ERROR(index_select(gx, 0, from_vector<int64_t>({0, 3}, {2}, cuda0())), "index_select");
  REQUIRE_KILN_ERROR(index_select(gx, 1, from_vector<int64_t>({-1}, {1}, cuda0())), "index_select");
}

TEST_CASE("cuda: gather", "[cuda][index]") {
  for (DType t : {DType::F32, DType::F16, DType::F64, DType::I64, DType::U8, DType::Bool}) {
    for (const Shape& s : {Shape{7}, Shape{33, 65}, Shape{3, 5, 7, 9}}) {
      Tensor x = test::random_tensor(s, t, 821), gx = x.to(cuda0());
      for (int64_t d = 0; d < x.dim(); ++d) {
        INFO(dtype_name(t) << " " << shape_str(s) << " dim " << d);
        Shape is = s;
        is[d] = s[d] + 3;  // more entries than the input has along d
        Generator gen(822 + d);
        Tensor idx = randint(0, s[d], is, DType::I64, &gen);
        Tensor r = gather(gx, d, idx.to(cuda0()));
        CHECK(r.is_cuda());
        CHECK(test::bit_equal(r, gather(x, d, idx)));
        CHECK(test::bit_equal(gather(test::transposed_copy(gx), d, test::transposed_copy(idx.to(cuda0()))),
                              gather(x, d, idx)));
      }
    }
  }
  Tensor gx = ones({3, 4}, cuda0());
  REQUIRE_KILN_ERROR(gather(gx, 1, from_vector<int64_t>({0, 4, 0, 0, 0, 0}, {3, 2}, cuda0())), "gather");
}

TEST_CASE("cuda: scatter_add accumulates duplicates", "[cuda][index]") {
  // Many duplicates: every src element lands in one of 3 slots.
  for (DType t : {DType::I64, DType::I32, DType::F32, DType::F64}) {
    INFO(dtype_name(t));
    Generator gen(831);
    Tensor idx = randint(0, 3, {100000}, DType::I64, &gen);
    Tensor src = test::random_tensor({100000}, t, 832);
    if (is_floating(t)) src = randint(-8, 8, {100000}, t, &gen);  // integer-valued: sums exact in any order
    Tensor x = zeros({3}, t);
    Tensor g = scatter_add(x.to(cuda0()), 0, idx.to(cuda0()), src.to(cuda0()));
    CHECK(g.is_cuda());
    CHECK_EQUAL_T(g, scatter_add(x, 0, idx, src));
  }
  // 2-D and 3-D along each dim, into contiguous and non-contiguous targets. Integer-valued
  // data give exact sums in any order of accumulation (also in f16/bf16, whose rounding
  // after each of several atomic adds would otherwise depend on the order); f32/f64 also
  // run on random data within the dtype's tolerance.
  for (DType t : {DType::F32, DType::F16, DType::BF16, DType::F64, DType::I32, DType::U8}) {
    for (const Shape& s : {Shape{33, 65}, Shape{3, 5, 7}}) {
      for (bool integer_valued : {true, false}) {
        if (!integer_valued && !(t == DType::F32 || t == DType::F64)) continue;
        auto data = [&](const Shape& sh, uint64_t seed) {
          Generator g(seed);
          if (!integer_valued) return test::random_tensor(sh, t, seed);
          if (t == DType::F16 || t == DType::BF16) return randint(-2, 3, sh, t, &g);  // small sums: exact
          return test::random_tensor(sh, t == DType::U8 ? DType::U8 : DType::I32, seed).to(t);
        };
        Tensor x = data(s, 833);
        for (int64_t d = 0; d < x.dim(); ++d) {
          INFO(dtype_name(t) << " " << shape_str(s) << " dim " << d << " integer-valued " << integer_valued);
          Shape is = s;
          is[d] = 2 * s[d] + 1;
          Generator gen(834 + d);
          Tensor idx = randint(0, s[d], is, DType::I64, &gen);
          Tensor src = data(is, 835 + d);
          Tensor want = scatter_add(x, d, idx, src);
          Tensor g = scatter_add(x.to(cuda0()), d, idx.to(cuda0()), src.to(cuda0()));
          Tensor gt = test::transposed_copy(x.to(cuda0()));
          scatter_add_(gt, d, idx.to(cuda0()), test::strided_copy(src.to(cuda0())));
          if (integer_valued) {
            CHECK_EQUAL_T(g, want);
            CHECK_EQUAL_T(gt, want);
          } else {
            CHECK_CLOSE(g, want);
            CHECK_CLOSE(gt, want);
          }
        }
      }
    }
  }
  Tensor gx = zeros({5}, cuda0());
  REQUIRE_KILN_ERROR(scatter_add(gx, 0, from_vector<int64_t>({5}, {1}, cuda0()), ones({1}, cuda0())), "scatter_add");
}

TEST_CASE("cuda: one_hot", "[cuda][index]") {
  Generator gen(841);
  Tensor idx = randint(0, 10, {33, 7}, DType::I64, &gen);
  Tensor g = one_hot(idx.to(cuda0()));
  CHECK(g.is_cuda());
  CHECK(g.dtype() == DType::I64);
  CHECK(test::bit_equal(g, one_hot(idx)));
  CHECK(test::bit_equal(one_hot(idx.to(DType::I32).to(cuda0()), 12), one_hot(idx, 12)));
  REQUIRE_KILN_ERROR(one_hot(idx.to(cuda0()), 5), "one_hot");
}
