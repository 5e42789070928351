// kiln's side of the optimizer reference test (tests/interop/optim_torch.py): trains a
// small tanh MLP (x W0 + b0 -> tanh -> W1 + b1, mean squared error) in f64 for a few steps
// with one optimizer and writes the params after every step.
//
// usage: optim_interop IN.safetensors OUT.safetensors OPTIMIZER [key=value ...]
//   IN holds p.0..p.3 (W0 (4, 8), b0 (8), W1 (8, 3), b1 (3)) and x (S, B, 4), y (S, B, 3):
//   step s trains on x[s], y[s]. OUT gets "step.<s>.p.<i>" and, for SAM, "step.<s>.loss"
//   and "step.<s>.perturbed_loss".
//   OPTIMIZER: sgd | adam | adamw | lars | lamb | adams | srsgd | sam | asam | entropy-sgd
//   (the wrappers take base=...; entropy-sgd's inner step l of step s trains on batch
//   (s + l) mod S, keys inner_steps, gamma, scoping, inner_lr, alpha, langevin); noise=ETA adds annealed gradient noise (seed 5) before each step; or hessian:
//   no training; OUT gets "hessian.eigenvalue" (the top eigenvalue of the loss on x[0],
//   y[0] at IN's params, by models/eval/curvature.h), "hessian.iterations", ".seconds"; or
//   fisher: "fisher.eigenvalue" etc., the top eigenvalue of the cross-entropy Fisher of the
//   outputs on x[0].
//   keys: lr, momentum, weight_decay, nesterov, beta1, beta2, eps, rho, eta, base,
//   trust_coefficient, adapt, restart_every, noise, gamma.
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <kiln/kiln.h>
#include <kiln/models/eval/curvature.h>

using namespace kiln;

namespace {

struct Args {
  std::map<std::string, std::string> kv;
  double num(const std::string& k, double def) const {
    auto it = kv.find(k);
    return it == kv.end() ? def : std::stod(it->second);
  }
  std::string str(const std::string& k, const std::string& def) const {
    auto it = kv.find(k);
    return it == kv.end() ? def : it->second;
  }
};

std::unique_ptr<Optimizer> make_base(const std::string& kind, const std::vector<Tensor>& params, const Args& a) {
  if (kind == "sgd") {
    SGDOptions o;
    o.lr = a.num("lr", 0.1);
    o.momentum = a.num("momentum", 0);
    o.weight_decay = a.num("weight_decay", 0);
    o.nesterov = a.num("nesterov", 0) != 0;
    return std::make_unique<SGD>(params, o);
  }
  if (kind == "adam" || kind == "adamw") {
    AdamOptions o;
    o.lr = a.num("lr", 1e-3);
    o.beta1 = a.num("beta1", 0.9);
    o.beta2 = a.num("beta2", 0.999);
    o.eps = a.num("eps", 1e-8);
    o.weight_decay = a.num("weight_decay", 0);
    if (kind == "adam") return std::make_unique<Adam>(params, o);
    return std::make_unique<AdamW>(params, AdamWOptions{o.lr, o.beta1, o.beta2, o.eps, o.weight_decay});
  }
  if (kind == "lars") {
    LARSOptions o;
    o.lr = a.num("lr", 0.1);
    o.momentum = a.num("momentum", 0.9);
    o.weight_decay = a.num("weight_decay", 0);
    o.trust_coefficient = a.num("trust_coefficient", 1e-3);
    o.eps = a.num("eps", 0);
    o.adapt = a.num("adapt", 1) != 0;
    return std::make_unique<LARS>(params, o);
  }
  if (kind == "lamb") {
    LAMBOptions o;
    o.lr = a.num("lr", 1e-3);
    o.beta1 = a.num("beta1", 0.9);
    o.beta2 = a.num("beta2", 0.999);
    o.eps = a.num("eps", 1e-6);
    o.weight_decay = a.num("weight_decay", 0.01);
    o.adapt = a.num("adapt", 1) != 0;
    return std::make_unique<LAMB>(params, o);
  }
  if (kind == "adams") {
    AdamSOptions o;
    o.lr = a.num("lr", 1e-3);
    o.beta1 = a.num("beta1", 0.9);
    o.beta2 = a.num("beta2", 0.999);
    o.eps = a.num("eps", 1e-8);
    o.weight_decay = a.num("weight_decay", 5e-4);
    return std::make_unique<AdamS>(params, o);
  }
  if (kind == "srsgd") {
    SRSGDOptions o;
    o.lr = a.num("lr", 0.1);
    o.weight_decay = a.num("weight_decay", 0);
    o.restart_every = static_cast<int64_t>(a.num("restart_every", 40));
    return std::make_unique<SRSGD>(params, o);
  }
  if (kind == "apollo") {
    ApolloOptions o;
    o.lr = a.num("lr", 1.0);
    o.beta = a.num("beta", 0.9);
    o.eps = a.num("eps", 1e-4);
    o.sigma = a.num("sigma", 1.0);
    o.weight_decay = a.num("weight_decay", 0);
    o.warmup = static_cast<int64_t>(a.num("warmup", 100));
    o.init_lr = a.num("init_lr", 0.01);
    o.decay_type = static_cast<int>(a.num("decay_type", 0));
    return std::make_unique<Apollo>(params, o);
  }
  if (kind == "proxadam") {
    ProxAdamOptions o;
    o.lr = a.num("lr", 1e-3);
    o.beta1 = a.num("beta1", 0.9);
    o.beta2 = a.num("beta2", 0.999);
    o.eps = a.num("eps", 1e-8);
    o.weight_decay = a.num("weight_decay", 0);
    o.lambda = a.num("lambda", 1e-4);
    o.p = a.num("p", 1);
    return std::make_unique<ProxAdam>(params, o);
  }
  throw Error("optim_interop: unknown optimizer " + kind);
}

}  // namespace

