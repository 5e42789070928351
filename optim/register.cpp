// Registration of optim's kernels (optim/op_list.h): the CPU halves and, in a CUDA build,
// the CUDA halves, on first use of one of the slots (see ops/register.cpp).
#include <mutex>

#include <kiln/config.h>
#include <kiln/optim/op_list.h>

namespace kiln {
namespace detail {

void load_optim_kernels() {
  static std::once_flag once;
  std::call_once(once, [] {
    KILN_OPTIM_KERNELS(KILN_DETAIL_SET_CPU)
#if KILN_CUDA
    KILN_OPTIM_KERNELS(KILN_DETAIL_SET_CUDA)
#endif
  });
}

}  // namespace detail

#define KILN_DETAIL_LOADER_FN detail::load_optim_kernels
KILN_OPTIM_KERNELS(KILN_DETAIL_OP_LOAD)
#undef KILN_DETAIL_LOADER_FN

}  // namespace kiln
