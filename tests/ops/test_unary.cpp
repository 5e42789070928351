// Unary elementwise ops on the CPU: hand-computed values, every floating dtype against
// an independent double formula, integer promotion, non-contiguous input, bad input.
#include "test_util.h"

#include <cmath>
#include <functional>
#include <limits>

using namespace kiln;

namespace {
const double kE = 2.718281828459045, kPi = 3.141592653589793;
const double kInf = std::numeric_limits<double>::infinity();

struct UnaryCase {
  const char* name;
  std::function<Tensor(const Tensor&)> op;
  std::function<double(double)> ref;  // independent formula in double
  double lo, hi;                      // input range where the op is defined
};

double phi(double x) { return 0.5 * std::erfc(-x / std::sqrt(2.0)); }  // standard normal CDF

std::vector<UnaryCase> cases() {
  return {
      {"neg", [](const Tensor& x) { return neg(x); }, [](double x) { return -x; }, -4, 4},
      {"abs", [](const Tensor& x) { return abs(x); }, [](double x) { return x < 0 ? -x : x; }, -4, 4},
      {"exp", [](const Tensor& x) { return exp(x); }, [](double x) { return std::exp(x); }, -4, 4},
      {"log", [](const Tensor& x) { return log(x); }, [](double x) { return std::log(x); }, 0.01, 8},
      {"sqrt", [](const Tensor& x) { return sqrt(x); }, [](double x) { return std::sqrt(x); }, 0, 8},
      {"rsqrt", [](const Tensor& x) { return rsqrt(x); }, [](double x) { return 1 / std::sqrt(x); }, 0.05, 8},
      {"sin", [](const Tensor& x) { return sin(x); }, [](double x) { return std::sin(x); }, -4, 4},
      {"cos", [](const Tensor& x) { return cos(x); }, [](double x) { return std::cos(x); }, -4, 4},
      {"relu", [](const Tensor& x) { return relu(x); }, [](double x) { return x > 0 ? x : 0; }, -4, 4},
      {"leaky_relu", [](const Tensor& x) { return leaky_relu(x, 0.2); },
       [](double x) { return x > 0 ? x : 0.2 * x; }, -4, 4},
      {"sigmoid", [](const Tensor& x) { return sigmoid(x); }, [](double x) { return std::exp(x) / (1 + std::exp(x)); },
       -6, 6},
      {"tanh", [](const Tensor& x) { return tanh(x); },
       [](double x) { return (std::exp(2 * x) - 1) / (std::exp(2 * x) + 1); }, -4, 4},
      {"gelu", [](const Tensor& x) { return gelu(x); }, [](double x) { return x * phi(x); }, -4, 4},
      {"gelu_tanh", [](const Tensor& x) { return gelu(x, true); },
       [](double x) { return 0.5 * x * (1 + std::tanh(std::sqrt(2 / kPi) * (x + 0.044715 * x * x * x))); }, -4, 4},
      {"silu", [](const Tensor& x) { return silu(x); }, [](double x) { return x / (1 + std::exp(-x)); }, -6, 6},
  };
}

Tensor f32(std::vector<float> v) { return from_vector<float>(v); }
std::vector<double> d(const Tensor& t) { return test::values(t); }
}  // namespace

