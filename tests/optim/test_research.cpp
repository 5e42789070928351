// LARS, LAMB, AdamS, SRSGD, Apollo, ProxAdam and gradient noise (optim/research.h, optim/proximal.h): the formulas are checked
// step by step against PyTorch in tests/interop/optim_torch.py; here: state round trips
// (a resumed optimizer continues exactly), f32 params, clear errors for bad
// hyper-parameters, and the gradient noise's scale and determinism.
#include <cmath>
#include <functional>
#include <memory>

#include "test_util.h"

using namespace kiln;
using kiln::test::values;

namespace {

using Make = std::function<std::unique_ptr<Optimizer>(const std::vector<Tensor>&)>;

// Three steps of a quadratic-plus-quartic loss from fixed params.
void train(Optimizer& opt, const std::vector<Tensor>& p, int steps, int first = 0) {
  for (int s = first; s < first + steps; ++s) {
    opt.zero_grad();
    Tensor l = add(sum(mul(mul(p[0], p[0]), p[0] * p[0])), sum(mul(p[1], double(s + 1))));
    l = add(l, sum(mul(p[0], p[0])));
    l.backward();
    opt.step();
  }
}

std::vector<Tensor> fresh(DType dt) {
  return {test::random_tensor({3, 4}, dt, 11).set_requires_grad(true), test::random_tensor({4}, dt, 12).set_requires_grad(true)};
}

}  // namespace

TEST_CASE("research optimizers resume exactly from their state dict and take f32 params", "[optim]") {
  std::vector<std::pair<const char*, Make>> makers = {
      {"LARS", [](const std::vector<Tensor>& p) { return std::make_unique<LARS>(p, LARSOptions{.lr = 0.5, .weight_decay = 1e-2, .trust_coefficient = 0.01}); }},
      {"LAMB", [](const std::vector<Tensor>& p) { return std::make_unique<LAMB>(p, LAMBOptions{.lr = 1e-2}); }},
      {"AdamS", [](const std::vector<Tensor>& p) { return std::make_unique<AdamS>(p, AdamSOptions{.lr = 1e-2, .weight_decay = 1e-2}); }},
      {"SRSGD", [](const std::vector<Tensor>& p) { return std::make_unique<SRSGD>(p, SRSGDOptions{.lr = 0.01, .restart_every = 3}); }},
      {"Apollo", [](const std::vector<Tensor>& p) { return std::make_unique<Apollo>(p, ApolloOptions{.lr = 0.1, .weight_decay = 1e-2, .warmup = 3, .decay_type = 2}); }},
      {"ProxAdam", [](const std::vector<Tensor>& p) { return std::make_unique<ProxAdam>(p, ProxAdamOptions{.lr = 1e-2, .lambda = 1e-2, .p = 0.5}); }},
  };
  for (auto& [name, make] : makers) {
    INFO(name);
    for (DType dt : {DType::F32, DType::F64}) {
      std::vector<Tensor> a = fresh(dt), b = fresh(dt);
      auto oa = make(a);
      train(*oa, a, 5);
      auto ob = make(b);
      train(*ob, b, 3);
      auto state = ob->state_dict();
      std::vector<Tensor> c;
      for (const Tensor& t : b) c.push_back(t.detach().clone().set_requires_grad(true));
      auto oc = make(c);
      oc->load_state_dict(state);
      train(*oc, c, 2, 3);
      CHECK(values(a[0]) == values(c[0]));
      CHECK(values(a[1]) == values(c[1]));
      CHECK(values(a[0]) != values(fresh(dt)[0]));  // it moved
    }
  }
}

TEST_CASE("research optimizers reject bad hyper-parameters", "[optim]") {
  Tensor w = zeros({2}).set_requires_grad(true);
  w.set_grad(ones({2}));
  CHECK_KILN_ERROR(LARS({w}, LARSOptions{.lr = -1}).step(), "LARS: invalid lr");
  CHECK_KILN_ERROR(LARS({w}, LARSOptions{.trust_coefficient = -1}).step(), "trust_coefficient");
  CHECK_KILN_ERROR(LAMB({w}, LAMBOptions{.beta1 = 1.0}).step(), "LAMB: invalid beta1");
  CHECK_KILN_ERROR(LAMB({w}, LAMBOptions{.eps = NAN}).step(), "finite");
  CHECK_KILN_ERROR(AdamS({w}, AdamSOptions{.weight_decay = -1}).step(), "AdamS: invalid weight_decay");
  CHECK_KILN_ERROR(SRSGD({w}, SRSGDOptions{.restart_every = 0}).step(), "restart_every");
  LARS l({w});
  CHECK_KILN_ERROR(l.set_option(0, "momentum_typo", 1), "unknown hyper-parameter");
  l.set_option(0, "adapt", 0.5);
  CHECK_KILN_ERROR(l.step(), "adapt");
}

