// Optimizer state dicts: the flattened names and values, a save/load round trip that
// continues exactly like an uninterrupted run, and load_state_dict's checks (which must
// leave the optimizer unchanged when they fail).
#include <functional>
#include <memory>

#include "test_util.h"

using namespace kiln;
using Dict = std::map<std::string, Tensor>;

namespace {

std::vector<Tensor> make_params(uint64_t seed) {
  std::vector<Tensor> ps;
  const std::vector<Shape> shapes{{5}, {3, 7}, {1}, {2, 2, 3}};
  for (size_t i = 0; i < shapes.size(); ++i)
    ps.push_back(test::random_tensor(shapes[i], DType::F64, seed + i).set_requires_grad(true));
  return ps;
}

std::vector<Tensor> copies(const std::vector<Tensor>& ps) {
  std::vector<Tensor> out;
  for (const Tensor& p : ps) out.push_back(p.detach().clone().set_requires_grad(true));
  return out;
}

// Sets gradients that depend on the step and the param only, so two runs see the same.
void set_grads(const std::vector<Tensor>& ps, int step) {
  for (size_t i = 0; i < ps.size(); ++i) {
    Tensor p = ps[i];
    if (i == 2 && step == 0) {  // param 2 starts later: per-param step counts differ
      p.set_grad(Tensor());
      continue;
    }
    p.set_grad(test::random_tensor(p.sizes(), p.dtype(), 500 + 10 * step + i));
  }
}

// What a checkpoint file would hold: independent CPU copies of every tensor.
Dict deep_copy(const Dict& d) {
  Dict out;
  for (const auto& [k, t] : d) out[k] = t.cpu().clone();
  return out;
}

using Factory = std::function<std::unique_ptr<Optimizer>(const std::vector<Tensor>&)>;

std::vector<ParamGroup> two_groups(const std::vector<Tensor>& ps) {
  return {ParamGroup{{ps[0], ps[1]}, {}}, ParamGroup{{ps[2], ps[3]}, {{"lr", 0.02}}}};
}

const std::vector<std::pair<const char*, Factory>>& factories() {
  static const std::vector<std::pair<const char*, Factory>> v{
      {"SGD nesterov",
       [](const std::vector<Tensor>& ps) {
         return std::make_unique<SGD>(two_groups(ps), SGDOptions{.lr = 0.1, .momentum = 0.9, .nesterov = true});
       }},
      {"Adam amsgrad",
       [](const std::vector<Tensor>& ps) {
         return std::make_unique<Adam>(two_groups(ps), AdamOptions{.lr = 0.01, .amsgrad = true});
       }},
      {"AdamW",
       [](const std::vector<Tensor>& ps) {
         return std::make_unique<AdamW>(two_groups(ps), AdamWOptions{.lr = 0.01, .weight_decay = 0.1});
       }},
  };
  return v;
}

}  // namespace

TEST_CASE("state dict round trip continues exactly like an uninterrupted run", "[optim]") {
  for (const auto& [name, make] : factories()) {
    INFO(name);
    // Uninterrupted: 6 steps.
    std::vector<Tensor> pa = make_params(7);
    auto a = make(pa);
    for (int s = 0; s < 6; ++s) {
      set_grads(pa, s);
      a->step();
    }
    // Interrupted: 3 steps, save, a fresh optimizer over copies of the params loads the
    // checkpoint and takes the last 3 steps.
    std::vector<Tensor> pb = make_params(7);
    auto b = make(pb);
    for (int s = 0; s < 3; ++s) {
      set_grads(pb, s);
      b->step();
    }
    Dict saved = deep_copy(b->state_dict());
    b.reset();
    std::vector<Tensor> pc = copies(pb);
    auto c = make(pc);
    c->set_lr(123.0);  // overwritten by the checkpoint's hyper-parameters
    c->load_state_dict(saved);
    CHECK(c->lr(0) == a->lr(0));
    CHECK(c->lr(1) == 0.02);
    for (int s = 3; s < 6; ++s) {
      set_grads(pc, s);
      c->step();
    }
    for (size_t i = 0; i < pa.size(); ++i) {
      INFO("param " << i);
      CHECK(test::bit_equal(pc[i], pa[i]));
      CHECK(c->state(i).step == a->state(i).step);
      for (const auto& [k, t] : a->state(i).buffers) {
        INFO(k);
        REQUIRE(c->state(i).buffers.count(k));
        CHECK(test::bit_equal(c->state(i).buffers.at(k), t));
      }
    }
    // The loaded buffers are the optimizer's own, not the caller's tensors.
    for (const auto& [k, t] : saved)
      if (k.rfind("state.0.", 0) == 0 && k != "state.0.step") CHECK_FALSE(c->state(0).buffers.at(k.substr(8)).shares_storage(t));
  }
}

