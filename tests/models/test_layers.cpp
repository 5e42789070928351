// Layers: Linear against a hand computation and its default init, containers, Flatten,
// Identity, the activation modules against their ops, printouts, and a small MLP that
// learns a separable two-class problem with plain gradient descent.
#include "test_util.h"

#include <cmath>

using namespace kiln;
using namespace kiln::nn;

namespace {

void set_values(const Tensor& t, const std::vector<double>& v) {
  NoGradGuard g;
  Tensor d = t;
  d.copy_(from_vector<double>(v, t.sizes()));
}

}  // namespace

TEST_CASE("nn::Linear: forward against a hand computation", "[nn]") {
  Linear lin(2, 3);
  set_values(lin.weight, {1, 2, 3, 4, 5, 6});  // (3, 2)
  set_values(lin.bias, {0.5, -1, 2});
  Tensor x = from_vector<float>({1, -1, 2, 0.5f}, {2, 2});
  // x W^T + b: [1 - 2, 3 - 4, 5 - 6] + b and [2 + 1, 6 + 2, 10 + 3] + b
  CHECK_EQUAL_T(lin.forward(x), from_vector<float>({-0.5f, -2, 1, 3.5f, 7, 15}, {2, 3}));
  CHECK_EQUAL_T(lin(x), lin.forward(x));

  // Any number of leading dims, and a 1-D input.
  Tensor x3 = test::random_tensor({2, 4, 2}, DType::F32, 3);
  Tensor y3 = lin.forward(x3);
  REQUIRE(y3.sizes() == Shape{2, 4, 3});
  CHECK_CLOSE(y3.select(0, 1), lin.forward(x3.select(0, 1)));
  CHECK_CLOSE(lin.forward(from_vector<float>({1, -1})), from_vector<float>({-0.5f, -2, 1}));
  // Non-contiguous input.
  Tensor xn = test::noncontiguous(test::random_tensor({5, 2}, DType::F32, 4));
  CHECK_CLOSE(lin.forward(xn), lin.forward(xn.contiguous()));

  // Without bias.
  Linear nb(2, 3, /*bias=*/false);
  CHECK_FALSE(nb.bias.defined());
  CHECK(nb.parameters().size() == 1);
  set_values(nb.weight, {1, 2, 3, 4, 5, 6});
  CHECK_EQUAL_T(nb.forward(x), from_vector<float>({-1, -1, -1, 3, 8, 13}, {2, 3}));

  REQUIRE_KILN_ERROR(lin.forward(ones({2, 5})), "linear");
  REQUIRE_KILN_ERROR(lin.forward(ones({2, 5})), "in_features = 2");
  REQUIRE_KILN_ERROR(linear(ones({2, 2}), ones({3, 2}), ones({2})), "bias");
  REQUIRE_KILN_ERROR(Linear(2, 3, true, DType::I64), "floating");
}

TEST_CASE("nn::Linear: default init, dtype option, reproducible draws", "[nn]") {
  manual_seed(42);
  Linear big(400, 300);
  double bound = 1.0 / std::sqrt(400.0);
  CHECK(big.weight.sizes() == Shape{300, 400});
  CHECK(big.bias.sizes() == Shape{300});
  CHECK(max(abs(big.weight)).item<double>() <= bound);
  CHECK(max(abs(big.weight)).item<double>() > 0.99 * bound);
  CHECK(max(abs(big.bias)).item<double>() <= bound);
  // U(-b, b) has std b / sqrt(3).
  CHECK(std::fabs(kiln::std(big.weight).item<double>() / (bound / std::sqrt(3.0)) - 1.0) < 0.02);
  CHECK(std::fabs(mean(big.weight).item<double>()) < 0.01 * bound);

  manual_seed(42);
  Linear again(400, 300);
  CHECK(test::bit_equal(again.weight, big.weight));
  CHECK(test::bit_equal(again.bias, big.bias));
  Generator g1(9), g2(9);
  again.reset_parameters(&g1);
  Linear third(400, 300);
  third.reset_parameters(&g2);
  CHECK(test::bit_equal(again.weight, third.weight));
  CHECK_FALSE(test::bit_equal(again.weight, big.weight));

  Linear d(3, 2, true, DType::F64);
  CHECK(d.weight.dtype() == DType::F64);
  CHECK(d.forward(ones({1, 3}, DType::F64)).dtype() == DType::F64);
  // Zero in_features: the bias bound is 0.
  Linear empty_in(0, 2);
  CHECK(test::values(empty_in.bias) == std::vector<double>{0, 0});
  CHECK(test::values(empty_in.forward(ones({3, 0}))) == std::vector<double>(6, 0.0));
}

