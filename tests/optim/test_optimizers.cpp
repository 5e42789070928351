// SGD, Adam and AdamW against hand-written references of PyTorch's formulas
// (optim_reference.h), in f64 on the CPU: several params of odd sizes, a few steps,
// params that sometimes have no gradient, and the momentum / Nesterov / weight-decay /
// amsgrad / maximize variants. Also: the fused multi-tensor entry points on many tensors
// and their checks, half-precision params, zero_grad, option checks, and a small
// end-to-end minimisation through autograd.
#include "optim/optim_reference.h"
#include "test_util.h"

using namespace kiln;
using test::Vals;

namespace {

const std::vector<Shape>& param_shapes() {
  static const std::vector<Shape> v{{7}, {3, 5}, {1}, {2, 3, 4}, {1, 1}, {129}};
  return v;
}

std::vector<Tensor> make_params(DType dtype, uint64_t seed) {
  std::vector<Tensor> params;
  for (size_t i = 0; i < param_shapes().size(); ++i)
    params.push_back(test::random_tensor(param_shapes()[i], dtype, seed + i).set_requires_grad(true));
  return params;
}

Vals values_of(const std::vector<Tensor>& ts) {
  Vals v;
  for (const Tensor& t : ts) v.push_back(test::values(t));
  return v;
}

// Runs `steps` steps of opt and ref on the same gradients and compares the params after
// each. With skip, param i has no gradient at step s when (i + s) % 3 == 0.
template <class Ref>
void run_against_reference(Optimizer& opt, Ref& ref, const std::vector<Tensor>& params, int steps, uint64_t seed,
                           bool skip, double rtol, double atol) {
  Vals vals = values_of(params);
  for (int s = 0; s < steps; ++s) {
    Vals grads(params.size());
    std::vector<bool> has_grad(params.size());
    for (size_t i = 0; i < params.size(); ++i) {
      has_grad[i] = !(skip && (i + s) % 3 == 0);
      Tensor p = params[i];
      if (!has_grad[i]) {
        p.set_grad(Tensor());
        continue;
      }
      Tensor g = test::random_tensor(p.sizes(), p.dtype(), seed * 1000 + s * 100 + i);
      p.set_grad(g);
      grads[i] = test::values(g);
    }
    opt.step();
    ref.step(vals, grads, has_grad);
    for (size_t i = 0; i < params.size(); ++i) {
      INFO("step " << s << ", param " << i << " " << shape_str(params[i].sizes()));
      REQUIRE_CLOSE_TOL(params[i], from_vector(vals[i], params[i].sizes()).to(params[i].dtype()), rtol, atol);
    }
  }
}

// f64 results agree with the reference to rounding (the same operations in the same order).
constexpr double kRtol64 = 1e-14, kAtol64 = 1e-15;

}  // namespace

TEST_CASE("SGD matches PyTorch's formulas in f64", "[optim]") {
  struct Variant {
    const char* name;
    SGDOptions o;
  };
  const std::vector<Variant> variants{
      {"plain", {.lr = 0.1}},
      {"momentum", {.lr = 0.05, .momentum = 0.9}},
      {"momentum + dampening", {.lr = 0.05, .momentum = 0.9, .dampening = 0.3}},
      {"nesterov", {.lr = 0.05, .momentum = 0.9, .nesterov = true}},
      {"nesterov + weight decay", {.lr = 0.05, .momentum = 0.8, .weight_decay = 0.1, .nesterov = true}},
      {"weight decay", {.lr = 0.2, .weight_decay = 0.01}},
      {"maximize + momentum + weight decay",
       {.lr = 0.03, .momentum = 0.5, .dampening = 0.5, .weight_decay = 0.2, .maximize = true}},
  };
  for (const Variant& v : variants) {
    for (bool skip : {false, true}) {
      INFO(v.name << (skip ? ", some params without gradients" : ""));
      std::vector<Tensor> params = make_params(DType::F64, 11);
      SGD opt(params, v.o);
      test::RefSgd ref;
      ref.lr = v.o.lr;
      ref.momentum = v.o.momentum;
      ref.dampening = v.o.dampening;
      ref.weight_decay = v.o.weight_decay;
      ref.nesterov = v.o.nesterov;
      ref.maximize = v.o.maximize;
      run_against_reference(opt, ref, params, 5, 21, skip, kRtol64, kAtol64);
      // Momentum buffers exist exactly for params that have had a gradient.
      for (size_t i = 0; i < params.size(); ++i)
        CHECK(opt.state(i).buffers.count("momentum_buffer") == (v.o.momentum != 0 ? 1u : 0u));
    }
  }
}

