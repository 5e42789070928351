// CPU kernels of the binary elementwise family (slot `binary`) and of where (slot
// `where`). ops/binary.cpp has promoted the operands: integer division and arithmetic on
// bool never get here.
#include <kiln/core/cpu_loops.h>
#include <kiln/ops/op_list.h>

#include <algorithm>

namespace kiln::cpu {
namespace {

using namespace kiln::detail;

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

// One row of out = op(a, b) with steps sa, sb, so. The common steps (all 1, or one input
// a broadcast scalar) get loops of their own that the compiler vectorises; op is the same
// per-element arithmetic either way.
template <class T, class O, class Op>
inline void binary_row(const T* a, int64_t sa, const T* b, int64_t sb, O* o, int64_t so, int64_t n, Op op) {
  if (so == 1 && sa == 1 && sb == 1) {
    for (int64_t i = 0; i < n; ++i) o[i] = op(a[i], b[i]);
  } else if (so == 1 && sa == 1 && sb == 0) {
    const T bv = *b;
    for (int64_t i = 0; i < n; ++i) o[i] = op(a[i], bv);
  } else if (so == 1 && sa == 0 && sb == 1) {
    const T av = *a;
    for (int64_t i = 0; i < n; ++i) o[i] = op(av, b[i]);
  } else {
    for (int64_t i = 0; i < n; ++i) o[i * so] = op(a[i * sa], b[i * sb]);
  }
}

template <class T, class O, class Op>
void binary_rows(const TensorView& a, const TensorView& b, const TensorView& out, Op op) {
  const T* pa = a.ptr<const T>();
  const T* pb = b.ptr<const T>();
  O* po = out.ptr<O>();
  parallel_for_each_row<3>(out, {&a, &b, &out}, kElementwiseGrain, [&](const auto& off, int64_t n, const auto& st) {
    binary_row(pa + off[0], st[0], pb + off[1], st[1], po + off[2], st[2], n, op);
  });
}

// The flat-loop path for f32/f64: each op's arithmetic is the generic path's (widen to
// double, arith/compare, narrow), with the op chosen once per call instead of per element.
template <class T>
void binary_fast(BinaryOp op, const TensorView& a, const TensorView& b, const TensorView& out) {
  auto ar = [&](auto f) {
    binary_rows<T, T>(a, b, out, [f](T x, T y) { return static_cast<T>(f(static_cast<double>(x), static_cast<double>(y))); });
  };
  auto cmp = [&](auto f) {
    binary_rows<T, bool>(a, b, out, [f](T x, T y) { return f(static_cast<double>(x), static_cast<double>(y)); });
  };
  switch (op) {
    case BinaryOp::Add: return ar([](double x, double y) { return arith(BinaryOp::Add, x, y); });
    case BinaryOp::Sub: return ar([](double x, double y) { return arith(BinaryOp::Sub, x, y); });
    case BinaryOp::Mul: return ar([](double x, double y) { return arith(BinaryOp::Mul, x, y); });
    case BinaryOp::Div: return ar([](double x, double y) { return arith(BinaryOp::Div, x, y); });
    case BinaryOp::Maximum: return ar([](double x, double y) { return arith(BinaryOp::Maximum, x, y); });
    case BinaryOp::Minimum: return ar([](double x, double y) { return arith(BinaryOp::Minimum, x, y); });
    case BinaryOp::Pow: return ar([](double x, double y) { return arith(BinaryOp::Pow, x, y); });
    case BinaryOp::Eq: return cmp([](double x, double y) { return compare(BinaryOp::Eq, x, y); });
    case BinaryOp::Ne: return cmp([](double x, double y) { return compare(BinaryOp::Ne, x, y); });
    case BinaryOp::Lt: return cmp([](double x, double y) { return compare(BinaryOp::Lt, x, y); });
    case BinaryOp::Le: return cmp([](double x, double y) { return compare(BinaryOp::Le, x, y); });
    case BinaryOp::Gt: return cmp([](double x, double y) { return compare(BinaryOp::Gt, x, y); });
    case BinaryOp::Ge: return cmp([](double x, double y) { return compare(BinaryOp::Ge, x, y); });
    default: break;
  }
  // Any other op: through the generic path's fallbacks, element by element.
  if (is_comparison(op)) cmp([op](double x, double y) { return compare(op, x, y); });
  else ar([op](double x, double y) { return arith(op, x, y); });
}

}  // namespace

void binary(const TensorView& a_in, const TensorView& b_in, const TensorView& out, const BinaryParams& p) {
  const BinaryOp op = p.op;
  // A scalar operand passed by value: the loops read it from a one-element host buffer.
  TensorView a = a_in, b = b_in;
  Tensor scalar_storage;
  if (p.scalar_operand >= 0) {
    TensorView& v = p.scalar_operand == 0 ? a : b;
    scalar_storage = scalar_tensor(p.scalar, TensorOptions(v.dtype, kCPU));
    v.data = scalar_storage.data_ptr();
    v.storage = scalar_storage.storage().get();
  }
  visit_dtype(a.dtype, [&](auto tag) {
    using T = decltype(tag);
    using Acc = std::conditional_t<std::is_integral_v<T>, int64_t, double>;  // bool computes as int
    if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) {
      if (no_partial_overlap(a, out) && no_partial_overlap(b, out)) return binary_fast<T>(op, a, b, out);
    }
    const T* pa = a.ptr<const T>();
    const T* pb = b.ptr<const T>();
    auto load = [](T v) -> Acc {
      if constexpr (std::is_integral_v<T>) return static_cast<int64_t>(v);
      else return to_f64(v);
    };
    if (is_comparison(op)) {
      bool* po = out.ptr<bool>();
      for_each_element<3>(out, {&a, &b, &out},
                          [&](const auto& o) { po[o[2]] = compare(op, load(pa[o[0]]), load(pb[o[1]])); });
    } else {
      T* po = out.ptr<T>();
      for_each_element<3>(out, {&a, &b, &out},
                          [&](const auto& o) { po[o[2]] = convert<T>(arith<Acc>(op, load(pa[o[0]]), load(pb[o[1]]))); });
    }
  });
}