TEST_CASE("unary ops: hand-computed values", "[ops][unary]") {
  CHECK(d(neg(f32({1, -2, 0}))) == std::vector<double>{-1, 2, 0});
  CHECK(d(abs(f32({-3, 4, -0.5f}))) == std::vector<double>{3, 4, 0.5});
  CHECK_CLOSE(exp(f32({0, 1, -1})), from_vector<double>({1, kE, 1 / kE}));
  Tensor lg = log(f32({1, static_cast<float>(kE), 0, -1}));
  CHECK(lg.to_vector<float>()[0] == 0.0f);
  CHECK(lg.to_vector<float>()[1] == Approx(1.0).epsilon(1e-6));
  CHECK(lg.to_vector<float>()[2] == -std::numeric_limits<float>::infinity());
  CHECK(std::isnan(lg.to_vector<float>()[3]));
  CHECK_CLOSE(sqrt(f32({4, 2, 0, 0.25f})), from_vector<double>({2, 1.4142135623730951, 0, 0.5}));
  CHECK(std::isnan(sqrt(f32({-1})).item<float>()));
  CHECK_CLOSE(rsqrt(f32({4, 0.25f, 100})), from_vector<double>({0.5, 2, 0.1}));
  CHECK(rsqrt(f32({0})).item<float>() == std::numeric_limits<float>::infinity());
  CHECK_CLOSE(sin(from_vector<double>({0, kPi / 2, kPi / 6, -kPi / 2})), from_vector<double>({0, 1, 0.5, -1}));
  CHECK_CLOSE(cos(from_vector<double>({0, kPi, kPi / 3})), from_vector<double>({1, -1, 0.5}));
  CHECK(d(relu(f32({-1, 0, 2, -0.5f}))) == std::vector<double>{0, 0, 2, 0});
  CHECK_CLOSE(leaky_relu(f32({-2, 3, 0})), from_vector<double>({-0.02, 3, 0}));  // default slope 0.01
  CHECK_CLOSE(leaky_relu(f32({-2, 3}), 0.1), from_vector<double>({-0.2, 3}));
  // sigmoid(ln 3) = 3/4; tanh(ln 2) = (4 - 1)/(4 + 1).
  CHECK_CLOSE(sigmoid(from_vector<double>({0, std::log(3.0), 100})), from_vector<double>({0.5, 0.75, 1}));
  CHECK(sigmoid(f32({-100})).item<float>() < 1e-30f);
  CHECK(sigmoid(f32({-100})).item<float>() >= 0.0f);
  CHECK_CLOSE(tanh(from_vector<double>({0, std::log(2.0), 50, -50})), from_vector<double>({0, 0.6, 1, -1}));
  // gelu(x) = x Phi(x): Phi(1) = 0.8413447460685429, Phi(2) = 0.9772498680518208.
  CHECK_CLOSE(gelu(from_vector<double>({0, 1, -1, 2})),
              from_vector<double>({0, 0.8413447460685429, -0.15865525393145707, 1.9544997361036416}));
  // tanh form at 1: 0.5 (1 + tanh(sqrt(2/pi) * 1.044715)).
  double g1 = 0.5 * (1 + std::tanh(0.7978845608028654 * 1.044715));
  CHECK_CLOSE(gelu_tanh(from_vector<double>({0, 1, -1})), from_vector<double>({0, g1, -(1 - g1)}));
  CHECK(std::fabs(g1 - 0.8413447460685429) < 1e-3);  // close to the erf form
  CHECK_CLOSE(gelu(from_vector<double>({1.5}), true), gelu_tanh(from_vector<double>({1.5})));
  // silu(x) = x sigmoid(x): silu(1) = 1/(1 + 1/e).
  CHECK_CLOSE(silu(from_vector<double>({0, 1, -1})),
              from_vector<double>({0, 0.7310585786300049, -0.2689414213699951}));
  CHECK(d(neg(-f32({1.5f}))) == std::vector<double>{1.5});  // operator-
}

TEST_CASE("unary ops: infinities", "[ops][unary]") {
  Tensor x = from_vector<double>({-kInf, kInf});
  CHECK(d(exp(x)) == std::vector<double>{0, kInf});
  CHECK(d(sigmoid(x)) == std::vector<double>{0, 1});
  CHECK(d(tanh(x)) == std::vector<double>{-1, 1});
  CHECK(d(relu(x)) == std::vector<double>{0, kInf});
  CHECK(d(abs(x)) == std::vector<double>{kInf, kInf});
  CHECK(d(gelu(x))[1] == kInf);
  // NaN propagates through every op (relu included, as in PyTorch).
  Tensor nan = from_vector<double>({std::nan("")});
  for (const UnaryCase& c : cases()) {
    INFO(c.name);
    CHECK(std::isnan(d(c.op(nan))[0]));
  }
}

TEST_CASE("unary ops: every floating dtype against a double formula", "[ops][unary]") {
  for (const UnaryCase& c : cases()) {
    for (DType t : test::floating_dtypes()) {
      INFO(c.name << " " << dtype_name(t));
      // 37 points spread over the op's domain, rounded to the dtype first.
      std::vector<double> xs;
      for (int i = 0; i < 37; ++i) xs.push_back(c.lo + (c.hi - c.lo) * i / 36.0);
      Tensor x = from_vector<double>(xs).to(t);
      std::vector<double> xr = test::values(x), want;
      for (double v : xr) want.push_back(c.ref(v));
      Tensor y = c.op(x);
      CHECK(y.dtype() == t);
      CHECK(y.sizes() == x.sizes());
      CHECK_CLOSE(y, from_vector<double>(want).to(t));  // expected rounded to the dtype too
      CHECK_CLOSE_TOL(y, from_vector<double>(want), test::tol_for(t).rtol * 2, test::tol_for(t).atol * 2);
    }
  }
}

