// CPU reference for index_select, gather and scatter_add over (outer, n, inner) layouts.
// ops/ has already checked that every index lies in [0, n).
#include <kiln/ops/cpu/cpu_backend.h>
#include <kiln/ops/cpu/loops.h>

#include <cstring>

namespace kiln::detail {

void CpuBackend::index_select(const Tensor& x, const Tensor& index, int64_t outer, int64_t n, int64_t inner,
                              const Tensor& out) {
  const int64_t* idx = index.data<int64_t>();
  int64_t k = index.numel();
  size_t es = x.element_size();
  const char* px = static_cast<const char*>(x.data_ptr());
  char* po = static_cast<char*>(out.data_ptr());
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t j = 0; j < k; ++j)
      std::memcpy(po + ((o * k + j) * inner) * es, px + ((o * n + idx[j]) * inner) * es, inner * es);
}

void CpuBackend::gather(const Tensor& x, const Tensor& index, int64_t outer, int64_t n, int64_t k, int64_t inner,
                        const Tensor& out) {
  const int64_t* idx = index.data<int64_t>();
  size_t es = x.element_size();
  const char* px = static_cast<const char*>(x.data_ptr());
  char* po = static_cast<char*>(out.data_ptr());
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t j = 0; j < k; ++j)
      for (int64_t i = 0; i < inner; ++i) {
        int64_t e = (o * k + j) * inner + i;
        std::memcpy(po + e * es, px + ((o * n + idx[e]) * inner + i) * es, es);
      }
}

void CpuBackend::scatter_add(const Tensor& out, const Tensor& index, const Tensor& src, int64_t outer, int64_t n,
                             int64_t k, int64_t inner) {
  const int64_t* idx = index.data<int64_t>();
  visit_dtype(out.dtype(), [&](auto tag) {
    using T = decltype(tag);
    T* po = static_cast<T*>(out.data_ptr());
    const T* ps = static_cast<const T*>(src.data_ptr());
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

}  // namespace kiln::detail
