// CPU kernels of index_select, gather and scatter_add (slots of ops/index.h) over
// (outer, n, inner) layouts. ops/ has already checked that every index lies in [0, n).
#include <kiln/core/cpu_loops.h>
#include <kiln/ops/op_list.h>

#include <cstring>

namespace kiln::cpu {

using namespace kiln::detail;

void index_select(const TensorView& x, const TensorView& index, const TensorView& out, const IndexParams& p) {
  const int64_t outer = p.outer, n = p.n, k = p.k, inner = p.inner;
  const int64_t* idx = index.ptr<const int64_t>();
  size_t es = dtype_size(x.dtype);
  const char* px = x.ptr<const char>();
  char* po = out.ptr<char>();
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t j = 0; j < k; ++j)
      std::memcpy(po + ((o * k + j) * inner) * es, px + ((o * n + idx[j]) * inner) * es, inner * es);
}

void gather(const TensorView& x, const TensorView& index, const TensorView& out, const IndexParams& p) {
  const int64_t outer = p.outer, n = p.n, k = p.k, inner = p.inner;
  const int64_t* idx = index.ptr<const int64_t>();
  size_t es = dtype_size(x.dtype);
  const char* px = x.ptr<const char>();
  char* po = out.ptr<char>();
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t j = 0; j < k; ++j)
      for (int64_t i = 0; i < inner; ++i) {
        int64_t e = (o * k + j) * inner + i;
        std::memcpy(po + e * es, px + ((o * n + idx[e]) * inner + i) * es, es);
      }
}

void scatter_add(const TensorView& out, const TensorView& index, const TensorView& src, const IndexParams& p) {
  const int64_t outer = p.outer, n = p.n, k = p.k, inner = p.inner;
  const int64_t* idx = index.ptr<const int64_t>();
  visit_dtype(out.dtype, [&](auto tag) {
    using T = decltype(tag);
    T* po = out.ptr<T>();
    const T* ps = src.ptr<const T>();
    for (int64_t o = 0; o < outer; ++o)
      for (int64_t j = 0; j < k; ++j)
        for (int64_t i = 0; i < inner; ++i) {
          int64_t e = (o * k + j) * inner + i;
          T& dst = po[(o * n + idx[e]) * inner + i];
          if constexpr (std::is_integral_v<T>) dst = static_cast<T>(dst + ps[e]);
          else dst = convert<T>(to_f64(dst) + to_f64(ps[e]));
        }
  });
}

}  // namespace kiln::cpu
