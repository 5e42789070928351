// Registration of the CUDA device runtime (cuda/runtime.cpp) with core's registry; called
// by detail::load_builtin_backends() (ops/register.cpp).
#pragma once

namespace kiln::cuda {
void register_runtime();
}  // namespace kiln::cuda
