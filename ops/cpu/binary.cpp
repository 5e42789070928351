// CPU reference for the binary elementwise family and where.
#include <kiln/ops/cpu/cpu_backend.h>
#include <kiln/ops/cpu/loops.h>

#include <algorithm>

namespace kiln::detail {
namespace {

int64_t ipow(int64_t base, int64_t e) {
  if (e < 0) return base == 1 ? 1 : (base == -1 ? (e % 2 ? -1 : 1) : 0);
  int64_t r = 1;
  while (e) {
    if (e & 1) r *= base;
    base *= base;
    e >>= 1;
  }
  return r;
}

template <class A>  // A: double or int64_t
A arith(BinaryOp op, A a, A b) {
  switch (op) {
    case BinaryOp::Add: return a + b;
    case BinaryOp::Sub: return a - b;
    case BinaryOp::Mul: return a * b;
    case BinaryOp::Div: return a / b;
    case BinaryOp::Pow:
      if constexpr (std::is_same_v<A, double>) return std::pow(a, b);
      else return ipow(a, b);
    case BinaryOp::Maximum:
      if constexpr (std::is_same_v<A, double>) if (std::isnan(a) || std::isnan(b)) return a + b;
      return std::max(a, b);
    case BinaryOp::Minimum:
      if constexpr (std::is_same_v<A, double>) if (std::isnan(a) || std::isnan(b)) return a + b;
      return std::min(a, b);
    default: break;
  }
  return a;
}

template <class A>
bool compare(BinaryOp op, A a, A b) {
  switch (op) {
    case BinaryOp::Eq: return a == b;
    case BinaryOp::Ne: return a != b;
    case BinaryOp::Lt: return a < b;
    case BinaryOp::Le: return a <= b;
    case BinaryOp::Gt: return a > b;
    case BinaryOp::Ge: return a >= b;
    default: break;
  }
  return false;
}

}  // namespace

void CpuBackend::binary(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out) {
  visit_dtype(a.dtype(), [&](auto tag) {
    using T = decltype(tag);
    using Acc = std::conditional_t<std::is_integral_v<T>, int64_t, double>;  // bool computes as int
    const T* pa = static_cast<const T*>(a.data_ptr());
    const T* pb = static_cast<const T*>(b.data_ptr());
    auto load = [](T v) -> Acc {
      if constexpr (std::is_integral_v<T>) return static_cast<int64_t>(v);
      else return to_f64(v);
    };
    if (is_comparison(op)) {
      bool* po = static_cast<bool*>(out.data_ptr());
      for_each_element<3>(out.sizes(), {&a.strides(), &b.strides(), &out.strides()},
                          [&](const auto& o) { po[o[2]] = compare(op, load(pa[o[0]]), load(pb[o[1]])); });
    } else {
      T* po = static_cast<T*>(out.data_ptr());
      if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
        KILN_CHECK(op != BinaryOp::Div, "div: integer division reached the CPU kernel");
      }
      for_each_element<3>(out.sizes(), {&a.strides(), &b.strides(), &out.strides()},
                          [&](const auto& o) { po[o[2]] = convert<T>(arith<Acc>(op, load(pa[o[0]]), load(pb[o[1]]))); });
    }
  });
}

void CpuBackend::where(const Tensor& cond, const Tensor& a, const Tensor& b, const Tensor& out) {
  visit_dtype(out.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const bool* pc = static_cast<const bool*>(cond.data_ptr());
    const T* pa = static_cast<const T*>(a.data_ptr());
    const T* pb = static_cast<const T*>(b.data_ptr());
    T* po = static_cast<T*>(out.data_ptr());
    for_each_element<4>(out.sizes(), {&cond.strides(), &a.strides(), &b.strides(), &out.strides()},
                        [&](const auto& o) { po[o[3]] = pc[o[0]] ? pa[o[1]] : pb[o[2]]; });
  });
}

}  // namespace kiln::detail
