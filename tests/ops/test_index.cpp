// Joining, splitting and indexing on the CPU: cat (promotion, empty pieces), stack,
// split/split_with_sizes/chunk (views), index_select, gather, scatter_add (duplicates
// accumulate), one_hot; bad input throws kiln::Error naming the op (out-of-range indices on
// the CPU at once, checked on the host; CUDA reports them later: tests/cuda).
#include "test_util.h"

#include <functional>
#include <string>

#include <kiln/ops/checks.h>

using namespace kiln;

namespace {
std::vector<double> d(const Tensor& t) { return test::values(t); }
Tensor i64(std::vector<int64_t> v, Shape s = {}) {
  if (s.empty()) s = {static_cast<int64_t>(v.size())};
  return from_vector<int64_t>(v, s);
}
}  // namespace

TEST_CASE("cat", "[ops][index][cat]") {
  Tensor a = from_vector<float>({1, 2, 3, 4, 5, 6}, {2, 3}), b = from_vector<float>({7, 8, 9}, {1, 3});
  Tensor c0 = cat({a, b});
  CHECK(c0.sizes() == Shape{3, 3});
  CHECK(d(c0) == std::vector<double>{1, 2, 3, 4, 5, 6, 7, 8, 9});
  Tensor c1 = cat({a, from_vector<float>({-1, -2}, {2, 1})}, 1);
  CHECK(c1.sizes() == Shape{2, 4});
  CHECK(d(c1) == std::vector<double>{1, 2, 3, -1, 4, 5, 6, -2});
  CHECK(d(cat({a, a}, -1)) == std::vector<double>{1, 2, 3, 1, 2, 3, 4, 5, 6, 4, 5, 6});
  CHECK(d(concat({b, b}, 0)) == std::vector<double>{7, 8, 9, 7, 8, 9});
  // One piece: a copy.
  Tensor one = cat({a});
  CHECK(d(one) == d(a));
  CHECK_FALSE(one.shares_storage(a));
  // Promotion: i32 with f32 -> f32; i32 with i64 -> i64; f16 with bf16 -> f32.
  Tensor p = cat({from_vector<int32_t>({1, 2}), from_vector<float>({0.5f})});
  CHECK(p.dtype() == DType::F32);
  CHECK(d(p) == std::vector<double>{1, 2, 0.5});
  CHECK(cat({from_vector<int32_t>({1}), i64({2})}).dtype() == DType::I64);
  CHECK(cat({ones({1}, DType::F16), ones({1}, DType::BF16)}).dtype() == DType::F32);
  CHECK(cat({from_vector<bool>({true}), from_vector<uint8_t>({7})}).to_vector<int32_t>() ==
        std::vector<int32_t>{1, 7});
  // Empty pieces.
  Tensor e = cat({zeros({0, 3}), a, zeros({0, 3})});
  CHECK(e.sizes() == Shape{2, 3});
  CHECK(d(e) == d(a));
  CHECK(cat({zeros({0, 3}), zeros({0, 3})}).sizes() == Shape{0, 3});
  CHECK(d(cat({a, zeros({2, 0})}, 1)) == d(a));
  // Non-contiguous pieces.
  Tensor t = cat({a.t(), b.t()}, 1);  // [3, 3]
  CHECK(d(t) == std::vector<double>{1, 4, 7, 2, 5, 8, 3, 6, 9});
}

TEST_CASE("stack", "[ops][index][stack]") {
  Tensor a = from_vector<float>({1, 2, 3}), b = from_vector<float>({4, 5, 6});
  Tensor s0 = stack({a, b});
  CHECK(s0.sizes() == Shape{2, 3});
  CHECK(d(s0) == std::vector<double>{1, 2, 3, 4, 5, 6});
  Tensor s1 = stack({a, b}, 1);
  CHECK(s1.sizes() == Shape{3, 2});
  CHECK(d(s1) == std::vector<double>{1, 4, 2, 5, 3, 6});
  CHECK(stack({a, b}, -1).sizes() == Shape{3, 2});
  CHECK(stack({a, b, a}, -2).sizes() == Shape{3, 3});
  Tensor m = from_vector<float>({1, 2, 3, 4}, {2, 2});
  Tensor s = stack({m, m.t()}, 1);  // [2, 2, 2]
  CHECK(d(s) == std::vector<double>{1, 2, 1, 3, 3, 4, 2, 4});
  CHECK(stack({scalar_tensor(1.0), scalar_tensor(2.0)}).sizes() == Shape{2});
  CHECK(stack({from_vector<int32_t>({1}), from_vector<double>({2})}).dtype() == DType::F64);
}

