// The Optimizer base: groups, validation, step/zero_grad and the flattened state dict.
#include <kiln/optim/optimizer.h>

#include <algorithm>
#include <cmath>
#include <set>
#include <utility>

#include <kiln/core/autograd.h>
#include <kiln/ops/checks.h>

namespace kiln {

DType optim_state_dtype(DType param_dtype) {
  KILN_CHECK(is_floating(param_dtype), "optimizer: params must be floating, got ", dtype_name(param_dtype));
  return accumulate_dtype(param_dtype);
}

double ParamGroup::get(const std::string& name) const {
  auto it = options.find(name);
  KILN_CHECK(it != options.end(), "ParamGroup: no hyper-parameter '", name, "'");
  return it->second;
}

namespace {

std::string join_keys(const std::map<std::string, double>& m) {
  std::string s;
  for (const auto& [k, v] : m) s += (s.empty() ? "" : ", ") + k;
  return s;
}

// Parses "<prefix><n>.<rest>" into n and rest; false when the name has another form.
bool parse_indexed(const std::string& key, const std::string& prefix, size_t& n, std::string& rest) {
  if (key.compare(0, prefix.size(), prefix) != 0) return false;
  size_t pos = prefix.size(), end = pos;
  while (end < key.size() && key[end] >= '0' && key[end] <= '9') ++end;
  if (end == pos || end - pos > 15 || end >= key.size() || key[end] != '.' || end + 1 == key.size()) return false;
  if (key[pos] == '0' && end - pos > 1) return false;  // no leading zeros: one spelling per index
  n = static_cast<size_t>(std::stoull(key.substr(pos, end - pos)));
  rest = key.substr(end + 1);
  return true;
}

bool is_scalar_f64(const Tensor& t) { return t.defined() && t.dim() == 0 && t.dtype() == DType::F64; }

}  // namespace

Optimizer::Optimizer(std::map<std::string, double> defaults) : defaults_(std::move(defaults)) {}

void Optimizer::add_param_groups(const std::vector<ParamGroup>& groups) {
  size_t total = 0;
  for (const ParamGroup& g : groups) total += g.params.size();
  KILN_CHECK(total > 0, name(), ": got an empty parameter list");
  for (const ParamGroup& g : groups) add_param_group(g);
}

void Optimizer::add_param_group(const ParamGroup& group) {
  const size_t g = groups_.size();
  ParamGroup merged;
  merged.options = defaults_;
  for (const auto& [k, v] : group.options) {
    KILN_CHECK(defaults_.count(k), name(), ": unknown hyper-parameter '", k, "' for param group ", g, " (known: ",
               join_keys(defaults_), ")");
    merged.options[k] = v;
  }
  check_options(merged.options, g);
  for (size_t j = 0; j < group.params.size(); ++j) {
    const Tensor& p = group.params[j];
    KILN_CHECK(p.defined(), name(), ": param ", j, " of group ", g, " is undefined");
    KILN_CHECK(is_floating(p.dtype()), name(), ": param ", j, " of group ", g, " must be floating, got ", describe(p));
    KILN_CHECK(p.is_leaf(), name(), ": param ", j, " of group ", g, " is not a leaf tensor (", describe(p),
               "); optimize leaves (detach() and set_requires_grad())");
    KILN_CHECK(p.is_contiguous(), name(), ": param ", j, " of group ", g, " (", describe(p),
               ") must be contiguous: the fused update kernels work on flat tensors");
    for (const Tensor& q : params_)
      KILN_CHECK(!q.is_same(p), name(), ": param ", j, " of group ", g, " (", describe(p),
                 ") is already in this optimizer");
    for (size_t k = 0; k < j; ++k)
      KILN_CHECK(!group.params[k].is_same(p), name(), ": param ", j, " of group ", g, " (", describe(p),
                 ") appears twice in the group");
  }
  merged.params = group.params;
  group_begin_.push_back(params_.size());
  for (const Tensor& p : group.params) {
    params_.push_back(p);
    state_.emplace_back();
  }
  groups_.push_back(std::move(merged));
}

const Tensor& Optimizer::param(size_t index) const {
  KILN_CHECK(index < params_.size(), name(), ": param index ", index, " out of range (", params_.size(), " params)");
  return params_[index];
}

void Optimizer::set_option(size_t group, const std::string& key, double value) {
  KILN_CHECK(group < groups_.size(), name(), ": param group ", group, " out of range (", groups_.size(), " groups)");
  KILN_CHECK(defaults_.count(key), name(), ": unknown hyper-parameter '", key, "' (known: ", join_keys(defaults_), ")");
  groups_[group].options[key] = value;
}

double Optimizer::option(size_t group, const std::string& key) const {
  KILN_CHECK(group < groups_.size(), name(), ": param group ", group, " out of range (", groups_.size(), " groups)");
  auto it = groups_[group].options.find(key);
  KILN_CHECK(it != groups_[group].options.end(), name(), ": unknown hyper-parameter '", key, "' (known: ",
             join_keys(defaults_), ")");
  return it->second;
}

void Optimizer::set_lr(double lr) {
  for (ParamGroup& g : groups_) g.options["lr"] = lr;
}

const Optimizer::ParamState& Optimizer::state(size_t index) const {
  KILN_CHECK(index < state_.size(), name(), ": param index ", index, " out of range (", state_.size(), " params)");
  return state_[index];
}

Tensor& Optimizer::buffer_or_zeros(size_t index, const std::string& key) {
  ParamState& st = state_.at(index);
  auto it = st.buffers.find(key);
  if (it != st.buffers.end()) return it->second;
  const Tensor& p = params_[index];
  return st.buffers[key] = zeros(p.sizes(), TensorOptions(optim_state_dtype(p.dtype()), p.device()));
}

void Optimizer::step() {
  for (size_t g = 0; g < groups_.size(); ++g) check_options(groups_[g].options, g);
  NoGradGuard no_grad;
  for (size_t g = 0; g < groups_.size(); ++g) {
    std::vector<size_t> indices;
    std::vector<Tensor> grads;
    for (size_t j = 0; j < groups_[g].params.size(); ++j) {
      const size_t i = group_begin_[g] + j;
      const Tensor& p = params_[i];
      Tensor gr = p.grad();
      if (!gr.defined()) continue;
      KILN_CHECK(gr.sizes() == p.sizes() && gr.dtype() == p.dtype() && gr.device() == p.device(), name(),
                 ".step: gradient ", describe(gr), " of param ", i, " does not match the param ", describe(p));
      indices.push_back(i);
      grads.push_back(gr.is_contiguous() ? gr : gr.contiguous());
    }
    if (!indices.empty()) update(g, indices, grads);
  }
}

void Optimizer::zero_grad(bool set_to_none) {
  NoGradGuard no_grad;
  for (Tensor& p : params_) {
    if (set_to_none) {
      p.set_grad(Tensor());
    } else {
      Tensor gr = p.grad();
      if (gr.defined()) gr.zero_();
    }
  }
}

std::map<std::string, Tensor> Optimizer::state_dict() const {
  std::map<std::string, Tensor> out;
  for (size_t g = 0; g < groups_.size(); ++g) {
    const std::string prefix = detail::str("param_groups.", g, ".");
    for (const auto& [k, v] : groups_[g].options) out[prefix + k] = scalar_tensor(v, DType::F64);
    std::vector<int64_t> idx(groups_[g].params.size());
    for (size_t j = 0; j < idx.size(); ++j) idx[j] = static_cast<int64_t>(group_begin_[g] + j);
    out[prefix + "params"] = from_vector(idx);
  }
  for (size_t i = 0; i < state_.size(); ++i) {
    const ParamState& st = state_[i];
    if (st.empty()) continue;
    const std::string prefix = detail::str("state.", i, ".");
    if (counts_steps()) out[prefix + "step"] = scalar_tensor(static_cast<double>(st.step), DType::F64);
    for (const auto& [k, t] : st.buffers) out[prefix + k] = t;
  }
  return out;
}

void Optimizer::load_state_dict(const std::map<std::string, Tensor>& dict) {
  const std::string op = detail::str(name(), ".load_state_dict");
  std::map<size_t, std::map<std::string, Tensor>> group_entries, state_entries;
  for (const auto& [key, t] : dict) {
    size_t n = 0;
    std::string rest;
    if (parse_indexed(key, "param_groups.", n, rest)) group_entries[n][rest] = t;
    else if (parse_indexed(key, "state.", n, rest)) state_entries[n][rest] = t;
    else throw Error(detail::str(op, ": unexpected entry '", key, "' (names are param_groups.<g>.<option> and ",
                                 "state.<i>.<buffer>)"));
    KILN_CHECK(t.defined(), op, ": entry '", key, "' is an undefined tensor");
  }

  // ---- param groups: same structure, known options, valid values ----
  KILN_CHECK(group_entries.size() == groups_.size() &&
                 (groups_.empty() || group_entries.rbegin()->first == groups_.size() - 1),
             op, ": the state dict has ", group_entries.size(), " param groups (highest index ",
             group_entries.empty() ? -1 : static_cast<int64_t>(group_entries.rbegin()->first),
             "), this optimizer has ", groups_.size());
  std::vector<std::map<std::string, double>> new_options(groups_.size());
  for (size_t g = 0; g < groups_.size(); ++g) {
    const auto& entries = group_entries[g];
    const std::string gname = detail::str("param_groups.", g, ".");
    auto pit = entries.find("params");
    KILN_CHECK(pit != entries.end(), op, ": missing '", gname, "params'");
    const Tensor& pt = pit->second;
    KILN_CHECK(pt.dtype() == DType::I64 && pt.dim() == 1, op, ": '", gname, "params' must be a 1-d i64 tensor, got ",
               describe(pt));
    std::vector<int64_t> idx = pt.to_vector<int64_t>();
    KILN_CHECK(idx.size() == groups_[g].params.size(), op, ": param group ", g, " has ", idx.size(),
               " params in the state dict and ", groups_[g].params.size(), " in this optimizer");
    for (size_t j = 0; j < idx.size(); ++j)
      KILN_CHECK(idx[j] == static_cast<int64_t>(group_begin_[g] + j), op, ": '", gname, "params' lists param ",
                 idx[j], " at position ", j, ", this optimizer has param ", group_begin_[g] + j, " there");
    for (const auto& [k, t] : entries) {
      if (k == "params") continue;
      KILN_CHECK(defaults_.count(k), op, ": unknown hyper-parameter '", gname, k, "' for ", name(), " (known: ",
                 join_keys(defaults_), ")");
      KILN_CHECK(is_scalar_f64(t), op, ": '", gname, k, "' must be a 0-d f64 tensor, got ", describe(t));
      new_options[g][k] = t.item<double>();
    }
    for (const auto& [k, v] : defaults_)
      KILN_CHECK(new_options[g].count(k), op, ": missing hyper-parameter '", gname, k, "'");
    try {
      check_options(new_options[g], g);
    } catch (const Error& e) {
      throw Error(detail::str(op, ": saved hyper-parameters are invalid: ", e.what()));
    }
  }

  // ---- state: known buffers of the params' shapes and state dtype, and step counts ----
  const std::vector<std::string> known = state_names(), required = required_state_names();
  std::vector<ParamState> new_state(params_.size());
  for (const auto& [i, entries] : state_entries) {
    KILN_CHECK(i < params_.size(), op, ": 'state.", i, ".*' refers to param ", i, ", this optimizer has ",
               params_.size(), " params");
    const Tensor& p = params_[i];
    const DType sdt = optim_state_dtype(p.dtype());
    ParamState& st = new_state[i];
    for (const auto& [k, t] : entries) {
      const std::string ename = detail::str("state.", i, ".", k);
      if (k == "step" && counts_steps()) {
        KILN_CHECK(is_scalar_f64(t), op, ": '", ename, "' must be a 0-d f64 tensor, got ", describe(t));
        const double s = t.item<double>();
        KILN_CHECK(s >= 0 && s <= 9.007199254740992e15 && s == std::floor(s), op, ": '", ename,
                   "' must be a non-negative integer, got ", s);
        st.step = static_cast<int64_t>(s);
        continue;
      }
      KILN_CHECK(std::find(known.begin(), known.end(), k) != known.end(), op, ": unexpected entry '", ename,
                 "' for ", name());
      KILN_CHECK(t.sizes() == p.sizes() && t.dtype() == sdt, op, ": '", ename, "' is ", describe(t), ", expected ",
                 dtype_name(sdt), shape_str(p.sizes()), " for param ", i, " (", describe(p), ")");
      st.buffers[k] = t;
    }
    KILN_CHECK(!counts_steps() || entries.count("step"), op, ": missing 'state.", i, ".step'");
    for (const std::string& k : required)
      KILN_CHECK(st.buffers.count(k), op, ": missing 'state.", i, ".", k, "'");
  }

  // ---- commit: everything checked; copy buffers onto the params' devices ----
  NoGradGuard no_grad;
  for (ParamState& st : new_state)
    for (auto& [k, t] : st.buffers) {
      Tensor own = empty(t.sizes(), TensorOptions(t.dtype(), params_[&st - new_state.data()].device()));
      own.copy_(t);
      t = own;
    }
  for (size_t g = 0; g < groups_.size(); ++g) groups_[g].options = std::move(new_options[g]);
  state_ = std::move(new_state);
}

}  // namespace kiln
