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
    EnableGradGuard recording;  // the penalty takes a gradient even inside the finite differences
    return penalty(p);
  }, {rnd({3, 5}, 10), rnd({5}, 11), rnd({5, 1}, 12)}, opt);
  INFO(r.message);
  CHECK(r.ok);
}

TEST_CASE("create_graph through a formula that is not differentiable yet is an error naming it",
          "[autograd][higher_order][errors]") {
  Tensor x = rnd({1, 1, 4, 4}, 13).set_requires_grad(true);
  Tensor y = kiln::sum(mul(max_pool2d(x, 2), 2.0));
  GradOptions go;
  go.create_graph = true;
  REQUIRE_KILN_ERROR(grad({y}, {x}, {}, go), "max_pool2d");
  // First order through it is unaffected.
  Tensor y2 = kiln::sum(max_pool2d(x, 2));
  CHECK(grad({y2}, {x})[0].sizes() == Shape{1, 1, 4, 4});
}

TEST_CASE("gradgradcheck: conv2d and conv_transpose2d", "[autograd][higher_order][gradcheck]") {
  Tensor x = rnd({2, 4, 5, 5}, 20), w = rnd({6, 2, 3, 3}, 21, 0.5), b = rnd({6}, 22);
  // stride 2, padding 1, groups 2, bias: every input's second derivative.
  check_gradgrad([](const V& v) { return conv2d(v[0], v[1], v[2], 2, 1, 1, 2); }, {x, w, b});
  // dilation, a nonlinearity after (so the Hessian is not zero in x).
  Tensor w1 = rnd({3, 4, 2, 2}, 23, 0.5);
  check_gradgrad([](const V& v) { return tanh(conv2d(v[0], v[1], Tensor(), 1, 0, 2)); }, {x, w1});
  // The DCGAN generator's layer: stride 2, padding 1, kernel 4, and an output_padding case.
  Tensor z = rnd({2, 3, 3, 3}, 24), wt = rnd({3, 2, 4, 4}, 25, 0.5), bt = rnd({2}, 26);
  check_gradgrad([](const V& v) { return tanh(conv_transpose2d(v[0], v[1], v[2], 2, 1)); }, {z, wt, bt});
  Tensor wt3 = rnd({3, 2, 3, 3}, 27, 0.5);
  check_gradgrad([](const V& v) { return sigmoid(conv_transpose2d(v[0], v[1], Tensor(), 2, 1, 1)); }, {z, wt3});
  // The gradient ops themselves.
  Tensor gy = rnd({2, 6, 3, 3}, 28);
  check_gradgrad([xs = x.sizes()](const V& v) { return tanh(conv2d_input_grad(xs, v[0], v[1], 2, 1, 1, 2)); },
                 {w, gy});
  check_gradgrad([ws = w.sizes()](const V& v) { return tanh(conv2d_weight_grad(v[0], ws, v[1], 2, 1, 1, 2)); },
                 {x, gy});
}

TEST_CASE("gradgradcheck: batch, layer and group norm", "[autograd][higher_order][gradcheck]") {
  Tensor x = rnd({4, 3, 2, 2}, 30), w = add(rnd({3}, 31, 0.3), 1.0), b = rnd({3}, 32);
  check_gradgrad([](const V& v) { return batch_norm(v[0], Tensor(), Tensor(), v[1], v[2], true, 0.1, 1e-5); },
                 {x, w, b});
  check_gradgrad([](const V& v) { return batch_norm(v[0], Tensor(), Tensor(), Tensor(), Tensor(), true, 0.1, 1e-5); },
                 {x});
  // Eval mode: the running statistics are constants.
  Tensor rm = rnd({3}, 33), rv = add(abs(rnd({3}, 34)), 0.5);
  check_gradgrad([rm, rv](const V& v) {
    return tanh(batch_norm(v[0], rm.clone(), rv.clone(), v[1], v[2], false, 0.1, 1e-5));
  }, {x, w, b});
  Tensor y = rnd({3, 2, 5}, 35), lw = add(rnd({2, 5}, 36, 0.3), 1.0), lb = rnd({2, 5}, 37);
  check_gradgrad([](const V& v) { return layer_norm(v[0], {2, 5}, v[1], v[2], 1e-5); }, {y, lw, lb});
  check_gradgrad([](const V& v) { return layer_norm(v[0], {5}, Tensor(), Tensor(), 1e-5); }, {y});
  Tensor gx = rnd({2, 4, 3}, 38), gw = add(rnd({4}, 39, 0.3), 1.0), gb = rnd({4}, 40);
  check_gradgrad([](const V& v) { return group_norm(v[0], 2, v[1], v[2], 1e-5); }, {gx, gw, gb});
}

