// core's kernel slots: the element-level runtime operations that core itself needs for
// factories, copies across dtypes and strides, random numbers, gradient accumulation and
// autograd's sums over broadcast dims (reduce: its CPU half is ops/cpu/reduce.cpp).
// One line per slot (see core/kernel.h); params structs live beside them here. CPU
// kernels: core/cpu_kernels.cpp; CUDA kernels: cuda/kernels/copy.cu (fill, copy,
// random), cuda/kernels/binary.cu (accumulate), cuda/kernels/reduce.cu.
#pragma once
#include <cstdint>

#include <kiln/core/kernel.h>
#include <kiln/core/op_kinds.h>
#include <kiln/core/scalar.h>

namespace kiln {

struct FillParams {
  Scalar value;
};
// out (contiguous) element i from Philox counter `offset + i` (core/philox.h):
// Uniform in [a, b), Normal(mean a, std b), Int in [a, b).
struct RandomParams {
  RandomKind kind = RandomKind::Uniform;
  uint64_t seed = 0, offset = 0;
  double a = 0, b = 1;
};

// Kernel parameters of the reductions (slot `reduce`): x contiguous, seen as
// (outer, r, inner), reduced over r into out contiguous (outer, inner). out's dtype: x's
// for Sum/Mean/Max/Min (I64 for Sum of integers/bool), I64 for ArgMax/ArgMin. r > 0.
struct ReduceParams {
  ReduceOp op = ReduceOp::Sum;
  int64_t outer = 1, r = 1, inner = 1;
};

// fill:       out = value, any strides.
// copy:       out = cast(src): one shape, any strides, any two dtypes (floats saturate into
//             integers, NaN -> 0); src and out may overlap.
// random:     see RandomParams.
// accumulate: out += g, one shape and dtype, any strides (autograd's gradient sums).
#define KILN_CORE_KERNELS(X)                                                 \
  X(fill, void(const TensorView& out, const FillParams& p))                  \
  X(copy, void(const TensorView& src, const TensorView& out))                \
  X(random, void(const TensorView& out, const RandomParams& p))              \
  X(accumulate, void(const TensorView& out, const TensorView& g))            \
  X(reduce, void(const TensorView& x, const TensorView& out, const ReduceParams& p))

KILN_DECLARE_KERNELS(KILN_CORE_KERNELS)

}  // namespace kiln
