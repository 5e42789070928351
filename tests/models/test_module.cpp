// Module: hierarchical names and their order, deduplication, registration errors,
// buffers, train/eval, conversion (same handles, new dtype), state dicts (round trip and
// errors), printing, and a gradient check of a small MLP in f64.
#include "test_util.h"

#include <set>

using namespace kiln;
using namespace kiln::nn;

namespace {

std::vector<std::string> names_of(const std::vector<std::pair<std::string, Tensor>>& named) {
  std::vector<std::string> out;
  for (const auto& [n, t] : named) out.push_back(n);
  return out;
}

// Sequential(Linear(4, 3), ReLU(), Sequential(Linear(3, 2)))
std::shared_ptr<Sequential> nested_model() {
  return std::make_shared<Sequential>(std::make_shared<Linear>(4, 3), std::make_shared<ReLU>(),
                                      std::make_shared<Sequential>(std::make_shared<Linear>(3, 2)));
}

// A module with buffers, as a batch-norm-like layer has them.
class WithBuffers : public Module {
 public:
  WithBuffers() : Module("WithBuffers") {
    scale = register_parameter("scale", ones({3}));
    running_mean = register_buffer("running_mean", zeros({3}));
    steps = register_buffer("steps", zeros({}, DType::I64));
    scratch = register_buffer("scratch", zeros({2}), /*persistent=*/false);
  }
  Tensor forward(const Tensor& x) override { return mul(sub(x, running_mean), scale); }
  Tensor scale, running_mean, steps, scratch;
};

std::shared_ptr<Sequential> mlp(uint64_t seed) {
  manual_seed(seed);
  return std::make_shared<Sequential>(std::make_shared<Linear>(3, 5), std::make_shared<Tanh>(),
                                      std::make_shared<Linear>(5, 2));
}

}  // namespace

TEST_CASE("nn::Module: hierarchical names in registration order", "[nn]") {
  auto net = nested_model();
  CHECK(names_of(net->named_parameters()) == std::vector<std::string>{"0.weight", "0.bias", "2.0.weight", "2.0.bias"});
  CHECK(net->named_parameters(/*recurse=*/false).empty());
  CHECK(net->parameters().size() == 4);
  for (const Tensor& p : net->parameters()) {
    CHECK(p.requires_grad());
    CHECK(p.is_leaf());
  }
  CHECK(net->num_parameters() == 4 * 3 + 3 + 3 * 2 + 2);

  std::vector<std::string> module_names;
  std::vector<std::string> module_types;
  for (const auto& [n, m] : net->named_modules()) {
    module_names.push_back(n);
    module_types.push_back(m->type_name());
  }
  CHECK(module_names == std::vector<std::string>{"", "0", "1", "2", "2.0"});
  CHECK(module_types == std::vector<std::string>{"Sequential", "Linear", "ReLU", "Sequential", "Linear"});
  CHECK(net->named_modules(/*include_self=*/false).size() == 4);
  CHECK(net->modules().front().get() == net.get());
  CHECK(net->children().size() == 3);
  auto nc = net->named_children();
  CHECK(nc[2].first == "2");

  // Lookup by path returns the very tensors the layers hold.
  auto inner = net->at<Sequential>(2)->at<Linear>(0);
  CHECK(net->get_parameter("2.0.weight").is_same(inner->weight));
  CHECK(net->get_submodule("2.0").get() == inner.get());
  CHECK(inner->get_parameter("bias").is_same(inner->bias));
  REQUIRE_KILN_ERROR(net->get_submodule("2.5"), "has no submodule '5'");
  REQUIRE_KILN_ERROR(net->get_parameter("0.gamma"), "has no parameter 'gamma'");
  REQUIRE_KILN_ERROR(net->get_parameter("7.weight"), "has no submodule '7'");
  REQUIRE_KILN_ERROR(net->get_buffer("0.weight"), "has no buffer 'weight'");
}

