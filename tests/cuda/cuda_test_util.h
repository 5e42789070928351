// Helpers shared by the CUDA-vs-CPU tests (tests/cuda/): the layouts to try for a shape
// and the comparison of a CUDA result with the CPU reference's.
#pragma once
#include "test_util.h"

namespace kiln::test {

// Layouts to try for a shape: all of them for small tensors, two for the big ones (the
// CPU reference is the slow side).
inline std::vector<Layout> layouts_for(const Shape& s) {
  if (shape_numel(s) <= 300000) return layouts();
  return {layouts()[0], layouts()[s.size() >= 2 ? 4 : 2]};
}

// An op's CUDA result against its CPU result: same dtype and shape, values within the
// dtype's tolerance (exact for integers and bool).
inline void check_same(const Tensor& g, const Tensor& c) {
  REQUIRE(g.defined());
  CHECK(g.is_cuda());
  CHECK(g.dtype() == c.dtype());
  CHECK_CLOSE(g, c);
}

}  // namespace kiln::test
