// The process-group base (argument checks, sequence numbers, the debug cross-check, the
// failure report), the backend registry, the "local" backend for a world of one, and
// init_process_group's rendezvous.
#include <kiln/distributed/process_group.h>

#include <unistd.h>

#include <cstdlib>
#include <map>
#include <sstream>

#include <kiln/core/autograd.h>
#include <kiln/config.h>
#include <kiln/core/runtime.h>
#include <kiln/core/log.h>
#include <kiln/ops/binary.h>

namespace kiln::dist {

using std::chrono::milliseconds;

const char* reduce_op_name(ReduceOp op) {
  switch (op) {
    case ReduceOp::Sum: return "sum";
    case ReduceOp::Avg: return "avg";
    case ReduceOp::Max: return "max";
  }
  return "?";
}

milliseconds ProcessGroupOptions::default_timeout() {
  if (const char* v = std::getenv("KILN_DIST_TIMEOUT"); v && *v) {
    char* end = nullptr;
    double s = std::strtod(v, &end);
    KILN_CHECK(end && *end == '\0' && s > 0, "environment: KILN_DIST_TIMEOUT='", v,
               "' is not a positive number of seconds");
    return milliseconds(static_cast<int64_t>(s * 1000.0));
  }
  return std::chrono::minutes(5);
}

bool ProcessGroupOptions::default_debug() {
  const char* v = std::getenv("KILN_DIST_DEBUG");
  return v && *v && std::string(v) != "0";
}

ProcessGroup::ProcessGroup(std::shared_ptr<Store> store, int rank, int size, ProcessGroupOptions options)
    : store_(std::move(store)), rank_(rank), size_(size), options_(options) {
  KILN_CHECK(size >= 1 && rank >= 0 && rank < size, "ProcessGroup: rank ", rank, " of world size ", size,
             " is out of range");
  KILN_CHECK(store_ || size == 1, "ProcessGroup: a world of ", size, " ranks needs a store");
  KILN_CHECK(options_.timeout.count() > 0, "ProcessGroup: the timeout must be positive");
  if (size_ > 1) publisher_ = std::thread([this] { publish_loop(); });
}

ProcessGroup::~ProcessGroup() {
  {
    std::lock_guard<std::mutex> lk(publish_mu_);
    publish_stop_ = true;
  }
  publish_cv_.notify_all();
  if (publisher_.joinable()) publisher_.join();
}

void ProcessGroup::publish_loop() {
  int64_t published = -1;
  std::unique_lock<std::mutex> lk(publish_mu_);
  for (;;) {
    publish_cv_.wait(lk, [&] { return publish_stop_ || entered_seq_ != published; });
    if (publish_stop_) return;
    int64_t seq = entered_seq_;
    lk.unlock();
    try {
      store_->set("seq/" + std::to_string(rank_), std::to_string(seq));
    } catch (const std::exception& e) {
      // The store is gone (rank 0 exited): a failure report will say the ranks are unknown.
      log_debug("process group: rank ", rank_, " stops publishing its collective numbers: ", e.what());
      return;
    }
    published = seq;
    lk.lock();
  }
}

bool ProcessGroup::aborted() const {
  std::lock_guard<std::mutex> lk(abort_mu_);
  return !abort_reason_.empty();
}

namespace {

std::string tensor_str(const Tensor& t) {
  return detail::str(dtype_name(t.dtype()), shape_str(t.sizes()), " on ", t.device().str());
}

void check_tensor(const char* op, const char* what, const Tensor& t) {
  KILN_CHECK(t.defined(), op, ": ", what, " is an undefined tensor");
  KILN_CHECK(t.is_contiguous(), op, ": ", what, " (", tensor_str(t),
             ") must be contiguous (call .contiguous() and copy the result back)");
  KILN_CHECK(t.dtype() != DType::Bool, op, ": ", what, " is bool; reduce a u8 or i32 tensor instead");
}

const char* kind_name(int k) {
  static const char* names[] = {"all_reduce", "broadcast", "all_gather", "reduce_scatter", "barrier"};
  return names[k];
}

}  // namespace

std::shared_ptr<Work> ProcessGroup::all_reduce(const Tensor& t, ReduceOp op) {
  check_tensor("all_reduce", "the tensor", t);
  KILN_CHECK(op != ReduceOp::Avg || is_floating(t.dtype()), "all_reduce: avg needs a floating tensor, got ",
             tensor_str(t), " (use sum and divide)");
  Collective c{Kind::AllReduce, 0, op, 0, t, t, {}};
  return start(std::move(c));
}

std::shared_ptr<Work> ProcessGroup::broadcast(const Tensor& t, int root) {
  check_tensor("broadcast", "the tensor", t);
  KILN_CHECK(root >= 0 && root < size_, "broadcast: root ", root, " is not a rank of this group of ", size_);
  Collective c{Kind::Broadcast, 0, ReduceOp::Sum, root, t, t, {}};
  return start(std::move(c));
}

std::shared_ptr<Work> ProcessGroup::all_gather(const Tensor& output, const Tensor& input) {
  check_tensor("all_gather", "input", input);
  check_tensor("all_gather", "output", output);
  KILN_CHECK(output.dtype() == input.dtype() && output.device() == input.device(), "all_gather: output (",
             tensor_str(output), ") must have input's dtype and device (", tensor_str(input), ")");
  KILN_CHECK(output.numel() == input.numel() * size_, "all_gather: output has ", output.numel(),
             " elements but needs world size ", size_, " x input's ", input.numel());
  Collective c{Kind::AllGather, 0, ReduceOp::Sum, 0, input, output, {}};
  return start(std::move(c));
}

std::shared_ptr<Work> ProcessGroup::reduce_scatter(const Tensor& output, const Tensor& input, ReduceOp op) {
  check_tensor("reduce_scatter", "input", input);
  check_tensor("reduce_scatter", "output", output);
  KILN_CHECK(output.dtype() == input.dtype() && output.device() == input.device(), "reduce_scatter: output (",
             tensor_str(output), ") must have input's dtype and device (", tensor_str(input), ")");
  KILN_CHECK(input.numel() == output.numel() * size_, "reduce_scatter: input has ", input.numel(),
             " elements but needs world size ", size_, " x output's ", output.numel());
  KILN_CHECK(op != ReduceOp::Avg || is_floating(input.dtype()), "reduce_scatter: avg needs a floating tensor, got ",
             tensor_str(input));
  Collective c{Kind::ReduceScatter, 0, op, 0, input, output, {}};
  return start(std::move(c));
}

std::shared_ptr<Work> ProcessGroup::barrier() {
  Collective c{Kind::Barrier, 0, ReduceOp::Sum, 0, {}, {}, {}};
  return start(std::move(c));
}

std::string ProcessGroup::signature(const Collective& c) const {
  std::ostringstream os;
  os << kind_name(static_cast<int>(c.kind)) << "(";
  switch (c.kind) {
    case Kind::AllReduce: os << tensor_str(c.input) << ", " << reduce_op_name(c.op); break;
    case Kind::Broadcast: os << tensor_str(c.input) << ", root " << c.root; break;
    case Kind::AllGather: os << tensor_str(c.input) << " -> " << tensor_str(c.output); break;
    case Kind::ReduceScatter:
      os << tensor_str(c.input) << " -> " << tensor_str(c.output) << ", " << reduce_op_name(c.op);
      break;
    case Kind::Barrier: break;
  }
  os << ")";
  return os.str();
}

std::shared_ptr<Work> ProcessGroup::start(Collective c) {
  {
    std::lock_guard<std::mutex> lk(abort_mu_);
    KILN_CHECK(abort_reason_.empty(), "process group (", backend_name(), ", rank ", rank_, " of ", size_,
               ") was aborted by an earlier failure: ", abort_reason_);
  }
  c.seq = next_seq_++;
  c.desc = detail::str(kind_name(static_cast<int>(c.kind)), " #", c.seq, " ", signature(c).substr(
      std::string(kind_name(static_cast<int>(c.kind))).size()));
  if (size_ > 1) {
    // Who has called what, read back only when something fails (see fail()). Published
    // in the background: a timeout is seconds, the publisher's lag microseconds.
    {
      std::lock_guard<std::mutex> lk(publish_mu_);
      entered_seq_ = static_cast<int64_t>(c.seq);
    }
    publish_cv_.notify_one();
    if (options_.debug) check_same_collective(c);
  }
  return run(c);
}

void ProcessGroup::check_same_collective(const Collective& c) {
  std::string mine = signature(c);
  std::string prefix = "debug/" + std::to_string(c.seq) + "/";
  store_->set(prefix + std::to_string(rank_), mine);
  for (int r = 0; r < size_; ++r) {
    if (r == rank_) continue;
    Bytes theirs;
    try {
      theirs = store_->get(prefix + std::to_string(r), options_.timeout);
    } catch (const Error& e) {
      throw Error(fail(c, "the debug check timed out waiting for the other ranks"));
    }
    std::string s(theirs.begin(), theirs.end());
    if (s != mine) {
      std::string msg = detail::str("collective mismatch at #", c.seq, ": rank ", rank_, " called ", mine,
                                    " but rank ", r, " called ", s);
      std::lock_guard<std::mutex> lk(abort_mu_);
      if (abort_reason_.empty()) abort_reason_ = msg;
      throw Error(msg);
    }
  }
}

std::string ProcessGroup::fail(const Collective& c, const std::string& what) {
  std::ostringstream os;
  os << c.desc << " failed on rank " << rank_ << " of " << size_ << " (" << backend_name() << "): " << what;
  // Which ranks never called this collective? Each rank records its latest sequence
  // number in the store as it enters a collective.
  std::vector<std::string> missing;
  bool store_ok = store_ != nullptr;
  for (int r = 0; r < size_ && store_ok && size_ > 1; ++r) {
    if (r == rank_) continue;  // this rank called it (its own publisher may lag)
    try {
      auto v = store_->try_get("seq/" + std::to_string(r));
      int64_t last = v ? std::stoll(std::string(v->begin(), v->end())) : -1;
      if (last < static_cast<int64_t>(c.seq))
        missing.push_back(detail::str(r, last < 0 ? " (no collective yet)" : detail::str(" (last at #", last, ")")));
    } catch (const std::exception&) {
      store_ok = false;
    }
  }
  if (size_ == 1)
    ;  // nobody else to wait for
  else if (!store_ok)
    os << "; the store is unreachable too (rank 0 may have exited), so the missing ranks are unknown";
  else if (!missing.empty()) {
    os << "; ranks that did not call it: ";
    for (size_t i = 0; i < missing.size(); ++i) os << (i ? ", " : "") << missing[i];
  } else {
    os << "; every rank called it";
  }
  std::string msg = os.str();
  {
    std::lock_guard<std::mutex> lk(abort_mu_);
    if (abort_reason_.empty()) abort_reason_ = msg;
  }
  log_error(msg);
  return msg;
}

void broadcast_coalesced(ProcessGroup& pg, const std::vector<Tensor>& tensors, int root, size_t cap_bytes) {
  if (pg.size() == 1) return;
  NoGradGuard no_grad;
  std::vector<bool> done(tensors.size(), false);
  for (size_t first = 0; first < tensors.size(); ++first) {
    if (done[first] || tensors[first].numel() == 0) continue;
    const DType dt = tensors[first].dtype();
    const Device dev = tensors[first].device();
    // Collect a group of the same dtype/device up to the cap (the first always fits).
    std::vector<size_t> group;
    size_t bytes = 0;
    for (size_t i = first; i < tensors.size(); ++i) {
      const Tensor& t = tensors[i];
      if (done[i] || t.dtype() != dt || t.device() != dev || t.numel() == 0) continue;
      size_t nb = static_cast<size_t>(t.numel()) * t.element_size();
      if (!group.empty() && bytes + nb > cap_bytes) continue;
      group.push_back(i);
      bytes += nb;
      done[i] = true;
    }
    int64_t total = 0;
    for (size_t i : group) total += tensors[i].numel();
    Tensor flat = empty({total}, TensorOptions(dt, dev));
    int64_t off = 0;
    for (size_t i : group) {
      int64_t n = tensors[i].numel();
      flat.narrow(0, off, n).copy_(tensors[i].reshape({n}));
      off += n;
    }
    pg.broadcast(flat, root)->wait();
    if (pg.rank() == root) continue;
    off = 0;
    for (size_t i : group) {
      Tensor t = tensors[i];
      int64_t n = t.numel();
      t.copy_(flat.narrow(0, off, n).view(t.sizes()));
      off += n;
    }
  }
}

// ---- "local": a world of one ---------------------------------------------------

namespace {

class DoneWork final : public Work {
 public:
  void wait() override {}
  bool is_completed() override { return true; }
};

class ProcessGroupLocal final : public ProcessGroup {
 public:
  ProcessGroupLocal(std::shared_ptr<Store> store, int rank, int size, const ProcessGroupOptions& o)
      : ProcessGroup(std::move(store), rank, size, o) {
    KILN_CHECK(size == 1, "process group 'local' is for a world of one rank, not ", size,
               " (use gloo or nccl)");
  }
  std::string backend_name() const override { return "local"; }

