// CPU reference of the fused cross entropy over rows of a contiguous (rows, C) logits
// matrix: log-sum-exp, loss and gradient with plain loops in double, stored in the
// accumulation dtype (f64 for f64 logits, f32 otherwise) like the CUDA kernel's.
#include <kiln/ops/cpu/cpu_backend.h>
#include <kiln/ops/cpu/loops.h>

#include <limits>

namespace kiln::detail {
namespace {

// Calls f(T{}, A{}) for the logits' element type T and its accumulation type A.
template <class F>
void visit_logits(DType t, const char* what, F&& f) {
  visit_dtype(t, [&](auto tag) {
    using T = decltype(tag);
    if constexpr (std::is_integral_v<T>) {
      throw Error(str(what, ": integer logits reached the CPU kernel"));
    } else {
      using A = std::conditional_t<std::is_same_v<T, double>, double, float>;
      f(T{}, A{});
    }
  });
}

// exp(v - m), with -inf entries adding exactly 0 (also when m is -inf), as in the kernel.
inline double exp_shifted(double v, double m) { return v == -INFINITY ? 0.0 : std::exp(v - m); }

}  // namespace

void CpuBackend::cross_entropy_forward(const Tensor& logits, const Tensor& target, int64_t ignore_index,
                                       double eps, const Tensor& losses, const Tensor& lse) {
  const int64_t rows = logits.size(0), C = logits.size(1);
  const int64_t* t = target.data<int64_t>();
  visit_logits(logits.dtype(), "cross_entropy", [&](auto ttag, auto atag) {
    using T = decltype(ttag);
    using A = decltype(atag);
    const T* x = static_cast<const T*>(logits.data_ptr());
    A* pl = losses.data<A>();
    A* ps = lse.data<A>();
    for (int64_t r = 0; r < rows; ++r) {
      const T* xr = x + r * C;
      double m = -INFINITY, s = 0, sx = 0;
      for (int64_t c = 0; c < C; ++c) m = std::max(m, to_f64(xr[c]));  // ignores NaN, like fmax
      for (int64_t c = 0; c < C; ++c) {
        const double v = to_f64(xr[c]);
        s += exp_shifted(v, m);
        sx += v;
      }
      const double l = m + std::log(s);
      double loss;
      if (t[r] == ignore_index) loss = 0;
      else if (t[r] < 0 || t[r] >= C) loss = std::numeric_limits<double>::quiet_NaN();
      else {
        const double nll = l - to_f64(xr[t[r]]);
        loss = eps > 0 ? (1 - eps) * nll + eps * (l - sx / static_cast<double>(C)) : nll;
      }
      ps[r] = static_cast<A>(l);
      pl[r] = static_cast<A>(loss);
    }
  });
}

void CpuBackend::cross_entropy_backward(const Tensor& logits, const Tensor& target, const Tensor& lse,
                                        const Tensor& grad, int64_t ignore_index, double eps,
                                        const Tensor& dlogits) {
  const int64_t rows = logits.size(0), C = logits.size(1);
  const int64_t gstride = grad.numel() == 1 ? 0 : 1;
  const int64_t* t = target.data<int64_t>();
  visit_logits(logits.dtype(), "cross_entropy backward", [&](auto ttag, auto atag) {
    using T = decltype(ttag);
    using A = decltype(atag);
    const T* x = static_cast<const T*>(logits.data_ptr());
    T* d = static_cast<T*>(dlogits.data_ptr());
    const A* ps = lse.data<A>();
    const A* pg = grad.data<A>();
    const double eps_c = eps / static_cast<double>(C);
    for (int64_t r = 0; r < rows; ++r) {
      const T* xr = x + r * C;
      T* dr = d + r * C;
      const int64_t tr = t[r];
      if (tr == ignore_index) {
        for (int64_t c = 0; c < C; ++c) dr[c] = convert<T>(0.0);
        continue;
      }
      const bool bad = tr < 0 || tr >= C;  // ops/ rejects these; the kernel writes NaN rather than read out of range
      const double l = ps[r], g = pg[r * gstride];
      for (int64_t c = 0; c < C; ++c) {
        const double p = std::exp(to_f64(xr[c]) - l);
        const double v = bad ? std::numeric_limits<double>::quiet_NaN()
                             : (p - eps_c - (c == tr ? 1.0 - eps : 0.0)) * g;
        dr[c] = convert<T>(v);
      }
    }
  });
}

}  // namespace kiln::detail
