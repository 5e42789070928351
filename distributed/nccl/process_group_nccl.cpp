// The NCCL process group: collectives on CUDA tensors over one non-blocking communicator
// per group, bound to the GPU of its first collective (rank 0 shares the unique id
// through the store). Each collective runs on the group's stream after an event from the
// compute stream; Work::wait() makes the caller's stream wait on its end event (barrier
// blocks the host). A watchdog holds each collective's tensors until the GPU is done with
// them, since the stream-ordered allocator would otherwise reuse a dropped tensor's block
// under NCCL, and on a timeout or an asynchronous NCCL error fails the group and aborts
// the communicator. Such a failure after wait() returned is logged and thrown by the
// next collective.
#include <nccl.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include <kiln/core/log.h>
#include <kiln/cuda/device.h>
#include <kiln/cuda/error.h>
#include <kiln/distributed/process_group.h>

#if NCCL_VERSION_CODE < NCCL_VERSION(2, 14, 0)
#error "kiln's NCCL process group needs NCCL 2.14 or later (non-blocking communicators, ncclCommFinalize)"
#endif

namespace kiln::dist {

namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// How often the watchdog looks at the collectives in flight: it bounds how long a
// finished collective's tensors stay held after the GPU is done with them.
constexpr milliseconds kWatchdogPoll{5};
// After a failure, how long the destructor waits for the aborted collectives' events
// before giving up on them (their tensors are then kept for the life of the process).
constexpr std::chrono::seconds kAbortedDrain{10};

const char kUniqueIdKey[] = "nccl/unique_id";

std::string seconds_str(milliseconds t) { return detail::str(static_cast<double>(t.count()) / 1000.0, " s"); }

// Waiting out a non-blocking NCCL call: spin briefly (most calls settle in microseconds),
// then sleep in short steps (communicator setup and first connections take seconds).
class Backoff {
 public:
  void pause() {
    if (++n_ < 64) std::this_thread::yield();
    else std::this_thread::sleep_for(std::chrono::microseconds(n_ < 1024 ? 20 : 500));
  }

 private:
  int n_ = 0;
};

// A non-blocking communicator answers ncclInProgress while a call is still being carried
// out in the background; no other call may be made on it, and nothing may be queued on
// its stream, until its state leaves ncclInProgress. Returns that state, or
// ncclInProgress when the deadline passed (or `stop` was raised) first.
ncclResult_t settle(ncclComm_t comm, ncclResult_t r, Clock::time_point deadline,
                    const std::atomic<bool>* stop = nullptr) {
  Backoff backoff;
  while (r == ncclInProgress) {
    if (Clock::now() >= deadline || (stop && stop->load())) return ncclInProgress;
    backoff.pause();
    ncclResult_t state = ncclInProgress;
    ncclResult_t q = ncclCommGetAsyncError(comm, &state);
    r = q != ncclSuccess ? q : state;
  }
  return r;
}

std::string nccl_error_text(ncclResult_t r, ncclComm_t comm) {
  std::string s = detail::str("NCCL error: ", ncclGetErrorString(r));
  const char* last = ncclGetLastError(comm);
  if (last && last[0] != '\0') s += detail::str(" (", last, ")");
  if (r == ncclSystemError || r == ncclRemoteError)
    s += "; a peer may have exited or the network failed (NCCL_DEBUG=WARN prints more)";
  return s;
}

ncclDataType_t nccl_type(DType t) {
  switch (t) {
    case DType::U8: return ncclUint8;
    case DType::I32: return ncclInt32;
    case DType::I64: return ncclInt64;
    case DType::F16: return ncclFloat16;
    case DType::BF16: return ncclBfloat16;
    case DType::F32: return ncclFloat32;
    case DType::F64: return ncclFloat64;
    default: throw Error(detail::str("nccl: dtype ", dtype_name(t), " is not supported (use u8 or i32)"));
  }
}

ncclRedOp_t nccl_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::Sum: return ncclSum;
    case ReduceOp::Avg: return ncclAvg;
    case ReduceOp::Max: return ncclMax;
  }
  throw Error("nccl: unknown reduce op");
}

