// Unary and binary elementwise ops and where on CUDA against the CPU reference: every
// op, every dtype it supports, odd sizes and non-contiguous layouts, broadcasting,
// promotion, scalar and in-place forms; tolerances by dtype.
#include "cuda_test_util.h"

#include <cmath>

using namespace kiln;
using test::check_same;
using test::cuda0;
using test::layouts_for;

namespace {
struct UOp {
  const char* name;
  Tensor (*f)(const Tensor&);
  bool positive;  // needs positive input (log, sqrt, rsqrt)
};
const std::vector<UOp>& unary_ops() {
  static const std::vector<UOp> v{
      {"neg", [](const Tensor& x) { return neg(x); }, false},
      {"abs", [](const Tensor& x) { return abs(x); }, false},
      {"exp", [](const Tensor& x) { return exp(x); }, false},
      {"log", [](const Tensor& x) { return log(x); }, true},
      {"sqrt", [](const Tensor& x) { return sqrt(x); }, true},
      {"rsqrt", [](const Tensor& x) { return rsqrt(x); }, true},
      {"sin", [](const Tensor& x) { return sin(x); }, false},
      {"cos", [](const Tensor& x) { return cos(x); }, false},
      {"relu", [](const Tensor& x) { return relu(x); }, false},
      {"leaky_relu", [](const Tensor& x) { return leaky_relu(x, 0.03); }, false},
      {"sigmoid", [](const Tensor& x) { return sigmoid(x); }, false},
      {"tanh", [](const Tensor& x) { return tanh(x); }, false},
      {"gelu", [](const Tensor& x) { return gelu(x); }, false},
      {"gelu_tanh", [](const Tensor& x) { return gelu(x, true); }, false},
      {"silu", [](const Tensor& x) { return silu(x); }, false},
      {"erf", [](const Tensor& x) { return erf(x); }, false},
  };
  return v;
}

const BinaryOp kBinaryOps[] = {BinaryOp::Add,     BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div, BinaryOp::Pow,
                               BinaryOp::Maximum, BinaryOp::Minimum, BinaryOp::Eq, BinaryOp::Ne, BinaryOp::Lt,
                               BinaryOp::Le,      BinaryOp::Gt,  BinaryOp::Ge};
}  // namespace

TEST_CASE("cuda: unary ops match the CPU on every floating dtype", "[cuda][unary]") {
  for (DType t : test::floating_dtypes()) {
    for (const Shape& s : test::odd_shapes()) {
      Tensor base = test::random_tensor(s, t, 11, 2.0);
      Tensor pos = add(abs(base), 0.1);  // computed on the CPU, then copied: same inputs
      Tensor gbase = base.to(cuda0()), gpos = pos.to(cuda0());
      for (const UOp& op : unary_ops()) {
        for (const test::Layout& l : layouts_for(s)) {
          INFO(op.name << " " << dtype_name(t) << " " << shape_str(s) << " " << l.name);
          const Tensor& c = op.positive ? pos : base;
          const Tensor& g = op.positive ? gpos : gbase;
          check_same(op.f(l.apply(g)), op.f(l.apply(c)));
        }
      }
    }
  }
}

TEST_CASE("cuda: unary ops on integer inputs", "[cuda][unary]") {
  for (DType t : {DType::U8, DType::I32, DType::I64}) {
    Tensor c = test::random_tensor({33, 65}, t, 12), g = c.to(cuda0());
    for (const UOp& op : unary_ops()) {
      if (t == DType::U8 && std::string(op.name) == "neg") continue;  // wraps; not meaningful
      INFO(op.name << " " << dtype_name(t));
      Tensor in_c = op.positive ? add(abs(c), 1) : c, in_g = in_c.to(cuda0());
      check_same(op.f(in_g), op.f(in_c));
      check_same(op.f(in_g.t()), op.f(in_c.t()));
    }
  }
  Tensor b = from_vector<bool>({true, false, true}, {3}, cuda0());
  check_same(exp(b), exp(b.cpu()));
  REQUIRE_KILN_ERROR(neg(b), "neg");
  REQUIRE_KILN_ERROR(relu(b), "relu");
}