TEST_CASE("Adam and AdamW match PyTorch's formulas in f64", "[optim]") {
  struct Variant {
    const char* name;
    AdamOptions o;
    bool adamw;
  };
  const std::vector<Variant> variants{
      {"default", {.lr = 0.01}, false},
      {"L2 weight decay", {.lr = 0.01, .weight_decay = 0.1}, false},
      {"amsgrad", {.lr = 0.02, .beta1 = 0.8, .beta2 = 0.9, .amsgrad = true}, false},
      {"beta1 < 0.5 (lerp's other branch)", {.lr = 0.01, .beta1 = 0.3, .beta2 = 0.95, .eps = 1e-6}, false},
      {"maximize", {.lr = 0.01, .weight_decay = 0.05, .maximize = true}, false},
      {"AdamW", {.lr = 0.01, .weight_decay = 0.1}, true},
      {"AdamW amsgrad", {.lr = 0.03, .beta2 = 0.9, .weight_decay = 0.3, .amsgrad = true}, true},
  };
  for (const Variant& v : variants) {
    for (bool skip : {false, true}) {
      INFO(v.name << (skip ? ", some params without gradients" : ""));
      std::vector<Tensor> params = make_params(DType::F64, 31);
      std::unique_ptr<Optimizer> opt;
      if (v.adamw) {
        AdamWOptions w{v.o.lr, v.o.beta1, v.o.beta2, v.o.eps, v.o.weight_decay, v.o.amsgrad, v.o.maximize};
        opt = std::make_unique<AdamW>(params, w);
      } else {
        opt = std::make_unique<Adam>(params, v.o);
      }
      CHECK(std::string(opt->name()) == (v.adamw ? "AdamW" : "Adam"));
      test::RefAdam ref;
      ref.lr = v.o.lr;
      ref.beta1 = v.o.beta1;
      ref.beta2 = v.o.beta2;
      ref.eps = v.o.eps;
      ref.weight_decay = v.o.weight_decay;
      ref.amsgrad = v.o.amsgrad;
      ref.maximize = v.o.maximize;
      ref.decoupled = v.adamw;
      run_against_reference(*opt, ref, params, 5, 41, skip, kRtol64, kAtol64);
      for (size_t i = 0; i < params.size(); ++i) {
        INFO("param " << i);
        CHECK(opt->state(i).step == ref.steps[i]);  // skipped steps do not count
        CHECK_CLOSE_TOL(opt->state(i).buffers.at("exp_avg"), from_vector(ref.m[i], params[i].sizes()), kRtol64,
                        kAtol64);
        CHECK_CLOSE_TOL(opt->state(i).buffers.at("exp_avg_sq"), from_vector(ref.v[i], params[i].sizes()), kRtol64,
                        kAtol64);
        CHECK(opt->state(i).buffers.count("max_exp_avg_sq") == (v.o.amsgrad ? 1u : 0u));
      }
    }
  }
}