TEST_CASE("nn::Module: shared tensors and modules are listed once, state dicts keep every name", "[nn]") {
  auto shared = std::make_shared<Linear>(2, 2);
  auto net = std::make_shared<Sequential>(shared, std::make_shared<Tanh>(), shared);
  CHECK(names_of(net->named_parameters()) == std::vector<std::string>{"0.weight", "0.bias"});
  CHECK(net->named_modules().size() == 3);  // "", "0", "1"
  CHECK(net->children().size() == 2);
  CHECK(net->num_parameters() == 6);
  auto sd = net->state_dict();
  CHECK(sd.size() == 4);
  CHECK(sd.count("2.weight") == 1);
  CHECK(sd.at("0.weight").shares_storage(sd.at("2.weight")));

  // A tensor registered under two names in one module (weight tying).
  auto tied = std::make_shared<Module>("Tied");
  Tensor w = randn({3, 3});
  tied->register_parameter("a", w);
  tied->register_parameter("b", w);
  CHECK(names_of(tied->named_parameters()) == std::vector<std::string>{"a"});
  CHECK(tied->state_dict().size() == 2);
}

TEST_CASE("nn::Module: registration errors", "[nn]") {
  auto m = std::make_shared<Module>("Custom");
  m->register_parameter("w", zeros({2}));
  REQUIRE_KILN_ERROR(m->register_parameter("w", zeros({2})), "'w' is already used by a parameter");
  REQUIRE_KILN_ERROR(m->register_buffer("w", zeros({2})), "'w' is already used by a parameter");
  REQUIRE_KILN_ERROR(m->register_module("w", std::make_shared<ReLU>()), "'w' is already used by a parameter");
  REQUIRE_KILN_ERROR(m->register_parameter("a.b", zeros({2})), "contains '.'");
  REQUIRE_KILN_ERROR(m->register_parameter("", zeros({2})), "name is empty");
  REQUIRE_KILN_ERROR(m->register_parameter("i", zeros({2}, DType::I64)), "only floating tensors");
  REQUIRE_KILN_ERROR(m->register_parameter("u", Tensor()), "undefined");
  Tensor leaf = ones({2}).set_requires_grad(true);
  REQUIRE_KILN_ERROR(m->register_parameter("nonleaf", mul(leaf, 2.0)), "not a leaf");
  REQUIRE_KILN_ERROR(m->register_module("null", std::shared_ptr<Module>()), "is null");
  // A frozen parameter and an integer buffer are fine.
  Tensor frozen = m->register_parameter("frozen", ones({4}), /*requires_grad=*/false);
  CHECK_FALSE(frozen.requires_grad());
  CHECK(m->num_parameters() == 6);
  CHECK(m->num_parameters(/*only_trainable=*/true) == 2);
  m->register_buffer("count", zeros({}, DType::I64));

  // Cycles are refused.
  auto parent = std::make_shared<Sequential>();
  auto child = parent->push_back(std::make_shared<Sequential>());
  REQUIRE_KILN_ERROR(child->push_back(parent), "cycle");
  REQUIRE_KILN_ERROR(parent->push_back("self", parent), "cycle");

  // A module not owned by a shared_ptr cannot return itself as one.
  Module on_stack("OnStack");
  REQUIRE_KILN_ERROR(on_stack.named_modules(), "shared_ptr");
  CHECK(on_stack.named_modules(/*include_self=*/false).empty());
  REQUIRE_KILN_ERROR(on_stack.forward(ones({1})), "OnStack.forward");
}

TEST_CASE("nn::Module: buffers and the state dict", "[nn]") {
  auto net = std::make_shared<Sequential>(std::make_shared<Linear>(3, 3), std::make_shared<WithBuffers>());
  CHECK(names_of(net->named_buffers()) == std::vector<std::string>{"1.running_mean", "1.steps", "1.scratch"});
  CHECK(net->buffers().size() == 3);
  CHECK(names_of(net->named_parameters()) == std::vector<std::string>{"0.weight", "0.bias", "1.scale"});
  auto sd = net->state_dict();
  std::vector<std::string> keys;
  for (const auto& [k, v] : sd) keys.push_back(k);
  // Non-persistent buffers stay out.
  CHECK(keys == std::vector<std::string>{"0.bias", "0.weight", "1.running_mean", "1.scale", "1.steps"});
  // Values are detached and share storage with the module.
  CHECK_FALSE(sd.at("0.weight").requires_grad());
  CHECK(sd.at("0.weight").shares_storage(net->at<Linear>(0)->weight));
  CHECK(net->get_buffer("1.steps").dtype() == DType::I64);
}

