// The CPU thread budget (core/parallel.h) on the compiler's OpenMP runtime, shared with
// OpenBLAS' OpenMP build and oneDNN.
#include <kiln/core/parallel.h>

#include <sched.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <mutex>
#include <set>
#include <string>
#include <utility>

#include <cblas.h>
#include <omp.h>

#include <kiln/core/error.h>

namespace kiln {
namespace {

thread_local bool t_in_parallel = false;

int read_int(const std::string& path, int fallback) {
  std::ifstream f(path);
  int v;
  return (f >> v) ? v : fallback;
}

int budget_from_environment() {
  if (const char* s = std::getenv("KILN_NUM_THREADS"); s && *s) {
    char* end = nullptr;
    long v = std::strtol(s, &end, 10);
    KILN_CHECK(end && *end == '\0' && v >= 1 && v <= 4096, "KILN_NUM_THREADS='", s,
               "' is not a thread count (a whole number from 1 to 4096)");
    return static_cast<int>(v);
  }
  return physical_cores();
}

void apply(int n) {
  omp_set_num_threads(n);
  openblas_set_num_threads(n);
}

std::atomic<int>& budget() {
  static std::atomic<int> b = [] {
    int n = budget_from_environment();
    apply(n);
    return n;
  }();
  return b;
}

}  // namespace

int physical_cores() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) != 0) return 1;
  std::set<std::pair<int, int>> cores;
  int logical = 0;
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
    if (!CPU_ISSET(cpu, &set)) continue;
    ++logical;
    const std::string topo = "/sys/devices/system/cpu/cpu" + std::to_string(cpu) + "/topology/";
    cores.emplace(read_int(topo + "physical_package_id", 0), read_int(topo + "core_id", cpu));
  }
  return std::max(1, static_cast<int>(cores.empty() ? logical : cores.size()));
}

int num_threads() { return budget().load(std::memory_order_relaxed); }

void set_num_threads(int n) {
  KILN_CHECK(n >= 1, "set_num_threads: the thread count must be at least 1, got ", n);
  budget().store(n);
  apply(n);
}

bool in_parallel_region() { return t_in_parallel || omp_in_parallel(); }

namespace detail {

void parallel_run(int64_t chunks, void (*body)(void*, int64_t), void* ctx) {
  const int threads = static_cast<int>(std::min<int64_t>(num_threads(), chunks));
  std::exception_ptr error;
  std::mutex error_mutex;
  std::atomic<bool> failed{false};
#pragma omp parallel num_threads(threads)
  {
    t_in_parallel = true;
#pragma omp for schedule(static)
    for (int64_t c = 0; c < chunks; ++c) {
      if (failed.load(std::memory_order_relaxed)) continue;
      try {
        body(ctx, c);
      } catch (...) {  // an exception must not leave the parallel region: rethrown below
        std::lock_guard<std::mutex> lock(error_mutex);
        if (!error) error = std::current_exception();
        failed = true;
      }
    }
    t_in_parallel = false;
  }
  if (error) std::rethrow_exception(error);
}

// oneDNN reads the calling thread's OpenMP thread count: kernels call this before it.
void sync_openmp_threads() {
  const int n = num_threads();
  if (omp_get_max_threads() != n) omp_set_num_threads(n);
}

}  // namespace detail
}  // namespace kiln