TEST_CASE("AdamW defaults to weight decay 1e-2 and Adam to 0", "[optim]") {
  std::vector<Tensor> params = make_params(DType::F64, 3);
  AdamW w(params);
  Adam a(make_params(DType::F64, 3));
  CHECK(w.option(0, "weight_decay") == 1e-2);
  CHECK(a.option(0, "weight_decay") == 0.0);
  CHECK(w.lr() == 1e-3);
  CHECK(w.decoupled_weight_decay());
  CHECK_FALSE(a.decoupled_weight_decay());
}

TEST_CASE("optimizers in f32 and half precision follow the f64 reference", "[optim]") {
  for (DType dt : {DType::F32, DType::BF16, DType::F16}) {
    INFO(dtype_name(dt));
    // Half-precision params round to their dtype after every step; the state stays f32.
    const double rtol = dt == DType::F32 ? 1e-5 : 2e-2, atol = dt == DType::F32 ? 1e-6 : 2e-2;
    {
      std::vector<Tensor> params = make_params(dt, 51);
      Adam opt(params, {.lr = 0.01, .weight_decay = 0.1, .amsgrad = true});
      test::RefAdam ref;
      ref.lr = 0.01;
      ref.weight_decay = 0.1;
      ref.amsgrad = true;
      run_against_reference(opt, ref, params, 3, 61, false, rtol, atol);
      CHECK(opt.state(0).buffers.at("exp_avg").dtype() == DType::F32);
      CHECK(opt.state(0).buffers.at("max_exp_avg_sq").dtype() == DType::F32);
    }
    {
      std::vector<Tensor> params = make_params(dt, 52);
      SGD opt(params, {.lr = 0.05, .momentum = 0.9, .weight_decay = 0.01, .nesterov = true});
      test::RefSgd ref;
      ref.lr = 0.05;
      ref.momentum = 0.9;
      ref.weight_decay = 0.01;
      ref.nesterov = true;
      run_against_reference(opt, ref, params, 3, 62, false, rtol, atol);
      CHECK(opt.state(0).buffers.at("momentum_buffer").dtype() == DType::F32);
    }
  }
}