TEST_CASE("nn::Sequential and ModuleList", "[nn]") {
  manual_seed(1);
  auto l1 = std::make_shared<Linear>(4, 8);
  auto l2 = std::make_shared<Linear>(8, 2);
  auto seq = std::make_shared<Sequential>(l1, std::make_shared<ReLU>());
  seq->push_back(l2);
  REQUIRE(seq->size() == 3);
  Tensor x = test::random_tensor({5, 4}, DType::F32, 7);
  CHECK_EQUAL_T(seq->forward(x), l2->forward(relu(l1->forward(x))));
  CHECK((*seq)[-1].get() == l2.get());
  CHECK(seq->at<Linear>(0).get() == l1.get());
  REQUIRE_KILN_ERROR(seq->at<Linear>(1), "is a ReLU");
  REQUIRE_KILN_ERROR((*seq)[3], "out of range");
  REQUIRE_KILN_ERROR((*seq)[-4], "out of range");

  // Named children (PyTorch's Sequential(OrderedDict)).
  Sequential named;
  named.push_back("fc", std::make_shared<Linear>(2, 2));
  named.add(std::make_shared<Tanh>());
  CHECK(named.named_parameters()[0].first == "fc.weight");
  CHECK(named.named_children()[1].first == "1");

  // An empty Sequential passes its input through.
  Sequential empty;
  CHECK(empty.forward(x).is_same(x));

  ModuleList list;
  list.append(std::make_shared<Linear>(2, 3));
  list.push_back(std::make_shared<Linear>(3, 1));
  REQUIRE(list.size() == 2);
  std::vector<std::string> names;
  for (const auto& [n, t] : list.named_parameters()) names.push_back(n);
  CHECK(names == std::vector<std::string>{"0.weight", "0.bias", "1.weight", "1.bias"});
  // A ModuleList has no forward of its own; its owner calls the children.
  REQUIRE_KILN_ERROR(list.forward(x), "ModuleList.forward");
  Tensor h = ones({4, 2});
  for (const auto& m : list.children()) h = m->forward(h);
  CHECK(h.sizes() == Shape{4, 1});
  CHECK(list.to_string() ==
        "ModuleList(\n"
        "  (0): Linear(in_features=2, out_features=3, bias=true)\n"
        "  (1): Linear(in_features=3, out_features=1, bias=true)\n"
        ")");

  // Gradients reach every parameter of a Sequential.
  sum(seq->forward(x)).backward();
  for (const auto& [n, p] : seq->named_parameters()) {
    INFO(n);
    CHECK(p.grad().defined());
  }
}

TEST_CASE("nn::Flatten and Identity", "[nn]") {
  Tensor x = test::random_tensor({2, 3, 4, 5}, DType::F32, 8);
  Flatten f;
  CHECK(f.forward(x).sizes() == Shape{2, 60});
  CHECK_EQUAL_T(f.forward(x), x.reshape({2, 60}));
  CHECK(Flatten(0, -1).forward(x).sizes() == Shape{120});
  CHECK(Flatten(1, 2).forward(x).sizes() == Shape{2, 12, 5});
  CHECK(Flatten(-3, -2).forward(x).sizes() == Shape{2, 12, 5});
  CHECK(Flatten(0, 2).to_string() == "Flatten(start_dim=0, end_dim=2)");
  CHECK_THROWS_AS(Flatten(5).forward(x), Error);
  Identity id;
  CHECK(id.forward(x).is_same(x));
  CHECK(id.to_string() == "Identity()");
}

