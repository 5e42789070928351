// clamp kernels (slot `clamp`, contract in ops/clamp.h):
//
//   y[i] = x[i] < lo ? lo : (x[i] > hi ? hi : x[i])      i.e. min(max(x, lo), hi)
//
// x, y: one shape (any rank <= 8), one dtype, any strides; writes (=). y is x itself
// (clamp_: each element is read before the same thread writes it) or apart from it.
// An absent bound is -inf/+inf (floating) or the dtype's min/max (integers), which limits
// nothing. NaN x propagates (both tests fail), -0.0 at lo = 0 stays -0.0, like PyTorch.
// An element that is not clamped is copied with its bits unchanged, a clamped one gets the
// bound rounded to T: results are bit-identical to ops/cpu/clamp.cpp (NaN payloads too).
// dtypes: f16/bf16 (computed in f32), f32, f64, u8/i32/i64 (compared in the dtype, bounds
// converted on the host, truncated and saturated like the CPU reference's convert()).
// ops/clamp.cpp has checked: no bool, at least one bound, no NaN bound, min <= max.
// Paths (launch_map, elementwise.cuh): (1) x and y contiguous with 16-byte aligned bases:
// one Packed128 per thread per grid-stride step, the numel % (16/sizeof(T)) tail done by
// the first threads; (2) otherwise 32-bit strided indexing with precomputed divisors
// (launches split into < 2^31-element pieces). x and y arrive coalesced.
// Bandwidth on H100/H200: not yet measured (tools/bench_kernels fills this in).
#include <limits>

#include <kiln/cuda/kernels/common.cuh>
#include <kiln/cuda/kernels/elementwise.cuh>
#include <kiln/ops/op_list.h>

namespace kiln::cuda {
namespace {

// ---- device helpers ------------------------------------------------------------------

// What a dtype compares in: float for the half types and f32, double for f64, the type
// itself for integers.
template <class T>
using clamp_compute_t = std::conditional_t<std::is_integral_v<T>, T, acc_t<T>>;

// One element: compared in C, the result is a bound converted to T or x itself, bits
// unchanged (a NaN keeps its payload). NaN fails both tests: it propagates.
template <class T, class C>
__device__ __forceinline__ T clamp_apply(T x, C lo, C hi) {
  const C v = convert<C>(x);
  return v < lo ? convert<T>(lo) : (v > hi ? convert<T>(hi) : x);
}

// The element function of one launch for launch_map (elementwise.cuh).
template <class T, class C>
struct ClampMap {
  C lo, hi;
  template <class Body>
  __device__ __forceinline__ void visit(Body&& body) const {
    body([&](T x) { return clamp_apply(x, lo, hi); });
  }
};

// ---- host helpers --------------------------------------------------------------------

// A bound in the compute type C (host side). Absent: the value that limits nothing. For
// the integer types a double converts truncated toward zero and saturated at C's range
// (saturate_to_int; NaN cannot occur: ops/ refuses NaN bounds), as the CPU reference's
// convert() does.
template <class C>
C clamp_bound(bool given, double value, bool upper) {
  using L = std::numeric_limits<C>;
  if constexpr (std::is_floating_point_v<C>) {
    if (!given) return upper ? L::infinity() : -L::infinity();
    return static_cast<C>(value);
  } else {
    if (!given) return upper ? L::max() : L::min();
    return saturate_to_int<C>(value);
  }
}

}  // namespace

void clamp(const TensorView& x, const TensorView& y, const ClampParams& p) {
  if (y.numel == 0) return;
  DeviceGuard guard(y.device);
  TensorView v[2] = {x, y};
  coalesce(v, 2);
  const cudaStream_t stream = current_stream(y.device);
  visit_device_dtype(y.dtype, [&](auto tag) {
    using T = decltype(tag);
    if constexpr (!std::is_same_v<T, bool>) {  // bool: refused by ops/
      using C = clamp_compute_t<T>;
      const C lo = clamp_bound<C>(p.has_min, p.min, false), hi = clamp_bound<C>(p.has_max, p.max, true);
      launch_map<T>(v[0], v[1], ClampMap<T, C>{lo, hi}, stream);
    }
  });
}

}  // namespace kiln::cuda