TEST_CASE("fused updates: one call over many tensors equals one call per tensor", "[optim]") {
  // 300 tensors of sizes 0..52 (empty ones included), f64.
  const int n = 300;
  auto make = [&](uint64_t seed, DType dt) {
    std::vector<Tensor> v;
    for (int i = 0; i < n; ++i) v.push_back(test::random_tensor({(i * 37) % 53}, dt, seed + i));
    return v;
  };
  auto clone_all = [](const std::vector<Tensor>& v) {
    std::vector<Tensor> c;
    for (const Tensor& t : v) c.push_back(t.clone());
    return c;
  };
  std::vector<Tensor> grads = make(1000, DType::F64);

  SECTION("adam") {
    std::vector<Tensor> p1 = make(1, DType::F64), m1 = make(2, DType::F64), v1 = make(3, DType::F64);
    for (Tensor& t : v1) t = abs(t);
    std::vector<Tensor> x1 = clone_all(v1);
    std::vector<Tensor> p2 = clone_all(p1), m2 = clone_all(m1), v2 = clone_all(v1), x2 = clone_all(x1);
    AdamUpdateArgs a;
    a.lr = 0.01;
    a.weight_decay = 0.1;
    a.decoupled_weight_decay = true;
    a.amsgrad = true;
    a.step = 4;
    fused_adam_update(p1, grads, m1, v1, x1, a);
    for (int i = 0; i < n; ++i) fused_adam_update({p2[i]}, {grads[i]}, {m2[i]}, {v2[i]}, {x2[i]}, a);
    for (int i = 0; i < n; ++i) {
      INFO("tensor " << i);
      CHECK(test::bit_equal(p1[i], p2[i]));
      CHECK(test::bit_equal(m1[i], m2[i]));
      CHECK(test::bit_equal(v1[i], v2[i]));
      CHECK(test::bit_equal(x1[i], x2[i]));
    }
    // And against the reference: one step from the given state at step 4.
    test::RefAdam ref;
    ref.lr = 0.01;
    ref.weight_decay = 0.1;
    ref.decoupled = true;
    ref.amsgrad = true;
    std::vector<Tensor> p0 = make(1, DType::F64), m0 = make(2, DType::F64), v0 = make(3, DType::F64);
    Vals pv = values_of(p0), gv = values_of(grads);
    ref.m = values_of(m0);
    for (Tensor& t : v0) t = abs(t);
    ref.v = values_of(v0);
    ref.vmax = values_of(v0);
    ref.steps.assign(n, 3);
    ref.step(pv, gv, std::vector<bool>(n, true));
    for (int i = 0; i < n; ++i) {
      INFO("tensor " << i);
      CHECK_CLOSE_TOL(p1[i], from_vector(pv[i], p1[i].sizes()), kRtol64, kAtol64);
    }
  }
  SECTION("sgd") {
    for (bool init : {true, false}) {
      INFO("init_momentum " << init);
      std::vector<Tensor> p1 = make(5, DType::F64), b1 = make(6, DType::F64);
      std::vector<Tensor> p2 = clone_all(p1), b2 = clone_all(b1);
      SgdUpdateArgs a;
      a.lr = 0.1;
      a.momentum = 0.9;
      a.dampening = 0.1;
      a.weight_decay = 0.01;
      a.init_momentum = init;
      fused_sgd_update(p1, grads, b1, a);
      for (int i = 0; i < n; ++i) fused_sgd_update({p2[i]}, {grads[i]}, {b2[i]}, a);
      for (int i = 0; i < n; ++i) {
        INFO("tensor " << i);
        CHECK(test::bit_equal(p1[i], p2[i]));
        CHECK(test::bit_equal(b1[i], b2[i]));
      }
      test::RefSgd ref;
      ref.lr = 0.1;
      ref.momentum = 0.9;
      ref.dampening = 0.1;
      ref.weight_decay = 0.01;
      std::vector<Tensor> p0 = make(5, DType::F64);
      Vals pv = values_of(p0), gv = values_of(grads);
      ref.buf = values_of(make(6, DType::F64));
      ref.has_buf.assign(n, !init);
      ref.step(pv, gv, std::vector<bool>(n, true));
      for (int i = 0; i < n; ++i) {
        INFO("tensor " << i);
        CHECK_CLOSE_TOL(p1[i], from_vector(pv[i], p1[i].sizes()), kRtol64, kAtol64);
        CHECK_CLOSE_TOL(b1[i], from_vector(ref.buf[i], p1[i].sizes()), kRtol64, kAtol64);
      }
    }
  }
}