TEST_CASE("unary ops: non-contiguous and multi-dim input", "[ops][unary]") {
  Tensor x = test::random_tensor({5, 7, 3}, DType::F32, 11);
  for (const UnaryCase& c : cases()) {
    INFO(c.name);
    Tensor in = c.lo >= 0 ? add(abs(x), c.lo + 0.01) : x;  // keep log/sqrt/rsqrt in their domain
    Tensor ref = c.op(in);
    REQUIRE(ref.sizes() == Shape{5, 7, 3});
    CHECK_EQUAL_T(c.op(test::transposed_copy(in)), ref);
    CHECK_EQUAL_T(c.op(test::strided_copy(in)), ref);
    CHECK_EQUAL_T(c.op(in.permute({2, 0, 1})), ref.permute({2, 0, 1}));
    Tensor e = in.select(1, 2).unsqueeze(1).expand({5, 4, 3});  // stride 0
    CHECK_EQUAL_T(c.op(e), c.op(e.contiguous()));
    // Values match the formula element by element.
    std::vector<double> xv = test::values(in), yv = test::values(ref);
    int bad = 0;
    for (size_t i = 0; i < xv.size(); ++i) {
      double w = c.ref(xv[i]);
      bad += !(std::fabs(yv[i] - w) <= 1e-5 + 1.3e-6 * std::fabs(w));
    }
    CHECK(bad == 0);
  }
  // Empty and 0-d tensors.
  CHECK(exp(zeros({0, 3})).sizes() == Shape{0, 3});
  CHECK(exp(scalar_tensor(0.0)).item<float>() == 1.0f);
  CHECK(exp(scalar_tensor(0.0)).dim() == 0);
}

TEST_CASE("unary ops: integer inputs", "[ops][unary]") {
  Tensor i = from_vector<int32_t>({-3, 0, 4});
  // neg, abs and relu keep integer dtypes.
  CHECK(neg(i).dtype() == DType::I32);
  CHECK(neg(i).to_vector<int32_t>() == std::vector<int32_t>{3, 0, -4});
  CHECK(abs(i).dtype() == DType::I32);
  CHECK(abs(i).to_vector<int32_t>() == std::vector<int32_t>{3, 0, 4});
  CHECK(relu(i).dtype() == DType::I32);
  CHECK(relu(i).to_vector<int32_t>() == std::vector<int32_t>{0, 0, 4});
  Tensor l = from_vector<int64_t>({-(1ll << 40), 5});
  CHECK(neg(l).dtype() == DType::I64);
  CHECK(neg(l).to_vector<int64_t>() == std::vector<int64_t>{1ll << 40, -5});
  CHECK(abs(l).to_vector<int64_t>() == std::vector<int64_t>{1ll << 40, 5});
  CHECK(relu(from_vector<uint8_t>({0, 200})).dtype() == DType::U8);
  CHECK(abs(from_vector<uint8_t>({0, 200})).to_vector<int32_t>() == std::vector<int32_t>{0, 200});

  // The others compute in f32.
  Tensor e = exp(from_vector<int32_t>({0, 1, 2}));
  CHECK(e.dtype() == DType::F32);
  CHECK_CLOSE(e, from_vector<double>({1, kE, kE * kE}));
  CHECK(sqrt(from_vector<int64_t>({4, 9})).dtype() == DType::F32);
  CHECK(sqrt(from_vector<int64_t>({4, 9})).to_vector<float>() == std::vector<float>{2, 3});
  CHECK(sigmoid(from_vector<uint8_t>({0})).item<float>() == 0.5f);
  CHECK(sigmoid(from_vector<uint8_t>({0})).dtype() == DType::F32);
  CHECK(tanh(from_vector<int32_t>({0, 1000})).to_vector<float>() == std::vector<float>{0, 1});
  CHECK(leaky_relu(from_vector<int32_t>({-10, 10}), 0.5).to_vector<float>() == std::vector<float>{-5, 10});
  CHECK(gelu(from_vector<int64_t>({0})).dtype() == DType::F32);
  Tensor eb = exp(from_vector<bool>({false, true}));  // bool computes in f32 too
  CHECK(eb.dtype() == DType::F32);
  CHECK_CLOSE(eb, from_vector<double>({1, kE}));
}

