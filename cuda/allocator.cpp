// The stream-ordered pool allocator (see allocator.h). CUDA's pool does the caching, the
// splitting and the stream-ordered reuse; this file adds kiln's accounting, the
// out-of-memory retry and a message that says what to do about it. Per-device state is
// created once and never destroyed, so tensors released by static destructors at exit
// still find it.
#include <kiln/cuda/allocator.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <mutex>
#include <cstdlib>
#include <string>
#include <unordered_map>
#include <vector>

#include <kiln/core/error.h>
#include <kiln/core/log.h>
#include <kiln/cuda/device.h>
#include <kiln/cuda/error.h>

namespace kiln::cuda {
namespace {

struct PoolState {
  std::once_flag init;
  std::atomic<bool> ready{false};
  // Devices without pool support (rare: some virtualised GPUs) fall back to
  // cudaMalloc/cudaFree, which are correct but synchronise the device.
  bool use_pool = true;
  cudaMemPool_t pool = nullptr;
  std::atomic<int64_t> allocated{0}, peak{0}, num_allocs{0};
  // Per live block: the stream it was allocated on (its free is ordered there) and the
  // other streams record_stream() said use it (the free waits for their work first).
  struct BlockStreams {
    cudaStream_t alloc = nullptr;
    std::vector<cudaStream_t> users;
  };
  std::mutex blocks_mu;
  std::unordered_map<void*, BlockStreams> blocks;
};

// The pool keeps up to this many bytes of freed memory cached across synchronisations
// (above it, the driver takes the excess back at the next synchronisation): by default
// 80% of the device's memory, so a training step reuses its blocks without fresh
// cudaMalloc calls while other processes on the GPU (a second rank, NCCL's buffers) are
// not starved. KILN_CUDA_CACHE_LIMIT sets it: bytes ("8000000000") or a fraction of the
// device's memory ("0.5").
uint64_t release_threshold(int device) {
  size_t free_b = 0, total_b = 0;
  KILN_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
  double fraction = 0.8;
  if (const char* env = std::getenv("KILN_CUDA_CACHE_LIMIT"); env && *env) {
    char* end = nullptr;
    double v = std::strtod(env, &end);
    if (end == env || *end != '\0' || !(v >= 0))
      throw Error(detail::str("KILN_CUDA_CACHE_LIMIT='", env, "' is neither a byte count nor a fraction in [0, 1]"));
    if (v > 1) return static_cast<uint64_t>(v);
    fraction = v;
  }
  return static_cast<uint64_t>(fraction * static_cast<double>(total_b));
}

std::vector<PoolState>& pool_states() {
  static auto* states = new std::vector<PoolState>(static_cast<size_t>(device_count()));
  return *states;
}

PoolState& state(int device) {
  int n = device_count();
  if (device < 0 || device >= n) {
    throw DeviceError(detail::str("CUDA allocator: device cuda:", device, " requested, but ",
                                  n == 0 ? std::string("no usable CUDA device was found (") + unavailable_reason() + ")"
                                         : std::to_string(n) + " device(s) are visible"));
  }
  return pool_states()[static_cast<size_t>(device)];
}

// Call with `device` current.
void ensure_ready(PoolState& st, int device) {
  std::call_once(st.init, [&] {
    int supported = 0;
    KILN_CUDA_CHECK(cudaDeviceGetAttribute(&supported, cudaDevAttrMemoryPoolsSupported, device));
    if (!supported) {
      st.use_pool = false;
      log_warn("cuda:", device, " does not support stream-ordered memory pools; kiln falls back to cudaMalloc/",
               "cudaFree, which synchronise the device on every free");
    } else {
      KILN_CUDA_CHECK(cudaDeviceGetDefaultMemPool(&st.pool, device));
      // The default threshold (0) hands freed memory back to the driver at every stream
      // synchronisation, which turns each training step into fresh cudaMalloc calls; an
      // unlimited one never gives anything back to other processes.
      uint64_t threshold = release_threshold(device);
      KILN_CUDA_CHECK(cudaMemPoolSetAttribute(st.pool, cudaMemPoolAttrReleaseThreshold, &threshold));
    }
    st.ready.store(true, std::memory_order_release);
  });
}

cudaError_t raw_allocate(const PoolState& st, void** p, size_t nbytes, cudaStream_t stream) {
  return st.use_pool ? cudaMallocFromPoolAsync(p, nbytes, st.pool, stream) : cudaMalloc(p, nbytes);
}

int64_t pool_reserved(const PoolState& st) {
  if (!st.ready.load(std::memory_order_acquire)) return 0;
  if (!st.use_pool) return st.allocated.load();
  uint64_t reserved = 0;
  KILN_CUDA_CHECK(cudaMemPoolGetAttribute(st.pool, cudaMemPoolAttrReservedMemCurrent, &reserved));
  return static_cast<int64_t>(reserved);
}

std::string format_bytes(double b) {
  const char* units[] = {"bytes", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (b >= 1024.0 && u < 4) {
    b /= 1024.0;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof(buf), u == 0 ? "%.0f %s" : "%.2f %s", b, units[u]);
  return buf;
}

std::string oom_message(const PoolState& st, int device, size_t nbytes) {
  size_t free_b = 0, total_b = 0;
  std::string device_mem;
  cudaError_t info = cudaMemGetInfo(&free_b, &total_b);
  if (info == cudaSuccess) {
    device_mem = detail::str(format_bytes(static_cast<double>(free_b)), " free of ",
                             format_bytes(static_cast<double>(total_b)), " total");
  } else {
    (void)cudaGetLastError();
    device_mem = "unknown free memory (" + describe_cuda_error(info) + ")";
  }
  int64_t reserved = 0;
  try {
    reserved = pool_reserved(st);
  } catch (const Error&) {
    reserved = -1;
  }
  return detail::str("CUDA out of memory on cuda:", device, ": tried to allocate ",
                     format_bytes(static_cast<double>(nbytes)), " (", nbytes, " bytes); the device has ", device_mem,
                     "; kiln holds ", format_bytes(static_cast<double>(st.allocated.load())), " in live tensors and ",
                     reserved < 0 ? std::string("an unknown amount") : format_bytes(static_cast<double>(reserved)),
                     " reserved by its pool (the pool's cache was already released for this retry). "
                     "Free tensors you no longer need, or reduce the batch size");
}

class CudaAllocator final : public Allocator {
 public:
  void* allocate(size_t nbytes, Device device) override {
    KILN_CHECK(device.is_cuda(), "CUDA allocator: cannot allocate on ", device.str());
    if (nbytes == 0) return nullptr;
    PoolState& st = state(device.index);
    DeviceGuard guard(device);
    ensure_ready(st, device.index);
    cudaStream_t stream = current_stream(device.index);
    void* p = nullptr;
    // Blocks are whole 16-byte units: kernels that read or CAS the aligned word or vector
    // around an element (the byte atomics of cuda/kernels/index.cu; 16-byte loads) then
    // never touch bytes outside the allocation (compute-sanitizer's memcheck flagged a
    // 2,145-byte u8 scatter_add target before this). The accounting keeps the size asked for.
    const size_t padded = (nbytes + 15) & ~size_t{15};
    cudaError_t status = raw_allocate(st, &p, padded, stream);
    if (status == cudaErrorMemoryAllocation) {
      (void)cudaGetLastError();
      // Blocks freed on other streams return to the pool only once those frees have run,
      // and the cache may be too fragmented for this request: wait for the device, hand
      // the whole cache back to the driver, and try once more.
      log_debug("CUDA allocation of ", nbytes, " bytes on cuda:", device.index,
                " failed; synchronising and releasing the pool's cache before retrying");
      KILN_CUDA_CHECK(cudaDeviceSynchronize());
      if (st.use_pool) KILN_CUDA_CHECK(cudaMemPoolTrimTo(st.pool, 0));
      status = raw_allocate(st, &p, padded, stream);
      if (status == cudaErrorMemoryAllocation) {
        (void)cudaGetLastError();
        throw OutOfMemory(oom_message(st, device.index, nbytes));
      }
    }
    if (status != cudaSuccess) throw_cuda_error(status, "cudaMallocFromPoolAsync", __FILE__, __LINE__);

    int64_t now = st.allocated.fetch_add(static_cast<int64_t>(nbytes)) + static_cast<int64_t>(nbytes);
    int64_t peak = st.peak.load();
    while (now > peak && !st.peak.compare_exchange_weak(peak, now)) {
    }
    st.num_allocs.fetch_add(1);
    {
      std::lock_guard<std::mutex> lock(st.blocks_mu);
      st.blocks[p] = PoolState::BlockStreams{stream, {}};
    }
    return p;
  }

  // The block goes back to the pool in the order of the stream it was allocated on, after
  // the work queued so far on every stream record_stream() named (PyTorch's record_stream
  // semantics): kernels already queued that use it still run before any reuse, whichever
  // stream is current when the tensor dies.
  void deallocate(void* p, size_t nbytes, Device device) noexcept override {
    if (p == nullptr) return;
    try {
      PoolState& st = state(device.index);
      st.allocated.fetch_sub(static_cast<int64_t>(nbytes));
      PoolState::BlockStreams bs;
      {
        std::lock_guard<std::mutex> lock(st.blocks_mu);
        auto it = st.blocks.find(p);
        if (it != st.blocks.end()) {
          bs = std::move(it->second);
          st.blocks.erase(it);
        }
      }
      cudaStream_t stream = bs.alloc ? bs.alloc : current_stream(device.index);
      // Plain calls rather than DeviceGuard: at process exit the runtime may already be
      // unloading, and KILN_CUDA_WARN stays quiet about exactly that.
      int prev = 0;
      if (!KILN_CUDA_WARN(cudaGetDevice(&prev))) return;
      if (prev != device.index && !KILN_CUDA_WARN(cudaSetDevice(device.index))) return;
      for (cudaStream_t user : bs.users) {
        if (user == stream) continue;
        cudaEvent_t ev = nullptr;
        if (!KILN_CUDA_WARN(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming))) continue;
        if (KILN_CUDA_WARN(cudaEventRecord(ev, user))) KILN_CUDA_WARN(cudaStreamWaitEvent(stream, ev, 0));
        KILN_CUDA_WARN(cudaEventDestroy(ev));
      }
      if (st.use_pool) KILN_CUDA_WARN(cudaFreeAsync(p, stream));
      else KILN_CUDA_WARN(cudaFree(p));
      if (prev != device.index) KILN_CUDA_WARN(cudaSetDevice(prev));
    } catch (const std::exception& e) {
      try {
        log_error("CUDA allocator: freeing ", nbytes, " bytes on cuda:", device.index, " failed: ", e.what());
      } catch (...) {
      }
    }
  }

  MemoryStats stats(Device device) const override { return memory_stats(device.index); }
  void reset_peak(Device device) override { reset_peak_memory_stats(device.index); }
  void empty_cache(Device device) override { cuda::empty_cache(device.index); }
};

}  // namespace

Allocator& cuda_allocator() {
  static auto* allocator = new CudaAllocator();  // outlives static tensors; see file comment
  return *allocator;
}

void record_stream(void* block, int device, cudaStream_t stream) {
  if (block == nullptr) return;
  PoolState& st = state(device);
  std::lock_guard<std::mutex> lock(st.blocks_mu);
  auto it = st.blocks.find(block);
  KILN_CHECK(it != st.blocks.end(), "record_stream: ", block, " is not the start of a live block of cuda:", device,
             "'s allocator");
  for (cudaStream_t s : it->second.users)
    if (s == stream) return;
  it->second.users.push_back(stream);
}

MemoryStats memory_stats(int device) {
  PoolState& st = state(device);
  MemoryStats s;
  s.allocated = st.allocated.load();
  s.peak_allocated = st.peak.load();
  s.num_allocs = st.num_allocs.load();
  s.reserved = pool_reserved(st);
  return s;
}

void reset_peak_memory_stats(int device) {
  PoolState& st = state(device);
  st.peak.store(st.allocated.load());
  if (st.ready.load(std::memory_order_acquire) && st.use_pool) {
    uint64_t zero = 0;  // the only value these attributes accept: restart from the current usage
    KILN_CUDA_CHECK(cudaMemPoolSetAttribute(st.pool, cudaMemPoolAttrReservedMemHigh, &zero));
    KILN_CUDA_CHECK(cudaMemPoolSetAttribute(st.pool, cudaMemPoolAttrUsedMemHigh, &zero));
  }
}

void empty_cache(int device) {
  PoolState& st = state(device);
  if (!st.ready.load(std::memory_order_acquire) || !st.use_pool) return;
  DeviceGuard guard(device);
  // Blocks whose stream-ordered free has not run yet are still in use; waiting first lets
  // the trim release them too.
  KILN_CUDA_CHECK(cudaDeviceSynchronize());
  KILN_CUDA_CHECK(cudaMemPoolTrimTo(st.pool, 0));
}

}  // namespace kiln::cuda
