// Entry point of the CUDA test binary: exits with the skip code registered with ctest
// (SKIP_RETURN_CODE 77) when no GPU can be used, so a machine without one reports the
// CUDA tests as skipped rather than passed or failed.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <cstdio>

#include <kiln/core/runtime.h>

int main(int argc, char** argv) {
  if (!kiln::cuda_is_available()) {
    std::printf("kiln_cuda_tests: no usable CUDA device; skipping\n");
    return 77;
  }
  return Catch::Session().run(argc, argv);
}