TEST_CASE("state dict names and values follow PyTorch's layout", "[optim]") {
  std::vector<Tensor> ps = make_params(3);
  Adam opt(std::vector<ParamGroup>{{{ps[0], ps[1]}, {}}, {{ps[2], ps[3]}, {{"lr", 0.5}, {"amsgrad", 1}}}},
           {.lr = 0.01, .beta1 = 0.8});
  // Before any step: only the param groups.
  Dict d0 = opt.state_dict();
  for (const auto& [k, t] : d0) CHECK(k.rfind("param_groups.", 0) == 0);
  for (int s = 0; s < 3; ++s) {
    set_grads(ps, s);
    opt.step();
  }
  Dict d = opt.state_dict();
  for (const char* k : {"lr", "beta1", "beta2", "eps", "weight_decay", "amsgrad", "maximize"}) {
    INFO(k);
    REQUIRE(d.count(std::string("param_groups.0.") + k));
    REQUIRE(d.count(std::string("param_groups.1.") + k));
    const Tensor& t = d.at(std::string("param_groups.0.") + k);
    CHECK(t.dim() == 0);
    CHECK(t.dtype() == DType::F64);
  }
  CHECK(d.at("param_groups.0.lr").item<double>() == 0.01);
  CHECK(d.at("param_groups.1.lr").item<double>() == 0.5);
  CHECK(d.at("param_groups.0.beta1").item<double>() == 0.8);
  CHECK(d.at("param_groups.1.amsgrad").item<double>() == 1.0);
  CHECK(d.at("param_groups.0.amsgrad").item<double>() == 0.0);
  CHECK(test::values(d.at("param_groups.0.params")) == std::vector<double>{0, 1});
  CHECK(test::values(d.at("param_groups.1.params")) == std::vector<double>{2, 3});
  CHECK(d.at("param_groups.1.params").dtype() == DType::I64);
  CHECK(d.at("state.0.step").item<double>() == 3.0);
  CHECK(d.at("state.2.step").item<double>() == 2.0);  // param 2 had no gradient at step 0
  CHECK(d.at("state.0.step").dtype() == DType::F64);
  CHECK(d.at("state.1.exp_avg").sizes() == Shape{3, 7});
  CHECK(d.at("state.1.exp_avg_sq").dtype() == DType::F64);
  CHECK(d.count("state.3.max_exp_avg_sq") == 1);  // group 1 uses amsgrad
  CHECK(d.count("state.0.max_exp_avg_sq") == 0);
  // Group entries + 4 params x (step, exp_avg, exp_avg_sq) + 2 amsgrad buffers.
  CHECK(d.size() == 2 * 8 + 4 * 3 + 2);
  // The state entries alias the optimizer's buffers (documented: no copy).
  CHECK(d.at("state.0.exp_avg").is_same(opt.state(0).buffers.at("exp_avg")));

  // SGD has no step counts, and no state without momentum.
  SGD sgd(make_params(3), {.lr = 0.1});
  set_grads(std::vector<Tensor>{sgd.param(0), sgd.param(1), sgd.param(2), sgd.param(3)}, 1);
  sgd.step();
  for (const auto& [k, t] : sgd.state_dict()) CHECK(k.rfind("param_groups.0.", 0) == 0);
  sgd.set_option(0, "momentum", 0.9);
  sgd.step();
  Dict ds = sgd.state_dict();
  CHECK(ds.count("state.0.momentum_buffer") == 1);
  CHECK(ds.count("state.0.step") == 0);
}