TEST_CASE("add_gradient_noise_ adds N(0, eta / (1 + t)^gamma), the same for the same seed and step", "[optim]") {
  auto grads_after = [](int64_t t, uint64_t seed) {
    Tensor w = zeros({200, 100}).set_requires_grad(true);
    w.set_grad(zeros({200, 100}));
    const double sigma = add_gradient_noise_({w}, t, 0.3, 0.55, seed);
    CHECK(sigma == Approx(std::sqrt(0.3 / std::pow(1.0 + double(t), 0.55))));
    return values(w.grad());
  };
  const auto g = grads_after(99, 1);
  double m = 0, v = 0;
  for (double x : g) m += x / double(g.size());
  for (double x : g) v += (x - m) * (x - m) / double(g.size());
  const double want = 0.3 / std::pow(100.0, 0.55);
  CHECK(std::abs(m) < 0.05 * std::sqrt(want));
  CHECK(v == Approx(want).epsilon(0.03));  // 20,000 samples: the variance within 3%
  CHECK(grads_after(99, 1) == g);          // deterministic (every rank adds the same)
  CHECK(grads_after(98, 1) != g);          // each step its own noise
  CHECK(grads_after(99, 2) != g);
  Tensor none = zeros({2}).set_requires_grad(true);  // no gradient: left alone
  add_gradient_noise_({none}, 0, 1.0);
  CHECK_FALSE(none.grad().defined());
  CHECK_KILN_ERROR(add_gradient_noise_({none}, 0, -1.0), "eta");
  CHECK_KILN_ERROR(add_gradient_noise_({none}, 0, 1.0, 0.0), "gamma");
  CHECK_KILN_ERROR(add_gradient_noise_({none}, -1, 1.0), "step");
}

TEST_CASE("EntropySGD: scoping, noise determinism, state round trip and checks", "[optim]") {
  // save_at_2 / load: the wrapper's state dict after 2 steps, and the params then.
  using State = std::pair<std::map<std::string, Tensor>, std::vector<Tensor>>;
  auto run = [](int steps, State* save_at_2, const State* load) {
    std::vector<Tensor> p = fresh(DType::F64);
    SGD base(p, SGDOptions{.lr = 0.1, .momentum = 0.9});
    EntropySGD e(base, EntropySGDOptions{.inner_steps = 3, .gamma = 0.1, .scoping = 0.5, .noise = 1e-3, .seed = 4});
    if (load) {
      e.load_state_dict(load->first);
      NoGradGuard ng;
      for (size_t i = 0; i < p.size(); ++i) p[i].copy_(load->second[i]);
    }
    for (int s = load ? 2 : 0; s < steps; ++s) {
      e.step([&] {
        Tensor l = add(mul(sum(mul(mul(p[0], p[0]), p[0] * p[0])), 0.01), sum(mul(p[1], p[1])));
        l.backward();
        return l;
      });
      if (save_at_2 && s == 1) {
        for (const auto& [k, v] : e.state_dict()) save_at_2->first[k] = v.clone();  // (they alias the buffers)
        for (const Tensor& t : p) save_at_2->second.push_back(t.detach().clone());
      }
    }
    CHECK(e.steps() == steps);
    CHECK(e.gamma() == Approx(0.1 * std::pow(1.5, steps)));
    return values(p[0]);
  };
  State st;
  const auto straight = run(4, &st, nullptr);
  CHECK(run(4, nullptr, nullptr) == straight);  // the Langevin noise is seeded
  CHECK(run(4, nullptr, &st) == straight);      // resumed after 2 steps
  CHECK(straight != values(fresh(DType::F64)[0]));
  for (double v : straight) CHECK(std::isfinite(v));
  Tensor w = zeros({2}).set_requires_grad(true);
  SGD base({w});
  CHECK_KILN_ERROR(EntropySGD(base, EntropySGDOptions{.inner_steps = 0}), "inner_steps");
  CHECK_KILN_ERROR(EntropySGD(base, EntropySGDOptions{.gamma = 0}), "gamma");
  CHECK_KILN_ERROR(EntropySGD(base, EntropySGDOptions{.alpha = 1.5}), "alpha");
  EntropySGD ok(base);
  CHECK_KILN_ERROR(ok.load_state_dict({}), "entropy_sgd.step");
}
