// The param-dtype dispatch of the CPU optimizer updates (optim/cpu/sgd.cpp, adam.cpp):
// the C++ type of the params and that of their state (accumulate_dtype of the params').
#pragma once
#include <kiln/core/cpu_loops.h>

namespace kiln::detail {

// Calls f(T{}, S{}) with the param type T and the state type S of a param dtype; `op`
// names the update in the error for a non-floating dtype. The state is kept in the
// accumulation dtype (checked below for every pair).
template <class F>
void visit_param_dtype(const char* op, DType dtype, F&& f) {
  switch (dtype) {
    case DType::F16: f(Half{}, float{}); return;
    case DType::BF16: f(BFloat16{}, float{}); return;
    case DType::F32: f(float{}, float{}); return;
    case DType::F64: f(double{}, double{}); return;
    default: throw Error(str(op, ": params must be floating, got ", dtype_name(dtype)));
  }
}
static_assert(accumulate_dtype(DType::F16) == DType::F32 && accumulate_dtype(DType::BF16) == DType::F32 &&
                  accumulate_dtype(DType::F32) == DType::F32 && accumulate_dtype(DType::F64) == DType::F64,
              "visit_param_dtype: the state is kept in the accumulation dtype");

}  // namespace kiln::detail