TEST_CASE("fused updates reject a broken list contract", "[optim]") {
  std::vector<Tensor> p{zeros({3}, DType::F32), zeros({4}, DType::F32)};
  std::vector<Tensor> g{ones({3}, DType::F32), ones({4}, DType::F32)};
  std::vector<Tensor> m{zeros({3}, DType::F32), zeros({4}, DType::F32)};
  std::vector<Tensor> v{zeros({3}, DType::F32), zeros({4}, DType::F32)};
  AdamUpdateArgs a;
  REQUIRE_NOTHROW(fused_adam_update(p, g, m, v, {}, a));
  REQUIRE_KILN_ERROR(fused_adam_update(p, {g[0]}, m, v, {}, a), "fused_adam_update");
  REQUIRE_KILN_ERROR(fused_adam_update(p, {g[0], ones({5}, DType::F32)}, m, v, {}, a), "grads 1");
  REQUIRE_KILN_ERROR(fused_adam_update(p, {g[0], ones({4}, DType::F64)}, m, v, {}, a), "grads 1");
  REQUIRE_KILN_ERROR(fused_adam_update(p, g, {m[0], zeros({4}, DType::F64)}, v, {}, a), "exp_avgs 1");
  REQUIRE_KILN_ERROR(fused_adam_update({p[0], zeros({4}, DType::F64)}, g, m, v, {}, a), "one dtype");
  REQUIRE_KILN_ERROR(fused_adam_update(p, g, m, v, {zeros({3})}, a), "without amsgrad");
  AdamUpdateArgs ams = a;
  ams.amsgrad = true;
  REQUIRE_KILN_ERROR(fused_adam_update(p, g, m, v, {}, ams), "max_exp_avg_sqs");
  AdamUpdateArgs bad = a;
  bad.step = 0;
  REQUIRE_KILN_ERROR(fused_adam_update(p, g, m, v, {}, bad), "step");
  bad = a;
  bad.beta2 = 1.0;
  REQUIRE_KILN_ERROR(fused_adam_update(p, g, m, v, {}, bad), "betas");
  // Non-contiguous, integer and overlapping params.
  Tensor big = zeros({4, 4});
  REQUIRE_KILN_ERROR(fused_adam_update({big.t(), p[1]}, {zeros({4, 4}), g[1]}, {zeros({4, 4}), m[1]},
                                       {zeros({4, 4}), v[1]}, {}, a),
                     "contiguous");
  REQUIRE_KILN_ERROR(fused_sgd_update({zeros({3}, DType::I32)}, {zeros({3}, DType::I32)}, {}, SgdUpdateArgs{}),
                     "floating");
  Tensor flat = zeros({10});
  REQUIRE_KILN_ERROR(fused_sgd_update({flat.narrow(0, 0, 6), flat.narrow(0, 4, 6)}, {zeros({6}), zeros({6})}, {},
                                      SgdUpdateArgs{}),
                     "overlap");
  // Disjoint views of one flat buffer are fine.
  REQUIRE_NOTHROW(fused_sgd_update({flat.narrow(0, 0, 5), flat.narrow(0, 5, 5)}, {ones({5}), ones({5})}, {},
                                   SgdUpdateArgs{.lr = 1.0}));
  CHECK(test::values(flat) == std::vector<double>(10, -1.0));
  SgdUpdateArgs mom;
  mom.momentum = 0.9;
  REQUIRE_KILN_ERROR(fused_sgd_update({p[0]}, {g[0]}, {}, mom), "momentum buffers");
  REQUIRE_KILN_ERROR(fused_sgd_update({p[0]}, {g[0]}, {zeros({3})}, SgdUpdateArgs{}), "momentum 0");
  // Empty lists do nothing.
  REQUIRE_NOTHROW(fused_sgd_update({}, {}, {}, SgdUpdateArgs{}));
}

TEST_CASE("zero_grad drops or zeroes gradients", "[optim]") {
  std::vector<Tensor> params = make_params(DType::F32, 71);
  SGD opt(params, {.lr = 0.1});
  for (Tensor& p : params) p.set_grad(ones_like(p));
  opt.zero_grad(/*set_to_none=*/false);
  for (const Tensor& p : params) {
    REQUIRE(p.grad().defined());
    CHECK(test::values(p.grad()) == std::vector<double>(p.numel(), 0.0));
  }
  opt.zero_grad();
  for (const Tensor& p : params) CHECK_FALSE(p.grad().defined());
  // A step without gradients changes nothing.
  std::vector<Tensor> before;
  for (const Tensor& p : params) before.push_back(p.detach().clone());
  opt.step();
  for (size_t i = 0; i < params.size(); ++i) CHECK(test::bit_equal(params[i], before[i]));
}

