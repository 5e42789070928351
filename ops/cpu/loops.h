// Helpers for the CPU reference loops: strided element visiting and dtype conversion.
#pragma once
#include <array>
#include <cmath>
#include <type_traits>
#include <vector>

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

template <class To, class From> inline To convert(From v) {
  if constexpr (std::is_same_v<To, From>) return v;
  else if constexpr (std::is_same_v<To, bool>) return to_f64(v) != 0.0;
  else if constexpr (is_half_v<To>) return To(static_cast<float>(to_f64(v)));
  else if constexpr (is_half_v<From>) return static_cast<To>(static_cast<float>(v));
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

}  // namespace kiln::detail