// The store of a world of one created without one (new_process_group("nccl", nullptr,
// 0, 1)): the base class reads the ranks' sequence numbers from a store when a
// collective fails.
class LocalStore final : public Store {
 public:
  LocalStore() : Store(std::chrono::minutes(5)) {}
  using Store::get;
  using Store::set;
  void set(const std::string& key, const Bytes& value) override {
    {
      std::lock_guard<std::mutex> lk(mu_);
      data_[key] = value;
    }
    cv_.notify_all();
  }
  Bytes get(const std::string& key, milliseconds timeout) override {
    std::unique_lock<std::mutex> lk(mu_);
    if (!cv_.wait_for(lk, timeout, [&] { return data_.count(key) > 0; }))
      throw Error(detail::str("store (in-process): timed out after ", seconds_str(timeout), " waiting for '", key, "'"));
    return data_[key];
  }
  std::optional<Bytes> try_get(const std::string& key) override {
    std::lock_guard<std::mutex> lk(mu_);
    auto it = data_.find(key);
    if (it == data_.end()) return std::nullopt;
    return it->second;
  }
  int64_t add(const std::string& key, int64_t delta) override {
    int64_t v = 0;
    {
      std::lock_guard<std::mutex> lk(mu_);
      auto it = data_.find(key);
      if (it != data_.end()) v = std::stoll(std::string(it->second.begin(), it->second.end()));
      v += delta;
      std::string s = std::to_string(v);
      data_[key] = Bytes(s.begin(), s.end());
    }
    cv_.notify_all();
    return v;
  }
  std::string where() const override { return "in-process"; }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, Bytes> data_;
};

class ProcessGroupNccl final : public ProcessGroup {
 public:
  ProcessGroupNccl(std::shared_ptr<Store> store, int rank, int size, const ProcessGroupOptions& o)
      : ProcessGroup(std::move(store), rank, size, o) {
    KILN_CHECK(cuda::device_count() > 0, "process group 'nccl': rank ", rank, " of ", size,
               " has no usable CUDA device (", cuda::unavailable_reason(), "); use gloo for CPU tensors");
  }
  ~ProcessGroupNccl() override;

  std::string backend_name() const override { return "nccl"; }

 protected:
  std::shared_ptr<Work> run(const Collective& c) override;

 private:
  // One collective in flight. The group's watchdog list and the Work share it; the
  // tensors in `c` stay referenced until the end event has completed.
  struct Entry {
    enum class State { Running, Done, Failed };
    Collective c;
    int device = 0;
    bool barrier = false;
    milliseconds timeout{0};
    cudaEvent_t end = nullptr;
    Clock::time_point enqueued;

    std::mutex mu;
    State state = State::Running;
    std::string error;

    Entry() = default;
    Entry(const Entry&) = delete;
    Entry& operator=(const Entry&) = delete;
    ~Entry() {
      if (end) KILN_CUDA_WARN(cudaEventDestroy(end));
    }
    // Called before the communicator is aborted: an event complete by then means the
    // collective really finished (an abort lets the GPU get past the rest too).
    // `recorded_after_failure`: the end event was recorded only to know when the stream
    // is past what NCCL may have queued, so its completion proves nothing.
    void mark_failed(const std::string& msg, bool recorded_after_failure = false) {
      std::lock_guard<std::mutex> lk(mu);
      if (state != State::Running) return;
      if (!recorded_after_failure) {
        cudaError_t q = cudaEventQuery(end);
        if (q == cudaSuccess) {
          state = State::Done;
          return;
        }
        (void)cudaGetLastError();
      }
      state = State::Failed;
      error = msg;
    }
    // The GPU is done with the tensors: let them go (outside the lock, since freeing
    // calls into the allocator).
    void finish() {
      Tensor in, out;
      {
        std::lock_guard<std::mutex> lk(mu);
        if (state == State::Running) state = State::Done;
        in = c.input;
        out = c.output;
        c.input = Tensor();
        c.output = Tensor();
      }
    }
    std::optional<std::string> failure() {
      std::lock_guard<std::mutex> lk(mu);
      if (state == State::Failed) return error;
      return std::nullopt;
    }
  };

