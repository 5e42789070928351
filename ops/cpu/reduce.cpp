// CPU kernel of the reductions (core's slot `reduce`, core/kernel_list.h) over (outer, r,
// inner): double accumulation for floating types, int64 for integers; max/min propagate
// NaN; arg* return the first extremum. ops/reduce.cpp has checked the op against the
// dtype (no mean of integers, no max/min/arg* of bool) and r > 0.
#include <kiln/core/cpu_loops.h>
#include <kiln/core/kernel_list.h>

namespace kiln::cpu {

using namespace kiln::detail;

void reduce(const TensorView& x, const TensorView& out, const ReduceParams& p) {
  const ReduceOp op = p.op;
  const int64_t outer = p.outer, r = p.r, inner = p.inner;
  visit_dtype(x.dtype, [&](auto tag) {
    using T = decltype(tag);
    using Acc = std::conditional_t<std::is_integral_v<T>, int64_t, double>;
    const T* px = x.ptr<const T>();
    auto load = [](T v) -> Acc {
      if constexpr (std::is_integral_v<T>) return static_cast<int64_t>(v);
      else return to_f64(v);
    };
    auto is_nan = [](Acc v) {
      if constexpr (std::is_same_v<Acc, double>) return std::isnan(v);
      else return false;
    };
    // Sums over a middle dim of contiguous rows (a bias gradient: (rows, features) summed
    // over the rows): blocks of adjacent outputs accumulate together while the rows stream
    // past in order, so the reads run along the rows and the additions vectorise across
    // the block. Each output still adds its r terms one by one in order j = 0, 1, ...: the
    // same bits as the loop below.
    if ((op == ReduceOp::Sum || op == ReduceOp::Mean) && inner >= 8 && std::is_floating_point_v<Acc> &&
        out.dtype != DType::I64) {
      constexpr int64_t B = 64;
      const int64_t blocks = (inner + B - 1) / B;
      T* po = out.ptr<T>();
      parallel_for(outer * blocks, std::max<int64_t>(1, kElementwiseGrain / std::max<int64_t>(1, r * B)),
                   [&](int64_t t0, int64_t t1) {
        for (int64_t t = t0; t < t1; ++t) {
          const int64_t o = t / blocks, i0 = (t % blocks) * B, w = std::min(B, inner - i0);
          double acc[B] = {};
          const T* base = px + o * r * inner + i0;
          for (int64_t j = 0; j < r; ++j) {
            const T* row = base + j * inner;
            for (int64_t k = 0; k < w; ++k) acc[k] += to_f64(row[k]);
          }
          for (int64_t k = 0; k < w; ++k)
            po[o * inner + i0 + k] =
                convert<T>(op == ReduceOp::Mean ? acc[k] / static_cast<double>(r) : acc[k]);
        }
      });
      return;
    }
    // Each output on its own, the outputs split over the thread pool.
    parallel_for(outer * inner, std::max<int64_t>(1, kElementwiseGrain / std::max<int64_t>(1, r)),
                 [&](int64_t oi0, int64_t oi1) {
      for (int64_t oi = oi0; oi < oi1; ++oi) {
        const int64_t o = oi / inner, i = oi % inner;
        const T* base = px + o * r * inner + i;
        if (op == ReduceOp::Sum || op == ReduceOp::Mean) {
          Acc acc = 0;
          for (int64_t j = 0; j < r; ++j) acc += load(base[j * inner]);
          if (op == ReduceOp::Mean) acc = static_cast<Acc>(static_cast<double>(acc) / static_cast<double>(r));
          if (out.dtype == DType::I64) out.ptr<int64_t>()[oi] = static_cast<int64_t>(acc);
          else out.ptr<T>()[oi] = convert<T>(acc);
          continue;
        }
        bool want_max = op == ReduceOp::Max || op == ReduceOp::ArgMax;
        Acc best = load(base[0]);
        int64_t best_j = 0;
        for (int64_t j = 1; j < r && !is_nan(best); ++j) {
          Acc v = load(base[j * inner]);
          if (is_nan(v) || (want_max ? v > best : v < best)) {
            best = v;
            best_j = j;
          }
        }
        if (op == ReduceOp::ArgMax || op == ReduceOp::ArgMin) out.ptr<int64_t>()[oi] = best_j;
        else out.ptr<T>()[oi] = convert<T>(best);
      }
    });
  });
}

}  // namespace kiln::cpu
