// The CPU runtime (aligned-malloc allocator with statistics, memcpy) and the CPU halves of
// core's kernel slots (core/kernel_list.h): fill, copy, random and accumulate. The CPU
// half of `reduce` is ops/cpu/reduce.cpp.
#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <unordered_map>
#include <vector>

#include <kiln/core/cpu_loops.h>
#include <kiln/core/kernel_list.h>
#include <kiln/core/cpu_philox.h>
#include <kiln/core/parallel.h>
#include <kiln/core/philox.h>
#include <kiln/core/runtime.h>

namespace kiln {
namespace {

// Aligned malloc with a cache of freed blocks: a training step frees and allocates the
// same sizes every iteration, and handing a block straight back saves the page faults and
// zeroing a fresh allocation costs (they were about a tenth of a CPU step). Blocks are
// kept per rounded size up to a cap on the cached bytes (KILN_CPU_CACHE_MB, default 1024;
// 0 turns the cache off); empty_cache() returns them all to the system.
class CpuAllocator final : public Allocator {
 public:
  CpuAllocator() {
    if (const char* s = std::getenv("KILN_CPU_CACHE_MB"); s && *s) {
      char* end = nullptr;
      long long mb = std::strtoll(s, &end, 10);
      if (end && *end == '\0' && mb >= 0) cap_ = static_cast<size_t>(mb) << 20;
    }
  }
  ~CpuAllocator() override { release_all(); }

  void* allocate(size_t nbytes, Device) override {
    const size_t rounded = round(nbytes);
    void* p = nullptr;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = cache_.find(rounded);
      if (it != cache_.end() && !it->second.empty()) {
        p = it->second.back();
        it->second.pop_back();
        cached_ -= rounded;
      }
    }
    if (!p) {
      p = std::aligned_alloc(64, rounded);
      if (!p) {
        empty_cache(kCPU);  // retry once with the cache handed back
        p = std::aligned_alloc(64, rounded);
      }
      if (!p) throw OutOfMemory(detail::str("CPU allocation of ", nbytes, " bytes failed"));
    }
    int64_t now = allocated_ += static_cast<int64_t>(nbytes);
    int64_t peak = peak_.load();
    while (now > peak && !peak_.compare_exchange_weak(peak, now)) {
    }
    ++count_;
    return p;
  }
  void deallocate(void* p, size_t nbytes, Device) noexcept override {
    allocated_ -= static_cast<int64_t>(nbytes);
    const size_t rounded = round(nbytes);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (cached_ + rounded <= cap_) {
        try {
          cache_[rounded].push_back(p);
          cached_ += rounded;
          return;
        } catch (...) {  // no memory for the list: free the block instead
        }
      }
    }
    std::free(p);
  }
  MemoryStats stats(Device) const override {
    MemoryStats s;
    s.allocated = allocated_;
    s.peak_allocated = peak_;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      s.reserved = allocated_ + static_cast<int64_t>(cached_);
    }
    s.num_allocs = count_;
    return s;
  }
  void reset_peak(Device) override { peak_ = allocated_.load(); }
  void empty_cache(Device) override { release_all(); }

 private:
  // 64-byte multiples up to 4 KiB, then 4 KiB multiples: few distinct sizes, little waste.
  static size_t round(size_t n) { return n <= 4096 ? (n + 63) / 64 * 64 : (n + 4095) / 4096 * 4096; }
  void release_all() noexcept {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto& [size, blocks] : cache_)
      for (void* b : blocks) std::free(b);
    cache_.clear();
    cached_ = 0;
  }

  mutable std::mutex mutex_;
  std::unordered_map<size_t, std::vector<void*>> cache_;
  size_t cached_ = 0, cap_ = size_t{1024} << 20;
  std::atomic<int64_t> allocated_{0}, peak_{0}, count_{0};
};

class CpuRuntime final : public DeviceRuntime {
 public:
  const char* name() const override { return "cpu"; }
  int device_count() override { return 1; }
  Allocator& allocator() override { return allocator_; }
  void copy_bytes(void* dst, Device dd, const void* src, Device sd, size_t n) override {
    KILN_CHECK(dd.is_cpu() && sd.is_cpu(), "cpu runtime: cannot copy between ", sd.str(), " and ", dd.str());
    if (n) std::memcpy(dst, src, n);
  }
  void synchronize(Device) override {}

 private:
  CpuAllocator allocator_;
};

}  // namespace

DeviceRuntime& cpu_runtime() {
  static CpuRuntime r;
  return r;
}