  class NcclWork final : public Work {
   public:
    explicit NcclWork(std::shared_ptr<Entry> e) : e_(std::move(e)) {}
    void wait() override {
      if (auto err = e_->failure()) throw Error(*err);
      if (!e_->barrier) {
        KILN_CUDA_CHECK(cudaStreamWaitEvent(cuda::current_stream(e_->device), e_->end, 0));
        return;
      }
      // A barrier holds the host: the watchdog fails it at the timeout, and the limit
      // here only guards against a watchdog that never got to it.
      const auto limit = e_->enqueued + e_->timeout + std::chrono::seconds(30);
      Backoff backoff;
      for (;;) {
        if (auto err = e_->failure()) throw Error(*err);
        cudaError_t q = cudaEventQuery(e_->end);
        if (q == cudaSuccess) break;
        if (q != cudaErrorNotReady) KILN_CUDA_CHECK(q);
        (void)cudaGetLastError();
        if (Clock::now() > limit)
          throw Error(detail::str(e_->c.desc, " did not complete within ", seconds_str(e_->timeout),
                                  " and the watchdog did not report it"));
        backoff.pause();
      }
      // An abort lets the GPU get past the barrier too; it was marked failed first.
      if (auto err = e_->failure()) throw Error(*err);
    }
    bool is_completed() override {
      {
        std::lock_guard<std::mutex> lk(e_->mu);
        if (e_->state != Entry::State::Running) return true;
      }
      cudaError_t q = cudaEventQuery(e_->end);
      if (q == cudaSuccess) return true;
      // Not ready is not an error, but clear the runtime's last error all the same so a
      // later launch check does not report it.
      (void)cudaGetLastError();
      return q != cudaErrorNotReady;  // a device error: the watchdog fails the group
    }

   private:
    std::shared_ptr<Entry> e_;
  };

  // Makes the communicator on `dev` (the first collective's device); returns what went
  // wrong, if anything.
  std::optional<std::string> init_comm(Device dev);
  Device barrier_device() const;
  ncclResult_t enqueue(const Collective& c);
  void watchdog_loop();
  void poll(const std::vector<std::shared_ptr<Entry>>& snapshot);
  // Records the failure of `c` with the base class (later collectives throw), fails
  // `culprit` and every other collective in flight, and aborts the communicator.
  std::string fail_group(const Collective& c, const std::shared_ptr<Entry>& culprit, const std::string& what);
  void abort_comm();
  void drain();
  // Keeps an entry (and its tensors) for the life of the process: the GPU may still use
  // its memory.
  static void keep_forever(std::shared_ptr<Entry> e);

  // comm_mu_ guards the communicator, the stream and start_ (one NCCL call at a time);
  // it is taken before list_mu_, never after.
  std::mutex comm_mu_;
  bool bound_ = false;  // device_ chosen (the communicator may since have been aborted)
  Device device_ = kCPU;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  cudaEvent_t start_ = nullptr;
  Tensor scratch_;  // barrier's one element

  std::mutex list_mu_;
  std::condition_variable work_cv_;  // new work, or stop
  std::condition_variable done_cv_;  // entries left the list
  std::deque<std::shared_ptr<Entry>> outstanding_;
  bool stop_ = false;
  std::atomic<bool> failed_{false};
  std::thread watchdog_;
};

// ---- setup and teardown ------------------------------------------------------------

Device ProcessGroupNccl::barrier_device() const {
  // No tensor says which GPU: take the one kiln's programs use for this rank.
  try {
    return local_device(DeviceType::CUDA, launch_env());
  } catch (const Error&) {
    int d = 0;
    KILN_CUDA_CHECK(cudaGetDevice(&d));
    return cuda_device(d);
  }
}

