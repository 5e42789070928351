// Joining, splitting and indexing on CUDA against the CPU: cat/stack (promotion, empty
// pieces, non-contiguous pieces), split/chunk views, index_select, gather, scatter_add
// (duplicates accumulate), one_hot. Out-of-range indices are checked by the kernels and
// throw at the next synchronisation point, naming the op; valid indexing adds no host
// synchronisation.
#include "test_util.h"

#include <cmath>
#include <functional>
#include <string>

using namespace kiln;
using test::cuda0;
using Catch::Contains;

namespace {

// The message of the kiln::Error that `f` (a synchronisation point) throws, "" if none.
// A device error is thrown once, so the expression must run exactly once (REQUIRE_KILN_ERROR
// runs it twice).
std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

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
}

TEST_CASE("cuda: one_hot", "[cuda][index]") {
  Generator gen(841);
  Tensor idx = randint(0, 10, {33, 7}, DType::I64, &gen);
  Tensor g = one_hot(idx.to(cuda0()));
  CHECK(g.is_cuda());
  CHECK(g.dtype() == DType::I64);
  CHECK(test::bit_equal(g, one_hot(idx)));
  CHECK(test::bit_equal(one_hot(idx.to(DType::I32).to(cuda0()), 12), one_hot(idx, 12)));
  Tensor i0 = scalar_tensor(2, DType::I64);
  CHECK(test::bit_equal(one_hot(i0.to(cuda0()), 3), one_hot(i0, 3)));
  CHECK(one_hot(zeros({0}, TensorOptions(DType::I64, cuda0())), 4).sizes() == Shape{0, 4});
}

TEST_CASE("cuda: out-of-range indices throw at the next synchronisation point, naming the op", "[cuda][index]") {
  const Device dev = cuda0();
  synchronize(dev);  // nothing pending from earlier tests
  Tensor gx = arange(12, TensorOptions(DType::F32, dev)).view({3, 4});
  auto i64 = [&](std::vector<int64_t> v, Shape s) { return from_vector<int64_t>(v, s, dev); };

  SECTION("index_select: no wait at the op; synchronize() throws; the bad row is written 0") {
    const int64_t s0 = host_sync_count();
    Tensor r = index_select(gx, 0, i64({2, 3}, {2}));
    CHECK(host_sync_count() == s0);
    const std::string msg = error_of([&] { synchronize(dev); });
    CHECK_THAT(msg, Contains("index_select") && Contains("[0, 3)") && Contains("got 3") && Contains("cuda:0"));
    // Reset: the read-back succeeds, and the bad index read nothing out of bounds.
    CHECK(r.to_vector<float>() == std::vector<float>{8, 9, 10, 11, 0, 0, 0, 0});
    const std::string neg = error_of([&] { (void)index_select(gx, 1, i64({-1}, {1})).cpu(); });
    CHECK_THAT(neg, Contains("index_select") && Contains("[0, 4)") && Contains("got -1"));
  }
  SECTION("gather: item() throws") {
    Tensor g = gather(gx, 1, i64({0, 4, 0, 0, 0, 0}, {3, 2}));
    const std::string msg = error_of([&] { (void)sum(g).item<float>(); });
    CHECK_THAT(msg, Contains("gather") && Contains("[0, 4)") && Contains("got 4"));
  }
  SECTION("scatter_add, also in place into a non-contiguous target: to_vector() throws; nothing is added") {
    Tensor s = scatter_add(zeros({5}, dev), 0, i64({1, 5}, {2}), ones({2}, dev));
    const std::string msg = error_of([&] { (void)s.to_vector<float>(); });
    CHECK_THAT(msg, Contains("scatter_add") && Contains("[0, 5)") && Contains("got 5"));
    CHECK(s.to_vector<float>() == std::vector<float>{0, 1, 0, 0, 0});
    Tensor t = zeros({4, 3}, dev).t();
    scatter_add_(t, 1, i64({0, -2, 3}, {3, 1}), ones({3, 1}, dev));
    CHECK_THAT(error_of([&] { synchronize(dev); }), Contains("scatter_add") && Contains("got -2"));
  }
  SECTION("embedding (the index_select kernel) and its backward") {
    Tensor w = ones({10, 8}, dev).set_requires_grad(true);
    const std::string msg = error_of([&] {
      Tensor e = embedding(w, i64({1, 10, 2}, {3}));
      sum(e).backward();
      synchronize(dev);
    });
    CHECK_THAT(msg, Contains("embedding") && Contains("[0, 10)") && Contains("got 10"));
  }
  SECTION("one_hot (the scatter_add kernel)") {
    Tensor o = one_hot(i64({0, 7, 2}, {3}), 5);
    const std::string msg = error_of([&] { (void)o.cpu(); });
    CHECK_THAT(msg, Contains("one_hot") && Contains("[0, 5)") && Contains("got 7"));
    CHECK(o.to_vector<int64_t>() == std::vector<int64_t>{1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0});
  }
  SECTION("the first error wins; the record is reset once reported") {
    (void)gather(gx, 0, i64({3, 0, 0, 0}, {1, 4}));
    (void)index_select(gx, 0, i64({9}, {1}));
    const std::string msg = error_of([&] { synchronize(dev); });
    CHECK_THAT(msg, Contains("gather") && Contains("got 3"));
    CHECK(error_of([&] { synchronize(dev); }).empty());
  }
  // After any of the above: nothing pending, and valid ops read back.
  CHECK(error_of([&] { synchronize(dev); }).empty());
  CHECK(sum(index_select(gx, 0, i64({2}, {1}))).item<float>() == 8 + 9 + 10 + 11);
}

TEST_CASE("cuda: indexing ops and a loss step add no host synchronisation", "[cuda][index]") {
  const Device dev = cuda0();
  Generator gen(851);
  Tensor w = test::random_tensor({100, 16}, DType::F32, 852).to(dev).set_requires_grad(true);
  Tensor tokens = randint(0, 100, {4, 9}, DType::I64, &gen).to(dev);
  Tensor targets = randint(0, 16, {36}, DType::I64, &gen).to(dev);
  Tensor x = test::random_tensor({6, 7}, DType::F32, 853).to(dev);
  Tensor gi = randint(0, 6, {5, 7}, DType::I64, &gen).to(dev);
  Tensor ii = randint(0, 7, {11}, DType::I32, &gen).to(dev);
  (void)index_select(x, 0, gi.narrow(1, 0, 1).reshape({-1}));  // first use: creates the error record
  synchronize(dev);

  const int64_t s0 = host_sync_count();
  Tensor a = index_select(x, 1, ii);
  Tensor b = gather(x, 0, gi);
  Tensor c = scatter_add(zeros({6, 7}, dev), 0, gi, b);
  Tensor d = one_hot(ii, 7);
  Tensor logits = embedding(w, tokens).reshape({36, 16});
  Tensor loss = cross_entropy(logits, targets);
  loss.backward();
  Tensor l2 = cross_entropy(logits.detach(), targets, Reduction::None, 3, 0.1);
  CHECK(host_sync_count() == s0);

  CHECK(test::bit_equal(a, index_select(x.cpu(), 1, ii.cpu())));
  CHECK_CLOSE(c, scatter_add(zeros({6, 7}), 0, gi.cpu(), gather(x.cpu(), 0, gi.cpu())));
  CHECK(test::bit_equal(d, one_hot(ii.cpu(), 7)));
  CHECK(l2.sizes() == Shape{36});
  CHECK(std::isfinite(loss.item<float>()));
  CHECK(w.grad().defined());
  CHECK(host_sync_count() > s0);
}
