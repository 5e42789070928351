// Autograd: the engine's behaviour (accumulation, shared inputs, hooks, grad mode,
// graph release, errors) and a finite-difference gradient check of every
// differentiable op, in f64 on the CPU.
#include "test_util.h"

using namespace kiln;
using V = std::vector<Tensor>;

namespace {

Tensor leaf(const Shape& s, uint64_t seed, double lo = -1.0, double hi = 1.0) {
  Generator g(seed);
  Tensor t = add(mul(rand(s, DType::F64, &g), hi - lo), lo);
  return t.set_requires_grad(true), t;
}

void check_grad(const std::function<Tensor(const V&)>& f, const V& inputs, GradcheckOptions opt = {}) {
  GradcheckResult r = gradcheck(f, inputs, opt);
  INFO(r.message);
  CHECK(r.ok);
}

}  // namespace

TEST_CASE("autograd: leaves accumulate and graphs are freed", "[autograd]") {
  Tensor x = from_vector<double>({1, 2, 3}).set_requires_grad(true);
  Tensor y = sum(mul(x, x));  // dy/dx = 2x
  REQUIRE(y.requires_grad());
  REQUIRE_FALSE(y.is_leaf());
  REQUIRE(y.grad_fn()->name() == "sum");
  y.backward();
  CHECK(test::values(x.grad()) == std::vector<double>{2, 4, 6});
  // A second backward through the freed graph is an error naming the way out.
  REQUIRE_THROWS_WITH(y.backward(), Catch::Contains("retain_graph"));
  // A new graph accumulates into the same .grad.
  sum(mul(x, 3.0)).backward();
  CHECK(test::values(x.grad()) == std::vector<double>{5, 7, 9});
  x.set_grad(Tensor());
  CHECK_FALSE(x.grad().defined());
}

TEST_CASE("autograd: retain_graph allows a second pass", "[autograd]") {
  Tensor x = from_vector<double>({2}).set_requires_grad(true);
  Tensor y = mul(exp(x), x);
  y.backward(Tensor(), true);
  y.backward();
  double e2 = std::exp(2.0);
  CHECK(x.grad().item<double>() == Approx(2 * (e2 + 2 * e2)));
}

TEST_CASE("autograd: an input used twice gets both contributions; .grad owns its storage", "[autograd]") {
  Tensor a = from_vector<double>({1, 2}).set_requires_grad(true);
  Tensor b = from_vector<double>({10, 20}).set_requires_grad(true);
  Tensor y = add(a, b);  // add hands the same gradient tensor to both inputs
  y.backward(from_vector<double>({1, 1}));
  CHECK(test::values(a.grad()) == std::vector<double>{1, 1});
  CHECK_FALSE(a.grad().shares_storage(b.grad()));
  Tensor z = mul(a, a);
  Tensor w = add(z, a);  // a reaches w along two paths
  w.backward(from_vector<double>({1, 1}));
  CHECK(test::values(a.grad()) == std::vector<double>{1 + 3, 1 + 5});
  CHECK(test::values(b.grad()) == std::vector<double>{1, 1});
}