void where(const TensorView& cond, const TensorView& a, const TensorView& b, const TensorView& out) {
  visit_dtype(out.dtype, [&](auto tag) {
    using T = decltype(tag);
    const bool* pc = cond.ptr<const bool>();
    const T* pa = a.ptr<const T>();
    const T* pb = b.ptr<const T>();
    T* po = out.ptr<T>();
    if (no_partial_overlap(cond, out) && no_partial_overlap(a, out) && no_partial_overlap(b, out)) {
      // Row by row; the contiguous and broadcast-scalar rows as flat loops that vectorise.
      parallel_for_each_row<4>(out, {&cond, &a, &b, &out}, kElementwiseGrain,
                      [&](const auto& off, int64_t n, const auto& st) {
                        // The mask read as bytes and widened: GCC vectorises the select then,
                        // not with bool loads.
                        const unsigned char* c = reinterpret_cast<const unsigned char*>(pc + off[0]);
                        const T* x = pa + off[1];
                        const T* y = pb + off[2];
                        T* o = po + off[3];
                        if (st[0] == 1 && st[1] == 1 && st[2] == 1 && st[3] == 1) {
                          for (int64_t i = 0; i < n; ++i) {
                            const T xv = x[i], yv = y[i];  // both loaded: a select, not a branch
                            o[i] = int{c[i]} != 0 ? xv : yv;
                          }
                        } else if (st[0] == 1 && st[1] == 1 && st[2] == 0 && st[3] == 1) {
                          const T yv = *y;
                          for (int64_t i = 0; i < n; ++i) {
                            const T xv = x[i];
                            o[i] = int{c[i]} != 0 ? xv : yv;
                          }
                        } else if (st[0] == 1 && st[1] == 0 && st[2] == 1 && st[3] == 1) {
                          const T xv = *x;
                          for (int64_t i = 0; i < n; ++i) {
                            const T yv = y[i];
                            o[i] = int{c[i]} != 0 ? xv : yv;
                          }
                        } else {
                          for (int64_t i = 0; i < n; ++i) o[i * st[3]] = c[i * st[0]] ? x[i * st[1]] : y[i * st[2]];
                        }
                      });
      return;
    }
    for_each_element<4>(out, {&cond, &a, &b, &out},
                        [&](const auto& o) { po[o[3]] = pc[o[0]] ? pa[o[1]] : pb[o[2]]; });
  });
}

}  // namespace kiln::cpu