TEST_CASE("nn activations match their ops and print like PyTorch", "[nn]") {
  Tensor x = test::random_tensor({3, 7}, DType::F32, 9, 2.0);
  CHECK_EQUAL_T(ReLU().forward(x), relu(x));
  CHECK_EQUAL_T(LeakyReLU().forward(x), leaky_relu(x, 0.01));
  CHECK_EQUAL_T(LeakyReLU(0.2).forward(x), leaky_relu(x, 0.2));
  CHECK_EQUAL_T(Sigmoid().forward(x), sigmoid(x));
  CHECK_EQUAL_T(Tanh().forward(x), tanh(x));
  CHECK_EQUAL_T(GELU().forward(x), gelu(x, false));
  CHECK_EQUAL_T(GELU("tanh").forward(x), gelu(x, true));
  CHECK_FALSE(test::equal(GELU("tanh").forward(x), GELU().forward(x)));
  CHECK_EQUAL_T(SiLU().forward(x), silu(x));
  CHECK_EQUAL_T(Softmax(1).forward(x), softmax(x, 1));
  CHECK_EQUAL_T(Softmax(0).forward(x), softmax(x, 0));
  CHECK_EQUAL_T(LogSoftmax(-1).forward(x), log_softmax(x, -1));
  // Hand values for a few of them.
  Tensor v = from_vector<float>({-2, 0, 3});
  CHECK(test::values(ReLU().forward(v)) == std::vector<double>{0, 0, 3});
  CHECK_CLOSE(LeakyReLU(0.5).forward(v), from_vector<float>({-1, 0, 3}));
  CHECK_CLOSE(Sigmoid().forward(v), from_vector<float>({0.11920292f, 0.5f, 0.95257413f}));
  CHECK_CLOSE(SiLU().forward(v), from_vector<float>({-0.23840584f, 0.0f, 2.85772238f}));
  CHECK_CLOSE(GELU().forward(v), from_vector<float>({-0.04550026f, 0.0f, 2.99595031f}));

  REQUIRE_KILN_ERROR(GELU("fast"), "approximate");
  CHECK(ReLU().to_string() == "ReLU()");
  CHECK(LeakyReLU().to_string() == "LeakyReLU(negative_slope=0.01)");
  CHECK(Sigmoid().to_string() == "Sigmoid()");
  CHECK(Tanh().to_string() == "Tanh()");
  CHECK(GELU().to_string() == "GELU(approximate='none')");
  CHECK(SiLU().to_string() == "SiLU()");
  CHECK(Softmax(1).to_string() == "Softmax(dim=1)");
  CHECK(LogSoftmax(-1).to_string() == "LogSoftmax(dim=-1)");
  CHECK(ReLU().parameters().empty());
}

// Points inside radius 0.5 (class 0) or in the ring 0.8..1.2 (class 1): separable, but
// not by a line, so the hidden layer has work to do.
TEST_CASE("nn: an MLP reaches 100% train accuracy with plain gradient descent", "[nn]") {
  const int64_t n = 200;
  Generator g(2024);
  std::vector<double> ang = test::values(rand({n}, DType::F64, &g));
  std::vector<double> rad = test::values(rand({n}, DType::F64, &g));
  std::vector<float> xs;
  std::vector<int64_t> ys;
  for (int64_t i = 0; i < n; ++i) {
    int64_t label = i % 2;
    double r = label == 0 ? 0.5 * rad[i] : 0.8 + 0.4 * rad[i];
    double a = 2 * M_PI * ang[i];
    xs.push_back(static_cast<float>(r * std::cos(a)));
    xs.push_back(static_cast<float>(r * std::sin(a)));
    ys.push_back(label);
  }
  Tensor x = from_vector<float>(xs, {n, 2});
  Tensor y = from_vector<int64_t>(ys, {n});
  Tensor target = one_hot(y, 2).to(DType::F32);

  manual_seed(7);
  auto net = std::make_shared<Sequential>(std::make_shared<Linear>(2, 16), std::make_shared<Tanh>(),
                                          std::make_shared<Linear>(16, 16), std::make_shared<Tanh>(),
                                          std::make_shared<Linear>(16, 2));
  auto accuracy = [&] {
    NoGradGuard ng;
    Tensor pred = argmax(net->forward(x), 1);
    return sum(eq(pred, y)).item<double>() / static_cast<double>(n);
  };
  const double lr = 0.5;
  double first_loss = 0, loss_value = 0;
  int steps = 0;
  for (; steps < 3000 && !(steps % 50 == 0 && accuracy() == 1.0); ++steps) {
    net->zero_grad();
    // Cross-entropy: -mean_i log softmax(logits_i)[y_i].
    Tensor loss = neg(mean(sum(mul(log_softmax(net->forward(x), 1), target), {1})));
    loss.backward();
    loss_value = loss.item<double>();
    if (steps == 0) first_loss = loss_value;
    NoGradGuard ng;
    for (Tensor& p : net->parameters()) sub_(p, mul(p.grad(), lr));
  }
  INFO("steps " << steps << ", loss " << first_loss << " -> " << loss_value);
  CHECK(accuracy() == 1.0);
  CHECK(loss_value < first_loss);
}