std::optional<std::string> ProcessGroupNccl::init_comm(Device dev) {
  const std::string timeout = seconds_str(options().timeout);
  bound_ = true;
  device_ = dev;
  ncclUniqueId id;
  std::memset(&id, 0, sizeof id);
  if (rank() == 0) {
    ncclResult_t r = ncclGetUniqueId(&id);
    if (r != ncclSuccess) return "ncclGetUniqueId failed: " + nccl_error_text(r, nullptr);
    const char* p = reinterpret_cast<const char*>(&id);
    if (size() > 1) store().set(kUniqueIdKey, Bytes(p, p + sizeof id));
  } else {
    Bytes b;
    try {
      b = store().get(kUniqueIdKey, options().timeout);
    } catch (const Error& e) {
      return detail::str("rank 0 did not publish the NCCL unique id within ", timeout, " (", e.what(), ")");
    }
    if (b.size() != sizeof id)
      return detail::str("the NCCL unique id in the store has ", b.size(), " bytes instead of ", sizeof id,
                         " (another program's key?)");
    std::memcpy(&id, b.data(), sizeof id);
  }

  ncclComm_t comm = nullptr;
  try {
    cuda::DeviceGuard guard(dev);
    KILN_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    KILN_CUDA_CHECK(cudaEventCreateWithFlags(&start_, cudaEventDisableTiming));
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;  // every call returns at once; settle() bounds the wait
    ncclResult_t r = ncclCommInitRankConfig(&comm, size(), id, rank(), &config);
    if (comm) r = settle(comm, r, Clock::now() + options().timeout);
    if (r != ncclSuccess) {
      std::string what =
          r == ncclInProgress
              ? detail::str("the NCCL communicator on cuda:", dev.index, " was not set up within ", timeout)
              : detail::str("setting up the NCCL communicator on cuda:", dev.index, " failed: ", nccl_error_text(r, comm));
      if (comm) {
        ncclResult_t a = ncclCommAbort(comm);
        if (a != ncclSuccess) log_warn("nccl: aborting the half-made communicator failed: ", ncclGetErrorString(a));
      }
      return what;
    }
    scratch_ = zeros({1}, TensorOptions(DType::F32, dev));
  } catch (const Error& e) {
    if (comm) (void)ncclCommAbort(comm);
    return detail::str("setting up the NCCL process group on cuda:", dev.index, " failed: ", e.what());
  }
  comm_ = comm;
  watchdog_ = std::thread([this] { watchdog_loop(); });
  int version = 0;
  (void)ncclGetVersion(&version);
  log_debug("nccl: rank ", rank(), " of ", size(), " on cuda:", dev.index, " (NCCL ", version, ")");
  return std::nullopt;
}

ProcessGroupNccl::~ProcessGroupNccl() {
  if (watchdog_.joinable()) {
    try {
      drain();
    } catch (...) {
      // Only logging can throw in there; the teardown goes on.
    }
    {
      std::lock_guard<std::mutex> lk(list_mu_);
      stop_ = true;
    }
    work_cv_.notify_all();
    watchdog_.join();
  }
  try {
    bool kept = false;
    {
      std::lock_guard<std::mutex> lk(list_mu_);
      for (auto& e : outstanding_) keep_forever(e);
      kept = !outstanding_.empty();
      outstanding_.clear();
    }
    ncclComm_t comm = nullptr;
    {
      std::lock_guard<std::mutex> lk(comm_mu_);
      std::swap(comm, comm_);
    }
    if (comm) {
      ncclResult_t r = ncclInProgress;
      if (!kept && !failed_) {
        // Healthy: flush and release in order. Finalize may wait for the peers' side of
        // the last operations, hence the bound.
        r = settle(comm, ncclCommFinalize(comm), Clock::now() + options().timeout);
        if (r == ncclSuccess) {
          r = ncclCommDestroy(comm);
          if (r != ncclSuccess) log_warn("nccl: rank ", rank(), ": ncclCommDestroy: ", ncclGetErrorString(r));
          comm = nullptr;
        } else {
          log_warn("nccl: rank ", rank(), ": finalizing the communicator ",
                   r == ncclInProgress ? "did not finish within " + seconds_str(options().timeout)
                                       : std::string("failed: ") + ncclGetErrorString(r),
                   "; aborting it");
        }
      }
      if (comm) {
        r = ncclCommAbort(comm);
        if (r != ncclSuccess) log_warn("nccl: rank ", rank(), ": ncclCommAbort: ", ncclGetErrorString(r));
      }
    }
    // Destroying a stream or an event with work still queued is fine: CUDA releases
    // them once that work is done.
    if (start_) KILN_CUDA_WARN(cudaEventDestroy(start_));
    if (stream_) KILN_CUDA_WARN(cudaStreamDestroy(stream_));
  } catch (const std::exception& e) {
    try {
      log_error("nccl: rank ", rank(), ": tearing down the process group: ", e.what());
    } catch (...) {
    }
  }
}

// Waits (bounded) until every collective in flight has completed on the GPU; the
// watchdog keeps running meanwhile, so a hung one is timed out and aborted as usual.
void ProcessGroupNccl::drain() {
  std::unique_lock<std::mutex> lk(list_mu_);
  const auto healthy_limit = Clock::now() + options().timeout + std::chrono::seconds(5);
  std::optional<Clock::time_point> failed_limit;
  while (!outstanding_.empty()) {
    const auto now = Clock::now();
    if (failed_) {
      if (!failed_limit) failed_limit = now + kAbortedDrain;
      if (now >= *failed_limit) break;
    } else if (now >= healthy_limit) {
      break;
    }
    done_cv_.wait_for(lk, milliseconds(50));
  }
  if (!outstanding_.empty())
    log_warn("nccl: rank ", rank(), ": ", outstanding_.size(),
             " collective(s) never completed on the GPU; their tensors are kept for the life of the process so that "
             "the GPU cannot write into reused memory");
}

