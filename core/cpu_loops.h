// Helpers for the CPU reference loops (core and ops/cpu): strided element visiting (one
// element or one row at a time) and dtype conversion.
#pragma once
#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include <kiln/core/parallel.h>
#include <kiln/core/tensor.h>

namespace kiln::detail {

template <class T> inline constexpr bool is_half_v = std::is_same_v<T, Half> || std::is_same_v<T, BFloat16>;

// The type a CPU reference computes in: double for floating types, int64 for integers.
template <class T>
using cpu_acc_t = std::conditional_t<std::is_same_v<T, bool>, bool,
                                     std::conditional_t<std::is_integral_v<T>, int64_t, double>>;

template <class T> inline double to_f64(T v) {
  if constexpr (is_half_v<T>) return static_cast<double>(static_cast<float>(v));
  else return static_cast<double>(v);
}

// Floating -> integer saturates: NaN gives 0 and values beyond the integer type's range
// give its min/max (the CUDA copy kernel does the same), where a plain cast is undefined.
template <class To> inline To saturate_to_int(double v) {
  if (std::isnan(v)) return To(0);
  constexpr double lo = static_cast<double>(std::numeric_limits<To>::min());
  constexpr double hi = static_cast<double>(std::numeric_limits<To>::max());
  if (v <= lo) return std::numeric_limits<To>::min();
  if (v >= hi) return std::numeric_limits<To>::max();  // hi rounds up for i64: >= catches it
  return static_cast<To>(v);
}

template <class To, class From> inline To convert(From v) {
  if constexpr (std::is_same_v<To, From>) return v;
  else if constexpr (std::is_same_v<To, bool>) return to_f64(v) != 0.0;
  else if constexpr (is_half_v<To>) return To(static_cast<float>(to_f64(v)));
  else if constexpr (std::is_integral_v<To> && !std::is_integral_v<From>) return saturate_to_int<To>(to_f64(v));
  else return static_cast<To>(v);
}

// Calls f(offsets) for each element of `sizes` in row-major order, where offsets[k] is
// the element offset of that element in the k-th stride set.
template <size_t N, class F>
void for_each_element(const Shape& sizes, const std::array<const Shape*, N>& strides, F&& f) {
  int64_t ndim = static_cast<int64_t>(sizes.size());
  int64_t numel = shape_numel(sizes);
  std::array<int64_t, N> off{};
  std::vector<int64_t> idx(ndim, 0);
  for (int64_t i = 0; i < numel; ++i) {
    f(off);
    for (int64_t d = ndim - 1; d >= 0; --d) {
      ++idx[d];
      for (size_t k = 0; k < N; ++k) off[k] += (*strides[k])[d];
      if (idx[d] < sizes[d]) break;
      for (size_t k = 0; k < N; ++k) off[k] -= (*strides[k])[d] * sizes[d];
      idx[d] = 0;
    }
  }
}

// Calls f(offsets, n, steps) for each row of `sizes` in row-major order: the elements
// offsets[k] + i * steps[k], i < n, in the k-th stride set. Dimensions are merged first
// wherever every stride set is contiguous across them (and size-1 ones dropped), so a
// contiguous or broadcast (stride 0) operand becomes one long row with step 1 or 0 that
// a kernel can run as a flat loop. The elements come in the same order as from
// for_each_element.
// The rows of for_each_row: `sizes` with dimensions merged wherever every stride set is
// contiguous across them and size-1 ones dropped; the last entry is the row.
template <size_t N>
struct MergedRows {
  Shape sz;
  std::array<Shape, N> st;
  MergedRows(const Shape& sizes, const std::array<const Shape*, N>& strides) {
    for (size_t d = 0; d < sizes.size(); ++d) {
      if (sizes[d] == 1) continue;
      bool merge = !sz.empty();
      for (size_t k = 0; k < N && merge; ++k) merge = st[k].back() == (*strides[k])[d] * sizes[d];
      if (merge) {
        sz.back() *= sizes[d];
        for (size_t k = 0; k < N; ++k) st[k].back() = (*strides[k])[d];
      } else {
        sz.push_back(sizes[d]);
        for (size_t k = 0; k < N; ++k) st[k].push_back((*strides[k])[d]);
      }
    }
  }
  int64_t row_length() const { return sz.empty() ? 1 : sz.back(); }
  int64_t rows() const {
    int64_t r = 1;
    for (size_t d = 0; d + 1 < sz.size(); ++d) r *= sz[d];
    return r;
  }
  std::array<int64_t, N> steps() const {
    std::array<int64_t, N> step{};
    if (!sz.empty())
      for (size_t k = 0; k < N; ++k) step[k] = st[k].back();
    return step;
  }
  // The offsets of the first element of row r.
  std::array<int64_t, N> row_offsets(int64_t r) const {
    std::array<int64_t, N> off{};
    for (int64_t d = static_cast<int64_t>(sz.size()) - 2; d >= 0 && r > 0; --d) {
      const int64_t i = r % sz[d];
      r /= sz[d];
      for (size_t k = 0; k < N; ++k) off[k] += i * st[k][d];
    }
    return off;
  }
};

// Calls f(offsets, n, steps) for each row of `sizes` in row-major order: the elements
// offsets[k] + i * steps[k], i < n, in the k-th stride set. Dimensions are merged first
// wherever every stride set is contiguous across them (and size-1 ones dropped), so a
// contiguous or broadcast (stride 0) operand becomes one long row with step 1 or 0 that
// a kernel can run as a flat loop. The elements come in the same order as from
// for_each_element.
template <size_t N, class F>
void for_each_row(const Shape& sizes, const std::array<const Shape*, N>& strides, F&& f) {
  if (shape_numel(sizes) == 0) return;
  const MergedRows<N> m(sizes, strides);
  const auto& sz = m.sz;
  const auto& st = m.st;
  std::array<int64_t, N> off{};
  const std::array<int64_t, N> step = m.steps();
  if (sz.empty()) return f(off, int64_t{1}, step);
  const int64_t outer_dims = static_cast<int64_t>(sz.size()) - 1;
  const int64_t n = sz.back();
  std::vector<int64_t> idx(static_cast<size_t>(outer_dims), 0);
  while (true) {
    f(off, n, step);
    int64_t d = outer_dims - 1;
    for (; d >= 0; --d) {
      ++idx[d];
      for (size_t k = 0; k < N; ++k) off[k] += st[k][d];
      if (idx[d] < sz[d]) break;
      for (size_t k = 0; k < N; ++k) off[k] -= st[k][d] * sz[d];
      idx[d] = 0;
    }
    if (d < 0) return;
  }
}

// for_each_row split over the CPU thread pool (core/parallel.h): the rows, or one long row
// cut into pieces, go to the threads in contiguous ranges of about `grain` elements. For
// elementwise kernels: f must write only the elements of the (piece of a) row it is given.
// Each element is computed as for_each_row computes it, so the results do not depend on
// the thread count.
template <size_t N, class F>
void parallel_for_each_row(const Shape& sizes, const std::array<const Shape*, N>& strides, int64_t grain, F&& f) {
  const int64_t numel = shape_numel(sizes);
  if (numel == 0) return;
  if (numel < 2 * grain || num_threads() == 1 || in_parallel_region()) return for_each_row<N>(sizes, strides, f);
  const MergedRows<N> m(sizes, strides);
  const std::array<int64_t, N> step = m.steps();
  const int64_t n = m.row_length(), rows = m.rows();
  if (rows == 1) {
    parallel_for(n, grain, [&](int64_t begin, int64_t end) {
      std::array<int64_t, N> off{};
      for (size_t k = 0; k < N; ++k) off[k] = begin * step[k];
      f(off, end - begin, step);
    });
    return;
  }
  parallel_for(rows, std::max<int64_t>(1, grain / n), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) f(m.row_offsets(r), n, step);
  });
}

