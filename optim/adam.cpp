// Adam/AdamW: options, their checks, state creation and the bucketing of one group's
// update into fused calls.
#include <kiln/optim/adam.h>

#include <cmath>
#include <tuple>

#include <kiln/optim/fused.h>

namespace kiln {
namespace {

std::map<std::string, double> to_map(const AdamOptions& o) {
  return {{"lr", o.lr},
          {"beta1", o.beta1},
          {"beta2", o.beta2},
          {"eps", o.eps},
          {"weight_decay", o.weight_decay},
          {"amsgrad", o.amsgrad ? 1.0 : 0.0},
          {"maximize", o.maximize ? 1.0 : 0.0}};
}

AdamOptions from_adamw(const AdamWOptions& o) {
  return AdamOptions{o.lr, o.beta1, o.beta2, o.eps, o.weight_decay, o.amsgrad, o.maximize};
}

}  // namespace

Adam::Adam(const std::vector<Tensor>& params, const AdamOptions& options)
    : Adam(std::vector<ParamGroup>{ParamGroup{params, {}}}, options, false) {}
Adam::Adam(const std::vector<ParamGroup>& groups, const AdamOptions& defaults) : Adam(groups, defaults, false) {}
Adam::Adam(const std::vector<ParamGroup>& groups, const AdamOptions& defaults, bool decoupled)
    : Optimizer(to_map(defaults)), decoupled_(decoupled) {
  add_param_groups(groups);
}

AdamW::AdamW(const std::vector<Tensor>& params, const AdamWOptions& options)
    : Adam(std::vector<ParamGroup>{ParamGroup{params, {}}}, from_adamw(options), true) {}
AdamW::AdamW(const std::vector<ParamGroup>& groups, const AdamWOptions& defaults)
    : Adam(groups, from_adamw(defaults), true) {}

void Adam::check_options(const std::map<std::string, double>& o, size_t group) const {
  auto get = [&](const char* k) { return o.at(k); };
  for (const auto& [k, v] : o)
    KILN_CHECK(std::isfinite(v), name(), ": ", k, " of param group ", group, " must be finite, got ", v);
  KILN_CHECK(get("lr") >= 0, name(), ": invalid learning rate ", get("lr"), " in param group ", group,
             " (must be >= 0)");
  KILN_CHECK(get("eps") >= 0, name(), ": invalid eps ", get("eps"), " in param group ", group, " (must be >= 0)");
  KILN_CHECK(get("beta1") >= 0 && get("beta1") < 1, name(), ": invalid beta1 ", get("beta1"), " in param group ",
             group, " (must lie in [0, 1))");
  KILN_CHECK(get("beta2") >= 0 && get("beta2") < 1, name(), ": invalid beta2 ", get("beta2"), " in param group ",
             group, " (must lie in [0, 1))");
  KILN_CHECK(get("weight_decay") >= 0, name(), ": invalid weight_decay ", get("weight_decay"), " in param group ",
             group, " (must be >= 0)");
  for (const char* flag : {"amsgrad", "maximize"})
    KILN_CHECK(get(flag) == 0 || get(flag) == 1, name(), ": ", flag, " of param group ", group,
               " must be 0 or 1, got ", get(flag));
}

void Adam::update(size_t group, const std::vector<size_t>& indices, const std::vector<Tensor>& grads) {
  const ParamGroup& g = param_groups()[group];
  AdamUpdateArgs a;
  a.lr = g.get("lr");
  a.beta1 = g.get("beta1");
  a.beta2 = g.get("beta2");
  a.eps = g.get("eps");
  a.weight_decay = g.get("weight_decay");
  a.amsgrad = g.get("amsgrad") != 0;
  a.maximize = g.get("maximize") != 0;
  a.decoupled_weight_decay = decoupled_;

  // One fused call per (device, dtype, step): normally one, since params step together.
  struct Bucket {
    std::vector<Tensor> params, grads, m, v, vmax;
    std::vector<size_t> indices;
  };
  std::map<std::tuple<int, int, int, int64_t>, Bucket> buckets;
  for (size_t k = 0; k < indices.size(); ++k) {
    const size_t i = indices[k];
    const Tensor& p = param(i);
    const int64_t step = state(i).step + 1;
    Bucket& b = buckets[{static_cast<int>(p.device().type), p.device().index, static_cast<int>(p.dtype()), step}];
    b.indices.push_back(i);
    b.params.push_back(p);
    b.grads.push_back(grads[k]);
    b.m.push_back(buffer_or_zeros(i, "exp_avg"));
    b.v.push_back(buffer_or_zeros(i, "exp_avg_sq"));
    if (a.amsgrad) b.vmax.push_back(buffer_or_zeros(i, "max_exp_avg_sq"));
  }
  for (auto& [key, b] : buckets) {
    AdamUpdateArgs args = a;
    args.step = std::get<3>(key);
    fused_adam_update(b.params, b.grads, b.m, b.v, b.vmax, args);
    for (size_t i : b.indices) mutable_state(i).step = args.step;
  }
}

}  // namespace kiln