TEST_CASE("autograd: gradients summed at an intermediate tensor, in place or not, are exact", "[autograd]") {
  // The engine adds a later contribution into its buffer in place only when nothing else
  // refers to the buffer's tensor; add hands one gradient tensor to both of its inputs, and
  // a view shares its input's memory, so those contributions must be summed out of place.
  Tensor x = from_vector<double>({1, 2, 3}).set_requires_grad(true);
  Tensor h = mul(x, 3.0);                        // h = 3x, reached along five paths:
  Tensor y = add(add(sum(mul(h, h)),             //   h^2 (a fresh gradient 2h: summed in place)
                     sum(add(h, h))),            //   2h (one gradient tensor for both inputs)
                 add(sum(h.reshape({3, 1})),     //   h through a view
                     sum(mul(h, 0.5))));         //   h / 2
  Tensor keep = ones_like(y);
  y.backward(keep);
  // dy/dh = 2h + 2 + 1 + 0.5; dy/dx = 3 dy/dh.
  const std::vector<double> want = {3 * (2 * 3 + 3.5), 3 * (2 * 6 + 3.5), 3 * (2 * 9 + 3.5)};
  CHECK(test::values(x.grad()) == want);
  CHECK(test::values(keep) == std::vector<double>{1});  // the caller's seed is not summed into
  // The same graph in f32 and through grad(): the same values.
  Tensor xf = from_vector<float>({1, 2, 3}).set_requires_grad(true);
  Tensor hf = mul(xf, 3.0);
  Tensor yf = add(add(sum(mul(hf, hf)), sum(add(hf, hf))), add(sum(hf.reshape({3, 1})), sum(mul(hf, 0.5))));
  std::vector<Tensor> g = grad({yf}, {hf});
  CHECK(test::values(g[0]) == std::vector<double>{2 * 3 + 3.5, 2 * 6 + 3.5, 2 * 9 + 3.5});
  // add(p, q) hands one gradient tensor to p and to q; p gets a second contribution. Summed
  // into that shared tensor in place, q's gradient would change too.
  for (int order = 0; order < 2; ++order) {
    Tensor x2 = from_vector<double>({1, 2, 3}).set_requires_grad(true);
    Tensor h2 = mul(x2, 3.0), p = mul(h2, 2.0), q = mul(h2, 5.0);
    // (The product by 1 makes the gradient reaching add a contiguous tensor of its own.
    // The engine runs later-recorded nodes first: the two terms are recorded in both orders.)
    Tensor t1, t2;
    if (order == 0) {
      t1 = sum(mul(add(p, q), 1.0));
      t2 = sum(mul(p, p));
    } else {
      t2 = sum(mul(p, p));
      t1 = sum(mul(add(p, q), 1.0));
    }
    Tensor y2 = add(t1, t2);
    y2.backward();
    // dy/dp = 1 + 2p, dy/dq = 1: dy/dx = 3 (2 (1 + 2p) + 5) = 3 (7 + 24 x).
    INFO("order " << order);
    CHECK(test::values(x2.grad()) == std::vector<double>{3 * (7 + 24), 3 * (7 + 48), 3 * (7 + 72)});
  }
}

TEST_CASE("autograd: leaf hooks fire once, with the final gradient", "[autograd]") {
  Tensor w = from_vector<double>({1, 2, 3}).set_requires_grad(true);
  std::vector<std::vector<double>> seen;
  int id = w.register_hook([&](const Tensor& g) { seen.push_back(test::values(g)); });
  // Three uses of w: the hook must see the sum, once.
  Tensor y = add(add(sum(w), sum(mul(w, 2.0))), sum(mul(w, w)));
  y.backward();
  REQUIRE(seen.size() == 1);
  CHECK(seen[0] == std::vector<double>{1 + 2 + 2, 1 + 2 + 4, 1 + 2 + 6});
  w.remove_hook(id);
  sum(w).backward();
  CHECK(seen.size() == 1);
  Tensor nonleaf = mul(w, 2.0);
  REQUIRE_KILN_ERROR(nonleaf.register_hook([](const Tensor&) {}), "register_hook");
}

TEST_CASE("autograd: grad mode, detach and errors", "[autograd]") {
  Tensor x = from_vector<double>({1, 2}).set_requires_grad(true);
  {
    NoGradGuard g;
    Tensor y = mul(x, 2.0);
    CHECK_FALSE(y.requires_grad());
    CHECK(y.grad_fn() == nullptr);
  }
  CHECK(grad_enabled());
  Tensor d = x.detach();
  CHECK_FALSE(d.requires_grad());
  CHECK(d.shares_storage(x));
  Tensor i = from_vector<int64_t>({1, 2});
  REQUIRE_KILN_ERROR(i.set_requires_grad(true), "set_requires_grad");
  REQUIRE_KILN_ERROR(mul(x, 2.0).set_requires_grad(false), "set_requires_grad");
  REQUIRE_KILN_ERROR(mul(x, 2.0).backward(), "backward");  // non-scalar without a gradient
  REQUIRE_KILN_ERROR(from_vector<double>({1}).backward(), "backward");  // nothing requires grad
  REQUIRE_KILN_ERROR(mul(x, 2.0).backward(from_vector<double>({1, 2, 3})), "backward");
  REQUIRE_KILN_ERROR(add_(x, 1.0), "add_");
  REQUIRE_KILN_ERROR(add_(x, 1.0), "use add() or NoGradGuard");  // detail::check_inplace_no_grad
  Tensor plain = from_vector<double>({1, 2});
  REQUIRE_KILN_ERROR(mul_(plain, x), "mul_");  // the other operand requires grad
  REQUIRE_KILN_ERROR(clamp_(x, 0.0, 1.0), "use clamp() or NoGradGuard");
  REQUIRE_KILN_ERROR(x.fill_(0), "fill_");
  REQUIRE_KILN_ERROR(x.copy_(from_vector<double>({5, 6})), "copy_");
  REQUIRE_KILN_ERROR(x.as_strided({1}, {1}, 0), "as_strided");
  {
    NoGradGuard g;  // parameter updates happen like this
    add_(x, 1.0);
  }
  CHECK(test::values(x) == std::vector<double>{2, 3});
  // Comparisons and argmax end the graph rather than failing.
  CHECK_FALSE(gt(x, 1.0).requires_grad());
  CHECK_FALSE(argmax(x).requires_grad());
}