// Whether the flat loops may run on `in` -> `out`: `in` is out itself (read then written
// element by element) or lies in other memory, so no element is written before it is read
// through another view.
inline bool no_partial_overlap(const Tensor& in, const Tensor& out) {
  return !in.shares_storage(out) || (in.data_ptr() == out.data_ptr() && in.strides() == out.strides());
}

}  // namespace kiln::detail

// ---- the same over kernel views (core/tensor_view.h) ----
namespace kiln::detail {

inline Shape shape_of(const TensorView& v) { return Shape(v.sizes, v.sizes + v.ndim); }
inline Shape strides_of(const TensorView& v) { return Shape(v.strides, v.strides + v.ndim); }

// for_each_element / for_each_row over the shape of `space` with the strides of `ops`.
template <size_t N, class F>
void for_each_element(const TensorView& space, const std::array<const TensorView*, N>& ops, F&& f) {
  std::array<Shape, N> st;
  std::array<const Shape*, N> p;
  for (size_t k = 0; k < N; ++k) {
    st[k] = strides_of(*ops[k]);
    p[k] = &st[k];
  }
  for_each_element<N>(shape_of(space), p, std::forward<F>(f));
}
template <size_t N, class F>
void for_each_row(const TensorView& space, const std::array<const TensorView*, N>& ops, F&& f) {
  std::array<Shape, N> st;
  std::array<const Shape*, N> p;
  for (size_t k = 0; k < N; ++k) {
    st[k] = strides_of(*ops[k]);
    p[k] = &st[k];
  }
  for_each_row<N>(shape_of(space), p, std::forward<F>(f));
}

template <size_t N, class F>
void parallel_for_each_row(const TensorView& space, const std::array<const TensorView*, N>& ops, int64_t grain,
                           F&& f) {
  std::array<Shape, N> st;
  std::array<const Shape*, N> p;
  for (size_t k = 0; k < N; ++k) {
    st[k] = strides_of(*ops[k]);
    p[k] = &st[k];
  }
  parallel_for_each_row<N>(shape_of(space), p, grain, std::forward<F>(f));
}

// Elements per thread below which an elementwise loop is not worth splitting.
inline constexpr int64_t kElementwiseGrain = 16384;

inline bool no_partial_overlap(const TensorView& in, const TensorView& out) {
  return !in.shares_storage(out) || (in.data == out.data && in.same_geometry(out));
}

}  // namespace kiln::detail
