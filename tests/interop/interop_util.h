// Helpers of the PyTorch round-trip programs (tests/interop/*_interop.cpp): comparing a
// kiln tensor with PyTorch's and looking tensors up in a loaded safetensors file.
#pragma once
#include <algorithm>
#include <cstdio>
#include <iostream>
#include <map>
#include <string>

#include <kiln/kiln.h>

namespace kiln::interop {

// Tensors agree when max|kiln - torch| <= 1e-5 + 1e-4 * max|torch| (f32: the sums run in
// different orders).
inline double max_abs(const Tensor& t) { return t.numel() == 0 ? 0.0 : max(abs(t.to(DType::F64))).item<double>(); }

// Compares one tensor, prints a line and returns whether it agrees.
inline bool compare(const std::string& what, const Tensor& got, const Tensor& want, double* worst = nullptr) {
  if (got.sizes() != want.sizes() || got.dtype() != want.dtype()) {
    std::cout << "  " << what << ": kiln " << got.str() << " vs torch " << want.str() << " (shape/dtype differ)\n";
    return false;
  }
  const double diff = max_abs(got.to(DType::F64) - want.to(DType::F64));
  const double scale = max_abs(want);
  const double tol = 1e-5 + 1e-4 * scale;
  const bool ok = diff <= tol;
  if (worst) *worst = std::max(*worst, diff);
  if (!ok || what.rfind("logits", 0) == 0)
    std::printf("  %-40s max abs diff %.3g (max |torch| %.3g, tol %.3g)%s\n", what.c_str(), diff, scale, tol,
                ok ? "" : "  MISMATCH");
  return ok;
}

inline const Tensor& get(const std::map<std::string, Tensor>& m, const std::string& name, const std::string& path) {
  auto it = m.find(name);
  KILN_CHECK(it != m.end(), "interop: ", path, " has no tensor '", name, "'");
  return it->second;
}


}  // namespace kiln::interop
