// Registration of the built-in backends: the one place that knows which backends this
// kiln was built with. It fills the slots of core's list (core/kernel_list.h) and of ops'
// list (ops/op_list.h) with the CPU kernels and, in a CUDA build, the CUDA kernels, and
// registers the CUDA device runtime. Nothing registers itself from a static initialiser:
// these functions name every kernel, so a static link pulls them all in (optim/register.cpp
// does the same for optim's list).
#include <mutex>

#include <kiln/config.h>
#include <kiln/core/kernel_list.h>
#include <kiln/ops/cpu/onednn.h>
#include <kiln/ops/op_list.h>
#if KILN_CUDA
#include <kiln/cuda/runtime.h>
#endif

namespace kiln {
namespace detail {

void load_builtin_backends() {
  static std::once_flag once;
  std::call_once(once, [] {
#if defined(KILN_CPU_ARCH_NAME) && defined(__AVX2__) && defined(__FMA__)
    // A clear error where the CPU lacks what kiln was compiled for (CMakeLists.txt).
    if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma"))
      throw Error("this kiln was compiled for -march=" KILN_CPU_ARCH_NAME
                  " (AVX2 and FMA), which this CPU lacks; rebuild it with -DKILN_CPU_ARCH=x86-64");
#endif
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
    KILN_OPS_CPU_ONLY_KERNELS(KILN_DETAIL_SET_CPU)
    if (onednn::enabled()) onednn::register_kernels();  // oneDNN's convolutions over kiln's loops
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
KILN_OPS_CPU_ONLY_KERNELS(KILN_DETAIL_OP_LOAD)
#undef KILN_DETAIL_LOADER_FN

}  // namespace kiln