void ProcessGroupNccl::keep_forever(std::shared_ptr<Entry> e) {
  // Never freed, on purpose (nor the mutex: a group may be destroyed at exit).
  static auto* mu = new std::mutex();
  static auto* kept = new std::vector<std::shared_ptr<Entry>>();
  std::lock_guard<std::mutex> lk(*mu);
  kept->push_back(std::move(e));
}

// ---- collectives ---------------------------------------------------------------------

std::shared_ptr<Work> ProcessGroupNccl::run(const Collective& c) {
  const bool is_barrier = c.kind == Kind::Barrier;
  if (!is_barrier)
    KILN_CHECK(c.input.is_cuda() && c.output.is_cuda(), "nccl: ", c.desc,
               ": the NCCL process group takes CUDA tensors; use gloo for CPU tensors");

  std::unique_lock<std::mutex> lk(comm_mu_);
  const Device dev = is_barrier ? (bound_ ? device_ : barrier_device()) : c.input.device();
  if (!bound_) {
    if (auto what = init_comm(dev)) {
      lk.unlock();
      throw Error(fail_group(c, nullptr, *what));
    }
  }
  KILN_CHECK(dev == device_, "nccl: ", c.desc, ": this process group runs on ", device_.str(),
             " (the device of its first collective); one NCCL group serves one GPU");
  if (!comm_)
    throw Error(detail::str(c.desc, " was not run: the process group (nccl, rank ", rank(), " of ", size(),
                            ") was aborted by an earlier failure"));

  cuda::DeviceGuard guard(device_);
  auto e = std::make_shared<Entry>();
  e->c = c;
  if (is_barrier) e->c.input = e->c.output = scratch_;
  e->device = device_.index;
  e->barrier = is_barrier;
  e->timeout = options().timeout;
  KILN_CUDA_CHECK(cudaEventCreateWithFlags(&e->end, cudaEventDisableTiming));

  // The tensors were written (and allocated) on the compute stream: NCCL starts after.
  KILN_CUDA_CHECK(cudaEventRecord(start_, cuda::current_stream(device_)));
  KILN_CUDA_CHECK(cudaStreamWaitEvent(stream_, start_, 0));
  ncclResult_t r = settle(comm_, enqueue(e->c), Clock::now() + options().timeout, &failed_);
  if (r != ncclSuccess) {
    std::string what = r != ncclInProgress ? nccl_error_text(r, comm_)
                                           : "NCCL did not finish queueing it within " + seconds_str(options().timeout);
    const bool already = failed_;  // the watchdog is waiting for the lock to abort
    lk.unlock();
    std::string msg = already ? detail::str(c.desc, " was not run: the process group (nccl, rank ", rank(), " of ",
                                            size(), ") was aborted by an earlier failure")
                              : fail_group(c, nullptr, what);
    abort_comm();
    // NCCL may have queued part of it: hold its tensors until the stream is past it.
    e->mark_failed(msg, /*recorded_after_failure=*/true);
    if (cudaEventRecord(e->end, stream_) == cudaSuccess) {
      e->enqueued = Clock::now();
      {
        std::lock_guard<std::mutex> l2(list_mu_);
        outstanding_.push_back(e);
      }
      work_cv_.notify_all();
    } else {
      (void)cudaGetLastError();
      keep_forever(e);
    }
    throw Error(msg);
  }
  if (cudaError_t err = cudaEventRecord(e->end, stream_); err != cudaSuccess) {
    // NCCL may still be using the tensors: never free them under it.
    keep_forever(e);
    ::kiln::cuda::throw_cuda_error(err, "cudaEventRecord(e->end, stream_)", __FILE__, __LINE__);
  }
  e->enqueued = Clock::now();
  {
    std::lock_guard<std::mutex> l2(list_mu_);
    outstanding_.push_back(e);
    // The watchdog fails the group in two steps: it marks the collectives in flight,
    // then waits for comm_mu_ (held here) to abort. One queued in between would see its
    // event complete after the abort and pass for finished.
    if (failed_)
      e->mark_failed(detail::str(c.desc, " did not complete: the process group (nccl, rank ", rank(), " of ", size(),
                                 ") was aborted by the failure of another collective"));
  }
  work_cv_.notify_all();
  return std::make_shared<NcclWork>(e);
}

