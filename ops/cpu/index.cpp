// CPU kernels of index_select, gather and scatter_add (slots of ops/index.h) over
// (outer, n, inner) layouts. ops/ has already checked that every index lies in [0, n).
#include <kiln/core/cpu_loops.h>
#include <kiln/ops/op_list.h>

#include <cstring>
#include <vector>

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

// f16/bf16 sums run in an f32 copy of out, rounded back once at the end: rounding after
// every addition loses the small contributions to a frequent index (an embedding row that
// receives thousands of gradients), as the CUDA kernel's f32 accumulation does not.
void scatter_add(const TensorView& out, const TensorView& index, const TensorView& src, const IndexParams& p) {
  const int64_t outer = p.outer, n = p.n, k = p.k, inner = p.inner;
  const int64_t* idx = index.ptr<const int64_t>();
  visit_dtype(out.dtype, [&](auto tag) {
    using T = decltype(tag);
    T* po = out.ptr<T>();
    const T* ps = src.ptr<const T>();
    auto run = [&](auto* acc) {
      for (int64_t o = 0; o < outer; ++o)
        for (int64_t j = 0; j < k; ++j)
          for (int64_t i = 0; i < inner; ++i) {
            const int64_t e = (o * k + j) * inner + i;
            auto& dst = acc[(o * n + idx[e]) * inner + i];
            if constexpr (std::is_integral_v<T>) dst = static_cast<T>(dst + ps[e]);
            else if constexpr (is_half_v<T>) dst += static_cast<float>(ps[e]);
            else dst = convert<T>(to_f64(dst) + to_f64(ps[e]));
          }
    };
    if constexpr (is_half_v<T>) {
      const int64_t total = out.numel;
      std::vector<float> acc(static_cast<size_t>(total));
      for (int64_t e = 0; e < total; ++e) acc[e] = static_cast<float>(po[e]);
      run(acc.data());
      for (int64_t e = 0; e < total; ++e) po[e] = T(acc[e]);
    } else {
      run(po);
    }
  });
}

}  // namespace kiln::cpu
