// CPU kernel of clamp (slot `clamp`, contract in ops/clamp.h): y = x < lo ? lo : (x > hi ?
// hi : x), in float for f16/bf16/f32, double for f64 and the dtype itself for integers.
// ops/clamp.cpp has checked the bounds; bool never gets here.
#include <limits>

#include <kiln/core/cpu_loops.h>
#include <kiln/ops/op_list.h>

namespace kiln::cpu {
namespace {

using namespace kiln::detail;

// What a dtype compares in: float for the half types (and f32), else the type itself.
template <class T>
using clamp_compute_t = std::conditional_t<is_half_v<T>, float, T>;

// A bound in the compute type C; an absent bound is the lowest (highest) value of C, which
// limits nothing. convert() truncates and saturates a double for the integer types.
template <class C>
C clamp_bound(bool given, double value, bool upper) {
  if (given) return convert<C>(value);
  if constexpr (std::is_floating_point_v<C>) {
    return upper ? std::numeric_limits<C>::infinity() : -std::numeric_limits<C>::infinity();
  } else {
    return upper ? std::numeric_limits<C>::max() : std::numeric_limits<C>::min();
  }
}

// One element: compared in C, the result is lo_t, hi_t (the bounds in T) or x itself,
// bits unchanged (so a NaN keeps its payload). NaN fails both tests: it propagates.
template <class T, class C>
T clamp_one(T x, C lo, C hi, T lo_t, T hi_t) {
  const C v = convert<C>(x);
  return v < lo ? lo_t : (v > hi ? hi_t : x);
}

template <class T>
void clamp_typed(const TensorView& x, const TensorView& y, const ClampParams& p) {
  using C = clamp_compute_t<T>;
  const C lo = clamp_bound<C>(p.has_min, p.min, false);
  const C hi = clamp_bound<C>(p.has_max, p.max, true);
  const T lo_t = convert<T>(lo), hi_t = convert<T>(hi);
  const T* px = x.ptr<const T>();
  T* py = y.ptr<T>();
  // Row by row; y is x itself or apart from it, so each element is read before it is written.
  parallel_for_each_row<2>(y, {&x, &y}, kElementwiseGrain, [&](const auto& off, int64_t n, const auto& st) {
    const T* a = px + off[0];
    T* o = py + off[1];
    for (int64_t i = 0; i < n; ++i) o[i * st[1]] = clamp_one(a[i * st[0]], lo, hi, lo_t, hi_t);
  });
}

}  // namespace

void clamp(const TensorView& x, const TensorView& y, const ClampParams& p) {
  visit_dtype(x.dtype, [&](auto tag) {
    using T = decltype(tag);
    if constexpr (!std::is_same_v<T, bool>) clamp_typed<T>(x, y, p);  // bool: refused by ops/clamp.cpp
  });
}

}  // namespace kiln::cpu