namespace cpu {
using namespace kiln::detail;

void fill(const TensorView& out, const FillParams& p) {
  visit_dtype(out.dtype, [&](auto tag) {
    using T = decltype(tag);
    T value;
    if constexpr (is_half_v<T>) value = T(static_cast<float>(p.value.to_double()));
    else value = p.value.to<T>();
    T* base = out.ptr<T>();
    parallel_for_each_row<1>(out, {&out}, kElementwiseGrain, [&](const auto& off, int64_t n, const auto& st) {
      T* q = base + off[0];
      if (st[0] == 1) std::fill(q, q + n, value);
      else for (int64_t i = 0; i < n; ++i) q[i * st[0]] = value;
    });
  });
}

void copy(const TensorView& src, const TensorView& out) {
  visit_dtype(src.dtype, [&](auto stag) {
    using S = decltype(stag);
    visit_dtype(out.dtype, [&](auto otag) {
      using O = decltype(otag);
      const S* s = src.ptr<const S>();
      O* o = out.ptr<O>();
      if (src.contiguous && out.contiguous && src.dtype == out.dtype) {
        std::memmove(static_cast<void*>(o), static_cast<const void*>(s), static_cast<size_t>(out.numel) * sizeof(O));
        return;
      }
      // Through a temporary when the two overlap in memory, so that reads see old values.
      if (src.shares_storage(out)) {
        Tensor tmp = empty(shape_of(src), TensorOptions(src.dtype, kCPU));
        TensorView t = kernel_view(tmp);
        copy(src, t);
        copy(t, out);
        return;
      }
      parallel_for_each_row<2>(out, {&src, &out}, kElementwiseGrain, [&](const auto& off, int64_t n, const auto& st) {
        const S* a = s + off[0];
        O* b = o + off[1];
        if (st[0] == 1 && st[1] == 1) for (int64_t i = 0; i < n; ++i) b[i] = convert<O>(a[i]);
        else for (int64_t i = 0; i < n; ++i) b[i * st[1]] = convert<O>(a[i * st[0]]);
      });
    });
  });
}

void random(const TensorView& out, const RandomParams& p) {
  // Blocks of consecutive counters: the generator's words for a block in vector registers
  // (philox_words), then each element's sample from them. The blocks run in parallel; an
  // element's value depends on its counter alone, so the thread count changes nothing.
  constexpr int64_t kBlock = 1024;
  const int64_t n = out.numel;
  visit_dtype(out.dtype, [&](auto tag) {
    using T = decltype(tag);
    T* o = out.ptr<T>();
    constexpr bool f64 = std::is_same_v<T, double>;
    [[maybe_unused]] constexpr int bits = std::is_same_v<T, Half> ? 11 : std::is_same_v<T, BFloat16> ? 8 : 24;
    const int words = p.kind == RandomKind::Int ? 2 : p.kind == RandomKind::Uniform ? (f64 ? 2 : 1) : (f64 ? 4 : 2);
    const float fa = static_cast<float>(p.a), fb = static_cast<float>(p.b);
    parallel_for((n + kBlock - 1) / kBlock, 2, [&](int64_t b0, int64_t b1) {
      uint32_t w[4 * kBlock];
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t i0 = b * kBlock, m = std::min(kBlock, n - i0);
        philox_words(p.seed, p.offset + static_cast<uint64_t>(i0), m, words, w);
        const uint32_t *x0 = w, *x1 = w + m, *x2 = w + 2 * m, *x3 = w + 3 * m;
        T* q = o + i0;
        if (p.kind == RandomKind::Int) {
          const int64_t lo = static_cast<int64_t>(p.a), hi = static_cast<int64_t>(p.b);
          for (int64_t i = 0; i < m; ++i) q[i] = convert<T>(philox_int_from(x0[i], x1[i], lo, hi));
        } else if constexpr (f64) {
          if (p.kind == RandomKind::Uniform)
            for (int64_t i = 0; i < m; ++i) q[i] = philox_uniform_from(x0[i], x1[i], p.a, p.b);
          else
            for (int64_t i = 0; i < m; ++i) q[i] = philox_normal_from(x0[i], x1[i], x2[i], x3[i], p.a, p.b);
        } else {
          if (p.kind == RandomKind::Uniform)
            for (int64_t i = 0; i < m; ++i) q[i] = convert<T>(philox_uniform_from(x0[i], fa, fb, bits));
          else
            for (int64_t i = 0; i < m; ++i) q[i] = convert<T>(philox_normal_from(x0[i], x1[i], fa, fb));
        }
      }
    });
  });
}

void accumulate(const TensorView& out, const TensorView& g) {
  visit_dtype(out.dtype, [&](auto tag) {
    using T = decltype(tag);
    if constexpr (std::is_same_v<T, bool>) {
      throw Error("accumulate: bool tensors cannot be summed");
    } else {
      T* o = out.ptr<T>();
      const T* a = g.ptr<const T>();
      // In parallel unless g overlaps out (then in order, as the sum was defined).
      const int64_t grain = g.shares_storage(out) ? std::numeric_limits<int64_t>::max() / 4 : kElementwiseGrain;
      parallel_for_each_row<2>(out, {&g, &out}, grain, [&](const auto& off, int64_t n, const auto& st) {
        const T* x = a + off[0];
        T* y = o + off[1];
        if constexpr (is_half_v<T>) {
          for (int64_t i = 0; i < n; ++i)
            y[i * st[1]] = T(static_cast<float>(y[i * st[1]]) + static_cast<float>(x[i * st[0]]));
        } else if (st[0] == 1 && st[1] == 1) {
          for (int64_t i = 0; i < n; ++i) y[i] += x[i];
        } else {
          for (int64_t i = 0; i < n; ++i) y[i * st[1]] += x[i * st[0]];
        }
      });
    }
  });
}

}  // namespace cpu
}  // namespace kiln