TEST_CASE("split, split_with_sizes and chunk return views", "[ops][index][split]") {
  Tensor x = arange(14, DType::F32).view({7, 2});
  std::vector<Tensor> p = split(x, 3);
  REQUIRE(p.size() == 3);
  CHECK(p[0].sizes() == Shape{3, 2});
  CHECK(p[1].sizes() == Shape{3, 2});
  CHECK(p[2].sizes() == Shape{1, 2});
  CHECK(d(p[1]) == std::vector<double>{6, 7, 8, 9, 10, 11});
  CHECK(d(p[2]) == std::vector<double>{12, 13});
  for (const Tensor& t : p) CHECK(t.shares_storage(x));
  std::vector<Tensor> q = split(x, 1, 1);
  REQUIRE(q.size() == 2);
  CHECK(d(q[1]) == std::vector<double>{1, 3, 5, 7, 9, 11, 13});
  CHECK(split(x, 10).size() == 1);
  CHECK(split(x, 7).size() == 1);

  std::vector<Tensor> w = split_with_sizes(x, {2, 0, 5});
  REQUIRE(w.size() == 3);
  CHECK(w[0].sizes() == Shape{2, 2});
  CHECK(w[1].sizes() == Shape{0, 2});
  CHECK(w[2].sizes() == Shape{5, 2});
  CHECK(d(w[2])[0] == 4);
  CHECK(split_with_sizes(x, {1, 1}, -1)[1].sizes() == Shape{7, 1});

  std::vector<Tensor> c = chunk(x, 3);
  REQUIRE(c.size() == 3);
  CHECK(c[0].sizes() == Shape{3, 2});
  CHECK(c[2].sizes() == Shape{1, 2});
  CHECK(chunk(x, 2, 1).size() == 2);
  CHECK(chunk(arange(6), 4).size() == 3);  // pieces of ceil(6/4) = 2
  CHECK(chunk(arange(6), 6).size() == 6);
  CHECK(chunk(arange(2), 5).size() == 2);
  // Writing into a chunk writes into x.
  c[1].fill_(-1);
  CHECK(d(x) == std::vector<double>{0, 1, 2, 3, 4, 5, -1, -1, -1, -1, -1, -1, 12, 13});
  q[0].fill_(100);
  CHECK(d(x.select(1, 0)) == std::vector<double>(7, 100));
  // Pieces of a non-contiguous tensor.
  Tensor tt = arange(12).view({3, 4}).t();  // [4, 3]
  std::vector<Tensor> tc = chunk(tt, 2, 0);
  CHECK(tc[1].to_vector<int64_t>() == std::vector<int64_t>{2, 6, 10, 3, 7, 11});
}

