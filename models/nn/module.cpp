// Module: registration, traversal, modes, conversion, state dicts and printing.
#include <kiln/models/nn/module.h>

#include <charconv>
#include <cmath>
#include <ostream>
#include <set>
#include <sstream>
#include <unordered_set>

#include <kiln/core/autograd.h>
#include <kiln/ops/checks.h>

namespace kiln::nn {

namespace {

std::string join_name(const std::string& prefix, const std::string& name) {
  return prefix.empty() ? name : prefix + "." + name;
}

// PyTorch's _addindent: every line after the first is indented by `n` spaces.
std::string add_indent(const std::string& s, int n) {
  std::string out;
  out.reserve(s.size());
  std::string pad(static_cast<size_t>(n), ' ');
  for (char c : s) {
    out += c;
    if (c == '\n') out += pad;
  }
  return out;
}

std::vector<std::string> split_lines(const std::string& s) {
  std::vector<std::string> lines;
  std::string cur;
  for (char c : s) {
    if (c == '\n') {
      lines.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  lines.push_back(cur);
  return lines;
}

std::string quoted_list(const std::vector<std::string>& keys) {
  std::string s;
  for (size_t i = 0; i < keys.size(); ++i) s += (i ? ", \"" : "\"") + keys[i] + "\"";
  return s;
}

}  // namespace

namespace detail {
void set_data(const Tensor& t, const Tensor& src) {
  TensorImpl& dst = *t.impl_ptr();
  const TensorImpl& s = *src.impl_ptr();
  dst.storage = s.storage;
  dst.offset = s.offset;
  dst.sizes = s.sizes;
  dst.strides = s.strides;
  dst.dtype = s.dtype;
}
}  // namespace detail

Module::Module(std::string type_name) : type_name_(std::move(type_name)) {}

Tensor Module::forward(const Tensor&) {
  throw Error(kiln::detail::str(type_name_, ".forward: this module has no single-input forward"));
}

// ---- registration ----------------------------------------------------------------

void Module::check_new_name(const char* what, const std::string& name) const {
  KILN_CHECK(!name.empty(), type_name_, ".", what, ": the name is empty");
  KILN_CHECK(name.find('.') == std::string::npos, type_name_, ".", what, ": name '", name,
             "' contains '.' (dots separate the levels of hierarchical names)");
  for (const auto& [n, t] : params_)
    KILN_CHECK(n != name, type_name_, ".", what, ": name '", name, "' is already used by a parameter");
  for (const auto& b : buffers_)
    KILN_CHECK(b.name != name, type_name_, ".", what, ": name '", name, "' is already used by a buffer");
  for (const auto& [n, m] : children_)
    KILN_CHECK(n != name, type_name_, ".", what, ": name '", name, "' is already used by a submodule");
}

Tensor Module::register_parameter(const std::string& name, Tensor tensor, bool requires_grad) {
  check_new_name("register_parameter", name);
  KILN_CHECK(tensor.defined(), type_name_, ".register_parameter: parameter '", name, "' is an undefined tensor");
  KILN_CHECK(tensor.is_leaf(), type_name_, ".register_parameter: parameter '", name, "' (", describe(tensor),
             ") is not a leaf (it was made by ", tensor.grad_fn()->name(), "); register a detach()ed tensor");
  KILN_CHECK(!requires_grad || is_floating(tensor.dtype()), type_name_, ".register_parameter: parameter '", name,
             "' (", describe(tensor), ") cannot require grad: only floating tensors can");
  tensor.set_requires_grad(requires_grad);
  params_.emplace_back(name, tensor);
  return tensor;
}

Tensor Module::register_buffer(const std::string& name, Tensor tensor, bool persistent) {
  check_new_name("register_buffer", name);
  KILN_CHECK(tensor.defined(), type_name_, ".register_buffer: buffer '", name, "' is an undefined tensor");
  buffers_.push_back({name, tensor, persistent});
  return tensor;
}

void Module::register_module_impl(const std::string& name, std::shared_ptr<Module> module) {
  check_new_name("register_module", name);
  KILN_CHECK(module != nullptr, type_name_, ".register_module: submodule '", name, "' is null");
  // A module that contains this one as a descendant would make the tree a cycle.
  std::vector<const Module*> seen;
  bool cycle = false;
  module->walk("", seen, [&](const std::string&, const Module& m) { cycle = cycle || &m == this; });
  KILN_CHECK(!cycle, type_name_, ".register_module: submodule '", name, "' (", module->type_name(),
             ") contains this module; the module tree would be a cycle");
  children_.emplace_back(name, std::move(module));
}

// ---- traversal -------------------------------------------------------------------

void Module::walk(const std::string& prefix, std::vector<const Module*>& seen,
                  const std::function<void(const std::string&, const Module&)>& fn) const {
  for (const Module* s : seen)
    if (s == this) return;
  seen.push_back(this);
  fn(prefix, *this);
  for (const auto& [n, m] : children_) m->walk(join_name(prefix, n), seen, fn);
}

std::vector<std::pair<std::string, Tensor>> Module::named_parameters(bool recurse) const {
  std::vector<std::pair<std::string, Tensor>> out;
  std::unordered_set<const TensorImpl*> seen_tensors;
  auto visit = [&](const std::string& prefix, const Module& m) {
    for (const auto& [n, t] : m.params_)
      if (seen_tensors.insert(t.impl_ptr().get()).second) out.emplace_back(join_name(prefix, n), t);
  };
  if (!recurse) {
    visit("", *this);
  } else {
    std::vector<const Module*> seen;
    walk("", seen, visit);
  }
  return out;
}

std::vector<Tensor> Module::parameters(bool recurse) const {
  std::vector<Tensor> out;
  for (auto& [n, t] : named_parameters(recurse)) out.push_back(t);
  return out;
}

std::vector<std::pair<std::string, Tensor>> Module::named_buffers(bool recurse) const {
  std::vector<std::pair<std::string, Tensor>> out;
  std::unordered_set<const TensorImpl*> seen_tensors;
  auto visit = [&](const std::string& prefix, const Module& m) {
    for (const auto& b : m.buffers_)
      if (seen_tensors.insert(b.tensor.impl_ptr().get()).second) out.emplace_back(join_name(prefix, b.name), b.tensor);
  };
  if (!recurse) {
    visit("", *this);
  } else {
    std::vector<const Module*> seen;
    walk("", seen, visit);
  }
  return out;
}

std::vector<Tensor> Module::buffers(bool recurse) const {
  std::vector<Tensor> out;
  for (auto& [n, t] : named_buffers(recurse)) out.push_back(t);
  return out;
}

std::vector<std::shared_ptr<Module>> Module::children() const {
  std::vector<std::shared_ptr<Module>> out;
  std::unordered_set<const Module*> seen;
  for (const auto& [n, m] : children_)
    if (seen.insert(m.get()).second) out.push_back(m);
  return out;
}

std::vector<std::pair<std::string, std::shared_ptr<Module>>> Module::named_children() const {
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> out;
  std::unordered_set<const Module*> seen;
  for (const auto& [n, m] : children_)
    if (seen.insert(m.get()).second) out.emplace_back(n, m);
  return out;
}

std::vector<std::pair<std::string, std::shared_ptr<Module>>> Module::named_modules(bool include_self) {
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> out;
  std::unordered_set<const Module*> seen;
  if (include_self) {
    std::shared_ptr<Module> self = weak_from_this().lock();
    KILN_CHECK(self != nullptr, type_name_,
               ".named_modules: this module is not owned by a std::shared_ptr, so it cannot be returned as one "
               "(create it with std::make_shared, or pass include_self = false)");
    out.emplace_back("", self);
  }
  seen.insert(this);
  std::function<void(const std::string&, const Module&)> rec = [&](const std::string& prefix, const Module& m) {
    for (const auto& [n, c] : m.children_) {
      if (!seen.insert(c.get()).second) continue;
      std::string name = join_name(prefix, n);
      out.emplace_back(name, c);
      rec(name, *c);
    }
  };
  rec("", *this);
  return out;
}

std::vector<std::shared_ptr<Module>> Module::modules(bool include_self) {
  std::vector<std::shared_ptr<Module>> out;
  for (auto& [n, m] : named_modules(include_self)) out.push_back(m);
  return out;
}

std::shared_ptr<Module> Module::get_submodule(const std::string& path) const {
  KILN_CHECK(!path.empty(), type_name_, ".get_submodule: the path is empty (this module itself has no shared_ptr here)");
  const Module* cur = this;
  std::shared_ptr<Module> found;
  std::string done;
  size_t start = 0;
  while (true) {
    size_t dot = path.find('.', start);
    std::string part = path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    found = nullptr;
    for (const auto& [n, m] : cur->children_)
      if (n == part) found = m;
    KILN_CHECK(found != nullptr, type_name_, ".get_submodule: '", path, "': ", cur->type_name_,
               done.empty() ? std::string() : " '" + done + "'", " has no submodule '", part, "'");
    done = join_name(done, part);
    cur = found.get();
    if (dot == std::string::npos) return found;
    start = dot + 1;
  }
}

Tensor Module::get_parameter(const std::string& path) const {
  size_t dot = path.rfind('.');
  std::shared_ptr<Module> owner;
  const Module* m = this;
  if (dot != std::string::npos) {
    owner = get_submodule(path.substr(0, dot));
    m = owner.get();
  }
  std::string name = dot == std::string::npos ? path : path.substr(dot + 1);
  for (const auto& [n, t] : m->params_)
    if (n == name) return t;
  throw Error(kiln::detail::str(type_name_, ".get_parameter: '", path, "': ", m->type_name_, " has no parameter '", name,
                          "'"));
}

Tensor Module::get_buffer(const std::string& path) const {
  size_t dot = path.rfind('.');
  std::shared_ptr<Module> owner;
  const Module* m = this;
  if (dot != std::string::npos) {
    owner = get_submodule(path.substr(0, dot));
    m = owner.get();
  }
  std::string name = dot == std::string::npos ? path : path.substr(dot + 1);
  for (const auto& b : m->buffers_)
    if (b.name == name) return b.tensor;
  throw Error(kiln::detail::str(type_name_, ".get_buffer: '", path, "': ", m->type_name_, " has no buffer '", name, "'"));
}

void Module::apply(const std::function<void(Module&)>& fn) {
  for (auto& [n, m] : children_) m->apply(fn);
  fn(*this);
}

// ---- modes and conversion --------------------------------------------------------

void Module::train(bool on) {
  training_ = on;
  for (auto& [n, m] : children_) m->train(on);
}

void Module::convert(std::optional<Device> device, std::optional<DType> dtype) {
  std::vector<Tensor> tensors = parameters();
  for (Tensor& b : buffers()) tensors.push_back(b);
  NoGradGuard no_grad;
  for (Tensor& t : tensors) {
    Device dev = device ? *device : t.device();
    DType dt = dtype && is_floating(t.dtype()) ? *dtype : t.dtype();
    if (dev == t.device() && dt == t.dtype()) continue;
    Tensor grad = t.grad();
    detail::set_data(t, t.detach().to(dev, dt));
    if (grad.defined()) t.set_grad(grad.to(dev, dt));
  }
}

void Module::to(Device device) { convert(device, std::nullopt); }

void Module::to(DType dtype) {
  KILN_CHECK(is_floating(dtype), type_name_, ".to: converts floating parameters and buffers to a floating dtype, got ",
             dtype_name(dtype));
  convert(std::nullopt, dtype);
}

void Module::to(Device device, DType dtype) {
  KILN_CHECK(is_floating(dtype), type_name_, ".to: converts floating parameters and buffers to a floating dtype, got ",
             dtype_name(dtype));
  convert(device, dtype);
}

int64_t Module::num_parameters(bool only_trainable) const {
  int64_t n = 0;
  for (const Tensor& p : parameters())
    if (!only_trainable || p.requires_grad()) n += p.numel();
  return n;
}

void Module::zero_grad(bool set_to_none) {
  NoGradGuard no_grad;
  for (Tensor& p : parameters()) {
    Tensor g = p.grad();
    if (!g.defined()) continue;
    if (set_to_none) p.set_grad(Tensor());
    else g.zero_();
  }
}

// ---- state -----------------------------------------------------------------------

void Module::collect_state(const std::string& prefix, std::vector<std::pair<std::string, Tensor>>& out) const {
  for (const auto& [n, t] : params_) out.emplace_back(join_name(prefix, n), t);
  for (const auto& b : buffers_)
    if (b.persistent) out.emplace_back(join_name(prefix, b.name), b.tensor);
  for (const auto& [n, m] : children_) m->collect_state(join_name(prefix, n), out);
}

std::map<std::string, Tensor> Module::state_dict() const {
  std::vector<std::pair<std::string, Tensor>> entries;
  collect_state("", entries);
  std::map<std::string, Tensor> out;
  for (auto& [n, t] : entries) out.emplace(n, t.detach());
  return out;
}

LoadStateDictResult Module::load_state_dict(const std::map<std::string, Tensor>& state, bool strict) {
  std::vector<std::pair<std::string, Tensor>> entries;
  collect_state("", entries);
  std::map<std::string, Tensor> own(entries.begin(), entries.end());

  LoadStateDictResult result;
  std::vector<std::string> mismatches;
  for (const auto& [name, dst] : entries) {
    auto it = state.find(name);
    if (it == state.end()) {
      result.missing_keys.push_back(name);
      continue;
    }
    const Tensor& src = it->second;
    if (!src.defined()) {
      mismatches.push_back(kiln::detail::str("undefined tensor for ", name));
    } else if (src.sizes() != dst.sizes()) {
      mismatches.push_back(kiln::detail::str("size mismatch for ", name, ": copying a tensor of shape ",
                                       shape_str(src.sizes()), " from the state dict, the shape in the module is ",
                                       shape_str(dst.sizes())));
    } else if (src.dtype() != dst.dtype()) {
      mismatches.push_back(kiln::detail::str("dtype mismatch for ", name, ": the state dict has ", dtype_name(src.dtype()),
                                       ", the module has ", dtype_name(dst.dtype()),
                                       " (convert the module or the tensor first)"));
    }
  }
  for (const auto& [name, t] : state)
    if (!own.count(name)) result.unexpected_keys.push_back(name);

  bool key_errors = strict && (!result.missing_keys.empty() || !result.unexpected_keys.empty());
  if (key_errors || !mismatches.empty()) {
    std::ostringstream os;
    os << "load_state_dict: error(s) in loading the state dict for " << type_name_ << ":";
    if (strict && !result.missing_keys.empty()) os << "\n  Missing key(s): " << quoted_list(result.missing_keys) << ".";
    if (strict && !result.unexpected_keys.empty())
      os << "\n  Unexpected key(s): " << quoted_list(result.unexpected_keys) << ".";
    for (const auto& m : mismatches) os << "\n  " << m << ".";
    throw Error(os.str());
  }

  NoGradGuard no_grad;
  for (auto& [name, dst] : entries) {
    auto it = state.find(name);
    if (it == state.end()) continue;
    Tensor d = dst;
    d.copy_(it->second);
  }
  return result;
}

// ---- printing --------------------------------------------------------------------

std::string Module::to_string() const {
  std::vector<std::string> extra_lines;
  std::string extra = extra_repr();
  if (!extra.empty()) extra_lines = split_lines(extra);
  std::vector<std::string> child_lines;
  for (const auto& [n, m] : children_) child_lines.push_back("(" + n + "): " + add_indent(m->to_string(), 2));
  std::string s = type_name_ + "(";
  if (!extra_lines.empty() || !child_lines.empty()) {
    if (extra_lines.size() == 1 && child_lines.empty()) {
      s += extra_lines[0];
    } else {
      std::vector<std::string> lines = extra_lines;
      lines.insert(lines.end(), child_lines.begin(), child_lines.end());
      for (const auto& l : lines) s += "\n  " + l;
      s += "\n";
    }
  }
  return s + ")";
}

std::ostream& operator<<(std::ostream& os, const Module& m) { return os << m.to_string(); }

namespace detail {

std::string repr_double(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof(buf), v, std::chars_format::scientific);  // shortest round trip
  std::string s(buf, res.ptr);
  std::string sign;
  if (s[0] == '-') {
    sign = "-";
    s.erase(0, 1);
  }
  size_t e = s.find('e');
  int exp = std::stoi(s.substr(e + 1));
  std::string digits;
  for (char c : s.substr(0, e))
    if (c != '.') digits += c;
  std::string out;
  if (exp >= -5 + 1 && exp < 16) {  // Python's repr: fixed notation for 1e-4 <= |v| < 1e16
    if (exp >= 0) {
      std::string ip = digits.substr(0, std::min(digits.size(), static_cast<size_t>(exp + 1)));
      while (ip.size() < static_cast<size_t>(exp + 1)) ip += '0';
      std::string fp = digits.size() > static_cast<size_t>(exp + 1) ? digits.substr(exp + 1) : "0";
      out = ip + "." + fp;
    } else {
      out = "0." + std::string(static_cast<size_t>(-exp - 1), '0') + digits;
    }
  } else {
    out = digits.substr(0, 1);
    if (digits.size() > 1) out += "." + digits.substr(1);
    std::string es = std::to_string(std::abs(exp));
    if (es.size() < 2) es = "0" + es;
    out += std::string("e") + (exp < 0 ? "-" : "+") + es;
  }
  return sign + out;
}

}  // namespace detail

FrozenParameters::FrozenParameters(std::vector<Tensor> params) {
  for (Tensor& p : params)
    if (p.requires_grad()) {
      p.set_requires_grad(false);
      frozen_.push_back(std::move(p));
    }
}

FrozenParameters::~FrozenParameters() {
  for (Tensor& p : frozen_) p.set_requires_grad(true);
}

}  // namespace kiln::nn
