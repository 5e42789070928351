// The CPU thread budget (core/parallel.h): the loop covers its range once whatever the
// thread count, exceptions come back to the caller, nested loops run serially, and the
// threaded kernels give the same bits at every thread count. Also the CPU allocator's
// block cache (core/cpu_runtime.cpp).
#include <atomic>
#include <thread>

#include "test_util.h"

namespace kiln {
namespace {

// Restores the thread budget a test changed.
struct ThreadsGuard {
  int saved = num_threads();
  ~ThreadsGuard() { set_num_threads(saved); }
};

TEST_CASE("parallel_for covers the range once at every thread count", "[parallel]") {
  ThreadsGuard guard;
  CHECK(num_threads() >= 1);
  CHECK(physical_cores() >= 1);
  for (int t : {1, 2, 3, 8}) {
    set_num_threads(t);
    CHECK(num_threads() == t);
    for (int64_t n : {int64_t{0}, int64_t{1}, int64_t{7}, int64_t{1000}, int64_t{100003}}) {
      std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
      std::atomic<int> calls{0};
      parallel_for(n, 100, [&](int64_t b, int64_t e) {
        ++calls;
        for (int64_t i = b; i < e; ++i) ++hits[static_cast<size_t>(i)];
      });
      int64_t bad = 0;
      for (auto& h : hits) bad += h.load() != 1;
      CHECK(bad == 0);
      if (n > 0 && n < 200) CHECK(calls.load() == 1);  // below two grains: one call, no threads
      if (n >= 200) CHECK(calls.load() == std::min<int64_t>(t, n / 100));
    }
  }
}

TEST_CASE("parallel_for passes an exception to the caller and nests serially", "[parallel]") {
  ThreadsGuard guard;
  set_num_threads(2);
  CHECK_THROWS_WITH(parallel_for(1000, 10, [](int64_t b, int64_t) {
                      if (b > 0) throw Error("thrown in a worker");
                    }),
                    "thrown in a worker");
  std::atomic<int> inner_calls{0};
  parallel_for(1000, 10, [&](int64_t, int64_t) {
    parallel_for(1000, 10, [&](int64_t b, int64_t e) {
      CHECK(b == 0);
      CHECK(e == 1000);
      ++inner_calls;
    });
  });
  CHECK(inner_calls.load() == 2);
  std::vector<int> seen(50, 0);
  parallel_chunks(50, [&](int64_t c) { ++seen[static_cast<size_t>(c)]; });
  CHECK(std::count(seen.begin(), seen.end(), 1) == 50);
  CHECK_THROWS_WITH(set_num_threads(0), Catch::Contains("at least 1"));
}

TEST_CASE("threaded CPU kernels give the same bits at 1, 2 and 3 threads", "[parallel]") {
  ThreadsGuard guard;
  // Large enough to split: 4 x 8 x 40 x 40 = 51200 elements.
  Tensor x = test::random_tensor({4, 8, 40, 40}, DType::F32, 1);
  Tensor y = test::random_tensor({4, 8, 40, 40}, DType::F32, 2);
  Tensor row = test::random_tensor({1, 8, 1, 40}, DType::F32, 3);
  Tensor w = test::random_tensor({8}, DType::F32, 4), b = test::random_tensor({8}, DType::F32, 5);
  auto run = [&] {
    std::vector<Tensor> out;
    out.push_back(add(x, y));
    out.push_back(mul(x, row));                        // broadcast rows
    out.push_back(exp(x.transpose(2, 3)));             // strided rows
    out.push_back(where(gt(x, 0.0), x, y));
    out.push_back(clamp(x, -0.5, 0.5));
    out.push_back(x.transpose(1, 3).contiguous());     // copy
    Tensor acc = y.clone();
    acc.add_(x);
    out.push_back(acc);
    Tensor xg = x.detach().requires_grad_(true);
    Tensor wg = w.detach().requires_grad_(true), bg = b.detach().requires_grad_(true);
    Tensor bn = batch_norm(xg, Tensor(), Tensor(), wg, bg, true, 0.1, 1e-5);
    out.push_back(bn);
    sum(mul(bn, y)).backward();
    out.push_back(xg.grad());
    out.push_back(wg.grad());
    out.push_back(bg.grad());
    return out;
  };
  set_num_threads(1);
  const auto one = run();
  for (int t : {2, 3}) {
    set_num_threads(t);
    const auto many = run();
    for (size_t i = 0; i < one.size(); ++i) {
      INFO("output " << i << " at " << t << " threads");
      CHECK(test::bit_equal(many[i], one[i]));
    }
  }
}

TEST_CASE("the CPU allocator hands freed blocks back and empties its cache", "[parallel][allocator]") {
  Allocator& a = runtime(kCPU).allocator();
  a.empty_cache(kCPU);
  const MemoryStats s0 = a.stats(kCPU);
  CHECK(s0.reserved == s0.allocated);
  void* p = a.allocate(100000, kCPU);
  a.deallocate(p, 100000, kCPU);
  const MemoryStats s1 = a.stats(kCPU);
  CHECK(s1.allocated == s0.allocated);
  CHECK(s1.reserved >= s1.allocated + 100000);  // the block stays cached
  void* q = a.allocate(99000, kCPU);            // same rounded size: the same block
  CHECK(q == p);
  a.deallocate(q, 99000, kCPU);
  a.empty_cache(kCPU);
  const MemoryStats s2 = a.stats(kCPU);
  CHECK(s2.reserved == s2.allocated);
}

}  // namespace
}  // namespace kiln