TEST_CASE("autograd: a saved output does not keep itself alive", "[autograd]") {
  std::weak_ptr<Node> node;
  Tensor x = from_vector<double>({1, 2}).set_requires_grad(true);
  {
    Tensor y = exp(x);  // exp saves its output
    node = y.grad_fn();
    REQUIRE_FALSE(node.expired());
  }
  CHECK(node.expired());
}

TEST_CASE("gradcheck: views", "[autograd][gradcheck]") {
  Tensor x = leaf({3, 4}, 1);
  check_grad([](const V& v) { return v[0].t().contiguous(); }, {x});
  check_grad([](const V& v) { return v[0].reshape({2, 6}); }, {x});
  check_grad([](const V& v) { return v[0].transpose(0, 1).reshape({12}); }, {x});
  check_grad([](const V& v) { return v[0].permute({1, 0}); }, {x});
  check_grad([](const V& v) { return v[0].slice(1, 1, 4, 2); }, {x});
  check_grad([](const V& v) { return v[0].narrow(0, 1, 2); }, {x});
  check_grad([](const V& v) { return v[0].select(1, -1); }, {x});
  check_grad([](const V& v) { return v[0].unsqueeze(1).expand({3, 5, 4}); }, {x});
  check_grad([](const V& v) { return v[0].expand({2, 3, 4}); }, {x});
  check_grad([](const V& v) { return v[0].reshape({3, 1, 4}).squeeze(); }, {x});
  check_grad([](const V& v) { return v[0].flatten(); }, {x});
  check_grad([](const V& v) { return v[0].clone(); }, {x});
  // f32 rounding makes small steps noisy; the function is linear, so a large step is exact.
  check_grad([](const V& v) { return v[0].to(DType::F32).to(DType::F64); }, {x}, {1e-2, 1e-5, 1e-4});
}

TEST_CASE("gradcheck: unary ops", "[autograd][gradcheck]") {
  Tensor x = leaf({2, 5}, 2);            // both signs, away from kinks at 0 for most samples
  Tensor pos = leaf({2, 5}, 3, 0.2, 2);  // domain of log/sqrt/rsqrt
  for (UnaryOp op : {UnaryOp::Neg, UnaryOp::Abs, UnaryOp::Exp, UnaryOp::Sin, UnaryOp::Cos, UnaryOp::Relu,
                     UnaryOp::LeakyRelu, UnaryOp::Sigmoid, UnaryOp::Tanh, UnaryOp::Gelu, UnaryOp::GeluTanh,
                     UnaryOp::Silu, UnaryOp::Erf}) {
    INFO(op_name(op));
    check_grad([op](const V& v) { return unary(op, v[0], 0.1); }, {x});
  }
  for (UnaryOp op : {UnaryOp::Log, UnaryOp::Sqrt, UnaryOp::Rsqrt}) {
    INFO(op_name(op));
    check_grad([op](const V& v) { return unary(op, v[0]); }, {pos});
  }
}

