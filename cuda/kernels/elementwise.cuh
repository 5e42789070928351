// Helpers shared by the elementwise kernel files (unary.cu, binary.cu, clamp.cu,
// softmax.cu): precise math overloads for float/double, aligned small vectors, 32-bit
// strided offsets with precomputed divisors, splitting launches into < 2^31-element
// chunks, host predicates on TensorArgs, and the one-operand map launch (y = f(x): vector
// path or strided path). Include only from .cu files.
#pragma once
#include <climits>
#include <cstdint>
#include <type_traits>

#include <kiln/cuda/kernels/common.cuh>

namespace kiln::cuda {

// Raises kiln::Error from a launcher for a case the glue should have rejected (the .cu
// files keep kiln's heavy headers out, so this goes through cuda/error.cpp).
[[noreturn]] inline void launch_fail(const char* what) { throw_cuda_error(cudaErrorInvalidValue, what, __FILE__, __LINE__); }

// ---- precise math (never the __expf-style intrinsics) ----------------------------------
__device__ __forceinline__ float k_exp(float x) { return expf(x); }
__device__ __forceinline__ double k_exp(double x) { return exp(x); }
__device__ __forceinline__ float k_log(float x) { return logf(x); }
__device__ __forceinline__ double k_log(double x) { return log(x); }
__device__ __forceinline__ float k_sqrt(float x) { return sqrtf(x); }
__device__ __forceinline__ double k_sqrt(double x) { return sqrt(x); }
__device__ __forceinline__ float k_sin(float x) { return sinf(x); }
__device__ __forceinline__ double k_sin(double x) { return sin(x); }
__device__ __forceinline__ float k_cos(float x) { return cosf(x); }
__device__ __forceinline__ double k_cos(double x) { return cos(x); }
__device__ __forceinline__ float k_tanh(float x) { return tanhf(x); }
__device__ __forceinline__ double k_tanh(double x) { return tanh(x); }
__device__ __forceinline__ float k_erf(float x) { return erff(x); }
__device__ __forceinline__ double k_erf(double x) { return erf(x); }
__device__ __forceinline__ float k_abs(float x) { return fabsf(x); }
__device__ __forceinline__ double k_abs(double x) { return fabs(x); }
__device__ __forceinline__ float k_pow(float a, float b) { return powf(a, b); }
__device__ __forceinline__ double k_pow(double a, double b) { return pow(a, b); }
// fmax ignores a NaN operand, like std::max(m, x) in the CPU reference's softmax.
__device__ __forceinline__ float k_fmax(float a, float b) { return fmaxf(a, b); }
__device__ __forceinline__ double k_fmax(double a, double b) { return fmax(a, b); }
template <class T>
__device__ __forceinline__ bool k_isnan(T x) {
  if constexpr (std::is_floating_point_v<T>) return isnan(x);
  else return false;
}
template <class T>
__device__ __forceinline__ T neg_inf() {
  if constexpr (std::is_same_v<T, float>) return __int_as_float(0xff800000);
  else return __longlong_as_double(static_cast<long long>(0xfff0000000000000ull));
}

// ---- small aligned vectors ----------------------------------------------------------
// N elements loaded or stored as one access of sizeof(T) * N bytes (a power of two <= 16);
// used where an operand is narrower than the 128-bit lanes of the others (bool outputs
// and conditions next to wider values).
template <class T, int N>
struct alignas(sizeof(T) * N) Vec {
  T v[N];
  __device__ __forceinline__ T& operator[](int i) { return v[i]; }
  __device__ __forceinline__ const T& operator[](int i) const { return v[i]; }
};
template <int N, class T>
__device__ __forceinline__ Vec<T, N> load_vec(const T* p) {
  return *reinterpret_cast<const Vec<T, N>*>(p);
}
template <int N, class T>
__device__ __forceinline__ void store_vec(T* p, const Vec<T, N>& v) {
  *reinterpret_cast<Vec<T, N>*>(p) = v;
}

// ---- 32-bit strided offsets ------------------------------------------------------------
// Division by a fixed divisor as a multiply-high and a shift (Granlund & Montgomery; the
// form PyTorch's IntDivider uses). Exact for 0 <= n < 2^31 and 1 <= d <= 2^31 - 1.
struct FastDivmod {
  uint32_t divisor = 1, multiplier = 1, shift = 0;
  FastDivmod() = default;
  explicit FastDivmod(uint32_t d) : divisor(d) {
    shift = 0;
    while (shift < 32 && (uint64_t{1} << shift) < d) ++shift;
    multiplier = static_cast<uint32_t>(((uint64_t{1} << 32) * ((uint64_t{1} << shift) - d)) / d + 1);
  }
  __host__ __device__ __forceinline__ uint32_t div(uint32_t n) const {
#ifdef __CUDA_ARCH__
    uint32_t t = __umulhi(n, multiplier);
#else
    uint32_t t = static_cast<uint32_t>((static_cast<uint64_t>(n) * multiplier) >> 32);
#endif
    return (t + n) >> shift;
  }
};

// Element offsets of N operands that share one iteration space (sizes), for linear
// indices below 2^31. Offsets are 64-bit: a small view of a huge tensor is fine.
template <int N>
struct StridedOffsets {
  int ndim = 0;
  FastDivmod sizes[kArgMaxDims];
  int64_t strides[kArgMaxDims][N];