ncclResult_t ProcessGroupNccl::enqueue(const Collective& c) {
  switch (c.kind) {
    case Kind::Barrier:
      return ncclAllReduce(c.input.data_ptr(), c.input.data_ptr(), 1, ncclFloat32, ncclSum, comm_, stream_);
    case Kind::AllReduce: {
      const size_t n = static_cast<size_t>(c.input.numel());
      if (n == 0) return ncclSuccess;
      return ncclAllReduce(c.input.data_ptr(), c.input.data_ptr(), n, nccl_type(c.input.dtype()), nccl_op(c.op), comm_,
                           stream_);
    }
    case Kind::Broadcast: {
      const size_t n = static_cast<size_t>(c.input.numel());
      if (n == 0) return ncclSuccess;
      return ncclBroadcast(c.input.data_ptr(), c.input.data_ptr(), n, nccl_type(c.input.dtype()), c.root, comm_,
                           stream_);
    }
    case Kind::AllGather: {
      const size_t n = static_cast<size_t>(c.input.numel());
      if (n == 0) return ncclSuccess;
      return ncclAllGather(c.input.data_ptr(), c.output.data_ptr(), n, nccl_type(c.input.dtype()), comm_, stream_);
    }
    case Kind::ReduceScatter: {
      const size_t n = static_cast<size_t>(c.output.numel());
      if (n == 0) return ncclSuccess;
      return ncclReduceScatter(c.input.data_ptr(), c.output.data_ptr(), n, nccl_type(c.input.dtype()), nccl_op(c.op),
                               comm_, stream_);
    }
    case Kind::NeighborExchange: {
      // Every send and receive in one group: NCCL schedules them together (no ordering
      // between the pairs, so no deadlock) on the group's stream.
      const size_t n = static_cast<size_t>(c.input.numel());
      if (n == 0 || (c.send_to.empty() && c.recv_from.empty())) return ncclSuccess;
      const ncclDataType_t type = nccl_type(c.input.dtype());
      const size_t bytes = n * c.input.element_size();
      // Peers on this node first: their transfers (NVLink) start before the slower
      // inter-node ones are set up.
      const int per = ranks_per_node(), node = rank() / per;
      auto intra_first = [&](std::vector<size_t> idx, const std::vector<int>& peers) {
        std::stable_partition(idx.begin(), idx.end(), [&](size_t k) { return peers[k] / per == node; });
        return idx;
      };
      auto indices = [](size_t m) {
        std::vector<size_t> v(m);
        for (size_t k = 0; k < m; ++k) v[k] = k;
        return v;
      };
      ncclResult_t r = ncclGroupStart();
      if (r != ncclSuccess) return r;
      for (size_t k : intra_first(indices(c.send_to.size()), c.send_to)) {
        r = ncclSend(c.input.data_ptr(), n, type, c.send_to[k], comm_, stream_);
        if (r != ncclSuccess) break;
      }
      auto* out = static_cast<char*>(c.output.data_ptr());
      for (size_t k : intra_first(indices(c.recv_from.size()), c.recv_from)) {
        if (r != ncclSuccess) break;
        r = ncclRecv(out + k * bytes, n, type, c.recv_from[k], comm_, stream_);
      }
      ncclResult_t e = ncclGroupEnd();
      return r != ncclSuccess ? r : e;
    }
    case Kind::HierarchicalAllReduce:
      break;  // run by the base class over sub-groups
  }
  throw Error("nccl: unknown collective");
}

// ---- failures and the watchdog ------------------------------------------------------

std::string ProcessGroupNccl::fail_group(const Collective& c, const std::shared_ptr<Entry>& culprit,
                                         const std::string& what) {
  failed_ = true;
  std::string msg = fail(c, what);
  if (culprit) culprit->mark_failed(msg);
  {
    std::lock_guard<std::mutex> lk(list_mu_);
    for (auto& e : outstanding_)
      if (e != culprit) e->mark_failed(detail::str(e->c.desc, " did not complete: the process group was aborted (", msg, ")"));
  }
  abort_comm();
  return msg;
}

