// Binary elementwise ops on the CPU: broadcasting, PyTorch's dtype promotion, scalar
// forms, in-place forms, comparisons, pow, maximum/minimum with NaN, where, casts
// between all dtypes and fill; bad input throws kiln::Error naming the op.
#include "test_util.h"

#include <cmath>
#include <limits>

using namespace kiln;

namespace {
const double kNaN = std::numeric_limits<double>::quiet_NaN();
std::vector<double> d(const Tensor& t) { return test::values(t); }
Tensor f32(std::vector<float> v, Shape s = {}) {
  if (s.empty()) s = {static_cast<int64_t>(v.size())};
  return from_vector<float>(v, s);
}
}  // namespace

TEST_CASE("binary ops: broadcasting [3,1] with [4] gives [3,4]", "[ops][binary]") {
  Tensor a = f32({1, 2, 3}, {3, 1});
  Tensor b = f32({10, 20, 30, 40});
  Tensor s = add(a, b);
  REQUIRE(s.sizes() == Shape{3, 4});
  std::vector<double> want;
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 4; ++j) want.push_back((i + 1) + 10.0 * (j + 1));
  CHECK(d(s) == want);
  CHECK(d(b + a) == want);
  want.clear();
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 4; ++j) want.push_back((i + 1) - 10.0 * (j + 1));
  CHECK(d(a - b) == want);
  CHECK(d(mul(a, b))[5] == 2 * 20);
  CHECK(d(div(b, a))[4] == 10.0f / 2);

  // Broadcasting across more dims and with size-1 dims on both sides.
  Tensor x = test::random_tensor({2, 1, 4}, DType::F64, 1), y = test::random_tensor({3, 1}, DType::F64, 2);
  Tensor z = mul(x, y);
  REQUIRE(z.sizes() == Shape{2, 3, 4});
  std::vector<double> xv = d(x), yv = d(y), zv = d(z);
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 3; ++j)
      for (int k = 0; k < 4; ++k) CHECK(zv[(i * 3 + j) * 4 + k] == xv[i * 4 + k] * yv[j]);
  // A 0-d operand broadcasts everywhere.
  CHECK(d(add(f32({1, 2}), scalar_tensor(0.5))) == std::vector<double>{1.5, 2.5});
  // Empty broadcast.
  CHECK(add(zeros({0, 3}), zeros({3})).sizes() == Shape{0, 3});
}

TEST_CASE("binary ops: all arithmetic ops on known values", "[ops][binary]") {
  Tensor a = from_vector<double>({6, -3, 2.5, 0}), b = from_vector<double>({4, 2, -0.5, 7});
  CHECK(d(add(a, b)) == std::vector<double>{10, -1, 2, 7});
  CHECK(d(sub(a, b)) == std::vector<double>{2, -5, 3, -7});
  CHECK(d(mul(a, b)) == std::vector<double>{24, -6, -1.25, 0});
  CHECK(d(div(a, b)) == std::vector<double>{1.5, -1.5, -5, 0});
  CHECK(d(maximum(a, b)) == std::vector<double>{6, 2, 2.5, 7});
  CHECK(d(minimum(a, b)) == std::vector<double>{4, -3, -0.5, 0});
  CHECK(d(a * b + a / b - b) == std::vector<double>{24 + 1.5 - 4, -6 - 1.5 - 2, -1.25 - 5 + 0.5, 0 + 0 - 7});
  // Division by zero follows IEEE.
  std::vector<double> q = d(div(f32({1, -1, 0}), f32({0, 0, 0})));
  CHECK(q[0] == std::numeric_limits<double>::infinity());
  CHECK(q[1] == -std::numeric_limits<double>::infinity());
  CHECK(std::isnan(q[2]));
  // Integer arithmetic stays integer and exact.
  Tensor i = from_vector<int64_t>({1ll << 40, -7}), j = from_vector<int64_t>({3, 2});
  CHECK(add(i, j).dtype() == DType::I64);
  CHECK(add(i, j).to_vector<int64_t>() == std::vector<int64_t>{(1ll << 40) + 3, -5});
  CHECK(mul(i, j).to_vector<int64_t>() == std::vector<int64_t>{3 * (1ll << 40), -14});
  CHECK(sub(from_vector<int32_t>({5}), from_vector<int32_t>({9})).to_vector<int32_t>() == std::vector<int32_t>{-4});
}