TEST_CASE("cuda: unary ops on special values", "[cuda][unary]") {
  Tensor c = from_vector<float>({0.0f, -0.0f, INFINITY, -INFINITY, NAN, 1e-30f, -1e-30f, 88.0f, -88.0f, 1e-40f});
  for (DType t : test::floating_dtypes()) {
    Tensor ct = c.to(t), gt = ct.to(cuda0());
    for (const UOp& op : unary_ops()) {
      INFO(op.name << " " << dtype_name(t));
      check_same(op.f(gt), op.f(ct));
    }
  }
  // Empty and 0-d tensors.
  CHECK(exp(zeros({0, 5}, cuda0())).sizes() == Shape{0, 5});
  CHECK(exp(scalar_tensor(0.0, cuda0())).item<float>() == 1.0f);
}

TEST_CASE("cuda: binary ops match the CPU on every dtype", "[cuda][binary]") {
  for (DType t : test::all_dtypes()) {
    for (const Shape& s : test::odd_shapes()) {
      Tensor a = test::random_tensor(s, t, 21), b = test::random_tensor(s, t, 22);
      if (is_integral(t)) b = where(eq(b, 0), 1, b).to(t);  // keep integer division finite
      Tensor ga = a.to(cuda0()), gb = b.to(cuda0());
      for (BinaryOp op : kBinaryOps) {
        bool arith = !is_comparison(op) && op != BinaryOp::Maximum && op != BinaryOp::Minimum;
        if (t == DType::Bool && arith && op != BinaryOp::Div && op != BinaryOp::Pow) {
          INFO(op_name(op) << " bool");
          REQUIRE_THROWS_AS(binary(op, ga, gb), Error);
          continue;
        }
        if (op == BinaryOp::Pow && !is_floating(t)) continue;  // integer overflow: see the pow test
        for (const test::Layout& l : layouts_for(s)) {
          INFO(op_name(op) << " " << dtype_name(t) << " " << shape_str(s) << " " << l.name);
          Tensor pa = a, pb = b, pga = ga, pgb = gb;
          if (op == BinaryOp::Pow) {  // positive bases keep pow real
            pa = add(abs(a), 0.5).to(t);
            pga = pa.to(cuda0());
          }
          check_same(binary(op, l.apply(pga), l.apply(pgb)), binary(op, l.apply(pa), l.apply(pb)));
        }
      }
    }
  }
}