TEST_CASE("gradcheck: binary ops with broadcasting, where", "[autograd][gradcheck]") {
  Tensor a = leaf({3, 4}, 4), b = leaf({4}, 5, 0.5, 1.5), c = leaf({3, 1}, 6);
  for (BinaryOp op : {BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div, BinaryOp::Maximum,
                      BinaryOp::Minimum}) {
    INFO(op_name(op));
    check_grad([op](const V& v) { return binary(op, v[0], v[1]); }, {a, b});
    check_grad([op](const V& v) { return binary(op, v[0], v[1]); }, {c, a});
    check_grad([op](const V& v) { return binary(op, v[0], 0.25); }, {a});
    check_grad([op](const V& v) { return binary(op, 0.75, v[0]); }, {b});
  }
  Tensor base = leaf({3, 4}, 7, 0.5, 2.0);
  check_grad([](const V& v) { return pow(v[0], v[1]); }, {base, b});
  check_grad([](const V& v) { return pow(v[0], 3.0); }, {a});
  Tensor cond = gt(leaf({3, 4}, 8).detach(), 0.0);
  check_grad([cond](const V& v) { return where(cond, v[0], v[1]); }, {a, c});
  check_grad([cond](const V& v) { return where(cond, v[0], 2.0); }, {a});
}

TEST_CASE("gradcheck: reductions", "[autograd][gradcheck]") {
  Tensor x = leaf({3, 4, 5}, 9);
  check_grad([](const V& v) { return sum(v[0]); }, {x});
  check_grad([](const V& v) { return sum(v[0], {1}); }, {x});
  check_grad([](const V& v) { return sum(v[0], {0, 2}, true); }, {x});
  check_grad([](const V& v) { return mean(v[0], {-1}); }, {x});
  check_grad([](const V& v) { return mean(v[0].transpose(0, 2), {0, 1}); }, {x});
  check_grad([](const V& v) { return max(v[0], {1}); }, {x});
  check_grad([](const V& v) { return min(v[0]); }, {x});
  check_grad([](const V& v) { return var(v[0], {2}); }, {x});
  check_grad([](const V& v) { return kiln::std(v[0], {0, 1}, 0); }, {x});
  // Ties share the gradient evenly, as PyTorch's amax does.
  Tensor t = from_vector<double>({1, 3, 3}).set_requires_grad(true);
  max(t).backward();
  CHECK(test::values(t.grad()) == std::vector<double>{0, 0.5, 0.5});
}

TEST_CASE("gradcheck: softmax and log_softmax", "[autograd][gradcheck]") {
  Tensor x = leaf({3, 6}, 10, -3, 3);
  check_grad([](const V& v) { return softmax(v[0], -1); }, {x});
  check_grad([](const V& v) { return softmax(v[0], 0); }, {x});
  check_grad([](const V& v) { return log_softmax(v[0], 1); }, {x});
  check_grad([](const V& v) { return log_softmax(v[0], 0); }, {x});
}

TEST_CASE("gradcheck: matmul and bmm", "[autograd][gradcheck]") {
  Tensor a = leaf({3, 4}, 11), b = leaf({4, 5}, 12);
  check_grad([](const V& v) { return matmul(v[0], v[1]); }, {a, b});
  check_grad([](const V& v) { return matmul(v[0].t(), v[1].t()); }, {b, a});  // transposed operands
  Tensor ba = leaf({2, 3, 4}, 13), bb = leaf({2, 4, 2}, 14);
  check_grad([](const V& v) { return bmm(v[0], v[1]); }, {ba, bb});
  check_grad([](const V& v) { return matmul(v[0], v[1]); }, {ba, b});  // broadcast batch
  Tensor va = leaf({4}, 15), vb = leaf({4}, 16);
  check_grad([](const V& v) { return matmul(v[0], v[1]); }, {va, vb});  // vec @ vec
  check_grad([](const V& v) { return matmul(v[0], v[1]); }, {a, vb});   // mat @ vec
  check_grad([](const V& v) { return matmul(v[0], v[1]); }, {va, b});   // vec @ mat
}