TEST_CASE("unary ops: half dtypes", "[ops][unary]") {
  Tensor h = from_vector<float>({0, 1, 2, -1.5f}).to(DType::F16);
  Tensor eh = exp(h);
  CHECK(eh.dtype() == DType::F16);
  CHECK_CLOSE(eh, from_vector<double>({1, kE, kE * kE, std::exp(-1.5)}));
  Tensor b = from_vector<float>({0.5f, -3, 8}).to(DType::BF16);
  CHECK(tanh(b).dtype() == DType::BF16);
  CHECK_CLOSE(tanh(b), from_vector<double>({std::tanh(0.5), std::tanh(-3.0), std::tanh(8.0)}));
  CHECK(neg(b).to_vector<float>() == std::vector<float>{-0.5f, 3, -8});
  // exp(12) overflows f16 (max 65504) to inf.
  CHECK(exp(full({1}, 12, DType::F16)).item<float>() == std::numeric_limits<float>::infinity());
  CHECK(std::isfinite(exp(full({1}, 12, DType::BF16)).item<float>()));
}

TEST_CASE("unary ops: bad input throws kiln::Error naming the op", "[ops][unary][errors]") {
  Tensor b = from_vector<bool>({true, false});
  REQUIRE_KILN_ERROR(neg(b), "neg");
  REQUIRE_KILN_ERROR(abs(b), "abs");
  REQUIRE_KILN_ERROR(relu(b), "relu");
  REQUIRE_KILN_ERROR(exp(Tensor()), "exp");
  REQUIRE_KILN_ERROR(sigmoid(Tensor()), "sigmoid");
  REQUIRE_KILN_ERROR(unary(UnaryOp::Silu, Tensor()), "silu");
  REQUIRE_KILN_ERROR(relu(Tensor()), "relu");
}

namespace {
int g_fused_calls = 0;
void spy_unary_backward(const TensorView& s, const TensorView& g, const TensorView& gx, const UnaryParams& p) {
  ++g_fused_calls;
  cpu::unary_backward(s, g, gx, p);
}
}  // namespace

TEST_CASE("unary ops: first-order gradients run the fused kernel and agree with the composite formulas",
          "[ops][unary][autograd]") {
  // A first-order backward (grad mode off) of relu, leaky_relu, sigmoid, tanh, gelu,
  // gelu_tanh and silu is one unary_backward kernel; a create_graph pass runs the
  // composite formulas (checked: it does not call the kernel). The kernel's gradient
  // matches the composite's in f64: contiguous and transposed inputs, exact zeros
  // (relu's kink: gradient 0, as gt(x, 0) gives), large magnitudes.
  const auto ops = test::fused_grad_unary_ops();
  (void)kernel<op::unary_backward>(kCPU);  // the list's loader first, so it cannot replace the spy
  set_kernel<op::unary_backward>(DeviceType::CPU, &spy_unary_backward);
  for (DType dt : {DType::F32, DType::F64, DType::BF16}) {
    Tensor base = mul(test::random_tensor({37, 300}, DType::F64, 5, 2.0), 4.0);  // about [-8, 8]
    auto v = base.to_vector<double>();
    v[0] = 0.0, v[1] = -0.0, v[2] = 30.0, v[3] = -30.0, v[4] = 1e-30;
    base = from_vector(v).reshape({37, 300}).to(dt);
    for (bool transposed : {false, true}) {
      const Tensor xin = transposed ? base.transpose(0, 1) : base;
      const Tensor g = test::random_tensor(xin.sizes(), dt, 9);
      for (const auto& [name, f] : ops) {
        INFO(name << " " << dtype_name(dt) << (transposed ? " transposed" : ""));
        Tensor x = xin.detach().requires_grad_(true);
        const int before = g_fused_calls;
        const Tensor fused = grad({f(x)}, {x}, {g})[0];
        CHECK(g_fused_calls == before + 1);
        // The composite formulas in f64 on the same (rounded) values are the reference: in
        // f32 the composite itself rounds at each of its ops (gelu_tanh's tail, where the
        // kernel gives the true ~0, came out near 4e-6 through it).
        GradOptions create;
        create.create_graph = true;
        Tensor x64 = xin.to(DType::F64).detach().requires_grad_(true);
        const Tensor composite = grad({f(x64)}, {x64}, {g.to(DType::F64)}, create)[0].detach();
        CHECK(g_fused_calls == before + 1);  // the create_graph pass did not use it
        REQUIRE(fused.dtype() == dt);
        const double rtol = dt == DType::F64 ? 1e-13 : dt == DType::F32 ? 1e-5 : 2e-2;
        const double atol = dt == DType::F64 ? 1e-13 : dt == DType::F32 ? 5e-6 : 2e-2;
        CHECK_CLOSE_TOL(fused.to(DType::F64), composite, rtol, atol);
      }
    }
  }
  set_kernel<op::unary_backward>(DeviceType::CPU, &cpu::unary_backward);
}
