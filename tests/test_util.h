// Helpers shared by kiln's Catch2 tests: value comparison with tolerances by dtype,
// tensors with equal values but non-contiguous layouts, reading values back, and
// assertions that an expression throws kiln::Error naming the op.
#pragma once
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <functional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <stdlib.h>  // mkdtemp

#include <kiln/kiln.h>

namespace kiln::test {

struct Tol {
  double rtol, atol;
};

// Tolerances by dtype (DESIGN.md, "Tests and benchmarks"); integers and bool are exact.
inline Tol tol_for(DType t) {
  switch (t) {
    case DType::F32: return {1.3e-6, 1e-5};
    case DType::F64: return {1e-12, 1e-12};
    case DType::F16: return {1e-3, 1e-3};
    case DType::BF16: return {1.6e-2, 1e-2};
    default: return {0.0, 0.0};
  }
}
// The looser of the two dtypes' tolerances.
inline Tol tol_for(DType a, DType b) {
  Tol x = tol_for(a), y = tol_for(b);
  return {std::max(x.rtol, y.rtol), std::max(x.atol, y.atol)};
}

// Row-major values of any tensor (any device, dtype, strides) as doubles.
inline std::vector<double> values(const Tensor& t) { return t.to_vector<double>(); }
template <class T> std::vector<T> vec(const Tensor& t) { return t.to_vector<T>(); }

// "" when `actual` and `expected` have the same shape and every element satisfies
// |a - e| <= atol + rtol * |e| (NaN matches NaN, infinities must be equal); otherwise
// a description of the first mismatches.
inline std::string compare(const Tensor& actual, const Tensor& expected, double rtol, double atol) {
  std::ostringstream os;
  if (!actual.defined() || !expected.defined()) return "undefined tensor";
  if (actual.sizes() != expected.sizes()) {
    os << "shape mismatch: actual " << shape_str(actual.sizes()) << " vs expected " << shape_str(expected.sizes());
    return os.str();
  }
  std::vector<double> a = values(actual), e = values(expected);
  int64_t bad = 0;
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    bool ok;
    if (std::isnan(e[i]) || std::isnan(a[i])) ok = std::isnan(e[i]) && std::isnan(a[i]);
    else if (std::isinf(e[i]) || std::isinf(a[i])) ok = a[i] == e[i];
    else ok = std::fabs(a[i] - e[i]) <= atol + rtol * std::fabs(e[i]);
    if (!ok) {
      if (bad < 5) {
        os.precision(17);
        os << "  [flat " << i << "] actual " << a[i] << " expected " << e[i] << " (diff " << std::fabs(a[i] - e[i])
           << ")\n";
      }
      if (!std::isnan(a[i] - e[i])) worst = std::max(worst, std::fabs(a[i] - e[i]));
      ++bad;
    }
  }
  if (bad == 0) return "";
  std::ostringstream head;
  head << bad << " of " << a.size() << " elements differ (rtol " << rtol << ", atol " << atol << ", max diff "
       << worst << ") for shape " << shape_str(actual.sizes()) << " actual " << dtype_name(actual.dtype())
       << " expected " << dtype_name(expected.dtype()) << ":\n"
       << os.str();
  return head.str();
}

inline bool allclose(const Tensor& a, const Tensor& b, double rtol, double atol) {
  return compare(a, b, rtol, atol).empty();
}
inline bool allclose(const Tensor& a, const Tensor& b) {
  Tol t = tol_for(a.dtype(), b.dtype());
  return allclose(a, b, t.rtol, t.atol);
}
inline bool equal(const Tensor& a, const Tensor& b) { return allclose(a, b, 0.0, 0.0); }

// Bitwise equality of two tensors' row-major bytes (same dtype and shape).
inline bool bit_equal(const Tensor& a, const Tensor& b) {
  if (a.dtype() != b.dtype() || a.sizes() != b.sizes()) return false;
  if (a.numel() == 0) return true;
  Tensor ca = a.to(kCPU).contiguous(), cb = b.to(kCPU).contiguous();
  return std::memcmp(ca.data_ptr(), cb.data_ptr(), static_cast<size_t>(ca.numel()) * ca.element_size()) == 0;
}

