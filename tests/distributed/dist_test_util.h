// Helpers for tests that run several ranks of a process group as threads of one process
// (Gloo connects them over loopback TCP as it would processes): running the ranks,
// a TCP store served on a free port, a Gloo world, catching an error's message, and
// recording checks made on the rank threads. Catch2's assertions are not thread-safe,
// so rank threads record with TCHECK and the test reports after the threads joined.
#pragma once
#include <chrono>
#include <cstdlib>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <kiln/kiln.h>

namespace kiln::test {

// Runs fn(rank) on `world` threads and rethrows the first exception.
inline void run_ranks(int world, const std::function<void(int)>& fn) {
  std::vector<std::thread> threads;
  std::vector<std::exception_ptr> errors(world);
  for (int r = 0; r < world; ++r)
    threads.emplace_back([&, r] {
      try {
        fn(r);
      } catch (...) {
        errors[r] = std::current_exception();
      }
    });
  for (auto& t : threads) t.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

// The message of the kiln::Error fn throws ("" if it does not throw).
inline std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// A TCP store served on a free loopback port; rank r > 0 gets a client of it.
struct StoreServer {
  std::shared_ptr<dist::TcpStore> server =
      std::make_shared<dist::TcpStore>("127.0.0.1", 0, true, std::chrono::seconds(10));
  std::shared_ptr<dist::Store> client(int rank, std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    if (rank == 0) return server;
    return std::make_shared<dist::TcpStore>("127.0.0.1", server->port(), false, timeout);
  }
};

// `world` Gloo ranks on threads, each given its own group.
inline void with_gloo_groups(int world, const std::function<void(const std::shared_ptr<dist::ProcessGroup>&)>& fn,
                             dist::ProcessGroupOptions opts = {}) {
  ::setenv("KILN_GLOO_HOSTNAME", "127.0.0.1", 0);  // threads of one process meet on loopback
  StoreServer srv;
  std::vector<std::shared_ptr<dist::Store>> stores;
  for (int r = 0; r < world; ++r) stores.push_back(srv.client(r));  // connect before the ranks start
  run_ranks(world, [&](int r) {
    fn(dist::new_process_group("gloo", std::make_shared<dist::PrefixStore>("t", stores[r]), r, world, opts));
  });
}
inline void with_gloo(int world, const std::function<void(dist::ProcessGroup&)>& fn,
                      dist::ProcessGroupOptions opts = {}) {
  with_gloo_groups(world, [&](const std::shared_ptr<dist::ProcessGroup>& pg) { fn(*pg); }, opts);
}

// Checks made on rank threads, reported on the test's thread.
class ThreadChecks {
 public:
  void check(bool ok, const std::string& what) {
    std::lock_guard<std::mutex> lk(mu_);
    ++count_;
    if (!ok) failures_.push_back(what);
  }
  std::vector<std::string> failures() const {
    std::lock_guard<std::mutex> lk(mu_);
    return failures_;
  }
  int count() const {
    std::lock_guard<std::mutex> lk(mu_);
    return count_;
  }

 private:
  mutable std::mutex mu_;
  std::vector<std::string> failures_;
  int count_ = 0;
};

}  // namespace kiln::test

// Records `cond` (with the line and an optional context string) in ThreadChecks `tc`.
#define TCHECK(tc, cond, context) \
  (tc).check(static_cast<bool>(cond), std::string(__FILE__ ":") + std::to_string(__LINE__) + ": " #cond " " + std::string(context))
// On the test's thread: every recorded check passed (and there were some).
#define REQUIRE_THREAD_CHECKS(tc)                          \
  do {                                                     \
    for (const auto& f : (tc).failures()) FAIL_CHECK(f);   \
    REQUIRE((tc).failures().empty());                      \
    REQUIRE((tc).count() > 0);                             \
  } while (0)
