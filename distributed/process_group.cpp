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

int ProcessGroupOptions::default_ranks_per_node() {
  for (const char* name : {"KILN_RANKS_PER_NODE", "LOCAL_WORLD_SIZE"}) {
    if (const char* v = std::getenv(name); v && *v) {
      char* end = nullptr;
      long r = std::strtol(v, &end, 10);
      KILN_CHECK(end && *end == '\0' && r >= 1 && r <= 1 << 20, "environment: ", name, "='", v,
                 "' is not a positive number of ranks");
      return static_cast<int>(r);
    }
  }
  return 0;
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
  KILN_CHECK(options_.ranks_per_node >= 0, "ProcessGroup: ranks_per_node must not be negative");
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
  static const char* names[] = {"all_reduce", "broadcast", "all_gather", "reduce_scatter", "barrier",
                                "neighbor_allreduce", "hierarchical_allreduce"};
  return names[k];
}

}  // namespace

std::shared_ptr<Work> ProcessGroup::all_reduce(const Tensor& t, ReduceOp op) {
  check_tensor("all_reduce", "the tensor", t);
  KILN_CHECK(op != ReduceOp::Avg || is_floating(t.dtype()), "all_reduce: avg needs a floating tensor, got ",
             tensor_str(t), " (use sum and divide)");
  Collective c = make_collective(Kind::AllReduce, op, 0, t, t);
  return start(std::move(c));
}

std::shared_ptr<Work> ProcessGroup::broadcast(const Tensor& t, int root) {
  check_tensor("broadcast", "the tensor", t);
  KILN_CHECK(root >= 0 && root < size_, "broadcast: root ", root, " is not a rank of this group of ", size_);
  Collective c = make_collective(Kind::Broadcast, ReduceOp::Sum, root, t, t);
  return start(std::move(c));
}

std::shared_ptr<Work> ProcessGroup::all_gather(const Tensor& output, const Tensor& input) {
  check_tensor("all_gather", "input", input);
  check_tensor("all_gather", "output", output);
  KILN_CHECK(output.dtype() == input.dtype() && output.device() == input.device(), "all_gather: output (",
             tensor_str(output), ") must have input's dtype and device (", tensor_str(input), ")");
  KILN_CHECK(output.numel() == input.numel() * size_, "all_gather: output has ", output.numel(),
             " elements but needs world size ", size_, " x input's ", input.numel());
  Collective c = make_collective(Kind::AllGather, ReduceOp::Sum, 0, input, output);
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
  Collective c = make_collective(Kind::ReduceScatter, op, 0, input, output);
  return start(std::move(c));
}

std::shared_ptr<Work> ProcessGroup::barrier() {
  Collective c = make_collective(Kind::Barrier, ReduceOp::Sum, 0, {}, {});
  return start(std::move(c));
}

// ---- neighbor averaging ---------------------------------------------------------------

namespace {

// Finishes a neighbor exchange: tensor <- sum over the sources in ascending rank order
// (itself included) of weight * their tensor. The same order on every rank makes equal
// weights give bit-identical results.
class NeighborWork final : public Work {
 public:
  NeighborWork(std::shared_ptr<Work> exchange, Tensor tensor, Tensor received, int rank, Topology::Row row)
      : exchange_(std::move(exchange)), tensor_(std::move(tensor)), received_(std::move(received)), rank_(rank),
        row_(std::move(row)) {}
  void wait() override {
    if (done_) return;
    exchange_->wait();
    NoGradGuard no_grad;
    Tensor acc;
    auto add = [&](const Tensor& x, double w) {
      if (!acc.defined()) acc = mul(x, Scalar(w));
      else acc.add_(x, Scalar(w));
    };
    const int64_t n = tensor_.numel();
    Tensor self = tensor_.view({n});
    bool self_done = false;
    for (size_t k = 0; k < row_.recv_from.size(); ++k) {
      if (!self_done && rank_ < row_.recv_from[k]) add(self, row_.self_weight), self_done = true;
      add(received_.select(0, static_cast<int64_t>(k)), row_.recv_weights[k]);
    }
    if (!self_done) add(self, row_.self_weight);
    self.copy_(acc);
    received_ = Tensor();
    done_ = true;
  }
  bool is_completed() override { return done_ || exchange_->is_completed(); }

 private:
  std::shared_ptr<Work> exchange_;
  Tensor tensor_, received_;
  int rank_;
  Topology::Row row_;
  bool done_ = false;
};

}  // namespace