  __device__ __forceinline__ void get(uint32_t i, int64_t (&off)[N]) const {
#pragma unroll
    for (int k = 0; k < N; ++k) off[k] = 0;
#pragma unroll
    for (int d = kArgMaxDims - 1; d >= 0; --d) {
      if (d < ndim) {
        uint32_t idx = i;
        if (d > 0) {  // the outermost index is what is left: no division
          uint32_t q = sizes[d].div(i);
          idx = i - q * sizes[d].divisor;
          i = q;
        }
#pragma unroll
        for (int k = 0; k < N; ++k) off[k] += static_cast<int64_t>(idx) * strides[d][k];
      }
    }
  }
};

// N operand descriptions of one launch (plain array wrapper, copied by value).
template <int N>
struct ArgPack {
  TensorArg a[N];
};

template <int N>
StridedOffsets<N> make_strided_offsets(const ArgPack<N>& p) {
  StridedOffsets<N> c;
  c.ndim = p.a[0].ndim;
  for (int d = 0; d < c.ndim; ++d) {
    c.sizes[d] = FastDivmod(static_cast<uint32_t>(p.a[0].sizes[d]));
    for (int k = 0; k < N; ++k) c.strides[d][k] = p.a[k].strides[d];
  }
  return c;
}

// Calls f(chunk) on pieces of the iteration space with fewer than 2^31 elements each,
// halving the outermost dim of extent > 1 until they fit (like PyTorch's
// with_32bit_indexing), so the strided kernels can index in 32 bits.
template <int N, class F>
void for_each_32bit_chunk(const ArgPack<N>& p, F&& f) {
  const TensorArg& ref = p.a[0];
  if (ref.numel <= INT32_MAX) {
    f(p);
    return;
  }
  int d = 0;
  while (d < ref.ndim - 1 && ref.sizes[d] == 1) ++d;
  const int64_t size = ref.sizes[d], lo_size = size / 2;
  ArgPack<N> lo = p, hi = p;
  for (int k = 0; k < N; ++k) {
    const int64_t rest = p.a[k].numel / size;
    lo.a[k].sizes[d] = lo_size;
    lo.a[k].numel = rest * lo_size;
    hi.a[k].sizes[d] = size - lo_size;
    hi.a[k].numel = rest * (size - lo_size);
    hi.a[k].data = static_cast<char*>(p.a[k].data) +
                   lo_size * p.a[k].strides[d] * static_cast<int64_t>(dtype_size(p.a[k].dtype));
    lo.a[k].contiguous = hi.a[k].contiguous = false;
  }
  for_each_32bit_chunk(lo, f);
  for_each_32bit_chunk(hi, f);
}

// ---- host predicates ----------------------------------------------------------------
// Row-major dense (size-1 dims ignored); checked here rather than trusting a flag so a
// coalesced or chunked description is judged by its geometry.
inline bool arg_is_contiguous(const TensorArg& a) {
  int64_t expected = 1;
  for (int d = a.ndim - 1; d >= 0; --d) {
    if (a.sizes[d] == 1) continue;
    if (a.strides[d] != expected) return false;
    expected *= a.sizes[d];
  }
  return true;
}
// Every element is the one at data[0] (a broadcast scalar).
inline bool arg_is_scalar(const TensorArg& a) {
  for (int d = 0; d < a.ndim; ++d)
    if (a.sizes[d] != 1 && a.strides[d] != 0) return false;
  return true;
}
inline bool aligned_to(const void* p, size_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

// ---- one-operand maps: y[i] = f(x[i]) ---------------------------------------------------
// x and y share one shape and one device type T (unary.cu, clamp.cu); y may be x: each
// element is read before the same thread writes it. `Map` is a small functor passed to the
// kernels by value: map.visit(body) calls body(f) with the element function f(T) -> T.
// The kernels call visit once per thread, outside their loops, so a runtime switch in it
// (unary's op) is taken once per thread, not per element.

// x, y contiguous and 16-byte aligned; n elements: one Packed128 per thread per
// grid-stride step, then the n % (16 / sizeof(T)) tail elements by the first threads.
template <class T, class Map>
__global__ void map_vec_kernel(const T* x, T* y, int64_t n, Map map) {
  constexpr int V = Packed128<T>::kSize;
  const int64_t nvec = n / V;
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  map.visit([&](auto f) {
    for (int64_t v = tid; v < nvec; v += stride) {
      Packed128<T> p = load128(x + v * V);
#pragma unroll
      for (int k = 0; k < V; ++k) p[k] = f(p[k]);
      store128(y + v * V, p);
    }
    const int64_t t = nvec * V + tid;  // fewer than V tail elements
    if (t < n) y[t] = f(x[t]);
  });
}

// Any strides; n < 2^31 elements (one for_each_32bit_chunk piece).
template <class T, class Map>
__global__ void map_strided_kernel(const T* x, T* y, uint32_t n, StridedOffsets<2> offsets, Map map) {
  const uint32_t tid = blockIdx.x * blockDim.x + threadIdx.x;
  const uint32_t stride = gridDim.x * blockDim.x;
  map.visit([&](auto f) {
    for (uint32_t i = tid; i < n; i += stride) {
      int64_t off[2];
      offsets.get(i, off);
      y[off[1]] = f(x[off[0]]);
    }
  });
}

// Queues y = map(x) on `stream`: the vector kernel when x and y are contiguous with
// 16-byte aligned bases, else the strided one over < 2^31-element pieces. x and y are
// coalesced, y.numel > 0, the device is current.
template <class T, class Map>
void launch_map(const TensorArg& x, const TensorArg& y, const Map& map, cudaStream_t stream) {
  constexpr int V = Packed128<T>::kSize;
  if (arg_is_contiguous(x) && arg_is_contiguous(y) && aligned16(x.data) && aligned16(y.data)) {
    const int64_t nvec = y.numel / V;
    map_vec_kernel<T, Map><<<grid_for(nvec > 0 ? nvec : 1), kBlockSize, 0, stream>>>(
        static_cast<const T*>(x.data), static_cast<T*>(y.data), y.numel, map);
    KILN_CUDA_CHECK_LAUNCH();
    return;
  }
  for_each_32bit_chunk(ArgPack<2>{{x, y}}, [&](const ArgPack<2>& p) {
    const uint32_t n = static_cast<uint32_t>(p.a[1].numel);
    map_strided_kernel<T, Map><<<grid_for(n), kBlockSize, 0, stream>>>(
        static_cast<const T*>(p.a[0].data), static_cast<T*>(p.a[1].data), n, make_strided_offsets(p), map);
    KILN_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace kiln::cuda