TEST_CASE("nn::Module: train and eval reach every descendant", "[nn]") {
  auto net = nested_model();
  for (auto& m : net->modules()) CHECK(m->is_training());
  net->eval();
  for (auto& m : net->modules()) CHECK_FALSE(m->is_training());
  net->at<Sequential>(2)->train();
  CHECK_FALSE(net->is_training());
  CHECK(net->at<Sequential>(2)->at<Linear>(0)->is_training());
  net->train(true);
  for (auto& m : net->modules()) CHECK(m->is_training());
}

TEST_CASE("nn::Module: state_dict round trip into a fresh model gives identical outputs", "[nn]") {
  auto a = mlp(1);
  auto b = mlp(2);
  Tensor x = test::random_tensor({6, 3}, DType::F32, 11);
  Tensor ya = a->forward(x);
  REQUIRE_FALSE(test::equal(ya, b->forward(x)));
  Tensor b_weight = b->at<Linear>(0)->weight;
  LoadStateDictResult r = b->load_state_dict(a->state_dict());
  CHECK(r.missing_keys.empty());
  CHECK(r.unexpected_keys.empty());
  CHECK(test::bit_equal(b->forward(x), ya));
  // Loaded in place: the layer's handle is the same tensor, still a leaf that requires grad.
  CHECK(b->at<Linear>(0)->weight.is_same(b_weight));
  CHECK(b_weight.requires_grad());
  CHECK(b_weight.is_leaf());
  CHECK_FALSE(b_weight.shares_storage(a->at<Linear>(0)->weight));

  // Buffers travel too.
  auto c = std::make_shared<WithBuffers>();
  auto d = std::make_shared<WithBuffers>();
  {
    NoGradGuard g;
    c->running_mean.fill_(0.5);
    c->steps.fill_(7);
  }
  d->load_state_dict(c->state_dict());
  CHECK(d->steps.item<int64_t>() == 7);
  CHECK(test::values(d->running_mean) == std::vector<double>{0.5, 0.5, 0.5});
}

TEST_CASE("nn::Module: load_state_dict errors name the keys", "[nn]") {
  auto net = nested_model();
  auto good = nested_model()->state_dict();
  Tensor before = net->at<Linear>(0)->weight.clone();

  auto missing = good;
  missing.erase("2.0.bias");
  REQUIRE_KILN_ERROR(net->load_state_dict(missing), "Missing key(s): \"2.0.bias\"");

  auto unexpected = good;
  unexpected["3.weight"] = zeros({1});
  REQUIRE_KILN_ERROR(net->load_state_dict(unexpected), "Unexpected key(s): \"3.weight\"");

  auto both = missing;
  both["extra"] = zeros({1});
  try {
    net->load_state_dict(both);
    FAIL("no error");
  } catch (const Error& e) {
    std::string msg = e.what();
    CHECK_THAT(msg, Catch::Contains("Sequential") && Catch::Contains("\"2.0.bias\"") && Catch::Contains("\"extra\""));
  }

  auto shape = good;
  shape["0.weight"] = zeros({4, 3});
  REQUIRE_KILN_ERROR(net->load_state_dict(shape), "size mismatch for 0.weight");
  REQUIRE_KILN_ERROR(net->load_state_dict(shape), "[4, 3]");
  REQUIRE_KILN_ERROR(net->load_state_dict(shape, /*strict=*/false), "size mismatch for 0.weight");

  auto dtype = good;
  dtype["2.0.weight"] = zeros({2, 3}, DType::F64);
  REQUIRE_KILN_ERROR(net->load_state_dict(dtype), "dtype mismatch for 2.0.weight");

  // Nothing was copied by the failed loads (they check everything first).
  CHECK(test::bit_equal(net->at<Linear>(0)->weight, before));

  // Non-strict loading reports the keys and loads the rest.
  auto partial = both;
  LoadStateDictResult r = net->load_state_dict(partial, /*strict=*/false);
  CHECK(r.missing_keys == std::vector<std::string>{"2.0.bias"});
  CHECK(r.unexpected_keys == std::vector<std::string>{"extra"});
  CHECK(test::bit_equal(net->at<Linear>(0)->weight, good.at("0.weight")));
}