std::shared_ptr<Work> ProcessGroup::neighbor_allreduce(const Tensor& t, const Topology& topology, int64_t step) {
  check_tensor("neighbor_allreduce", "the tensor", t);
  KILN_CHECK(is_floating(t.dtype()), "neighbor_allreduce: averaging needs a floating tensor, got ", tensor_str(t));
  KILN_CHECK(topology.size() == size_, "neighbor_allreduce: the topology '", topology.name(), "' has ",
             topology.size(), " ranks but this process group has ", size_, " (build it for the group's size)");
  KILN_CHECK(step >= 0, "neighbor_allreduce: step ", step, " is negative");
  Topology::Row row = topology.row(rank_, step);
  const int64_t n = t.numel();
  Tensor received = empty({static_cast<int64_t>(row.recv_from.size()), n}, TensorOptions(t.dtype(), t.device()));
  Collective c = make_collective(Kind::NeighborExchange, ReduceOp::Sum, 0, t, received);
  c.send_to = row.send_to;
  c.recv_from = row.recv_from;
  c.detail = detail::str(topology.name(), ", step ", step);
  std::shared_ptr<Work> exchange = start(std::move(c));
  return std::make_shared<NeighborWork>(std::move(exchange), t, std::move(received), rank_, std::move(row));
}

// ---- hierarchical all-reduce -------------------------------------------------------------

int ProcessGroup::ranks_per_node() const {
  const int r = options_.ranks_per_node;
  return r <= 0 || r > size_ ? size_ : r;
}

void ProcessGroup::make_node_groups() {
  const int per = ranks_per_node();
  const int node = rank_ / per, local = rank_ % per, nodes = size_ / per;
  auto sub = [&](const std::string& key, int sub_rank, int sub_size) -> std::shared_ptr<ProcessGroup> {
    if (sub_size == 1) return new_process_group("local", nullptr, 0, 1, options_);
    return new_process_group(backend_name(), std::make_shared<PrefixStore>(key, store_), sub_rank, sub_size,
                             options_);
  };
  intra_node_ = sub(detail::str("hier", per, "/node", node), local, per);
  cross_node_ = sub(detail::str("hier", per, "/local", local), node, nodes);
}

namespace {

// The stages of a hierarchical all-reduce: the first has started; wait() waits for it and
// runs the others in turn. A stage's error becomes the parent group's failure report.
class ChainWork final : public Work {
 public:
  using Stage = std::function<std::shared_ptr<Work>()>;
  ChainWork(std::shared_ptr<Work> first, std::vector<Stage> rest, std::function<void()> finish,
            std::function<std::string(const std::string&)> on_error)
      : current_(std::move(first)), rest_(std::move(rest)), finish_(std::move(finish)), on_error_(std::move(on_error)) {}
  void wait() override {
    if (!error_.empty()) throw Error(error_);
    if (done_) return;
    try {
      if (current_) current_->wait();
      for (auto& stage : rest_) {
        current_ = stage();
        if (current_) current_->wait();
      }
      if (finish_) finish_();
    } catch (const std::exception& e) {
      error_ = on_error_(e.what());
      throw Error(error_);
    }
    done_ = true;
  }
  bool is_completed() override { return done_ || !error_.empty(); }

 private:
  std::shared_ptr<Work> current_;
  std::vector<Stage> rest_;
  std::function<void()> finish_;
  std::function<std::string(const std::string&)> on_error_;
  bool done_ = false;
  std::string error_;
};

}  // namespace

std::shared_ptr<Work> ProcessGroup::hierarchical_allreduce(const Tensor& t, ReduceOp op,
                                                           HierarchicalAlgorithm algorithm) {
  check_tensor("hierarchical_allreduce", "the tensor", t);
  KILN_CHECK(op != ReduceOp::Avg || is_floating(t.dtype()), "hierarchical_allreduce: avg needs a floating tensor, got ",
             tensor_str(t), " (use sum and divide)");
  const int per = ranks_per_node();
  KILN_CHECK(size_ % per == 0, "hierarchical_allreduce: ", size_, " ranks do not split into nodes of ", per,
             " (ranks_per_node; set KILN_RANKS_PER_NODE or LOCAL_WORLD_SIZE to a divisor of the world size)");
  Collective c = make_collective(Kind::HierarchicalAllReduce, op, 0, t, t);
  c.detail = detail::str(per, " ranks per node, ", algorithm == HierarchicalAlgorithm::Leader ? "leader" : "sharded");
  c.algorithm = algorithm;
  return start(std::move(c));
}