TEST_CASE("index_select", "[ops][index]") {
  Tensor x = arange(12, DType::F32).view({3, 4});
  Tensor r = index_select(x, 0, i64({2, 0, 2}));
  CHECK(r.sizes() == Shape{3, 4});
  CHECK(d(r) == std::vector<double>{8, 9, 10, 11, 0, 1, 2, 3, 8, 9, 10, 11});
  Tensor c = index_select(x, 1, from_vector<int32_t>({3, 1}));
  CHECK(c.sizes() == Shape{3, 2});
  CHECK(d(c) == std::vector<double>{3, 1, 7, 5, 11, 9});
  CHECK(d(index_select(x, -1, i64({0}))) == std::vector<double>{0, 4, 8});
  CHECK(index_select(x, 0, i64({})).sizes() == Shape{0, 4});
  CHECK(d(index_select(x.t(), 0, i64({1, 1}))) == std::vector<double>{1, 5, 9, 1, 5, 9});
  CHECK(index_select(x, 0, scalar_tensor(1, DType::I64)).sizes() == Shape{1, 4});
  Tensor y = arange(24, DType::I32).view({2, 3, 4});
  Tensor m = index_select(y, 1, i64({2, 0}));
  CHECK(m.dtype() == DType::I32);
  CHECK(m.to_vector<int32_t>() == std::vector<int32_t>{8, 9, 10, 11, 0, 1, 2, 3, 20, 21, 22, 23, 12, 13, 14, 15});
  CHECK(d(index_select(ones({3}, DType::F16), 0, i64({1, 2}))) == std::vector<double>{1, 1});

  REQUIRE_KILN_ERROR(index_select(x, 0, i64({3})), "index_select");
  REQUIRE_KILN_ERROR(index_select(x, 0, i64({-1})), "index_select");
  REQUIRE_KILN_ERROR(index_select(x, 1, i64({0, 4})), "index_select");
  REQUIRE_KILN_ERROR(index_select(x, 2, i64({0})), "index_select");
  REQUIRE_KILN_ERROR(index_select(x, 0, i64({0, 1}, {1, 2})), "index_select");
  REQUIRE_KILN_ERROR(index_select(x, 0, from_vector<float>({0})), "index_select");
  REQUIRE_KILN_ERROR(index_select(scalar_tensor(1.0), 0, i64({0})), "index_select");
}

TEST_CASE("gather", "[ops][index]") {
  // PyTorch's documentation example.
  Tensor x = from_vector<float>({1, 2, 3, 4}, {2, 2});
  Tensor g = gather(x, 1, i64({0, 0, 1, 0}, {2, 2}));
  CHECK(d(g) == std::vector<double>{1, 1, 4, 3});
  Tensor g0 = gather(x, 0, i64({1, 0, 0, 0}, {2, 2}));
  CHECK(d(g0) == std::vector<double>{3, 2, 1, 2});
  // Fewer entries along dim than the input has.
  Tensor y = arange(12).view({3, 4});
  Tensor g1 = gather(y, 1, from_vector<int32_t>({3, 2, 1, 0, 0, 3}, {3, 2}));
  CHECK(g1.sizes() == Shape{3, 2});
  CHECK(g1.to_vector<int64_t>() == std::vector<int64_t>{3, 2, 5, 4, 8, 11});
  // 3-D along the middle dim against a loop.
  Tensor z = test::random_tensor({2, 5, 3}, DType::F64, 7);
  Generator gen(8);
  Tensor idx = randint(0, 5, {2, 4, 3}, DType::I64, &gen);
  Tensor out = gather(z, 1, idx);
  std::vector<double> zv = d(z), ov = d(out);
  std::vector<int64_t> iv = idx.to_vector<int64_t>();
  int bad = 0;
  for (int a = 0; a < 2; ++a)
    for (int j = 0; j < 4; ++j)
      for (int c = 0; c < 3; ++c) bad += ov[(a * 4 + j) * 3 + c] != zv[(a * 5 + iv[(a * 4 + j) * 3 + c]) * 3 + c];
  CHECK(bad == 0);
  CHECK_EQUAL_T(gather(test::transposed_copy(z), 1, test::strided_copy(idx)), out);

  REQUIRE_KILN_ERROR(gather(x, 1, i64({0, 2, 0, 0}, {2, 2})), "gather");
  REQUIRE_KILN_ERROR(gather(x, 1, i64({0, -1, 0, 0}, {2, 2})), "gather");
  REQUIRE_KILN_ERROR(gather(x, 1, i64({0, 1})), "gather");              // wrong dims
  REQUIRE_KILN_ERROR(gather(x, 1, i64({0, 0, 0}, {3, 1})), "gather");   // other dims differ
  REQUIRE_KILN_ERROR(gather(x, 2, i64({0, 0, 0, 0}, {2, 2})), "gather");
  REQUIRE_KILN_ERROR(gather(x, 1, from_vector<float>({0, 0, 0, 0}, {2, 2})), "gather");
}

