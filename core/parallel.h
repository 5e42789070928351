// The CPU backend's one thread budget and its parallel loop.
//
// Every CPU kernel that splits work over threads does it through parallel_for /
// parallel_chunks below, which run on one OpenMP pool (the compiler's libgomp). OpenBLAS
// (its OpenMP build) and oneDNN run on that same pool, so kiln's loops, its GEMMs and its
// convolutions share one budget and never oversubscribe the cores: a GEMM called inside a
// parallel loop runs on its calling thread, and a loop nested inside another runs serially.
//
// The budget is KILN_NUM_THREADS when set, else the physical cores this process may run on
// (kiln-run divides them between the processes it starts on a machine). set_num_threads
// changes it at run time, for kiln's loops, OpenBLAS and oneDNN together.
//
// Results never depend on the number of threads: elementwise loops write disjoint
// elements, and every loop that sums splits its work into blocks of a fixed size (not one
// per thread) and adds the partial sums in block order.
#pragma once
#include <cstdint>
#include <utility>

namespace kiln {

// The number of threads the CPU backend uses (>= 1).
int num_threads();
// Sets it (n >= 1) for kiln's loops, OpenBLAS and oneDNN; throws kiln::Error for n < 1.
void set_num_threads(int n);
// The physical cores this process may run on (its CPU affinity, hyper-threads counted once).
int physical_cores();
// Whether the calling thread is inside a parallel_for body (nested loops run serially).
bool in_parallel_region();

namespace detail {
void parallel_run(int64_t chunks, void (*body)(void*, int64_t), void* ctx);
// Sets the calling thread's OpenMP thread count to the budget (oneDNN reads it per thread).
void sync_openmp_threads();
}

// Calls f(begin, end) over [0, n) split into contiguous ranges, in parallel when n is at
// least 2 * grain and more than one thread is allowed. Ranges have at least `grain`
// elements; f must only write what its range owns.
template <class F> void parallel_for(int64_t n, int64_t grain, F&& f) {
  if (n <= 0) return;
  if (grain < 1) grain = 1;
  const int threads = num_threads();
  if (threads == 1 || n < 2 * grain || in_parallel_region()) {
    f(int64_t{0}, n);
    return;
  }
  int64_t chunks = n / grain;
  if (chunks > threads) chunks = threads;
  struct Ctx {
    F* f;
    int64_t n, chunks;
  } ctx{&f, n, chunks};
  detail::parallel_run(chunks, [](void* p, int64_t c) {
    auto* x = static_cast<Ctx*>(p);
    const int64_t begin = x->n * c / x->chunks, end = x->n * (c + 1) / x->chunks;
    (*x->f)(begin, end);
  }, &ctx);
}

// Calls f(chunk) for chunk in [0, chunks), in parallel: for work already cut into pieces
// of a fixed size (the blocks of a deterministic sum), whatever the thread count.
template <class F> void parallel_chunks(int64_t chunks, F&& f) {
  if (chunks <= 0) return;
  if (chunks == 1 || num_threads() == 1 || in_parallel_region()) {
    for (int64_t c = 0; c < chunks; ++c) f(c);
    return;
  }
  detail::parallel_run(chunks, [](void* p, int64_t c) { (*static_cast<F*>(p))(c); }, &f);
}

}  // namespace kiln