TEST_CASE("binary ops: dtype promotion", "[ops][binary]") {
  Tensor i32 = from_vector<int32_t>({7, -3}), i64 = from_vector<int64_t>({2, 2});
  Tensor f = f32({0.5f, 0.25f});
  Tensor r = add(i32, f);
  CHECK(r.dtype() == DType::F32);
  CHECK(d(r) == std::vector<double>{7.5, -2.75});
  CHECK(add(i32, i64).dtype() == DType::I64);
  CHECK(add(from_vector<uint8_t>({250}), from_vector<int32_t>({10})).to_vector<int32_t>() ==
        std::vector<int32_t>{260});
  // i64 / i64 is true division in f32.
  Tensor q = div(from_vector<int64_t>({7, -7, 6}), from_vector<int64_t>({2, 2, 3}));
  CHECK(q.dtype() == DType::F32);
  CHECK(d(q) == std::vector<double>{3.5, -3.5, 2});
  CHECK(div(i32, i32).dtype() == DType::F32);
  CHECK(div(from_vector<double>({1}), from_vector<int64_t>({4})).dtype() == DType::F64);
  CHECK(add(f, from_vector<double>({1, 1})).dtype() == DType::F64);
  Tensor hb = add(ones({2}, DType::F16), ones({2}, DType::BF16));
  CHECK(hb.dtype() == DType::F32);
  CHECK(d(hb) == std::vector<double>{2, 2});
  CHECK(add(ones({1}, DType::F16), from_vector<int64_t>({3})).dtype() == DType::F16);
  CHECK(add(ones({1}, DType::BF16), ones({1}, DType::F32)).dtype() == DType::F32);
  CHECK(add(from_vector<bool>({true}), from_vector<int32_t>({2})).to_vector<int32_t>() == std::vector<int32_t>{3});
  CHECK(add(from_vector<bool>({true}), f32({0.5f})).dtype() == DType::F32);
  CHECK(mul(from_vector<bool>({true, false}), from_vector<uint8_t>({3, 3})).dtype() == DType::U8);
}

TEST_CASE("binary ops: tensor-scalar and scalar-first forms", "[ops][binary]") {
  Tensor i = from_vector<int32_t>({1, 2, 3});
  Tensor m = mul(i, 2.5);
  CHECK(m.dtype() == DType::F32);
  CHECK(d(m) == std::vector<double>{2.5, 5, 7.5});
  CHECK((i * 2.5).dtype() == DType::F32);
  CHECK((i * 2).dtype() == DType::I32);  // an integer scalar does not widen an integer tensor
  CHECK((i * 2).to_vector<int32_t>() == std::vector<int32_t>{2, 4, 6});
  CHECK((from_vector<int64_t>({1}) + 1).dtype() == DType::I64);
  CHECK((ones({2}, DType::F16) * 2.5).dtype() == DType::F16);  // no widening within floats
  CHECK(d(ones({2}, DType::F16) * 2.5) == std::vector<double>{2.5, 2.5});
  CHECK((ones({1}, DType::BF16) + 1).dtype() == DType::BF16);
  CHECK((from_vector<uint8_t>({1}) + 3).dtype() == DType::U8);
  CHECK((from_vector<bool>({true, false}) + 1).dtype() == DType::I64);
  CHECK((from_vector<bool>({true, false}) + 1).to_vector<int64_t>() == std::vector<int64_t>{2, 1});
  CHECK((from_vector<bool>({true}) * 1.5).dtype() == DType::F32);
  CHECK(d(i / 2) == std::vector<double>{0.5, 1, 1.5});
  CHECK((i / 2).dtype() == DType::F32);
  CHECK(d(from_vector<double>({1, 2}) - 0.5) == std::vector<double>{0.5, 1.5});

  // Scalar first.
  Tensor f = f32({1, 2, 4});
  CHECK(d(2 - f) == std::vector<double>{1, 0, -2});
  CHECK(d(sub(2, f)) == std::vector<double>{1, 0, -2});
  CHECK(d(1 / f) == std::vector<double>{1, 0.5, 0.25});
  CHECK(d(3 + f) == std::vector<double>{4, 5, 7});
  CHECK(d(2.0 * f) == std::vector<double>{2, 4, 8});
  CHECK(d(pow(2, f)) == std::vector<double>{2, 4, 16});
  CHECK((10 - i).to_vector<int32_t>() == std::vector<int32_t>{9, 8, 7});
  CHECK((0.5 - i).dtype() == DType::F32);
  CHECK(d(maximum(2, f)) == std::vector<double>{2, 2, 4});
  CHECK(d(minimum(f, 2)) == std::vector<double>{1, 2, 2});
}