TEST_CASE("gradcheck: cat, stack, split, index ops", "[autograd][gradcheck]") {
  Tensor a = leaf({2, 3}, 17), b = leaf({2, 2}, 18), c = leaf({2, 3}, 19);
  check_grad([](const V& v) { return cat({v[0], v[1]}, 1); }, {a, b});
  check_grad([](const V& v) { return stack({v[0], v[1]}, 1); }, {a, c});
  check_grad([](const V& v) { return mul(split(v[0], 2, 1)[1], 2.0); }, {a});
  check_grad([](const V& v) { return chunk(v[0], 2, 0)[0]; }, {a});
  Tensor idx = from_vector<int64_t>({2, 0, 2});  // a repeated index accumulates
  check_grad([idx](const V& v) { return index_select(v[0], 1, idx); }, {a});
  check_grad([idx](const V& v) { return index_select(v[0], 0, from_vector<int64_t>({1, 1})); }, {a});
  Tensor gi = from_vector<int64_t>({0, 2, 1, 1, 0, 0}, {2, 3});
  check_grad([gi](const V& v) { return gather(v[0], 1, gi); }, {a});
  Tensor si = from_vector<int64_t>({0, 1, 1, 0}, {2, 2});
  check_grad([si](const V& v) { return scatter_add(v[0], 1, si, v[1]); }, {a, b});
}

TEST_CASE("gradcheck catches a wrong formula", "[autograd][gradcheck]") {
  // A deliberately wrong backward (twice the true gradient) must fail the check.
  Tensor x = leaf({4}, 20);
  GradcheckResult r = gradcheck(
      [](const V& v) {
        Tensor y;
        {
          NoGradGuard g;
          y = mul(v[0], v[0]);
        }
        return record("bad_square", {v[0]}, y, [x = v[0].detach()](const Tensor& g) {
          return std::vector<Tensor>{mul(g, mul(x, 4.0))};
        });
      },
      {x});
  CHECK_FALSE(r.ok);
  CHECK_THAT(r.message, Catch::Contains("bad_square"));
}

TEST_CASE("a saved tensor modified in place before backward is reported, naming the op", "[autograd][errors]") {
  // mul saves both operands: changing one of them makes the recorded gradient wrong.
  Tensor x = from_vector<double>({1, 2, 3}).set_requires_grad();
  Tensor w = from_vector<double>({4, 5, 6});
  Tensor y = kiln::sum(mul(x, w));
  w.add_(1.0);
  // (once: a failed backward has already freed the part of the graph it ran)
  REQUIRE_THROWS_WITH(y.backward(), Catch::Contains("backward through mul") && Catch::Contains("in-place"));
  REQUIRE_KILN_ERROR(
      [] {
        Tensor a = from_vector<double>({0.5, 1.5}).set_requires_grad();
        Tensor e = exp(a);  // exp's gradient is its output
        Tensor l = kiln::sum(e);
        {
          NoGradGuard ng;
          e.mul_(2.0);
        }
        l.backward();
      }(),
      "modified by an in-place operation");
  // An op that saved nothing (add) does not mind; neither does a later read of x.
  Tensor a = from_vector<double>({1, 2}).set_requires_grad();
  Tensor c = from_vector<double>({3, 4});
  Tensor s = kiln::sum(add(a, c));
  c.mul_(10.0);
  s.backward();
  CHECK(test::values(a.grad()) == std::vector<double>{1, 1});
  // Views share the counter: writing through a view of a saved tensor is caught too.
  Tensor p = from_vector<double>({1, 2, 3, 4}).set_requires_grad();
  Tensor q = from_vector<double>({1, 1, 1, 1});
  Tensor t = kiln::sum(mul(p, q));
  q.narrow(0, 1, 2).fill_(7);
  REQUIRE_THROWS_WITH(t.backward(), Catch::Contains("mul"));
}

TEST_CASE("a leaf's gradient can be written into a destination the caller provides", "[autograd]") {
  Tensor x = from_vector<double>({1, 2, 3}).set_requires_grad();
  Tensor buffer = zeros({5}, DType::F64);
  set_grad_destination(x, [&] { return buffer.narrow(0, 1, 3); });
  kiln::sum(mul(x, 2.0)).backward();
  CHECK(x.grad().shares_storage(buffer));
  CHECK(test::values(buffer) == std::vector<double>{0, 2, 2, 2, 0});
  kiln::sum(mul(x, 3.0)).backward();  // .grad defined: accumulates in place, in the buffer
  CHECK(test::values(buffer) == std::vector<double>{0, 5, 5, 5, 0});
  x.set_grad(Tensor());
  set_grad_destination(x, nullptr);
  kiln::sum(x).backward();
  CHECK_FALSE(x.grad().shares_storage(buffer));
}