TEST_CASE("optimizers check params and hyper-parameters", "[optim]") {
  Tensor w = zeros({3}).set_requires_grad(true);
  Tensor nonleaf = mul(w, 2.0);
  REQUIRE_KILN_ERROR(SGD({nonleaf}), "leaf");
  REQUIRE_KILN_ERROR(SGD({w, w}), "twice");
  REQUIRE_KILN_ERROR(SGD({Tensor()}), "undefined");
  REQUIRE_KILN_ERROR(SGD({zeros({3}, DType::I64)}), "floating");
  REQUIRE_KILN_ERROR(SGD({zeros({3, 4}).t()}), "contiguous");
  REQUIRE_KILN_ERROR(SGD(std::vector<Tensor>{}), "empty parameter list");
  REQUIRE_KILN_ERROR(SGD({w}, {.lr = -1.0}), "learning rate");
  REQUIRE_KILN_ERROR(SGD({w}, {.momentum = -0.5}), "momentum");
  REQUIRE_KILN_ERROR(SGD({w}, {.nesterov = true}), "Nesterov");
  REQUIRE_KILN_ERROR(SGD({w}, {.momentum = 0.9, .dampening = 0.1, .nesterov = true}), "Nesterov");
  REQUIRE_KILN_ERROR(Adam({w}, {.beta1 = 1.0}), "beta1");
  REQUIRE_KILN_ERROR(Adam({w}, {.beta2 = -0.1}), "beta2");
  REQUIRE_KILN_ERROR(Adam({w}, {.eps = -1.0}), "eps");
  REQUIRE_KILN_ERROR(AdamW({w}, {.weight_decay = -1.0}), "AdamW: invalid weight_decay");
  REQUIRE_KILN_ERROR(Adam({w}, {.lr = std::nan("")}), "finite");
  REQUIRE_KILN_ERROR(Adam(std::vector<ParamGroup>{{{w}, {{"momentum", 0.9}}}}), "unknown hyper-parameter 'momentum'");

  // Groups: per-group overrides, params in one group only, options validated at step().
  Tensor u = zeros({2}).set_requires_grad(true);
  SGD opt(std::vector<ParamGroup>{{{w}, {}}, {{u}, {{"lr", 0.5}, {"momentum", 0.9}}}}, {.lr = 0.1});
  CHECK(opt.num_groups() == 2);
  CHECK(opt.num_params() == 2);
  CHECK(opt.lr(0) == 0.1);
  CHECK(opt.lr(1) == 0.5);
  CHECK(opt.option(1, "momentum") == 0.9);
  CHECK(opt.option(0, "momentum") == 0.0);
  REQUIRE_KILN_ERROR(opt.add_param_group({{u}, {}}), "already in this optimizer");
  REQUIRE_KILN_ERROR(opt.set_option(0, "beta1", 0.9), "unknown hyper-parameter");
  opt.set_lr(-1.0);
  w.set_grad(ones({3}));
  REQUIRE_KILN_ERROR(opt.step(), "learning rate");
  opt.set_lr(0.25);
  u.set_grad(ones({2}));
  opt.step();
  CHECK(test::values(w) == std::vector<double>(3, -0.25));
  CHECK(test::values(u) == std::vector<double>(2, -0.25));
}

TEST_CASE("Adam minimises a least-squares problem through autograd", "[optim]") {
  // ||A x - b||^2 with a consistent system (b = A x_true), so the minimum is 0.
  Generator gen(5);
  Tensor A = randn({12, 6}, DType::F32, &gen);
  Tensor x_true = randn({6, 1}, DType::F32, &gen);
  Tensor b = matmul(A, x_true);
  Tensor x = zeros({6, 1}).set_requires_grad(true);
  Adam opt({x}, {.lr = 0.05});
  auto loss_fn = [&] {
    Tensor r = sub(matmul(A, x), b);
    return sum(mul(r, r));
  };
  const double initial = loss_fn().item<double>();
  double last = initial;
  for (int it = 0; it < 600; ++it) {
    opt.zero_grad();
    Tensor loss = loss_fn();
    loss.backward();
    opt.step();
    last = loss.item<double>();
  }
  INFO("initial loss " << initial << ", final " << last);
  CHECK(last < initial / 100);
  CHECK(opt.state(0).step == 600);
}