TEST_CASE("cuda: binary ops with broadcasting, promotion, scalars and NaN", "[cuda][binary]") {
  Tensor a = test::random_tensor({33, 1}, DType::F32, 31), b = test::random_tensor({65}, DType::F32, 32);
  Tensor ga = a.to(cuda0()), gb = b.to(cuda0());
  for (BinaryOp op : kBinaryOps) {
    if (op == BinaryOp::Pow) continue;
    INFO(op_name(op));
    check_same(binary(op, ga, gb), binary(op, a, b));  // [33, 1] with [65] -> [33, 65]
    check_same(binary(op, gb, ga), binary(op, b, a));
    check_same(binary(op, gb.unsqueeze(1), ga.t()), binary(op, b.unsqueeze(1), a.t()));
  }
  Tensor x = test::random_tensor({3, 1, 7, 1}, DType::F64, 33), y = test::random_tensor({5, 1, 9}, DType::F64, 34);
  Tensor gx = x.to(cuda0()), gy = y.to(cuda0());
  check_same(mul(gx, gy), mul(x, y));
  check_same(add(gx.expand({3, 5, 7, 9}), gy), add(x.expand({3, 5, 7, 9}), y));
  check_same(sub(gx, scalar_tensor(2.0, TensorOptions(DType::F64, cuda0()))), sub(x, 2.0));

  // Promotion across dtypes.
  Tensor i32 = test::random_tensor({1027}, DType::I32, 35), f32 = test::random_tensor({1027}, DType::F32, 36);
  Tensor i64 = add(abs(test::random_tensor({1027}, DType::I64, 37)), 1);
  Tensor h16 = test::random_tensor({1027}, DType::F16, 38), bf = test::random_tensor({1027}, DType::BF16, 39);
  Tensor u8 = test::random_tensor({1027}, DType::U8, 40);
  Tensor gi32 = i32.to(cuda0()), gf32 = f32.to(cuda0()), gi64 = i64.to(cuda0()), gh16 = h16.to(cuda0()),
         gbf = bf.to(cuda0()), gu8 = u8.to(cuda0());
  check_same(add(gi32, gf32), add(i32, f32));
  check_same(div(gi32, gi64), div(i32, i64));  // true division in f32
  check_same(div(gi64.flatten(), gi64), div(i64, i64));
  check_same(mul(gh16, gbf), mul(h16, bf));  // f32
  check_same(sub(gu8, gi32), sub(u8, i32));
  check_same(add(gu8, gu8), add(u8, u8));  // wraps in u8
  check_same(lt(gi32, gf32), lt(i32, f32));
  check_same(maximum(gh16, gf32), maximum(h16, f32));

  // Tensor-scalar and scalar-first forms.
  check_same(mul(gi32, 2.5), mul(i32, 2.5));
  check_same(mul(gi32, 3), mul(i32, 3));
  check_same(sub(2, gf32), sub(2, f32));
  check_same(div(1.0, gh16), div(1.0, h16));
  check_same(pow(gbf, 2), pow(bf, 2));
  check_same(pow(2.0, gf32), pow(2.0, f32));
  check_same(add(from_vector<bool>({true, false}, {2}, cuda0()), 1), add(from_vector<bool>({true, false}), 1));
  check_same(gt(gf32, 0.25), gt(f32, 0.25));
  check_same(minimum(0, gi64), minimum(0, i64));

  // Integer pow without overflow.
  Tensor base = randint(-3, 4, {999}, DType::I64), ex = randint(0, 6, {999}, DType::I64);
  check_same(pow(base.to(cuda0()), ex.to(cuda0())), pow(base, ex));

  // NaN propagates through maximum/minimum; comparisons with NaN are false.
  Tensor n = where(lt(rand({4099}), 0.1), NAN, test::random_tensor({4099}, DType::F32, 41));
  Tensor m = where(lt(rand({4099}), 0.1), NAN, test::random_tensor({4099}, DType::F32, 42));
  Tensor gn = n.to(cuda0()), gm = m.to(cuda0());
  for (BinaryOp op : {BinaryOp::Maximum, BinaryOp::Minimum, BinaryOp::Eq, BinaryOp::Ne, BinaryOp::Lt, BinaryOp::Ge,
                      BinaryOp::Add}) {
    INFO(op_name(op));
    check_same(binary(op, gn, gm), binary(op, n, m));
    check_same(binary(op, gn.to(DType::BF16), gm.to(DType::BF16)), binary(op, n.to(DType::BF16), m.to(DType::BF16)));
  }
}