TEST_CASE("nn::Module: printout", "[nn]") {
  auto net = std::make_shared<Sequential>(std::make_shared<Linear>(4, 3), std::make_shared<ReLU>(),
                                          std::make_shared<Sequential>(std::make_shared<Linear>(3, 2, false)),
                                          std::make_shared<LeakyReLU>(0.2), std::make_shared<Flatten>());
  CHECK(net->to_string() ==
        "Sequential(\n"
        "  (0): Linear(in_features=4, out_features=3, bias=true)\n"
        "  (1): ReLU()\n"
        "  (2): Sequential(\n"
        "    (0): Linear(in_features=3, out_features=2, bias=false)\n"
        "  )\n"
        "  (3): LeakyReLU(negative_slope=0.2)\n"
        "  (4): Flatten(start_dim=1, end_dim=-1)\n"
        ")");
  std::ostringstream os;
  os << *net->at(1);
  CHECK(os.str() == "ReLU()");
  CHECK(Sequential().to_string() == "Sequential()");

  // A module with both settings and children puts its settings on their own line.
  class Block : public Module {
   public:
    Block() : Module("Block") { register_module("act", std::make_shared<GELU>("tanh")); }
    std::string extra_repr() const override { return "width=8"; }
  };
  CHECK(Block().to_string() == "Block(\n  width=8\n  (act): GELU(approximate='tanh')\n)");
}

TEST_CASE("nn::detail::repr_double writes floats as Python's repr", "[nn]") {
  using nn::detail::repr_double;
  CHECK(repr_double(0.01) == "0.01");
  CHECK(repr_double(1.0) == "1.0");
  CHECK(repr_double(-2.5) == "-2.5");
  CHECK(repr_double(0.0) == "0.0");
  CHECK(repr_double(100.0) == "100.0");
  CHECK(repr_double(0.0001) == "0.0001");
  CHECK(repr_double(1e-5) == "1e-05");
  CHECK(repr_double(1.5e20) == "1.5e+20");
  CHECK(repr_double(1e16) == "1e+16");
  CHECK(repr_double(123456789.125) == "123456789.125");
  CHECK(repr_double(0.1 + 0.2) == "0.30000000000000004");
}

TEST_CASE("nn::Module: to(dtype) converts in place and keeps handles, requires_grad and grads", "[nn]") {
  auto net = std::make_shared<Sequential>(std::make_shared<Linear>(3, 3), std::make_shared<WithBuffers>());
  auto lin = net->at<Linear>(0);
  Tensor w = lin->weight;
  std::vector<double> w_values = test::values(w);
  sum(net->forward(ones({2, 3}))).backward();
  REQUIRE(w.grad().defined());
  std::vector<double> g_values = test::values(w.grad());

  net->to(DType::F64);
  CHECK(lin->weight.is_same(w));
  CHECK(w.dtype() == DType::F64);
  CHECK(w.requires_grad());
  CHECK(w.is_leaf());
  CHECK(test::values(w) == w_values);
  CHECK(w.grad().dtype() == DType::F64);
  CHECK(test::values(w.grad()) == g_values);
  for (const Tensor& p : net->parameters()) CHECK(p.dtype() == DType::F64);
  auto wb = net->at<WithBuffers>(1);
  CHECK(wb->running_mean.dtype() == DType::F64);
  CHECK(wb->scratch.dtype() == DType::F64);
  CHECK(wb->steps.dtype() == DType::I64);  // integer buffers keep their dtype
  // The converted model runs in f64 and gradients reach the same handles.
  net->zero_grad();
  Tensor y = net->forward(ones({2, 3}, DType::F64));
  CHECK(y.dtype() == DType::F64);
  sum(y).backward();
  CHECK(w.grad().dtype() == DType::F64);

  net->to(kCPU);  // nothing to do
  CHECK(w.dtype() == DType::F64);
  REQUIRE_KILN_ERROR(net->to(DType::I32), "floating dtype");
  net->to(kCPU, DType::F32);
  CHECK(w.dtype() == DType::F32);
  CHECK(test::values(w) == w_values);
}

