// CPU kernels of the fused cross entropy (slots cross_entropy_forward/backward, ops/loss.h)
// over rows of a contiguous (rows, C) logits matrix: log-sum-exp, loss and gradient with
// plain loops in double, stored in the accumulation dtype (accumulate_dtype: f64 for f64
// logits, f32 otherwise) like the CUDA kernel's. ops/loss.cpp has checked that the logits
// are floating.
#include <algorithm>

#include <kiln/core/cpu_loops.h>
#include <kiln/ops/op_list.h>

#include <limits>

namespace kiln::cpu {
namespace {

using namespace kiln::detail;

// Calls f(T{}, A{}) for the logits' element type T and its accumulation type A (the C++
// type of accumulate_dtype(t)). Integer logits are rejected by ops/loss.cpp.
template <class F>
void visit_logits(DType t, F&& f) {
  visit_dtype(t, [&](auto tag) {
    using T = decltype(tag);
    if constexpr (!std::is_integral_v<T>) {
      using A = std::conditional_t<std::is_same_v<T, double>, double, float>;
      static_assert(dtype_of<A> == accumulate_dtype(dtype_of<T>));
      f(T{}, A{});
    }
  });
}

// exp(v - m), with -inf entries adding exactly 0 (also when m is -inf), as in the kernel.
inline double exp_shifted(double v, double m) { return v == -INFINITY ? 0.0 : std::exp(v - m); }

}  // namespace

void cross_entropy_forward(const TensorView& logits, const TensorView& target, const TensorView& losses,
                           const TensorView& lse, const CrossEntropyParams& p) {
  const int64_t rows = logits.size(0), C = logits.size(1);
  const int64_t ignore_index = p.ignore_index;
  const double eps = p.label_smoothing;
  const int64_t* t = target.ptr<const int64_t>();
  visit_logits(logits.dtype, [&](auto ttag, auto atag) {
    using T = decltype(ttag);
    using A = decltype(atag);
    const T* x = logits.ptr<const T>();
    A* pl = losses.ptr<A>();
    A* ps = lse.ptr<A>();
    // Rows on their own, split over the thread pool.
    parallel_for(rows, std::max<int64_t>(1, kElementwiseGrain / 8 / std::max<int64_t>(1, C)), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
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
  });
}

void cross_entropy_backward(const TensorView& logits, const TensorView& target, const TensorView& lse,
                            const TensorView& grad, const TensorView& dlogits, const CrossEntropyParams& p) {
  const int64_t rows = logits.size(0), C = logits.size(1);
  const int64_t ignore_index = p.ignore_index;
  const double eps = p.label_smoothing;
  const int64_t gstride = grad.numel == 1 ? 0 : 1;
  const int64_t* t = target.ptr<const int64_t>();
  visit_logits(logits.dtype, [&](auto ttag, auto atag) {
    using T = decltype(ttag);
    using A = decltype(atag);
    const T* x = logits.ptr<const T>();
    T* d = dlogits.ptr<T>();
    const A* ps = lse.ptr<const A>();
    const A* pg = grad.ptr<const A>();
    const double eps_c = eps / static_cast<double>(C);
    // Rows on their own, split over the thread pool.
    parallel_for(rows, std::max<int64_t>(1, kElementwiseGrain / 8 / std::max<int64_t>(1, C)), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
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
        const double prob = std::exp(to_f64(xr[c]) - l);
        const double v = bad ? std::numeric_limits<double>::quiet_NaN()
                             : (prob - eps_c - (c == tr ? 1.0 - eps : 0.0)) * g;
        dr[c] = convert<T>(v);
      }
    }
    });
  });
}

}  // namespace kiln::cpu