TEST_CASE("cuda: in-place binary ops", "[cuda][binary]") {
  Tensor a = test::random_tensor({33, 65}, DType::F32, 51), b = test::random_tensor({65}, DType::F32, 52);
  Tensor ga = a.to(cuda0()), gb = b.to(cuda0());
  Tensor ca = a.clone();
  add_(ga, gb);
  add_(ca, b);
  CHECK_CLOSE(ga, ca);
  mul_(ga, gb.unsqueeze(0));
  mul_(ca, b.unsqueeze(0));
  CHECK_CLOSE(ga, ca);
  div_(ga, 3);
  div_(ca, 3);
  CHECK_CLOSE(ga, ca);
  sub_(ga, ga);  // aliased
  sub_(ca, ca);
  CHECK_CLOSE(ga, ca);
  // Into a non-contiguous view, which writes into the base.
  Tensor gbase = zeros({65, 33}, cuda0()), cbase = zeros({65, 33});
  Tensor gv = gbase.t(), cv = cbase.t();
  add_(gv, a.to(cuda0()));
  add_(cv, a);
  CHECK_CLOSE(gbase, cbase);
  Tensor gs = gbase.slice(0, 0, 65, 3), cs = cbase.slice(0, 0, 65, 3);
  pow_(gs, 2);
  pow_(cs, 2);
  CHECK_CLOSE(gbase, cbase);
  // Integer in place stays integer.
  Tensor i = test::random_tensor({1027}, DType::I64, 53), gi = i.to(cuda0());
  add_(gi, from_vector<int32_t>({5}, {1}, cuda0()));
  add_(i, from_vector<int32_t>({5}));
  CHECK_EQUAL_T(gi, i);
  Tensor h = test::random_tensor({1027}, DType::BF16, 54), gh = h.to(cuda0());
  mul_(gh, 0.5);
  mul_(h, 0.5);
  CHECK_CLOSE(gh, h);
  REQUIRE_KILN_ERROR(add_(gi, 0.5), "add");
}

TEST_CASE("cuda: where", "[cuda][where]") {
  for (DType t : test::all_dtypes()) {
    for (const Shape& s : {Shape{7}, Shape{33, 65}, Shape{1023, 257}}) {
      INFO(dtype_name(t) << " " << shape_str(s));
      Tensor c = test::random_tensor(s, DType::Bool, 61), a = test::random_tensor(s, t, 62),
             b = test::random_tensor(s, t, 63);
      Tensor gc = c.to(cuda0()), ga = a.to(cuda0()), gb = b.to(cuda0());
      for (const test::Layout& l : test::layouts()) {
        INFO(l.name);
        check_same(where(l.apply(gc), l.apply(ga), l.apply(gb)), where(l.apply(c), l.apply(a), l.apply(b)));
      }
    }
  }
  Tensor c = test::random_tensor({33, 1}, DType::Bool, 64), a = test::random_tensor({65}, DType::I32, 65);
  Tensor gc = c.to(cuda0()), ga = a.to(cuda0());
  check_same(where(gc, ga, 0.5), where(c, a, 0.5));
  check_same(where(gc, -1, ga), where(c, -1, a));
  check_same(where(gc, ga, ga.to(DType::F64)), where(c, a, a.to(DType::F64)));
  REQUIRE_KILN_ERROR(where(ga, ga, ga), "where");
}

TEST_CASE("cuda: first-order gradients of the unary ops (the fused unary_backward kernel) match the CPU",
          "[cuda][unary]") {
  const auto ops = test::fused_grad_unary_ops();
  for (DType dt : {DType::F32, DType::BF16, DType::F16, DType::F64}) {
    const Tensor x = test::random_tensor({33, 517}, dt, 21, 4.0);
    const Tensor g = test::random_tensor({33, 517}, dt, 22);
    for (bool transposed : {false, true})
      for (const auto& [name, f] : ops) {
        INFO(name << " " << dtype_name(dt) << (transposed ? " transposed" : ""));
        auto grad_on = [&](Device d) {
          Tensor xi = (transposed ? x.transpose(0, 1) : x).to(d).detach().requires_grad_(true);
          Tensor gi = (transposed ? g.transpose(0, 1) : g).to(d);
          return grad({f(xi)}, {xi}, {gi})[0];
        };
        const Tensor gc = grad_on(kCPU), gg = grad_on(cuda0());
        CHECK(gg.is_cuda());
        check_same(gg, gc);
      }
  }
}