TEST_CASE("nn::Module: zero_grad and apply", "[nn]") {
  auto net = nested_model();
  sum(net->forward(ones({5, 4}))).backward();
  for (const Tensor& p : net->parameters()) REQUIRE(p.grad().defined());
  net->zero_grad(/*set_to_none=*/false);
  for (const Tensor& p : net->parameters()) {
    REQUIRE(p.grad().defined());
    CHECK(sum(abs(p.grad())).item<double>() == 0.0);
  }
  net->zero_grad();
  for (const Tensor& p : net->parameters()) CHECK_FALSE(p.grad().defined());

  // apply visits children before their parent, like PyTorch's Module.apply.
  std::vector<std::string> order;
  net->apply([&](Module& m) { order.push_back(m.type_name()); });
  CHECK(order == std::vector<std::string>{"Linear", "ReLU", "Linear", "Sequential", "Sequential"});
  net->apply([](Module& m) {
    if (auto* lin = dynamic_cast<Linear*>(&m)) init::zeros_(lin->bias);
  });
  CHECK(sum(abs(net->get_parameter("2.0.bias"))).item<double>() == 0.0);
}

TEST_CASE("nn::Module: gradcheck of an MLP in f64 wrt its input and its parameters", "[nn][gradcheck]") {
  auto net = mlp(3);
  net->to(DType::F64);
  auto l0 = net->at<Linear>(0);
  auto l2 = net->at<Linear>(2);
  Tensor x = test::random_tensor({4, 3}, DType::F64, 21);

  // Through the module itself, with respect to the input.
  GradcheckResult rx = gradcheck([&](const std::vector<Tensor>& v) { return net->forward(v[0]); }, {x});
  INFO(rx.message);
  CHECK(rx.ok);

  // The same forward as a function of tensors, so the parameters can be inputs.
  auto f = [](const std::vector<Tensor>& v) { return linear(tanh(linear(v[0], v[1], v[2])), v[3], v[4]); };
  std::vector<Tensor> inputs{x, l0->weight.detach(), l0->bias.detach(), l2->weight.detach(), l2->bias.detach()};
  REQUIRE(test::bit_equal(f(inputs), net->forward(x)));
  GradcheckResult rp = gradcheck(f, inputs);
  INFO(rp.message);
  CHECK(rp.ok);

  // The module's parameter gradients are the functional form's.
  Generator g(5);
  Tensor w = randn({4, 2}, DType::F64, &g);
  net->zero_grad();
  sum(mul(net->forward(x), w)).backward();
  std::vector<Tensor> leaves;
  for (const Tensor& t : inputs) leaves.push_back(t.clone().detach().set_requires_grad(true));
  sum(mul(f(leaves), w)).backward();
  CHECK_CLOSE(l0->weight.grad(), leaves[1].grad());
  CHECK_CLOSE(l0->bias.grad(), leaves[2].grad());
  CHECK_CLOSE(l2->weight.grad(), leaves[3].grad());
  CHECK_CLOSE(l2->bias.grad(), leaves[4].grad());
}

TEST_CASE("nn::FrozenParameters: a backward through the module gives its input's gradient only", "[nn]") {
  auto net = nested_model();
  auto params = net->parameters();
  params.back().set_requires_grad(false);  // one that did not require grad stays so
  Generator gen(3);
  Tensor x = randn({5, 4}, DType::F32, &gen).set_requires_grad(true);
  sum(net->forward(x)).backward();
  const std::vector<double> gx = test::values(x.grad());
  x.set_grad(Tensor());
  net->zero_grad();
  {
    FrozenParameters frozen(params);
    for (const Tensor& p : params) CHECK_FALSE(p.requires_grad());
    sum(net->forward(x)).backward();
    CHECK(test::values(x.grad()) == gx);  // the same input gradient, bit for bit
    for (const Tensor& p : params) CHECK_FALSE(p.grad().defined());
  }
  for (size_t i = 0; i + 1 < params.size(); ++i) CHECK(params[i].requires_grad());
  CHECK_FALSE(params.back().requires_grad());
  sum(net->forward(x)).backward();
  CHECK(params.front().grad().defined());
}
