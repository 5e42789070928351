// Higher-order gradients: kiln::grad (torch.autograd.grad), backward(create_graph = true),
// second-order gradient checks (gradgradcheck in f64) of the ops whose backward formulas
// are differentiable, a WGAN-GP style gradient penalty through an MLP, and the clear error
// where a formula is not differentiable yet.
#include "test_util.h"

using namespace kiln;
using V = std::vector<Tensor>;

namespace {

void check_gradgrad(const std::function<Tensor(const V&)>& f, const V& inputs) {
  GradcheckOptions opt;
  opt.atol = 1e-5;
  opt.rtol = 1e-3;
  GradcheckResult r = gradgradcheck(f, inputs, opt);
  INFO(r.message);
  CHECK(r.ok);
}

Tensor rnd(const Shape& s, uint64_t seed, double scale = 1.0) { return test::random_tensor(s, DType::F64, seed, scale); }

}  // namespace

TEST_CASE("grad: first and second derivatives, nothing accumulated into .grad", "[autograd][higher_order]") {
  Tensor x = from_vector<double>({0.5, -1.0, 2.0}).set_requires_grad(true);
  Tensor y = kiln::sum(mul(mul(x, x), x));  // sum x^3
  GradOptions go;
  go.create_graph = true;
  Tensor g = grad({y}, {x}, {}, go)[0];
  CHECK(test::values(g) == std::vector<double>{0.75, 3.0, 12.0});  // 3 x^2
  CHECK(g.requires_grad());
  CHECK_FALSE(x.grad().defined());
  Tensor h = grad({kiln::sum(g)}, {x})[0];  // d/dx sum 3x^2 = 6x
  CHECK(test::values(h) == std::vector<double>{3.0, -6.0, 12.0});
  CHECK_FALSE(x.grad().defined());
  // An input the output does not reach.
  Tensor z = from_vector<double>({1.0}).set_requires_grad(true);
  REQUIRE_KILN_ERROR(grad({kiln::sum(mul(x, 2.0))}, {z}), "not reached");
  GradOptions unused;
  unused.allow_unused = true;
  CHECK_FALSE(grad({kiln::sum(mul(x, 2.0))}, {z}, {}, unused)[0].defined());
  REQUIRE_KILN_ERROR(grad({kiln::sum(x)}, {from_vector<double>({1.0})}), "does not require grad");
}

TEST_CASE("backward(create_graph): .grad is differentiable", "[autograd][higher_order]") {
  Tensor x = from_vector<double>({1.0, 2.0}).set_requires_grad(true);
  kiln::sum(mul(exp(x), x)).backward(Tensor(), false, true);  // d/dx = e^x (x + 1)
  Tensor g = x.grad();
  REQUIRE(g.requires_grad());
  CHECK(test::values(g)[0] == Approx(std::exp(1.0) * 2));
  // A Hessian-vector product: d/dx <grad, v> with v = 1: e^x (x + 2).
  Tensor hv = grad({kiln::sum(g)}, {x})[0];
  CHECK(test::values(hv)[1] == Approx(std::exp(2.0) * 4));
}

TEST_CASE("gradgradcheck: unary ops", "[autograd][higher_order][gradcheck]") {
  Tensor x = rnd({3, 4}, 1);
  Tensor pos = add(abs(rnd({3, 4}, 2)), 0.5);
  for (UnaryOp op : {UnaryOp::Neg, UnaryOp::Exp, UnaryOp::Sin, UnaryOp::Cos, UnaryOp::Sigmoid, UnaryOp::Tanh,
                     UnaryOp::Gelu, UnaryOp::GeluTanh, UnaryOp::Silu, UnaryOp::Erf, UnaryOp::LeakyRelu,
                     UnaryOp::Relu, UnaryOp::Abs}) {
    INFO(op_name(op));
    check_gradgrad([op](const V& v) { return unary(op, v[0], 0.2); }, {x});
  }
  for (UnaryOp op : {UnaryOp::Log, UnaryOp::Sqrt, UnaryOp::Rsqrt}) {
    INFO(op_name(op));
    check_gradgrad([op](const V& v) { return unary(op, v[0]); }, {pos});
  }
}