int main(int argc, char** argv) try {
  if (argc < 4) {
    std::fprintf(stderr, "usage: optim_interop IN OUT OPTIMIZER [key=value ...]\n");
    return 2;
  }
  const std::string kind = argv[3];
  Args a;
  for (int i = 4; i < argc; ++i) {
    std::string s = argv[i];
    const size_t eq = s.find('=');
    KILN_CHECK(eq != std::string::npos, "optim_interop: expected key=value, got ", s);
    a.kv[s.substr(0, eq)] = s.substr(eq + 1);
  }
  auto in = load_safetensors(argv[1]);
  std::vector<Tensor> p;
  for (int i = 0; i < 4; ++i) p.push_back(in.at("p." + std::to_string(i)).clone().set_requires_grad(true));
  const Tensor x = in.at("x"), y = in.at("y");
  const int64_t steps = x.size(0);

  auto loss_at = [&](int64_t s) {
    Tensor h = tanh(add(matmul(x.select(0, s), p[0]), p[1]));
    Tensor d = sub(add(matmul(h, p[2]), p[3]), y.select(0, s));
    return mean(mul(d, d));
  };
  if (kind == "fisher") {  // the cross-entropy Fisher of the outputs on x[0]
    eval::PowerIterationOptions o;
    o.tolerance = a.num("tolerance", 1e-9);
    o.max_iterations = static_cast<int64_t>(a.num("max_iterations", 2000));
    eval::TopEigen e = eval::fisher_top_eigenvalue(
        [&] { return add(matmul(tanh(add(matmul(x.select(0, 0), p[0]), p[1])), p[2]), p[3]); }, p,
        eval::FisherLoss::CrossEntropy, o);
    save_safetensors(argv[2], {{"fisher.eigenvalue", scalar_tensor(e.eigenvalue, TensorOptions(DType::F64))},
                               {"fisher.iterations", scalar_tensor(double(e.iterations), TensorOptions(DType::F64))},
                               {"fisher.seconds", scalar_tensor(e.seconds, TensorOptions(DType::F64))}});
    return 0;
  }
  if (kind == "hessian") {
    eval::PowerIterationOptions o;
    o.tolerance = a.num("tolerance", 1e-6);
    o.max_iterations = static_cast<int64_t>(a.num("max_iterations", 1000));
    eval::TopEigen e = eval::hessian_top_eigenvalue([&] { return loss_at(0); }, p, o);
    save_safetensors(argv[2], {{"hessian.eigenvalue", scalar_tensor(e.eigenvalue, TensorOptions(DType::F64))},
                               {"hessian.iterations", scalar_tensor(double(e.iterations), TensorOptions(DType::F64))},
                               {"hessian.seconds", scalar_tensor(e.seconds, TensorOptions(DType::F64))}});
    return 0;
  }
  const bool sam = kind == "sam" || kind == "asam";
  const bool esgd = kind == "entropy-sgd";
  std::unique_ptr<Optimizer> base = make_base(sam || esgd ? a.str("base", "sgd") : kind, p, a);
  std::unique_ptr<EntropySGD> entropy;
  if (esgd) {
    EntropySGDOptions o;
    o.inner_steps = static_cast<int64_t>(a.num("inner_steps", 20));
    o.gamma = a.num("gamma", 0.03);
    o.scoping = a.num("scoping", 1e-3);
    o.inner_lr = a.num("inner_lr", 0.1);
    o.alpha = a.num("alpha", 0.75);
    o.noise = a.num("langevin", 0);
    entropy = std::make_unique<EntropySGD>(*base, o);
  }
  std::unique_ptr<SAM> wrapper;
  if (sam) {
    SamOptions o;
    o.rho = a.num("rho", 0.05);
    o.adaptive = kind == "asam";
    o.eta = a.num("eta", 0.01);
    wrapper = std::make_unique<SAM>(*base, o);
  }

  std::map<std::string, Tensor> out;
  for (int64_t s = 0; s < steps; ++s) {
    auto closure = [&] {
      Tensor loss = loss_at(s);
      loss.backward();
      return loss;
    };
    const std::string pre = "step." + std::to_string(s) + ".";
    if (entropy) {
      int64_t l = 0;
      out[pre + "loss"] = scalar_tensor(entropy->step([&] {
        Tensor loss = loss_at((s + l++) % steps);
        loss.backward();
        return loss;
      }), TensorOptions(DType::F64));
    } else if (wrapper) {
      out[pre + "loss"] = wrapper->step(closure);
      out[pre + "perturbed_loss"] = wrapper->last_perturbed_loss();
    } else {
      base->zero_grad();
      closure();
      if (a.num("noise", 0) > 0) add_gradient_noise_(p, s, a.num("noise", 0), a.num("gamma", 0.55), 5);
      base->step();
    }
    for (int i = 0; i < 4; ++i) out[pre + "p." + std::to_string(i)] = p[i].detach().clone();
  }
  save_safetensors(argv[2], out);
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "optim_interop: %s\n", e.what());
  return 1;
}
