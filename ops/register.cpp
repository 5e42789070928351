// Registration of the built-in backends: the one place that knows which backends this
// kiln was built with. It fills the slots of core's list (core/kernel_list.h) and of ops'
// list (ops/op_list.h) with the CPU kernels and, in a CUDA build, the CUDA kernels, and
// registers the CUDA device runtime. Nothing registers itself from a static initialiser:
// these functions name every kernel, so a static link pulls them all in (optim/register.cpp
// does the same for optim's list).
#include <mutex>

#include <kiln/config.h>
#include <kiln/core/kernel_list.h>
#include <kiln/ops/op_list.h>
#if KILN_CUDA
#include <kiln/cuda/runtime.h>
#endif

namespace kiln {
namespace detail {

void load_builtin_backends() {
  static std::once_flag once;
  std::call_once(once, [] {
    KILN_CORE_KERNELS(KILN_DETAIL_SET_CPU)
#if KILN_CUDA
    cuda::register_runtime();
    KILN_CORE_KERNELS(KILN_DETAIL_SET_CUDA)
#endif
  });
}

void load_ops_kernels() {
  static std::once_flag once;
  std::call_once(once, [] {
    KILN_OPS_KERNELS(KILN_DETAIL_SET_CPU)
#if KILN_CUDA
    KILN_OPS_KERNELS(KILN_DETAIL_SET_CUDA)
#endif
  });
}

}  // namespace detail

#define KILN_DETAIL_LOADER_FN detail::load_builtin_backends
KILN_CORE_KERNELS(KILN_DETAIL_OP_LOAD)
#undef KILN_DETAIL_LOADER_FN
#define KILN_DETAIL_LOADER_FN detail::load_ops_kernels
KILN_OPS_KERNELS(KILN_DETAIL_OP_LOAD)
#undef KILN_DETAIL_LOADER_FN

}  // namespace kiln