std::shared_ptr<Work> ProcessGroup::run_hierarchical(const Collective& c) {
  const int per = ranks_per_node();
  // One node, or one rank per node: the plain all-reduce (it is the whole hierarchy).
  if (per == size_ || per == 1) {
    Collective flat = c;
    flat.kind = Kind::AllReduce;
    return run(flat);
  }
  auto on_error = [this, c](const std::string& what) { return fail(c, "in a sub-group: " + what); };
  try {
    if (!intra_node_) make_node_groups();
  } catch (const std::exception& e) {
    throw Error(on_error(e.what()));
  }
  // Sums travel through the stages; avg divides once at the end.
  const ReduceOp stage_op = c.op == ReduceOp::Avg ? ReduceOp::Sum : c.op;
  const Tensor t = c.input;
  const int64_t n = t.numel();
  auto intra = intra_node_, cross = cross_node_;
  const int local = rank_ % per;
  const double divide = c.op == ReduceOp::Avg ? static_cast<double>(size_) : 0.0;
  std::shared_ptr<Work> first;
  std::vector<ChainWork::Stage> rest;
  std::function<void()> finish;
  if (c.algorithm == HierarchicalAlgorithm::Leader) {
    // Inside the node every rank gets the node's reduction (the group has no reduce to
    // one root); the leaders reduce across nodes and broadcast back.
    first = intra->all_reduce(t, stage_op);
    if (local == 0) rest.push_back([cross, t, stage_op] { return cross->all_reduce(t, stage_op); });
    rest.push_back([intra, t] { return intra->broadcast(t, 0); });
    finish = [t, divide] {
      if (divide > 0) {
        Tensor x = t;
        NoGradGuard no_grad;
        div_(x, Scalar(divide));
      }
    };
  } else {
    const int64_t shard = (n + per - 1) / per;
    Tensor padded = zeros({shard * per}, TensorOptions(t.dtype(), t.device()));
    {
      NoGradGuard no_grad;
      padded.narrow(0, 0, n).copy_(t.view({n}));
    }
    Tensor part = empty({shard}, TensorOptions(t.dtype(), t.device()));
    first = intra->reduce_scatter(part, padded, stage_op);
    rest.push_back([cross, part, stage_op] { return cross->all_reduce(part, stage_op); });
    rest.push_back([intra, padded, part] { return intra->all_gather(padded, part); });
    finish = [t, padded, n, divide] {
      NoGradGuard no_grad;
      Tensor x = t;
      x.view({n}).copy_(padded.narrow(0, 0, n));
      if (divide > 0) div_(x, Scalar(divide));
    };
  }
  return std::make_shared<ChainWork>(std::move(first), std::move(rest), std::move(finish), on_error);
}

ProcessGroup::Collective ProcessGroup::make_collective(Kind kind, ReduceOp op, int root, Tensor input, Tensor output) {
  Collective c;
  c.kind = kind;
  c.op = op;
  c.root = root;
  c.input = std::move(input);
  c.output = std::move(output);
  return c;
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
    case Kind::NeighborExchange: os << tensor_str(c.input) << ", " << c.detail; break;
    case Kind::HierarchicalAllReduce:
      os << tensor_str(c.input) << ", " << reduce_op_name(c.op) << ", " << c.detail;
      break;
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
  if (c.kind == Kind::HierarchicalAllReduce) return run_hierarchical(c);
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

namespace {

// Runs `collective` on flat buffers packing `tensors` (grouped by dtype and device, at
// most cap_bytes each; the first tensor of a group always fits) and unpacks the results
// (on every rank when unpack_all, else everywhere but `root`). Skips empty tensors.
void coalesced(const std::vector<Tensor>& tensors, size_t cap_bytes, bool unpack_all, bool is_root,
               const std::function<void(const Tensor&)>& collective) {
  NoGradGuard no_grad;
  std::vector<bool> done(tensors.size(), false);
  for (size_t first = 0; first < tensors.size(); ++first) {
    if (done[first] || tensors[first].numel() == 0) continue;
    const DType dt = tensors[first].dtype();
    const Device dev = tensors[first].device();
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
    collective(flat);
    if (!unpack_all && is_root) continue;
    off = 0;
    for (size_t i : group) {
      Tensor t = tensors[i];
      int64_t n = t.numel();
      t.copy_(flat.narrow(0, off, n).view(t.sizes()));
      off += n;
    }
  }
}

}  // namespace

void broadcast_coalesced(ProcessGroup& pg, const std::vector<Tensor>& tensors, int root, size_t cap_bytes) {
  if (pg.size() == 1) return;
  coalesced(tensors, cap_bytes, false, pg.rank() == root, [&](const Tensor& flat) { pg.broadcast(flat, root)->wait(); });
}

void all_reduce_coalesced(ProcessGroup& pg, const std::vector<Tensor>& tensors, ReduceOp op, size_t cap_bytes) {
  if (pg.size() == 1) return;
  coalesced(tensors, cap_bytes, true, false, [&](const Tensor& flat) { pg.all_reduce(flat, op)->wait(); });
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