TEST_CASE("scatter_add accumulates duplicate indices", "[ops][index]") {
  Tensor x = zeros({5});
  Tensor r = scatter_add(x, 0, i64({0, 1, 0, 4, 0}), ones({5}));
  CHECK(d(r) == std::vector<double>{3, 1, 0, 0, 1});
  CHECK(d(x) == std::vector<double>(5, 0));  // out of place
  // 2-D along dim 1, and along dim 0.
  Tensor b = ones({2, 3});
  Tensor s = scatter_add(b, 1, i64({2, 2, 0, 1}, {2, 2}), from_vector<float>({1, 2, 3, 4}, {2, 2}));
  CHECK(d(s) == std::vector<double>{1, 1, 4, 4, 5, 1});
  Tensor s0 = scatter_add(zeros({3, 2}), 0, i64({2, 0, 2, 2}, {2, 2}), from_vector<float>({1, 2, 3, 4}, {2, 2}));
  CHECK(d(s0) == std::vector<double>{0, 2, 0, 0, 4, 4});
  // In place, into a non-contiguous tensor: the base sees it.
  Tensor base = zeros({3, 2});
  Tensor tv = base.t();  // [2, 3]
  Tensor& ret = scatter_add_(tv, 1, i64({0, 0, 2, 1}, {2, 2}), from_vector<float>({1, 1, 5, 7}, {2, 2}));
  CHECK(&ret == &tv);
  CHECK(d(tv) == std::vector<double>{2, 0, 0, 0, 7, 5});
  CHECK(d(base) == std::vector<double>{2, 0, 0, 7, 0, 5});
  // Integers, and many duplicates.
  Tensor cnt = scatter_add(zeros({3}, DType::I64), 0, i64(std::vector<int64_t>(1000, 2)), ones({1000}, DType::I64));
  CHECK(cnt.to_vector<int64_t>() == std::vector<int64_t>{0, 0, 1000});
  Tensor h = scatter_add(zeros({2}, DType::BF16), 0, i64({1, 1}), full({2}, 0.5, DType::BF16));
  CHECK(d(h) == std::vector<double>{0, 1});

  REQUIRE_KILN_ERROR(scatter_add(x, 0, i64({5}), ones({1})), "scatter_add");
  REQUIRE_KILN_ERROR(scatter_add(x, 0, i64({-1}), ones({1})), "scatter_add");
  REQUIRE_KILN_ERROR(scatter_add(x, 0, i64({0}), ones({1}, DType::F64)), "scatter_add");
  REQUIRE_KILN_ERROR(scatter_add(x, 0, i64({0, 1}), ones({3})), "scatter_add");
  REQUIRE_KILN_ERROR(scatter_add(b, 1, i64({0, 0, 0}, {3, 1}), ones({3, 1})), "scatter_add");
  REQUIRE_KILN_ERROR(scatter_add(b, 1, i64({0, 0}), ones({2})), "scatter_add");
  REQUIRE_KILN_ERROR(scatter_add(b, 2, i64({0, 0}, {2, 1}), ones({2, 1})), "scatter_add");
  REQUIRE_KILN_ERROR(scatter_add(zeros({2}, DType::Bool), 0, i64({0}), ones({1}, DType::Bool)), "scatter_add");
}

TEST_CASE("one_hot", "[ops][index]") {
  Tensor o = one_hot(i64({0, 2, 1}));
  CHECK(o.dtype() == DType::I64);
  CHECK(o.sizes() == Shape{3, 3});  // num_classes inferred as max + 1
  CHECK(o.to_vector<int64_t>() == std::vector<int64_t>{1, 0, 0, 0, 0, 1, 0, 1, 0});
  Tensor o5 = one_hot(i64({0, 2, 1}), 5);
  CHECK(o5.sizes() == Shape{3, 5});
  CHECK(o5.to_vector<int64_t>() == std::vector<int64_t>{1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0});
  Tensor o2 = one_hot(from_vector<int32_t>({3, 0, 1, 3}, {2, 2}));
  CHECK(o2.sizes() == Shape{2, 2, 4});
  CHECK(o2.dtype() == DType::I64);
  CHECK(o2.to_vector<int64_t>() == std::vector<int64_t>{0, 0, 0, 1, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1});
  CHECK(sum(o2, {-1}).to_vector<int64_t>() == std::vector<int64_t>{1, 1, 1, 1});
  CHECK(one_hot(i64({}), 3).sizes() == Shape{0, 3});
  CHECK(one_hot(scalar_tensor(2, DType::I64), 3).to_vector<int64_t>() == std::vector<int64_t>{0, 0, 1});

  REQUIRE_KILN_ERROR(one_hot(i64({0, 3}), 3), "one_hot");
  REQUIRE_KILN_ERROR(one_hot(i64({-1, 0})), "one_hot");
  REQUIRE_KILN_ERROR(one_hot(from_vector<float>({0, 1})), "one_hot");
  REQUIRE_KILN_ERROR(one_hot(i64({})), "one_hot");
  REQUIRE_KILN_ERROR(one_hot(Tensor()), "one_hot");
}

