// Vectorised f32 loops for the transcendental CPU kernels (ops/cpu/vec_math.cpp), on
// Google Highway's math library with runtime dispatch to the widest vectors the CPU has
// (AVX2, AVX-512). The compiler cannot vectorise std::exp or std::tanh by itself, and
// computing them one element at a time in double made gelu and softmax ten times slower
// than PyTorch's (tools/bench_ops_vs_torch.py).
//
// Each function computes in f32 within a few ulp of the double-precision reference
// (ops/cpu/unary.cpp's unary_f64, softmax in double); an element outside the range where
// the vector formula is accurate (very large magnitudes, NaN, infinities) is computed by
// the double reference instead, a vector's worth at a time, so special values come out
// exactly as the reference gives them. f64 tensors never come here.
#pragma once
#include <cstdint>

#include <kiln/ops/unary.h>

namespace kiln::cpu::vec {

// Whether unary_f32 has a vector version of `op`.
bool has_unary_f32(UnaryOp op);
// y[i] = op(x[i]) for i < n (contiguous; x == y allowed). `reference` computes one element
// in double, for the lanes outside the vector formula's range.
void unary_f32(UnaryOp op, const float* x, float* y, int64_t n, double (*reference)(UnaryOp, double, double),
               double alpha);
// softmax (or log_softmax) of each contiguous row of n: rows [r0, r1) of x into y.
void softmax_rows_f32(const float* x, float* y, int64_t r0, int64_t r1, int64_t n, bool log);

}  // namespace kiln::cpu::vec