TEST_CASE("gradgradcheck: losses and dropout", "[autograd][higher_order][gradcheck]") {
  Tensor x = rnd({4, 3}, 41), y = sigmoid(rnd({4, 3}, 42)), pw = add(abs(rnd({3}, 43)), 0.5);
  check_gradgrad([](const V& v) { return binary_cross_entropy_with_logits(v[0], v[1]); }, {x, y});
  check_gradgrad([](const V& v) { return binary_cross_entropy_with_logits(v[0], v[1], Reduction::Sum, v[2]); },
                 {x, y, pw});
  check_gradgrad([](const V& v) { return mse_loss(tanh(v[0]), v[1], Reduction::Mean); }, {x, y});
  Tensor t = from_vector<int64_t>({0, 2, 1, 2});
  check_gradgrad([t](const V& v) { return cross_entropy(v[0], t); }, {x});
  check_gradgrad([t](const V& v) { return cross_entropy(v[0], t, Reduction::None, 1, 0.1); }, {x});
  Tensor x4 = rnd({2, 3, 2, 2}, 44);
  Tensor t4 = from_vector<int64_t>({0, 1, 2, 1, 2, 0, -100, 1}).reshape({2, 2, 2});
  check_gradgrad([t4](const V& v) { return cross_entropy(v[0], t4, Reduction::Mean, -100, 0.2); }, {x4});
  check_gradgrad([](const V& v) {
    Generator g(7);
    return dropout(tanh(v[0]), 0.3, true, &g);
  }, {x});
}

TEST_CASE("grad with respect to an intermediate tensor runs only what it needs", "[autograd][higher_order]") {
  // The producer of h (a max_pool2d, not double-differentiable) is neither run nor freed:
  // a create_graph gradient with respect to h works, and h's graph still backpropagates.
  Tensor x = rnd({1, 2, 4, 4}, 45).set_requires_grad(true);
  Tensor h = max_pool2d(x, 2);
  Tensor d = kiln::sum(mul(tanh(h), h));
  GradOptions go;
  go.create_graph = true;
  Tensor gh = grad({d}, {h}, {}, go)[0];
  CHECK(gh.requires_grad());
  kiln::sum(mul(gh, gh)).backward();  // through tanh's second derivative, then max_pool2d's first
  REQUIRE(x.grad().defined());
  CHECK(x.grad().sizes() == x.sizes());
}

TEST_CASE("an R1 penalty through a conv/batch-norm/leaky-relu discriminator matches finite differences",
          "[autograd][higher_order]") {
  Tensor x = rnd({3, 1, 6, 6}, 46);
  auto penalty = [x](const V& p) {
    Tensor xi = x.detach().set_requires_grad(true);
    Tensor h = leaky_relu(conv2d(xi, p[0], Tensor(), 2, 1), 0.2);
    h = leaky_relu(batch_norm(conv2d(h, p[1], Tensor(), 2, 1), Tensor(), Tensor(), p[2], p[3], true, 0.1, 1e-5), 0.2);
    Tensor d = binary_cross_entropy_with_logits(kiln::sum(h, {1, 2, 3}), ones({3}, DType::F64));
    GradOptions go;
    go.create_graph = true;
    Tensor gx = grad({d}, {xi}, {}, go)[0];
    return kiln::sum(mul(gx, gx));
  };
  GradcheckOptions opt;
  opt.atol = 1e-5;
  opt.rtol = 1e-3;
  GradcheckResult r = gradcheck([&](const V& p) {
    EnableGradGuard recording;
    return penalty(p);
  }, {rnd({2, 1, 4, 4}, 47, 0.5), rnd({3, 2, 4, 4}, 48, 0.5), add(rnd({3}, 49, 0.3), 1.0), rnd({3}, 50)}, opt);
  INFO(r.message);
  CHECK(r.ok);
}

TEST_CASE("gradgradcheck: adaptive_avg_pool2d (the CNN's head; Hessians of train_cnn's loss)",
          "[autograd][higher_order][gradcheck]") {
  // Uneven windows (5 -> 2, 7 -> 3) and a tanh after it, so the second derivative is not 0.
  check_gradgrad([](const V& in) { return tanh(adaptive_avg_pool2d(in[0], {2, 3})); }, {rnd({2, 3, 5, 7}, 30)});
  check_gradgrad([](const V& in) { return mul(adaptive_avg_pool2d(in[0], {1, 1}), in[1]); },
                 {rnd({2, 3, 4, 4}, 31), rnd({2, 3, 1, 1}, 32)});
}