TEST_CASE("binary ops: in-place forms", "[ops][binary]") {
  Tensor a = f32({1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor& r = add_(a, f32({10, 20, 30}));  // broadcast [3] into [2, 3]
  CHECK(&r == &a);
  CHECK(d(a) == std::vector<double>{11, 22, 33, 14, 25, 36});
  mul_(a, f32({1, -1}, {2, 1}));
  CHECK(d(a) == std::vector<double>{11, 22, 33, -14, -25, -36});
  a += 1;
  a -= f32({1});
  a *= 2;
  a /= 2;
  CHECK(d(a) == std::vector<double>{11, 22, 33, -14, -25, -36});
  sub_(a, 1.0);
  div_(a, 2);
  CHECK(d(a) == std::vector<double>{5, 10.5, 16, -7.5, -13, -18.5});
  // Aliased operand: a += a.
  Tensor b = f32({1, 2});
  add_(b, b);
  CHECK(d(b) == std::vector<double>{2, 4});
  pow_(b, 2);
  CHECK(d(b) == std::vector<double>{4, 16});
  maximum_(b, 5);
  CHECK(d(b) == std::vector<double>{5, 16});
  // In place on a non-contiguous view writes into the base.
  Tensor base = zeros({3, 4});
  Tensor col = base.select(1, 2);
  add_(col, f32({1, 2, 3}));
  CHECK(d(base) == std::vector<double>{0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0});
  Tensor tv = base.t();
  mul_(tv, 2);
  CHECK(d(base)[10] == 6);
  // An integer in-place op with an integer operand stays integer.
  Tensor i = from_vector<int64_t>({5, 6});
  add_(i, from_vector<int32_t>({1, 1}));
  CHECK(i.to_vector<int64_t>() == std::vector<int64_t>{6, 7});
  mul_(i, 3);
  CHECK(i.to_vector<int64_t>() == std::vector<int64_t>{18, 21});
  // A float tensor accepts an integer operand.
  Tensor g = f32({0.5f});
  add_(g, from_vector<int64_t>({2}));
  CHECK(g.item<float>() == 2.5f);
  // A half tensor computes and stores in place.
  Tensor h = ones({2}, DType::BF16);
  add_(h, 0.5);
  CHECK(h.dtype() == DType::BF16);
  CHECK(d(h) == std::vector<double>{1.5, 1.5});
}

TEST_CASE("binary ops: in-place errors", "[ops][binary][errors]") {
  Tensor i = from_vector<int64_t>({1, 2});
  REQUIRE_KILN_ERROR(add_(i, f32({0.5f, 0.5f})), "add");
  REQUIRE_KILN_ERROR(add_(i, 0.5), "add");
  REQUIRE_KILN_ERROR(div_(i, 2), "div");  // true division gives f32
  Tensor i32 = from_vector<int32_t>({1});
  REQUIRE_KILN_ERROR(mul_(i32, from_vector<int64_t>({2})), "mul");
  Tensor a = zeros({3});
  REQUIRE_KILN_ERROR(add_(a, zeros({2, 3})), "add");  // result would be [2, 3]
  REQUIRE_KILN_ERROR(add_(a, zeros({4})), "add");
  REQUIRE_KILN_ERROR(eq_(a, a), "eq");
  Tensor h = zeros({2}, DType::F16);
  REQUIRE_KILN_ERROR(add_(h, zeros({2}, DType::F32)), "add");
  REQUIRE_KILN_ERROR(mul_(h, zeros({2}, DType::BF16)), "mul");
  Tensor bo = from_vector<bool>({true});
  REQUIRE_KILN_ERROR(add_(bo, bo), "add");
  // Nothing was written by a rejected op.
  CHECK(i.to_vector<int64_t>() == std::vector<int64_t>{1, 2});
}

TEST_CASE("binary ops: comparisons give bool", "[ops][binary]") {
  Tensor a = f32({1, 2, 3}), b = f32({3, 2, 1});
  CHECK(eq(a, b).dtype() == DType::Bool);
  CHECK(eq(a, b).to_vector<bool>() == std::vector<bool>{false, true, false});
  CHECK(ne(a, b).to_vector<bool>() == std::vector<bool>{true, false, true});
  CHECK(lt(a, b).to_vector<bool>() == std::vector<bool>{true, false, false});
  CHECK(le(a, b).to_vector<bool>() == std::vector<bool>{true, true, false});
  CHECK(gt(a, b).to_vector<bool>() == std::vector<bool>{false, false, true});
  CHECK(ge(a, b).to_vector<bool>() == std::vector<bool>{false, true, true});
  CHECK(gt(a, 1.5).to_vector<bool>() == std::vector<bool>{false, true, true});
  CHECK(le(2, a).to_vector<bool>() == std::vector<bool>{false, true, true});
  CHECK(eq(from_vector<int32_t>({1, 2}), f32({1.0f, 2.5f})).to_vector<bool>() == std::vector<bool>{true, false});
  CHECK(eq(from_vector<int64_t>({3}), 3).to_vector<bool>() == std::vector<bool>{true});
  CHECK(eq(from_vector<bool>({true, false}), from_vector<bool>({true, true})).to_vector<bool>() ==
        std::vector<bool>{true, false});
  // Broadcasting.
  Tensor c = lt(f32({1, 2, 3}, {3, 1}), f32({2, 3}));
  CHECK(c.sizes() == Shape{3, 2});
  CHECK(c.to_vector<bool>() == std::vector<bool>{true, true, false, true, false, false});
  // NaN compares unequal to everything.
  Tensor n = f32({std::nanf("")});
  CHECK(eq(n, n).to_vector<bool>() == std::vector<bool>{false});
  CHECK(ne(n, n).to_vector<bool>() == std::vector<bool>{true});
  CHECK(lt(n, 0).to_vector<bool>() == std::vector<bool>{false});
  CHECK(ge(n, 0).to_vector<bool>() == std::vector<bool>{false});
  // Comparisons of i64 values beyond 2^53 are exact.
  Tensor big = from_vector<int64_t>({(1ll << 60) + 1});
  CHECK(eq(big, from_vector<int64_t>({1ll << 60})).to_vector<bool>() == std::vector<bool>{false});
}

TEST_CASE("binary ops: pow", "[ops][binary]") {
  CHECK(d(pow(f32({2, 3, 4}), f32({3, 2, 0.5f}))) == std::vector<double>{8, 9, 2});
  CHECK(d(pow(f32({9, 16}), 0.5)) == std::vector<double>{3, 4});
  CHECK(d(pow(from_vector<double>({2}), -1)) == std::vector<double>{0.5});
  Tensor ip = pow(from_vector<int64_t>({2, 3, -2, 7}), from_vector<int64_t>({10, 3, 3, 0}));
  CHECK(ip.dtype() == DType::I64);
  CHECK(ip.to_vector<int64_t>() == std::vector<int64_t>{1024, 27, -8, 1});
  CHECK(pow(from_vector<int64_t>({3}), 39).to_vector<int64_t>() == std::vector<int64_t>{4052555153018976267ll});
  CHECK(pow(from_vector<int32_t>({2}), 0.5).dtype() == DType::F32);
  CHECK(std::isnan(d(pow(f32({-8}), f32({1.0f / 3})))[0]));
  CHECK(d(pow(f32({0}), f32({0}))) == std::vector<double>{1});
  CHECK_CLOSE(pow(full({1}, 1.5, DType::F16), 2), from_vector<double>({2.25}));
}

TEST_CASE("binary ops: maximum and minimum propagate NaN", "[ops][binary]") {
  Tensor a = from_vector<double>({1, kNaN, 3, kNaN}), b = from_vector<double>({2, 2, kNaN, kNaN});
  std::vector<double> mx = d(maximum(a, b)), mn = d(minimum(a, b));
  CHECK(mx[0] == 2);
  CHECK(std::isnan(mx[1]));
  CHECK(std::isnan(mx[2]));
  CHECK(std::isnan(mx[3]));
  CHECK(mn[0] == 1);
  CHECK(std::isnan(mn[1]));
  CHECK(std::isnan(mn[2]));
  CHECK(std::isnan(mn[3]));
  std::vector<double> hf = d(maximum(full({1}, NAN, DType::F16), ones({1}, DType::F16)));
  CHECK(std::isnan(hf[0]));
  std::vector<double> ms = d(minimum(f32({std::nanf(""), 1}), 0.5));
  CHECK(std::isnan(ms[0]));
  CHECK(ms[1] == 0.5);
  CHECK(maximum(from_vector<int32_t>({-5, 9}), from_vector<int32_t>({3, 3})).to_vector<int32_t>() ==
        std::vector<int32_t>{3, 9});
  CHECK(minimum(from_vector<int64_t>({-5, 9}), 0).to_vector<int64_t>() == std::vector<int64_t>{-5, 0});
  CHECK(maximum(from_vector<bool>({true, false}), from_vector<bool>({false, false})).to_vector<bool>() ==
        std::vector<bool>{true, false});
  CHECK(d(maximum(f32({-0.5f, 4}, {2, 1}), f32({0, 1, 2}))) == std::vector<double>{0, 1, 2, 4, 4, 4});
}

TEST_CASE("binary ops: non-contiguous operands", "[ops][binary]") {
  Tensor a = test::random_tensor({6, 5}, DType::F32, 3), b = test::random_tensor({6, 5}, DType::F32, 4);
  for (BinaryOp op : {BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div, BinaryOp::Maximum,
                      BinaryOp::Minimum, BinaryOp::Lt, BinaryOp::Eq}) {
    INFO(op_name(op));
    Tensor ref = binary(op, a, b);
    CHECK_EQUAL_T(binary(op, test::transposed_copy(a), test::strided_copy(b)), ref);
    CHECK_EQUAL_T(binary(op, a.t(), b.t()), ref.t());
    CHECK_EQUAL_T(binary(op, a.slice(0, 0, 6, 2), b.slice(0, 0, 6, 2)), ref.slice(0, 0, 6, 2));
  }
  // Element by element against the formula.
  std::vector<double> av = d(a), bv = d(b), sv = d(sub(a.t(), b.t()).t());
  int bad = 0;
  for (size_t i = 0; i < av.size(); ++i) bad += sv[i] != static_cast<double>(static_cast<float>(av[i] - bv[i]));
  CHECK(bad == 0);
}

TEST_CASE("where", "[ops][binary][where]") {
  Tensor cond = from_vector<bool>({true, false, true});
  CHECK(d(where(cond, f32({1, 2, 3}), f32({-1, -2, -3}))) == std::vector<double>{1, -2, 3});
  // Broadcasting: cond [3, 1], a [4], b 0-d.
  Tensor c2 = from_vector<bool>({true, false, true}, {3, 1});
  Tensor w = where(c2, f32({1, 2, 3, 4}), scalar_tensor(0.0));
  REQUIRE(w.sizes() == Shape{3, 4});
  CHECK(d(w) == std::vector<double>{1, 2, 3, 4, 0, 0, 0, 0, 1, 2, 3, 4});
  // Scalar forms and promotion.
  Tensor ws = where(cond, from_vector<int32_t>({5, 6, 7}), 0.5);
  CHECK(ws.dtype() == DType::F32);
  CHECK(d(ws) == std::vector<double>{5, 0.5, 7});
  Tensor ws2 = where(cond, -1, from_vector<int64_t>({5, 6, 7}));
  CHECK(ws2.dtype() == DType::I64);
  CHECK(ws2.to_vector<int64_t>() == std::vector<int64_t>{-1, 6, -1});
  CHECK(where(cond, from_vector<int32_t>({1, 1, 1}), from_vector<double>({0, 0, 0})).dtype() == DType::F64);
  // A condition computed by a comparison, on a non-contiguous input.
  Tensor x = from_vector<float>({-1, 2, -3, 4, -5, 6}, {2, 3}).t();
  CHECK(d(where(gt(x, 0), x, 0)) == std::vector<double>{0, 4, 2, 0, 0, 6});
  // Bad input.
  REQUIRE_KILN_ERROR(where(from_vector<uint8_t>({1, 0, 1}), f32({1, 2, 3}), f32({1, 2, 3})), "where");
  REQUIRE_KILN_ERROR(where(f32({1, 0, 1}), f32({1, 2, 3}), f32({1, 2, 3})), "where");
  REQUIRE_KILN_ERROR(where(cond, f32({1, 2}), f32({1, 2, 3})), "where");
  REQUIRE_KILN_ERROR(where(Tensor(), f32({1}), f32({1})), "where");
}

TEST_CASE("casts between all 8 dtypes", "[ops][binary][cast]") {
  // Values exactly representable in every dtype (bool: nonzero -> true -> 1).
  const std::vector<double> vals{0, 1, 2, 3, 100, 0, 7};
  for (DType from : test::all_dtypes()) {
    Tensor src = from_vector<double>(vals).to(from);
    std::vector<double> sv = d(src);
    for (DType to : test::all_dtypes()) {
      INFO(dtype_name(from) << " -> " << dtype_name(to));
      Tensor out = cast(src, to);
      CHECK(out.dtype() == to);
      std::vector<double> want;
      for (double v : sv) want.push_back(to == DType::Bool ? (v != 0) : v);
      CHECK(d(out) == want);
      // Non-contiguous source.
      CHECK(d(cast(test::strided_copy(src), to)) == want);
    }
  }
  // Negative and fractional values where the target can hold them.
  Tensor neg = from_vector<double>({-1.75, -0.25, 2.5});
  CHECK(cast(neg, DType::I32).to_vector<int32_t>() == std::vector<int32_t>{-1, 0, 2});
  CHECK(cast(neg, DType::I64).to_vector<int64_t>() == std::vector<int64_t>{-1, 0, 2});
  CHECK(d(cast(neg, DType::F16)) == std::vector<double>{-1.75, -0.25, 2.5});
  CHECK(d(cast(neg, DType::BF16)) == std::vector<double>{-1.75, -0.25, 2.5});
  CHECK(cast(neg, DType::Bool).to_vector<bool>() == std::vector<bool>{true, true, true});
  // f16 <-> bf16 goes through float: 1 + 2^-10 is exact in f16 and rounds to 1 in bf16.
  CHECK(d(cast(full({1}, 1 + std::ldexp(1.0, -10), DType::F16), DType::BF16)) == std::vector<double>{1});
  REQUIRE_KILN_ERROR(cast(Tensor(), DType::F32), "cast");
}

TEST_CASE("fill_", "[ops][binary][fill]") {
  for (DType t : test::all_dtypes()) {
    INFO(dtype_name(t));
    Tensor x = empty({2, 3}, t);
    fill_(x, 1);
    CHECK(d(x) == std::vector<double>(6, 1));
    Tensor col = x.select(1, 1);
    fill_(col, 0);
    CHECK(d(x) == std::vector<double>{1, 0, 1, 1, 0, 1});
  }
  Tensor h = empty({1}, DType::F16);
  fill_(h, 0.1);
  CHECK(h.item<float>() == static_cast<float>(Half(0.1f)));
  Tensor i = empty({2}, DType::I32);
  fill_(i, -123456);
  CHECK(i.to_vector<int32_t>() == std::vector<int32_t>{-123456, -123456});
  Tensor l = empty({1}, DType::I64);
  fill_(l, int64_t{1} << 62);
  CHECK(l.item<int64_t>() == (int64_t{1} << 62));
  Tensor e = zeros({0});
  fill_(e, 3);
  CHECK(e.numel() == 0);
  Tensor u;
  REQUIRE_KILN_ERROR(fill_(u, 1), "fill_");
}

TEST_CASE("binary ops: bad input throws kiln::Error naming the op", "[ops][binary][errors]") {
  Tensor b = from_vector<bool>({true, false});
  REQUIRE_KILN_ERROR(add(b, b), "add");
  REQUIRE_KILN_ERROR(sub(b, b), "sub");
  REQUIRE_KILN_ERROR(mul(b, b), "mul");
  REQUIRE_KILN_ERROR(add(b, true), "add");
  REQUIRE_KILN_ERROR(add(f32({1, 2, 3}), f32({1, 2, 3, 4})), "add");
  REQUIRE_THROWS_WITH(mul(zeros({2, 3}), zeros({4, 3})), Catch::Contains("[2, 3]") && Catch::Contains("[4, 3]"));
  REQUIRE_KILN_ERROR(lt(zeros({2}), zeros({3})), "lt");
  REQUIRE_KILN_ERROR(pow(zeros({2}), zeros({3})), "pow");
  REQUIRE_KILN_ERROR(maximum(zeros({2}), zeros({3})), "maximum");
  REQUIRE_KILN_ERROR(add(Tensor(), zeros({1})), "add");
  REQUIRE_KILN_ERROR(div(zeros({1}), Tensor()), "div");
  REQUIRE_KILN_ERROR(sub(1, Tensor()), "sub");
}