TEST_CASE("cat, stack, split, chunk: bad input throws kiln::Error naming the op", "[ops][index][errors]") {
  Tensor a = zeros({2, 3});
  REQUIRE_KILN_ERROR(cat({}), "cat");
  REQUIRE_KILN_ERROR(cat({a, zeros({2, 4})}), "cat");
  REQUIRE_KILN_ERROR(cat({a, zeros({3, 3})}, 1), "cat");
  REQUIRE_KILN_ERROR(cat({a, zeros({3})}), "cat");
  REQUIRE_KILN_ERROR(cat({a, a}, 2), "cat");
  REQUIRE_KILN_ERROR(cat({scalar_tensor(1.0), scalar_tensor(2.0)}), "cat");
  REQUIRE_KILN_ERROR(cat({a, Tensor()}), "cat");
  REQUIRE_KILN_ERROR(stack({}), "stack");
  REQUIRE_KILN_ERROR(stack({a, zeros({3, 2})}), "stack");
  REQUIRE_KILN_ERROR(stack({a, a}, 3), "stack");
  REQUIRE_KILN_ERROR(split(a, 0), "split");
  REQUIRE_KILN_ERROR(split(a, 1, 2), "split");
  REQUIRE_KILN_ERROR(split_with_sizes(a, {1, 2}), "split");
  REQUIRE_KILN_ERROR(split_with_sizes(a, {3, -1}), "split");
  REQUIRE_KILN_ERROR(chunk(a, 0), "chunk");
  REQUIRE_KILN_ERROR(chunk(a, -2), "chunk");
  REQUIRE_KILN_ERROR(chunk(a, 2, 5), "chunk");
}

TEST_CASE("index ops on the CPU: out-of-range indices throw at once, naming the op and the range",
          "[ops][index][errors]") {
  using Catch::Contains;
  Tensor x = arange(12, DType::F32).view({3, 4});
  auto message = [](const std::function<void()>& f) -> std::string {
    try {
      f();
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  };
  CHECK_THAT(message([&] { (void)index_select(x, 0, i64({0, 5})); }),
             Contains("index_select") && Contains("[0, 3)") && Contains("[0, 5]"));
  CHECK_THAT(message([&] { (void)gather(x, 1, i64({0, 4, 0, -2, 0, 0}, {3, 2})); }),
             Contains("gather") && Contains("[0, 4)") && Contains("[-2, 4]"));
  CHECK_THAT(message([&] { (void)scatter_add(x, 0, i64({3, 0, 0, 0}, {1, 4}), ones({1, 4})); }),
             Contains("scatter_add") && Contains("[0, 3)"));
  CHECK_THAT(message([&] { (void)one_hot(from_vector<int32_t>({1, 6}), 4); }),
             Contains("one_hot") && Contains("[0, 4)") && Contains("[1, 6]"));
  // Backward formulas check nothing again, inside an IndicesChecked scope that ends with
  // them: afterwards, checks are back.
  {
    detail::IndicesChecked outer;
    {
      detail::IndicesChecked inner;
      CHECK_FALSE(detail::host_checks_indices(x));
    }
    CHECK_FALSE(detail::host_checks_indices(x));
  }
  CHECK(detail::host_checks_indices(x));
  Tensor xs = x.clone().set_requires_grad(true);
  Tensor y = gather(xs, 1, i64({3, 0, 1, 1, 2, 2}, {3, 2}));
  sum(index_select(y, 0, i64({2, 2, 0}))).backward();
  CHECK(d(xs.grad()) == std::vector<double>{1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 4, 0});
  REQUIRE_KILN_ERROR(gather(x, 1, i64({0, 4, 0, 0, 0, 0}, {3, 2})), "gather");
}
