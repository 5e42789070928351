// The Gloo process group (Debian's libgloo-dev, TCP transport): collectives on CPU
// tensors, and on CUDA tensors staged through host memory (slow, but several processes
// can then share one GPU, which NCCL refuses). One worker thread per group runs the
// collectives in the order they were issued, so the caller (the data-parallel hooks in
// backward) goes on computing while a bucket is reduced. Gloo's own per-operation
// timeout bounds every collective; its exception becomes the group's failure report.
#include <unistd.h>

#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <mutex>
#include <thread>

#include <gloo/allgather.h>
#include <gloo/allreduce.h>
#include <gloo/barrier.h>
#include <gloo/broadcast.h>
#include <gloo/rendezvous/context.h>
#include <gloo/rendezvous/store.h>
#include <gloo/transport/tcp/device.h>
#include <gloo/transport/unbound_buffer.h>
#include <gloo/types.h>

#include <kiln/core/log.h>
#include <kiln/distributed/process_group.h>
#include <kiln/ops/binary.h>

namespace kiln::dist {

namespace {

// Gloo's rendezvous talks to kiln's store.
class GlooStore final : public gloo::rendezvous::Store {
 public:
  explicit GlooStore(kiln::dist::Store& s) : s_(s) {}
  void set(const std::string& key, const std::vector<char>& data) override { s_.set(key, data); }
  std::vector<char> get(const std::string& key) override { return s_.get(key); }
  void wait(const std::vector<std::string>& keys) override { s_.wait(keys); }
  void wait(const std::vector<std::string>& keys, const std::chrono::milliseconds& timeout) override {
    s_.wait(keys, timeout);
  }

 private:
  kiln::dist::Store& s_;
};

// The slot prefix of neighbor exchanges (Gloo's own collectives use 0x01 to 0x08).
constexpr uint8_t kNeighborSlotPrefix = 0x4b;

template <class T> void sum_fn(void* c, const void* a, const void* b, size_t n) {
  auto* o = static_cast<T*>(c);
  auto* x = static_cast<const T*>(a);
  auto* y = static_cast<const T*>(b);
  if constexpr (std::is_same_v<T, Half> || std::is_same_v<T, BFloat16>) {
    for (size_t i = 0; i < n; ++i) o[i] = T(float(x[i]) + float(y[i]));
  } else {
    for (size_t i = 0; i < n; ++i) o[i] = static_cast<T>(x[i] + y[i]);
  }
}
template <class T> void max_fn(void* c, const void* a, const void* b, size_t n) {
  auto* o = static_cast<T*>(c);
  auto* x = static_cast<const T*>(a);
  auto* y = static_cast<const T*>(b);
  if constexpr (std::is_same_v<T, Half> || std::is_same_v<T, BFloat16>) {
    for (size_t i = 0; i < n; ++i) o[i] = float(x[i]) >= float(y[i]) ? x[i] : y[i];
  } else {
    for (size_t i = 0; i < n; ++i) o[i] = x[i] >= y[i] ? x[i] : y[i];
  }
}

// Calls f with a typed null pointer for the dtype (gloo sizes buffers by sizeof(T)).
template <class F> void with_type(DType t, F&& f) {
  switch (t) {
    case DType::U8: return f(static_cast<uint8_t*>(nullptr));
    case DType::I32: return f(static_cast<int32_t*>(nullptr));
    case DType::I64: return f(static_cast<int64_t*>(nullptr));
    case DType::F16: return f(static_cast<Half*>(nullptr));
    case DType::BF16: return f(static_cast<BFloat16*>(nullptr));
    case DType::F32: return f(static_cast<float*>(nullptr));
    case DType::F64: return f(static_cast<double*>(nullptr));
    default: throw Error(detail::str("gloo: dtype ", dtype_name(t), " is not supported"));
  }
}

class GlooWork final : public Work {
 public:
  void wait() override {
    std::unique_lock<std::mutex> lk(mu_);
    cv_.wait(lk, [&] { return done_; });
    if (!error_.empty()) throw Error(error_);
    if (finish_) {
      auto f = std::move(finish_);
      finish_ = nullptr;
      lk.unlock();
      f();
    }
  }
  bool is_completed() override {
    std::lock_guard<std::mutex> lk(mu_);
    return done_;
  }
  void complete(std::string error) {
    {
      std::lock_guard<std::mutex> lk(mu_);
      done_ = true;
      error_ = std::move(error);
    }
    cv_.notify_all();
  }
  // Runs on the caller's thread in wait(): copies staged results back to the GPU.
  std::function<void()> finish_;

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  std::string error_;
};

std::string gloo_hostname() {
  if (const char* h = std::getenv("KILN_GLOO_HOSTNAME"); h && *h) return h;
  char buf[256] = {};
  ::gethostname(buf, sizeof buf - 1);
  return buf;
}

class ProcessGroupGloo final : public ProcessGroup {
 public:
  ProcessGroupGloo(std::shared_ptr<Store> store, int rank, int size, const ProcessGroupOptions& o)
      : ProcessGroup(std::move(store), rank, size, o) {
    gloo::transport::tcp::attr attr;
    if (const char* ifname = std::getenv("KILN_GLOO_IFNAME"); ifname && *ifname) attr.iface = ifname;
    else attr.hostname = gloo_hostname();
    try {
      device_ = gloo::transport::tcp::CreateDevice(attr);
      ctx_ = std::make_shared<gloo::rendezvous::Context>(rank, size);
      ctx_->setTimeout(o.timeout);
      GlooStore gs(this->store());
      ctx_->connectFullMesh(gs, device_);
    } catch (const Error&) {
      throw;
    } catch (const std::exception& e) {
      throw Error(detail::str("gloo: rank ", rank, " of ", size, " could not connect to its peers (",
                              attr.iface.empty() ? "host " + attr.hostname : "interface " + attr.iface,
                              "; set KILN_GLOO_IFNAME or KILN_GLOO_HOSTNAME to choose): ", e.what()));
    }
    // connectFullMesh can return on one end of a pair before the other end has finished
    // its handshake; a rank that then leaves at once (an error right after construction)
    // would close the pair under a peer still connecting. No rank leaves construction
    // before every rank has connected.
    this->store().set("gloo/connected/" + std::to_string(rank), std::string("1"));
    std::vector<std::string> keys;
    for (int r = 0; r < size; ++r) keys.push_back("gloo/connected/" + std::to_string(r));
    try {
      this->store().wait(keys, o.timeout);
    } catch (const Error&) {
      std::string missing;
      for (int r = 0; r < size; ++r)
        if (!this->store().try_get(keys[r])) missing += (missing.empty() ? "" : ", ") + std::to_string(r);
      throw Error(detail::str("gloo: rank ", rank, " of ", size, " connected, but ranks ", missing,
                              " did not finish connecting within ", o.timeout.count() / 1000.0, " s"));
    }
    worker_ = std::thread([this] { loop(); });
  }

