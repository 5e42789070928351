// The CPU backend's memory, copies, fill and random numbers, and its registration.
#include <kiln/ops/cpu/cpu_backend.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>

#include <kiln/core/philox.h>
#include <kiln/ops/cpu/loops.h>

namespace kiln::detail {
namespace {

class CpuAllocator final : public Allocator {
 public:
  void* allocate(size_t nbytes, Device) override {
    size_t rounded = (nbytes + 63) / 64 * 64;
    void* p = std::aligned_alloc(64, rounded);
    if (!p) throw OutOfMemory(str("CPU allocation of ", nbytes, " bytes failed"));
    int64_t now = allocated_ += static_cast<int64_t>(nbytes);
    int64_t peak = peak_.load();
    while (now > peak && !peak_.compare_exchange_weak(peak, now)) {
    }
    ++count_;
    return p;
  }
  void deallocate(void* p, size_t nbytes, Device) noexcept override {
    std::free(p);
    allocated_ -= static_cast<int64_t>(nbytes);
  }
  MemoryStats stats(Device) const override {
    MemoryStats s;
    s.allocated = allocated_;
    s.peak_allocated = peak_;
    s.reserved = allocated_;
    s.num_allocs = count_;
    return s;
  }
  void reset_peak(Device) override { peak_ = allocated_.load(); }

 private:
  std::atomic<int64_t> allocated_{0}, peak_{0}, count_{0};
};

}  // namespace

Allocator& CpuBackend::allocator() {
  static CpuAllocator a;
  return a;
}

void CpuBackend::copy_bytes(void* dst, Device dd, const void* src, Device sd, size_t n) {
  KILN_CHECK(dd.is_cpu() && sd.is_cpu(), "cpu backend: cannot copy between ", sd.str(), " and ", dd.str());
  if (n) std::memcpy(dst, src, n);
}

void CpuBackend::fill(const Tensor& out, Scalar v) {
  visit_dtype(out.dtype(), [&](auto tag) {
    using T = decltype(tag);
    T value;
    if constexpr (is_half_v<T>) value = T(static_cast<float>(v.to_double()));
    else value = v.to<T>();
    T* p = static_cast<T*>(out.data_ptr());
    for_each_row<1>(out.sizes(), {&out.strides()}, [&](const auto& off, int64_t n, const auto& st) {
      T* q = p + off[0];
      if (st[0] == 1) std::fill(q, q + n, value);
      else for (int64_t i = 0; i < n; ++i) q[i * st[0]] = value;
    });
  });
}

void CpuBackend::copy(const Tensor& src, const Tensor& out) {
  visit_dtype(src.dtype(), [&](auto stag) {
    using S = decltype(stag);
    visit_dtype(out.dtype(), [&](auto otag) {
      using O = decltype(otag);
      const S* s = static_cast<const S*>(src.data_ptr());
      O* o = static_cast<O*>(out.data_ptr());
      if (src.is_contiguous() && out.is_contiguous() && src.dtype() == out.dtype()) {
        std::memmove(static_cast<void*>(o), static_cast<const void*>(s), static_cast<size_t>(out.numel()) * sizeof(O));
        return;
      }
      // Through a temporary when the two overlap in memory, so that reads see old values.
      if (src.shares_storage(out)) {
        Tensor tmp = empty(src.sizes(), TensorOptions(src.dtype(), kCPU));
        copy(src, tmp);
        copy(tmp, out);
        return;
      }
      for_each_row<2>(out.sizes(), {&src.strides(), &out.strides()}, [&](const auto& off, int64_t n, const auto& st) {
        const S* a = s + off[0];
        O* b = o + off[1];
        if (st[0] == 1 && st[1] == 1) for (int64_t i = 0; i < n; ++i) b[i] = convert<O>(a[i]);
        else for (int64_t i = 0; i < n; ++i) b[i * st[1]] = convert<O>(a[i * st[0]]);
      });
    });
  });
}

void CpuBackend::random(const Tensor& out, RandomKind kind, uint64_t seed, uint64_t offset, double a, double b) {
  visit_dtype(out.dtype(), [&](auto tag) {
    using T = decltype(tag);
    T* p = static_cast<T*>(out.data_ptr());
    int64_t n = out.numel();
    for (int64_t i = 0; i < n; ++i) {
      uint64_t c = offset + static_cast<uint64_t>(i);
      if (kind == RandomKind::Int) {
        p[i] = convert<T>(philox_int_sample(seed, c, static_cast<int64_t>(a), static_cast<int64_t>(b)));
      } else if constexpr (std::is_same_v<T, double>) {
        p[i] = kind == RandomKind::Uniform ? philox_uniform_sample_f64(seed, c, a, b)
                                           : philox_normal_sample_f64(seed, c, a, b);
      } else {
        float fa = static_cast<float>(a), fb = static_cast<float>(b);
        constexpr int bits = std::is_same_v<T, Half> ? 11 : std::is_same_v<T, BFloat16> ? 8 : 24;
        float v = kind == RandomKind::Uniform ? philox_uniform_sample_f32(seed, c, fa, fb, bits)
                                              : philox_normal_sample_f32(seed, c, fa, fb);
        p[i] = convert<T>(v);
      }
    }
  });
}

namespace {
struct Registrar {
  Registrar() {
    static CpuBackend backend;
    register_backend(DeviceType::CPU, &backend);
  }
} registrar;
}  // namespace

}  // namespace kiln::detail