TEST_CASE("gradgradcheck: binary ops, where, broadcasting", "[autograd][higher_order][gradcheck]") {
  Tensor a = rnd({3, 4}, 3), b = rnd({4}, 4), pos = add(abs(rnd({3, 4}, 5)), 0.5);
  check_gradgrad([](const V& v) { return add(v[0], v[1]); }, {a, b});
  check_gradgrad([](const V& v) { return sub(v[0], v[1]); }, {a, b});
  check_gradgrad([](const V& v) { return mul(v[0], v[1]); }, {a, b});
  check_gradgrad([](const V& v) { return div(v[0], v[1]); }, {a, pos});
  check_gradgrad([](const V& v) { return pow(v[1], v[0]); }, {a, pos});
  check_gradgrad([](const V& v) { return mul(mul(v[0], 3.0), v[0]); }, {a});
  check_gradgrad([](const V& v) { return maximum(v[0], mul(v[1], 0.5)); }, {a, b});
  check_gradgrad([](const V& v) { return where(gt(v[0], 0.0), mul(v[0], v[0]), mul(v[1], v[0])); }, {a, b});
}

TEST_CASE("gradgradcheck: reductions, softmax, matmul, views", "[autograd][higher_order][gradcheck]") {
  Tensor x = rnd({3, 5}, 6), w = rnd({5, 2}, 7), b3 = rnd({2, 3, 5}, 8);
  check_gradgrad([](const V& v) { return kiln::sum(mul(v[0], v[0]), {1}); }, {x});
  check_gradgrad([](const V& v) { return mean(mul(v[0], v[0]), {0}, true); }, {x});
  check_gradgrad([](const V& v) { return kiln::max(mul(v[0], v[0]), {1}); }, {x});
  check_gradgrad([](const V& v) { return softmax(v[0], 1); }, {x});
  check_gradgrad([](const V& v) { return log_softmax(v[0], 0); }, {x});
  check_gradgrad([](const V& v) { return matmul(v[0], v[1]); }, {x, w});
  check_gradgrad([](const V& v) { return matmul(v[0], v[1]); }, {b3, w});  // batch folded into M
  check_gradgrad([](const V& v) { return tanh(matmul(v[0], v[0].t())); }, {x});
  check_gradgrad([](const V& v) { return mul(v[0].t().reshape({15}), v[0].reshape({15})); }, {x});
  check_gradgrad([](const V& v) { return mul(v[0].slice(1, 1, 4), v[0].select(0, 2).slice(0, 0, 3)); }, {x});
  check_gradgrad([](const V& v) { return mul(v[0].unsqueeze(0).expand({4, 3, 5}), v[0]); }, {x});
  check_gradgrad([](const V& v) { return exp(v[0].permute({2, 0, 1})); }, {b3});
}

TEST_CASE("a WGAN-GP gradient penalty through an MLP matches finite differences", "[autograd][higher_order]") {
  // D(x) = w2 . leaky_relu(W1 x + b1); penalty = mean_i (||dD/dx_i|| - 1)^2, differentiated
  // with respect to the parameters: second order through matmul, add and leaky_relu.
  Tensor x = rnd({4, 3}, 9);
  auto penalty = [x](const V& p) {
    Tensor xi = x.detach().set_requires_grad(true);
    Tensor h = leaky_relu(add(matmul(xi, p[0]), p[1]), 0.2);
    Tensor d = matmul(tanh(h), p[2]);
    GradOptions go;
    go.create_graph = true;
    Tensor gx = grad({kiln::sum(d)}, {xi}, {}, go)[0];
    Tensor norm = sqrt(add(kiln::sum(mul(gx, gx), {1}), 1e-12));
    Tensor dev = sub(norm, 1.0);
    return mean(mul(dev, dev));
  };
  GradcheckOptions opt;
  opt.atol = 1e-5;
  opt.rtol = 1e-3;
  GradcheckResult r = gradcheck([&](const V& p) {
    const bool prev = grad_enabled();
    set_grad_enabled(true);  // the penalty takes a gradient even inside the finite differences
    Tensor out = penalty(p);
    set_grad_enabled(prev);
    return out;
  }, {rnd({3, 5}, 10), rnd({5}, 11), rnd({5, 1}, 12)}, opt);
  INFO(r.message);
  CHECK(r.ok);
}

TEST_CASE("create_graph through a formula that is not differentiable yet is an error naming it",
          "[autograd][higher_order][errors]") {
  Tensor logits = rnd({2, 3}, 13).set_requires_grad(true);
  Tensor target = from_vector<int64_t>({0, 2});
  Tensor loss = cross_entropy(logits, target);
  GradOptions go;
  go.create_graph = true;
  REQUIRE_KILN_ERROR(grad({loss}, {logits}, {}, go), "cross_entropy");
  // First order through it is unaffected.
  Tensor loss2 = cross_entropy(logits, target);
  CHECK(grad({loss2}, {logits})[0].sizes() == Shape{2, 3});
}