  ~ProcessGroupGloo() override {
    {
      std::lock_guard<std::mutex> lk(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    worker_.join();
  }

  std::string backend_name() const override { return "gloo"; }

 protected:
  std::shared_ptr<Work> run(const Collective& c0) override {
    auto work = std::make_shared<GlooWork>();
    Collective c = c0;
    // CUDA tensors are staged: copied to the host here, reduced there by the worker, and
    // copied back in wait() on the caller's thread (whose stream the tensors belong to).
    bool staged = (c.input.defined() && c.input.is_cuda()) || (c.output.defined() && c.output.is_cuda());
    Tensor dev_out = c.output;
    if (staged) {
      bool in_place = c.input.is_same(c.output);
      c.input = c.input.cpu();
      c.output = in_place ? c.input : empty(c.output.sizes(), TensorOptions(c.output.dtype(), kCPU));
      Tensor host_out = c.output;
      work->finish_ = [dev_out, host_out]() mutable { dev_out.copy_(host_out); };
    }
    {
      std::lock_guard<std::mutex> lk(mu_);
      queue_.push_back([this, c, work] { execute(c, *work); });
    }
    cv_.notify_all();
    return work;
  }

 private:
  void loop() {
    for (;;) {
      std::function<void()> task;
      {
        std::unique_lock<std::mutex> lk(mu_);
        cv_.wait(lk, [&] { return stop_ || !queue_.empty(); });
        if (queue_.empty()) return;  // stopping, nothing left
        task = std::move(queue_.front());
        queue_.pop_front();
      }
      task();
    }
  }

  void execute(const Collective& c, GlooWork& work) {
    if (aborted()) {
      work.complete(detail::str(c.desc, " was not run: the process group was aborted by an earlier failure"));
      return;
    }
    try {
      collective(c);
      work.complete({});
    } catch (const gloo::IoException& e) {
      std::string what = e.what();
      bool timeout = what.find("Timed out") != std::string::npos || what.find("timed out") != std::string::npos;
      work.complete(fail(c, timeout ? detail::str("timed out after ", options().timeout.count() / 1000.0,
                                                  " s (gloo: ", what, ")")
                                    : detail::str("gloo: ", what, " (a peer may have exited)")));
    } catch (const std::exception& e) {
      work.complete(fail(c, e.what()));
    }
  }

  void collective(const Collective& c) {
    const uint32_t tag = static_cast<uint32_t>(c.seq);
    const auto timeout = options().timeout;
    switch (c.kind) {
      case Kind::Barrier: {
        gloo::BarrierOptions opts(ctx_);
        opts.setTag(tag);
        opts.setTimeout(timeout);
        gloo::barrier(opts);
        return;
      }
      case Kind::AllReduce:
        all_reduce_into(c.input, c.op, tag);
        return;
      case Kind::ReduceScatter: {
        // Gloo has no reduce-scatter in its option-style API: all-reduce a copy and keep
        // this rank's slice (twice the traffic of a ring reduce-scatter).
        Tensor tmp = c.input.clone();
        all_reduce_into(tmp, c.op, tag);
        int64_t n = c.output.numel();
        Tensor(c.output).view({n}).copy_(tmp.view({tmp.numel()}).narrow(0, rank() * n, n));
        return;
      }
      case Kind::Broadcast: {
        if (c.input.numel() == 0) return;
        with_type(c.input.dtype(), [&](auto* tp) {
          using T = std::remove_pointer_t<decltype(tp)>;
          gloo::BroadcastOptions opts(ctx_);
          opts.setOutput(static_cast<T*>(c.input.data_ptr()), static_cast<size_t>(c.input.numel()));
          opts.setRoot(c.root);
          opts.setTag(tag);
          opts.setTimeout(timeout);
          gloo::broadcast(opts);
        });
        return;
      }
      case Kind::NeighborExchange: {
        // Point to point over the full mesh: a send to every out-neighbor and a receive
        // from every in-neighbor into its row, all posted before any wait (no ordering
        // between the pairs, so no deadlock), each bounded by the group's timeout.
        const size_t bytes = static_cast<size_t>(c.input.numel()) * c.input.element_size();
        if (bytes == 0) return;
        const uint64_t slot = gloo::Slot::build(kNeighborSlotPrefix, tag);
        auto send = ctx_->createUnboundBuffer(c.input.data_ptr(), bytes);
        std::vector<std::unique_ptr<gloo::transport::UnboundBuffer>> recvs;
        auto* out = static_cast<char*>(c.output.data_ptr());
        for (size_t k = 0; k < c.recv_from.size(); ++k) {
          recvs.push_back(ctx_->createUnboundBuffer(out + k * bytes, bytes));
          recvs.back()->recv(c.recv_from[k], slot);
        }
        for (int dst : c.send_to) send->send(dst, slot);
        for (size_t k = 0; k < recvs.size(); ++k) recvs[k]->waitRecv(timeout);
        for (size_t k = 0; k < c.send_to.size(); ++k) send->waitSend(timeout);
        return;
      }
      case Kind::HierarchicalAllReduce:
        throw Error("gloo: hierarchical_allreduce reached the backend (the base class runs it)");
      case Kind::AllGather: {
        if (c.input.numel() == 0) return;
        with_type(c.input.dtype(), [&](auto* tp) {
          using T = std::remove_pointer_t<decltype(tp)>;
          gloo::AllgatherOptions opts(ctx_);
          opts.setInput(static_cast<T*>(c.input.data_ptr()), static_cast<size_t>(c.input.numel()));
          opts.setOutput(static_cast<T*>(c.output.data_ptr()), static_cast<size_t>(c.output.numel()));
          opts.setTag(tag);
          opts.setTimeout(timeout);
          gloo::allgather(opts);
        });
        return;
      }
    }
  }

  void all_reduce_into(const Tensor& t, ReduceOp op, uint32_t tag) {
    if (t.numel() == 0) return;
    with_type(t.dtype(), [&](auto* tp) {
      using T = std::remove_pointer_t<decltype(tp)>;
      gloo::AllreduceOptions opts(ctx_);
      opts.setOutput(static_cast<T*>(t.data_ptr()), static_cast<size_t>(t.numel()));
      opts.setReduceFunction(op == ReduceOp::Max ? &max_fn<T> : &sum_fn<T>);
      opts.setTag(tag);
      opts.setTimeout(options().timeout);
      gloo::allreduce(opts);
    });
    if (op == ReduceOp::Avg) {
      Tensor out = t;
      div_(out, Scalar(static_cast<double>(size())));
    }
  }

  std::shared_ptr<gloo::transport::Device> device_;
  std::shared_ptr<gloo::rendezvous::Context> ctx_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;
  bool stop_ = false;
  std::thread worker_;
};

}  // namespace

std::shared_ptr<ProcessGroup> make_gloo_process_group(std::shared_ptr<Store> s, int rank, int size,
                                                      const ProcessGroupOptions& o) {
  return std::make_shared<ProcessGroupGloo>(std::move(s), rank, size, o);
}

}  // namespace kiln::dist