// A tensor with t's values, dtype and device laid out with stride 2 in its last dim
// (a step-2 slice of a bigger tensor). 0-d tensors are returned as they are.
inline Tensor strided_copy(const Tensor& t) {
  if (t.dim() == 0) return t;
  Shape big = t.sizes();
  big.back() = big.back() * 2 + 1;
  Tensor b = full(big, -7, TensorOptions(t.dtype(), t.device()));
  Tensor v = b.slice(-1, 1, big.back(), 2);
  v.copy_(t);
  return v;
}

// A tensor with t's values whose last two dims are stored column-major (the transpose
// of a contiguous transpose).
inline Tensor transposed_copy(const Tensor& t) {
  if (t.dim() < 2) return strided_copy(t);
  return t.transpose(-1, -2).contiguous().transpose(-1, -2);
}

// A non-contiguous tensor with t's values, or t itself when every layout of t is
// contiguous (fewer than 2 elements).
inline Tensor noncontiguous(const Tensor& t) { return t.dim() >= 2 ? transposed_copy(t) : strided_copy(t); }

// Random test data (from a fixed generator so failures reproduce) of any dtype:
// floating ~ N(0, scale^2) rounded to the dtype, integers uniform in [-50, 50)
// (u8: [0, 100)), bool a coin flip.
inline Tensor random_tensor(const Shape& shape, DType dtype, uint64_t seed, double scale = 1.0,
                            Device device = kCPU) {
  Generator g(seed);
  Tensor t;
  if (is_floating(dtype)) t = mul(randn(shape, DType::F64, &g), scale).to(dtype);
  else if (dtype == DType::Bool) t = lt(rand(shape, DType::F32, &g), 0.5);
  else if (dtype == DType::U8) t = randint(0, 100, shape, DType::U8, &g);
  else t = randint(-50, 50, shape, dtype, &g);
  return t.to(device);
}

inline const std::vector<DType>& all_dtypes() {
  static const std::vector<DType> v{DType::Bool, DType::U8,   DType::I32, DType::I64,
                                    DType::F16,  DType::BF16, DType::F32, DType::F64};
  return v;
}
inline const std::vector<DType>& floating_dtypes() {
  static const std::vector<DType> v{DType::F16, DType::BF16, DType::F32, DType::F64};
  return v;
}

// ---- CUDA vs CPU helpers (device-agnostic: they work on tensors of any device) ----

inline Device cuda0() { return cuda_device(0); }

// A deterministic change of layout applied alike to a CPU tensor and its CUDA copy, so
// the two devices see the same values in the same strides.
struct Layout {
  const char* name;
  Tensor (*apply)(const Tensor&);
};
inline const std::vector<Layout>& layouts() {
  static const std::vector<Layout> v{
      {"contiguous", [](const Tensor& t) { return t; }},
      {"transposed copy", [](const Tensor& t) { return transposed_copy(t); }},
      {"strided (step 2)", [](const Tensor& t) { return strided_copy(t); }},
      // Stride 0 in dim 0: every row is row 0 (other values than t, equal on both devices).
      {"expanded", [](const Tensor& t) { return t.dim() == 0 ? t : t.narrow(0, 0, 1).expand(t.sizes()); }},
      // A transposed view (shape changes, no copy).
      {"transposed view", [](const Tensor& t) { return t.dim() < 2 ? t : t.transpose(0, t.dim() - 1); }},
  };
  return v;
}

// Odd sizes for CUDA-vs-CPU comparisons: tails, non-multiples of warps and vector widths.
inline const std::vector<Shape>& odd_shapes() {
  static const std::vector<Shape> v{{1}, {7}, {33, 65}, {1023, 257}, {3, 5, 7, 9}, {(1 << 20) + 3}};
  return v;
}


