// SGD: options, their checks, and the bucketing of one group's update into fused calls.
#include <kiln/optim/sgd.h>

#include <cmath>
#include <tuple>
#include <utility>

#include <kiln/optim/fused.h>

namespace kiln {
namespace {

std::map<std::string, double> to_map(const SGDOptions& o) {
  return {{"lr", o.lr},
          {"momentum", o.momentum},
          {"dampening", o.dampening},
          {"weight_decay", o.weight_decay},
          {"nesterov", o.nesterov ? 1.0 : 0.0},
          {"maximize", o.maximize ? 1.0 : 0.0}};
}

}  // namespace

SGD::SGD(const std::vector<Tensor>& params, const SGDOptions& options) : Optimizer(to_map(options)) {
  add_param_groups({ParamGroup{params, {}}});
}

SGD::SGD(const std::vector<ParamGroup>& groups, const SGDOptions& defaults) : Optimizer(to_map(defaults)) {
  add_param_groups(groups);
}

void SGD::check_options(const std::map<std::string, double>& o, size_t group) const {
  auto get = [&](const char* k) { return o.at(k); };
  for (const auto& [k, v] : o)
    KILN_CHECK(std::isfinite(v), "SGD: ", k, " of param group ", group, " must be finite, got ", v);
  KILN_CHECK(get("lr") >= 0, "SGD: invalid learning rate ", get("lr"), " in param group ", group, " (must be >= 0)");
  KILN_CHECK(get("momentum") >= 0, "SGD: invalid momentum ", get("momentum"), " in param group ", group,
             " (must be >= 0)");
  KILN_CHECK(get("weight_decay") >= 0, "SGD: invalid weight_decay ", get("weight_decay"), " in param group ", group,
             " (must be >= 0)");
  for (const char* flag : {"nesterov", "maximize"})
    KILN_CHECK(get(flag) == 0 || get(flag) == 1, "SGD: ", flag, " of param group ", group, " must be 0 or 1, got ",
               get(flag));
  KILN_CHECK(get("nesterov") == 0 || (get("momentum") > 0 && get("dampening") == 0), "SGD: Nesterov momentum ",
             "requires a momentum and zero dampening (param group ", group, ": momentum ", get("momentum"),
             ", dampening ", get("dampening"), ")");
}

void SGD::update(size_t group, const std::vector<size_t>& indices, const std::vector<Tensor>& grads) {
  const ParamGroup& g = param_groups()[group];
  SgdUpdateArgs a;
  a.lr = g.get("lr");
  a.momentum = g.get("momentum");
  a.dampening = g.get("dampening");
  a.weight_decay = g.get("weight_decay");
  a.nesterov = g.get("nesterov") != 0;
  a.maximize = g.get("maximize") != 0;
  const bool use_momentum = a.momentum != 0;

  // One fused call per (device, dtype, new momentum buffer or not): normally one or two.
  struct Bucket {
    std::vector<Tensor> params, grads, bufs;
    std::vector<size_t> indices;
  };
  std::map<std::tuple<int, int, int, bool>, Bucket> buckets;
  for (size_t k = 0; k < indices.size(); ++k) {
    const Tensor& p = param(indices[k]);
    bool init = false;
    Tensor buf;
    if (use_momentum) {
      const auto& buffers = state(indices[k]).buffers;
      auto it = buffers.find("momentum_buffer");
      init = it == buffers.end();
      if (init) {
        // Written whole by the kernel (buf = g), so it need not be zeroed.
        buf = empty(p.sizes(), TensorOptions(optim_state_dtype(p.dtype()), p.device()));
      } else {
        buf = it->second;
      }
    }
    Bucket& b = buckets[{static_cast<int>(p.device().type), p.device().index, static_cast<int>(p.dtype()), init}];
    b.indices.push_back(indices[k]);
    b.params.push_back(p);
    b.grads.push_back(grads[k]);
    if (use_momentum) b.bufs.push_back(buf);
  }
  for (auto& [key, b] : buckets) {
    SgdUpdateArgs args = a;
    args.init_momentum = std::get<3>(key);
    fused_sgd_update(b.params, b.grads, b.bufs, args);
    // New buffers join the state once the update has written them.
    if (args.init_momentum)
      for (size_t k = 0; k < b.indices.size(); ++k) mutable_state(b.indices[k]).buffers["momentum_buffer"] = b.bufs[k];
  }
}

}  // namespace kiln