TEST_CASE("load_state_dict checks every entry and changes nothing on failure", "[optim]") {
  std::vector<Tensor> ps = make_params(9);
  Adam opt(ps, {.lr = 0.01});
  for (int s = 0; s < 2; ++s) {
    set_grads(ps, s);
    opt.step();
  }
  const Dict good = deep_copy(opt.state_dict());
  REQUIRE_NOTHROW(opt.load_state_dict(good));

  auto with = [&](const std::string& k, const Tensor& t) {
    Dict d = good;
    d[k] = t;
    return d;
  };
  auto without = [&](const std::string& k) {
    Dict d = good;
    REQUIRE(d.erase(k) == 1);
    return d;
  };
  struct Case {
    const char* what;
    Dict dict;
    const char* needle;
  };
  const std::vector<Case> cases{
      {"buffer of the wrong shape", with("state.1.exp_avg", zeros({7, 3}, DType::F64)), "state.1.exp_avg"},
      {"buffer of the wrong dtype", with("state.1.exp_avg_sq", zeros({3, 7}, DType::F32)), "state.1.exp_avg_sq"},
      {"unknown buffer", with("state.0.momentum_buffer", zeros({5}, DType::F64)), "state.0.momentum_buffer"},
      {"unknown top-level entry", with("foo", zeros({1})), "unexpected entry 'foo'"},
      {"malformed state name", with("state.x.exp_avg", zeros({5}, DType::F64)), "unexpected entry"},
      {"param out of range", with("state.9.exp_avg", zeros({5}, DType::F64)), "refers to param 9"},
      {"missing buffer", without("state.0.exp_avg_sq"), "missing 'state.0.exp_avg_sq'"},
      {"missing step", without("state.0.step"), "missing 'state.0.step'"},
      {"step of the wrong dtype", with("state.0.step", scalar_tensor(int64_t{2}, DType::I64)), "state.0.step"},
      {"fractional step", with("state.0.step", scalar_tensor(2.5, DType::F64)), "non-negative integer"},
      {"missing hyper-parameter", without("param_groups.0.eps"), "missing hyper-parameter 'param_groups.0.eps'"},
      {"unknown hyper-parameter", with("param_groups.0.momentum", scalar_tensor(0.9, DType::F64)),
       "unknown hyper-parameter"},
      {"hyper-parameter not 0-d f64", with("param_groups.0.lr", full({1}, 0.1, DType::F64)), "param_groups.0.lr"},
      {"invalid hyper-parameter value", with("param_groups.0.beta1", scalar_tensor(1.5, DType::F64)), "beta1"},
      {"extra param group", with("param_groups.1.lr", scalar_tensor(0.1, DType::F64)), "param groups"},
      {"params of another size", with("param_groups.0.params", from_vector<int64_t>({0, 1, 2})), "3 params"},
      {"params in another order", with("param_groups.0.params", from_vector<int64_t>({1, 0, 2, 3})),
       "lists param 1"},
      {"undefined tensor", with("state.0.exp_avg", Tensor()), "undefined"},
  };
  const double lr_before = opt.lr();
  Tensor m_before = opt.state(1).buffers.at("exp_avg").clone();
  for (const Case& c : cases) {
    INFO(c.what);
    REQUIRE_KILN_ERROR(opt.load_state_dict(c.dict), c.needle);
    CHECK_THROWS_WITH(opt.load_state_dict(c.dict), Catch::Contains("Adam.load_state_dict"));
    CHECK(opt.lr() == lr_before);
    CHECK(opt.state(0).step == 2);
    CHECK(test::bit_equal(opt.state(1).buffers.at("exp_avg"), m_before));
  }
  // A dict from another optimizer kind does not load.
  SGD sgd(make_params(9), {.momentum = 0.9});
  REQUIRE_KILN_ERROR(sgd.load_state_dict(good), "SGD.load_state_dict");
  // Params with no saved state get none (a fresh start for them).
  Dict partial = good;
  for (const char* k : {"state.3.step", "state.3.exp_avg", "state.3.exp_avg_sq"}) partial.erase(k);
  opt.load_state_dict(partial);
  CHECK(opt.state(3).empty());
  CHECK(opt.state(0).step == 2);
}