void ProcessGroupNccl::abort_comm() {
  ncclComm_t comm = nullptr;
  {
    std::lock_guard<std::mutex> lk(comm_mu_);
    std::swap(comm, comm_);
  }
  // Nobody else can reach the handle now: every user holds comm_mu_ throughout.
  if (comm) {
    ncclResult_t r = ncclCommAbort(comm);
    if (r != ncclSuccess) log_warn("nccl: rank ", rank(), ": ncclCommAbort: ", ncclGetErrorString(r));
  }
}

void ProcessGroupNccl::watchdog_loop() {
  // A new thread starts on cuda:0: its first CUDA call (an event query, the allocator's
  // device restore after a free, NCCL's abort) would otherwise create a context there,
  // some 500 MiB of cuda:0 for every rank that runs on another GPU.
  KILN_CUDA_WARN(cudaSetDevice(device_.index));
  std::unique_lock<std::mutex> lk(list_mu_);
  for (;;) {
    if (outstanding_.empty()) work_cv_.wait(lk, [&] { return stop_ || !outstanding_.empty(); });
    else work_cv_.wait_for(lk, kWatchdogPoll, [&] { return stop_; });
    if (stop_) return;
    std::vector<std::shared_ptr<Entry>> snapshot(outstanding_.begin(), outstanding_.end());
    lk.unlock();
    try {
      poll(snapshot);
    } catch (const std::exception& ex) {
      try {
        log_error("nccl: rank ", rank(), ": watchdog: ", ex.what());
      } catch (...) {
      }
    }
    snapshot.clear();  // drop the last references (and free tensors) outside the lock
    lk.lock();
  }
}

void ProcessGroupNccl::poll(const std::vector<std::shared_ptr<Entry>>& snapshot) {
  const auto now = Clock::now();
  const bool failed = failed_;
  std::vector<std::shared_ptr<Entry>> finished, lost;
  std::shared_ptr<Entry> culprit;
  std::string what;
  for (const auto& e : snapshot) {
    cudaError_t q = cudaEventQuery(e->end);
    if (q == cudaSuccess) {
      finished.push_back(e);
      continue;
    }
    (void)cudaGetLastError();
    if (q != cudaErrorNotReady) {
      // The device failed under it (or the context is gone): its event will never say.
      if (failed) lost.push_back(e);
      else if (!culprit) {
        culprit = e;
        what = "the GPU reported " + cuda::describe_cuda_error(q) + " while it ran";
      }
      continue;
    }
    if (!failed && !culprit && now - e->enqueued > options().timeout) {
      culprit = e;
      what = detail::str("timed out after ", seconds_str(options().timeout), " (not completed on ", device_.str(),
                         "; a rank may not have called it, or may be stuck)");
    }
  }
  if (!failed && !culprit && finished.size() < snapshot.size()) {
    // Asynchronous NCCL errors (a peer gone, a network failure). Skipped while a
    // collective is being queued: that call polls the same state itself.
    std::unique_lock<std::mutex> cl(comm_mu_, std::try_to_lock);
    if (cl.owns_lock() && comm_) {
      ncclResult_t state = ncclSuccess;
      ncclResult_t q = ncclCommGetAsyncError(comm_, &state);
      if (q != ncclSuccess) state = q;
      if (state != ncclSuccess && state != ncclInProgress) {
        what = nccl_error_text(state, comm_);
        for (const auto& e : snapshot)
          if (std::find(finished.begin(), finished.end(), e) == finished.end()) {
            culprit = e;
            break;
          }
      }
    }
  }
  for (const auto& e : finished) e->finish();
  if (!finished.empty() || !lost.empty()) {
    {
      std::lock_guard<std::mutex> lk(list_mu_);
      auto gone = [&](const std::shared_ptr<Entry>& e) {
        return std::find(finished.begin(), finished.end(), e) != finished.end() ||
               std::find(lost.begin(), lost.end(), e) != lost.end();
      };
      outstanding_.erase(std::remove_if(outstanding_.begin(), outstanding_.end(), gone), outstanding_.end());
    }
    done_cv_.notify_all();
  }
  for (auto& e : lost) keep_forever(e);
  if (culprit) fail_group(culprit->c, culprit, what);
}

}  // namespace

std::shared_ptr<ProcessGroup> make_nccl_process_group(std::shared_ptr<Store> s, int rank, int size,
                                                      const ProcessGroupOptions& o) {
  if (!s && size == 1) s = std::make_shared<LocalStore>();
  return std::make_shared<ProcessGroupNccl>(std::move(s), rank, size, o);
}

}  // namespace kiln::dist