// A fresh folder under the system's temp folder (named after `prefix`), removed with
// everything in it (made writable again first, for tests that take the permission away).
struct TempDir {
  std::filesystem::path path;
  explicit TempDir(const std::string& prefix = "kiln_test") {
    std::string tmpl = (std::filesystem::temp_directory_path() / (prefix + "_XXXXXX")).string();
    REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
    path = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::permissions(path, std::filesystem::perms::owner_all, std::filesystem::perm_options::add, ec);
    std::filesystem::remove_all(path, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string file(const std::string& name) const { return (path / name).string(); }
  // The names in the folder, sorted.
  std::vector<std::string> entries() const {
    std::vector<std::string> out;
    for (const auto& e : std::filesystem::directory_iterator(path)) out.push_back(e.path().filename().string());
    std::sort(out.begin(), out.end());
    return out;
  }
  // Paths of leftover temporary files (".tmp." in the name).
  std::vector<std::string> temp_files() const {
    std::vector<std::string> out;
    for (const auto& e : std::filesystem::directory_iterator(path))
      if (e.path().filename().string().find(".tmp.") != std::string::npos) out.push_back(e.path().string());
    return out;
  }
};

// The unary ops whose first-order gradient is one fused kernel (slot unary_backward,
// ops/unary.h), by name: the CPU and CUDA tests of that kernel run these.
inline std::vector<std::pair<const char*, std::function<Tensor(const Tensor&)>>> fused_grad_unary_ops() {
  return {{"relu", [](const Tensor& x) { return relu(x); }},
          {"leaky_relu", [](const Tensor& x) { return leaky_relu(x, 0.2); }},
          {"sigmoid", [](const Tensor& x) { return sigmoid(x); }},
          {"tanh", [](const Tensor& x) { return tanh(x); }},
          {"gelu", [](const Tensor& x) { return gelu(x); }},
          {"gelu_tanh", [](const Tensor& x) { return gelu_tanh(x); }},
          {"silu", [](const Tensor& x) { return silu(x); }}};
}

}  // namespace kiln::test

// CHECK_CLOSE(actual, expected[, rtol, atol]): tolerances by dtype unless given.
#define KILN_CLOSE_IMPL(MACRO, a, b, rtol, atol)                        \
  do {                                                                  \
    std::string kiln_cmp_msg_ = ::kiln::test::compare((a), (b), rtol, atol); \
    INFO(kiln_cmp_msg_);                                                \
    MACRO(kiln_cmp_msg_.empty());                                       \
  } while (0)
#define KILN_TOL_OF(a, b) ::kiln::test::tol_for((a).dtype(), (b).dtype())
#define CHECK_CLOSE(a, b) KILN_CLOSE_IMPL(CHECK, a, b, KILN_TOL_OF(a, b).rtol, KILN_TOL_OF(a, b).atol)
#define REQUIRE_CLOSE(a, b) KILN_CLOSE_IMPL(REQUIRE, a, b, KILN_TOL_OF(a, b).rtol, KILN_TOL_OF(a, b).atol)
#define CHECK_CLOSE_TOL(a, b, rtol, atol) KILN_CLOSE_IMPL(CHECK, a, b, rtol, atol)
#define REQUIRE_CLOSE_TOL(a, b, rtol, atol) KILN_CLOSE_IMPL(REQUIRE, a, b, rtol, atol)
#define CHECK_EQUAL_T(a, b) KILN_CLOSE_IMPL(CHECK, a, b, 0.0, 0.0)
#define REQUIRE_EQUAL_T(a, b) KILN_CLOSE_IMPL(REQUIRE, a, b, 0.0, 0.0)

// The expression throws kiln::Error (or a subclass) whose message contains `needle`
// (typically the op's name).
#define REQUIRE_KILN_ERROR(expr, needle)                          \
  do {                                                            \
    REQUIRE_THROWS_AS(expr, ::kiln::Error);                       \
    REQUIRE_THROWS_WITH(expr, Catch::Contains(needle));           \
  } while (0)
#define CHECK_KILN_ERROR(expr, needle)                            \
  do {                                                            \
    CHECK_THROWS_AS(expr, ::kiln::Error);                         \
    CHECK_THROWS_WITH(expr, Catch::Contains(needle));             \
  } while (0)