 protected:
  std::shared_ptr<Work> run(const Collective& c) override {
    // Sum, avg and max over one rank are the identity; gathers and scatters copy.
    if ((c.kind == Kind::AllGather || c.kind == Kind::ReduceScatter) && !c.output.is_same(c.input))
      c.output.view({c.output.numel()}).copy_(c.input.view({c.input.numel()}));
    return std::make_shared<DoneWork>();
  }
};

std::map<std::string, ProcessGroupFactory>& registry() {
  static std::map<std::string, ProcessGroupFactory> r;
  return r;
}
std::mutex& registry_mu() {
  static std::mutex m;
  return m;
}

// The built-in process groups, registered on first use of the registry (explicitly, like
// the kernel slots, so that a static link pulls them in): local always, gloo always, nccl
// in a CUDA build.
void load_builtin_process_groups_locked() {
  static bool loaded = false;
  if (loaded) return;
  loaded = true;
  registry()["local"] = [](std::shared_ptr<Store> s, int rank, int size,
                           const ProcessGroupOptions& o) -> std::shared_ptr<ProcessGroup> {
    return std::make_shared<ProcessGroupLocal>(std::move(s), rank, size, o);
  };
  registry()["gloo"] = make_gloo_process_group;
#if KILN_CUDA
  registry()["nccl"] = make_nccl_process_group;
#endif
}

std::string hostname() {
  char buf[256] = {};
  ::gethostname(buf, sizeof buf - 1);
  return buf;
}

}  // namespace

void register_process_group_backend(const std::string& name, ProcessGroupFactory factory) {
  std::lock_guard<std::mutex> lk(registry_mu());
  load_builtin_process_groups_locked();
  registry()[name] = std::move(factory);
}

bool has_process_group_backend(const std::string& name) {
  std::lock_guard<std::mutex> lk(registry_mu());
  load_builtin_process_groups_locked();
  return registry().count(name) > 0;
}

std::shared_ptr<ProcessGroup> new_process_group(const std::string& backend, std::shared_ptr<Store> store, int rank,
                                                 int size, const ProcessGroupOptions& options) {
  ProcessGroupFactory f;
  {
    std::lock_guard<std::mutex> lk(registry_mu());
    load_builtin_process_groups_locked();
    auto it = registry().find(backend);
    if (it == registry().end()) {
      std::string known;
      for (auto& [k, v] : registry()) known += (known.empty() ? "" : ", ") + k;
      throw Error(detail::str("process group backend '", backend, "' is not available in this build of kiln (",
                              backend == "nccl" ? "built without CUDA; " : "", "available: ", known, ")"));
    }
    f = it->second;
  }
  return f(std::move(store), rank, size, options);
}

Device local_device(DeviceType type, const LaunchEnv& env) {
  if (type == DeviceType::CPU) return kCPU;
  int n = cuda_device_count();
  KILN_CHECK(n > 0, "local_device: rank ", env.rank, " wants a CUDA device but none can be used here");
  return cuda_device(env.local_rank % n);
}

std::string InitOptions::default_init_method() {
  const char* v = std::getenv("KILN_INIT_METHOD");
  return v && *v ? v : "env://";
}

std::shared_ptr<ProcessGroup> init_process_group(const InitOptions& options) {
  return init_process_group(options, launch_env());
}

std::shared_ptr<ProcessGroup> init_process_group(const InitOptions& o, const LaunchEnv& env) {
  std::string backend = o.backend;
  if (backend == "auto") {
    if (env.world_size == 1) backend = "local";
    else if (o.device.is_cuda() && has_process_group_backend("nccl")) backend = "nccl";
    else backend = "gloo";
    // NCCL refuses two ranks on one GPU: more ranks on this node than GPUs -> staged Gloo.
    if (backend == "nccl" && env.local_world_size > cuda_device_count()) {
      if (env.rank == 0)
        log_warn("init_process_group: ", env.local_world_size, " ranks per node but ", cuda_device_count(),
                 " GPU(s): using gloo (CUDA tensors staged through host memory) instead of nccl");
      backend = "gloo";
    }
  }
  if (env.world_size == 1 && backend == "local") return new_process_group("local", nullptr, 0, 1, o.options);

  std::shared_ptr<Store> base;
  const std::string& m = o.init_method;
  if (m == "env://" || m.empty()) {
    base = std::make_shared<TcpStore>(env.master_addr, env.master_port, env.rank == 0, o.options.timeout);
  } else if (m.rfind("tcp://", 0) == 0) {
    std::string hp = m.substr(6);
    auto colon = hp.rfind(':');
    KILN_CHECK(colon != std::string::npos && colon + 1 < hp.size(), "init_process_group: '", m,
               "' has no port (tcp://host:port)");
    int port = 0;
    try {
      port = std::stoi(hp.substr(colon + 1));
    } catch (const std::exception&) {
      throw Error("init_process_group: bad port in '" + m + "'");
    }
    base = std::make_shared<TcpStore>(hp.substr(0, colon), port, env.rank == 0, o.options.timeout);
  } else if (m.rfind("file://", 0) == 0) {
    base = std::make_shared<FileStore>(m.substr(7), o.options.timeout);
  } else {
    throw Error("init_process_group: init_method '" + m + "' is not env://, tcp://host:port or file:///path");
  }

  // Rendezvous: every rank checks in; a rank that never does is named.
  auto store = std::make_shared<PrefixStore>("kiln", base);
  store->set("init/rank/" + std::to_string(env.rank), hostname());
  std::vector<std::string> keys;
  for (int r = 0; r < env.world_size; ++r) keys.push_back("init/rank/" + std::to_string(r));
  try {
    store->wait(keys, o.options.timeout);
  } catch (const Error&) {
    std::ostringstream os;
    os << "init_process_group: rank " << env.rank << " waited " << o.options.timeout.count() / 1000.0
       << " s at the store " << store->where() << " but ranks ";
    int missing = 0;
    for (int r = 0; r < env.world_size; ++r)
      if (!store->try_get(keys[r])) os << (missing++ ? ", " : "") << r;
    os << " of " << env.world_size << " never arrived (did they start? is the world size right?)";
    throw Error(os.str());
  }
  log_debug("init_process_group: rank ", env.rank, " of ", env.world_size, " met the others at ", store->where(),
            "; backend ", backend);
  return new_process_group(backend, std::make_shared<PrefixStore>("pg0", base), env.rank, env.world_size,
                           o.options);
}

}  // namespace kiln::dist
