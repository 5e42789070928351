// LARS, LAMB, AdamS, SRSGD, Apollo and annealed gradient noise (formulas: optim/research.h):
// LARS, SRSGD, LAMB, Apollo and AdamS step through fused kernels (optim/fused.h) after
// their per-tensor or per-group scalars are computed here.
#include <kiln/optim/research.h>

#include <cmath>
#include <map>
#include <string>
#include <tuple>

#include <kiln/core/autograd.h>
#include <kiln/core/generator.h>
#include <kiln/ops/binary.h>
#include <kiln/ops/reduce.h>
#include <kiln/ops/index.h>
#include <kiln/ops/unary.h>
#include <kiln/optim/fused.h>

namespace kiln {
namespace {

// Every option finite; those named in `non_negative` >= 0; flags 0 or 1.
void check_common(const char* opt, const std::map<std::string, double>& o, size_t group,
                  std::initializer_list<const char*> non_negative, std::initializer_list<const char*> flags = {}) {
  for (const auto& [k, v] : o)
    KILN_CHECK(std::isfinite(v), opt, ": ", k, " of param group ", group, " must be finite, got ", v);
  for (const char* k : non_negative)
    KILN_CHECK(o.at(k) >= 0, opt, ": invalid ", k, " ", o.at(k), " in param group ", group, " (must be >= 0)");
  for (const char* k : flags)
    KILN_CHECK(o.at(k) == 0 || o.at(k) == 1, opt, ": ", k, " of param group ", group, " must be 0 or 1, got ",
               o.at(k));
}

void check_betas(const char* opt, const std::map<std::string, double>& o, size_t group) {
  for (const char* k : {"beta1", "beta2"})
    KILN_CHECK(o.at(k) >= 0 && o.at(k) < 1, opt, ": invalid ", k, " ", o.at(k), " in param group ", group,
               " (must lie in [0, 1))");
}

// The L2 norms of each tensor of each list, read back to the host in one transfer:
// result[l][i] = |lists[l][i]|.
std::vector<std::vector<double>> norms(const std::vector<std::vector<Tensor>>& lists) {
  std::vector<Tensor> sq;
  for (const auto& l : lists)
    for (const Tensor& t : l) sq.push_back(sum(mul(t, t)).to(DType::F64).reshape({1}));
  std::vector<double> all = cat(sq, 0).to(kCPU).to_vector<double>();
  std::vector<std::vector<double>> out;
  size_t at = 0;
  for (const auto& l : lists) {
    out.emplace_back();
    for (size_t i = 0; i < l.size(); ++i) out.back().push_back(std::sqrt(all[at++]));
  }
  return out;
}

// The params of one fused call with their gradients and up to three state lists.
struct Bucket {
  std::vector<size_t> indices;
  std::vector<Tensor> params, grads, s0, s1, s2;
};

// p (any floating dtype) in its state dtype.
Tensor in_state_dtype(const Tensor& t) {
  const DType s = optim_state_dtype(t.dtype());
  return t.dtype() == s ? t : t.to(s);
}

}  // namespace

// ---- LARS ----

LARS::LARS(const std::vector<Tensor>& params, const LARSOptions& o)
    : LARS(std::vector<ParamGroup>{ParamGroup{params, {}}}, o) {}
LARS::LARS(const std::vector<ParamGroup>& groups, const LARSOptions& o)
    : Optimizer({{"lr", o.lr},
                 {"momentum", o.momentum},
                 {"weight_decay", o.weight_decay},
                 {"trust_coefficient", o.trust_coefficient},
                 {"eps", o.eps},
                 {"adapt", o.adapt ? 1.0 : 0.0}}) {
  add_param_groups(groups);
}

void LARS::check_options(const std::map<std::string, double>& o, size_t group) const {
  check_common("LARS", o, group, {"lr", "momentum", "weight_decay", "trust_coefficient", "eps"}, {"adapt"});
}

void LARS::update(size_t group, const std::vector<size_t>& indices, const std::vector<Tensor>& grads) {
  const ParamGroup& G = param_groups()[group];
  const double lr = G.get("lr"), mom = G.get("momentum"), wd = G.get("weight_decay");
  const double trust = G.get("trust_coefficient"), eps = G.get("eps");
  const bool adapt = G.get("adapt") != 0;
  std::vector<Tensor> ps, gs;
  for (size_t k = 0; k < indices.size(); ++k) {
    ps.push_back(in_state_dtype(param(indices[k])));
    gs.push_back(in_state_dtype(grads[k]));
  }
  std::vector<std::vector<double>> n = adapt ? norms({ps, gs}) : std::vector<std::vector<double>>{};
  // The fused update (optim/fused.h), one call per (device, dtype): normally one.
  std::map<std::pair<std::string, int>, Bucket> buckets;
  std::map<std::pair<std::string, int>, LarsUpdateArgs> args;
  for (size_t k = 0; k < indices.size(); ++k) {
    double local = 1.0;
    if (adapt && n[0][k] > 0 && n[1][k] > 0) local = trust * n[0][k] / (n[1][k] + wd * n[0][k] + eps);
    const Tensor& p = param(indices[k]);
    const auto key = std::make_pair(p.device().str(), static_cast<int>(p.dtype()));
    Bucket& b = buckets[key];
    b.params.push_back(p);
    b.grads.push_back(grads[k]);
    b.s0.push_back(buffer_or_zeros(indices[k], "momentum_buffer"));
    LarsUpdateArgs& a = args[key];
    a.momentum = mom;
    a.weight_decay = wd;
    a.scales.push_back(lr * local);
  }
  for (auto& [key, b] : buckets) fused_lars_update(b.params, b.grads, b.s0, args[key]);
}

// ---- LAMB ----

LAMB::LAMB(const std::vector<Tensor>& params, const LAMBOptions& o)
    : LAMB(std::vector<ParamGroup>{ParamGroup{params, {}}}, o) {}
LAMB::LAMB(const std::vector<ParamGroup>& groups, const LAMBOptions& o)
    : Optimizer({{"lr", o.lr},
                 {"beta1", o.beta1},
                 {"beta2", o.beta2},
                 {"eps", o.eps},
                 {"weight_decay", o.weight_decay},
                 {"adapt", o.adapt ? 1.0 : 0.0}}) {
  add_param_groups(groups);
}

void LAMB::check_options(const std::map<std::string, double>& o, size_t group) const {
  check_common("LAMB", o, group, {"lr", "eps", "weight_decay"}, {"adapt"});
  check_betas("LAMB", o, group);
}

void LAMB::update(size_t group, const std::vector<size_t>& indices, const std::vector<Tensor>& grads) {
  const ParamGroup& G = param_groups()[group];
  LambUpdateArgs a;
  a.lr = G.get("lr");
  a.beta1 = G.get("beta1");
  a.beta2 = G.get("beta2");
  a.eps = G.get("eps");
  a.weight_decay = G.get("weight_decay");
  a.adapt = G.get("adapt") != 0;
  // One fused update per (device, dtype, step): normally one.
  std::map<std::tuple<std::string, int, int64_t>, Bucket> buckets;
  for (size_t k = 0; k < indices.size(); ++k) {
    const size_t i = indices[k];
    const Tensor& p = param(i);
    Bucket& b = buckets[{p.device().str(), static_cast<int>(p.dtype()), state(i).step + 1}];
    b.indices.push_back(i);
    b.params.push_back(p);
    b.grads.push_back(grads[k]);
    b.s0.push_back(buffer_or_zeros(i, "exp_avg"));
    b.s1.push_back(buffer_or_zeros(i, "exp_avg_sq"));
  }
  for (auto& [key, b] : buckets) {
    LambUpdateArgs args = a;
    args.step = std::get<2>(key);
    fused_lamb_update(b.params, b.grads, b.s0, b.s1, args);
    for (size_t i : b.indices) mutable_state(i).step = args.step;
  }
}

// ---- AdamS ----

AdamS::AdamS(const std::vector<Tensor>& params, const AdamSOptions& o)
    : AdamS(std::vector<ParamGroup>{ParamGroup{params, {}}}, o) {}
AdamS::AdamS(const std::vector<ParamGroup>& groups, const AdamSOptions& o)
    : Optimizer({{"lr", o.lr}, {"beta1", o.beta1}, {"beta2", o.beta2}, {"eps", o.eps},
                 {"weight_decay", o.weight_decay}}) {
  add_param_groups(groups);
}

void AdamS::check_options(const std::map<std::string, double>& o, size_t group) const {
  check_common("AdamS", o, group, {"lr", "eps", "weight_decay"});
  check_betas("AdamS", o, group);
}

void AdamS::update(size_t group, const std::vector<size_t>& indices, const std::vector<Tensor>& grads) {
  const ParamGroup& G = param_groups()[group];
  const double lr = G.get("lr"), b1 = G.get("beta1"), b2 = G.get("beta2"), eps = G.get("eps");
  const double wd = G.get("weight_decay");
  // v_bar needs every param's new v: sum(v_new) = beta2 sum(v) + (1 - beta2) sum(g^2), from
  // the old v and g (one read back for the group), then one fused update per (device,
  // dtype, step).
  Tensor v_sum;
  double count = 0;
  std::map<std::tuple<std::string, int, int64_t>, Bucket> buckets;
  for (size_t k = 0; k < indices.size(); ++k) {
    const size_t i = indices[k];
    const int64_t t = state(i).step + 1;
    Tensor g = grads[k].to(DType::F64);
    const Tensor& v = buffer_or_zeros(i, "exp_avg_sq");
    Tensor s = div(add(mul(sum(v.to(DType::F64)), b2), mul(sum(mul(g, g)), 1 - b2)), 1 - std::pow(b2, double(t)));
    v_sum = v_sum.defined() ? add(v_sum, s) : s;
    count += static_cast<double>(v.numel());
    const Tensor& p = param(i);
    Bucket& b = buckets[{p.device().str(), static_cast<int>(p.dtype()), t}];
    b.indices.push_back(i);
    b.params.push_back(p);
    b.grads.push_back(grads[k]);
    b.s0.push_back(buffer_or_zeros(i, "exp_avg"));
    b.s1.push_back(v);
  }
  const double v_bar = count > 0 ? v_sum.item<double>() / count : 0.0;
  const double decay = wd != 0 && v_bar > 0 ? 1 - lr * wd / std::sqrt(v_bar) : 1.0;
  for (auto& [key, b] : buckets) {
    AdamSUpdateArgs a{.lr = lr, .beta1 = b1, .beta2 = b2, .eps = eps, .decay = decay, .step = std::get<2>(key)};
    fused_adams_update(b.params, b.grads, b.s0, b.s1, a);
    for (size_t i : b.indices) mutable_state(i).step = a.step;
  }
}

// ---- SRSGD ----

SRSGD::SRSGD(const std::vector<Tensor>& params, const SRSGDOptions& o)
    : SRSGD(std::vector<ParamGroup>{ParamGroup{params, {}}}, o) {}
SRSGD::SRSGD(const std::vector<ParamGroup>& groups, const SRSGDOptions& o)
    : Optimizer({{"lr", o.lr}, {"weight_decay", o.weight_decay}, {"restart_every", double(o.restart_every)}}) {
  add_param_groups(groups);
}

void SRSGD::check_options(const std::map<std::string, double>& o, size_t group) const {
  check_common("SRSGD", o, group, {"lr", "weight_decay"});
  const double f = o.at("restart_every");
  KILN_CHECK(f >= 1 && f == std::floor(f), "SRSGD: restart_every of param group ", group,
             " must be a whole number >= 1, got ", f);
}

void SRSGD::update(size_t group, const std::vector<size_t>& indices, const std::vector<Tensor>& grads) {
  const ParamGroup& G = param_groups()[group];
  const double lr = G.get("lr"), wd = G.get("weight_decay");
  const int64_t F = static_cast<int64_t>(G.get("restart_every"));
  // One fused update per (device, dtype, step, first step or not): normally one.
  std::map<std::tuple<std::string, int, int64_t, bool>, Bucket> buckets;
  for (size_t k = 0; k < indices.size(); ++k) {
    const size_t i = indices[k];
    const bool first = state(i).empty();
    const Tensor& p = param(i);
    Bucket& b = buckets[{p.device().str(), static_cast<int>(p.dtype()), state(i).step + 1, first}];
    b.indices.push_back(i);
    b.params.push_back(p);
    b.grads.push_back(grads[k]);
    b.s0.push_back(buffer_or_zeros(i, "prev_iterate"));
  }
  for (auto& [key, b] : buckets) {
    const int64_t t = std::get<2>(key);
    const double kk = double((t - 1) % F + 1);
    SrsgdUpdateArgs a{.lr = lr, .weight_decay = wd, .mu = (kk - 1) / (kk + 2), .init = std::get<3>(key)};
    fused_srsgd_update(b.params, b.grads, b.s0, a);
    for (size_t i : b.indices) mutable_state(i).step = t;
  }
}

// ---- Apollo ----

Apollo::Apollo(const std::vector<Tensor>& params, const ApolloOptions& o)
    : Apollo(std::vector<ParamGroup>{ParamGroup{params, {}}}, o) {}
Apollo::Apollo(const std::vector<ParamGroup>& groups, const ApolloOptions& o)
    : Optimizer({{"lr", o.lr},
                 {"beta", o.beta},
                 {"eps", o.eps},
                 {"sigma", o.sigma},
                 {"weight_decay", o.weight_decay},
                 {"warmup", double(o.warmup)},
                 {"init_lr", o.init_lr},
                 {"decay_type", double(o.decay_type)}}) {
  add_param_groups(groups);
}

void Apollo::check_options(const std::map<std::string, double>& o, size_t group) const {
  check_common("Apollo", o, group, {"lr", "eps", "weight_decay", "init_lr"});
  KILN_CHECK(o.at("beta") >= 0 && o.at("beta") < 1, "Apollo: invalid beta ", o.at("beta"), " in param group ", group,
             " (must lie in [0, 1))");
  KILN_CHECK(o.at("sigma") > 0, "Apollo: invalid sigma ", o.at("sigma"), " in param group ", group,
             " (the rectification bound must be > 0)");
  const double w = o.at("warmup"), d = o.at("decay_type");
  KILN_CHECK(w >= 0 && w == std::floor(w), "Apollo: warmup of param group ", group,
             " must be a whole number >= 0, got ", w);
  KILN_CHECK(d == 0 || d == 1 || d == 2, "Apollo: decay_type of param group ", group,
             " must be 0 (L2), 1 (decoupled) or 2 (stable), got ", d);
}

void Apollo::update(size_t group, const std::vector<size_t>& indices, const std::vector<Tensor>& grads) {
  const ParamGroup& G = param_groups()[group];
  const double lr = G.get("lr"), init_lr = G.get("init_lr");
  const auto warmup = static_cast<int64_t>(G.get("warmup"));
  ApolloUpdateArgs a;
  a.beta = G.get("beta");
  a.eps = G.get("eps");
  a.sigma = G.get("sigma");
  a.weight_decay = G.get("weight_decay");
  a.decay_type = static_cast<int>(G.get("decay_type"));
  // One fused update per (device, dtype, step): normally one.
  std::map<std::tuple<std::string, int, int64_t>, Bucket> buckets;
  for (size_t k = 0; k < indices.size(); ++k) {
    const size_t i = indices[k];
    const Tensor& p = param(i);
    Bucket& b = buckets[{p.device().str(), static_cast<int>(p.dtype()), state(i).step + 1}];
    b.indices.push_back(i);
    b.params.push_back(p);
    b.grads.push_back(grads[k]);
    b.s0.push_back(buffer_or_zeros(i, "exp_avg_grad"));
    b.s1.push_back(buffer_or_zeros(i, "approx_hessian"));
    b.s2.push_back(buffer_or_zeros(i, "update"));
  }
  for (auto& [key, b] : buckets) {
    ApolloUpdateArgs args = a;
    args.step = std::get<2>(key);
    const int64_t done = args.step - 1;  // Apollo's warmup: linear from init_lr over `warmup` steps
    args.lr = done < warmup ? (lr - init_lr) * double(done) / double(warmup) + init_lr : lr;
    fused_apollo_update(b.params, b.grads, b.s0, b.s1, b.s2, args);
    for (size_t i : b.indices) mutable_state(i).step = args.step;
  }
}

// ---- gradient noise ----

double add_gradient_noise_(const std::vector<Tensor>& params, int64_t t, double eta, double gamma, uint64_t seed) {
  KILN_CHECK(eta >= 0 && std::isfinite(eta), "add_gradient_noise_: eta must be >= 0, got ", eta);
  KILN_CHECK(gamma > 0 && std::isfinite(gamma), "add_gradient_noise_: gamma must be > 0, got ", gamma);
  KILN_CHECK(t >= 0, "add_gradient_noise_: the step must be >= 0, got ", t);
  const double sigma = std::sqrt(eta / std::pow(1.0 + double(t), gamma));
  if (sigma == 0) return 0;
  Generator gen(seed);
  gen.set_state(seed, static_cast<uint64_t>(t) << 40);  // step t's own stretch of the stream
  NoGradGuard no_grad;
  for (const Tensor& p : params) {
    Tensor g = p.grad();
    if (!g.defined()) continue;
    Tensor noise = randn(g.sizes(), TensorOptions(optim_state_dtype(g.dtype())), &gen).to(g.device());
    g.add_(noise.to(g.dtype()), sigma);
  }
  return sigma;
}

}  // namespace kiln
