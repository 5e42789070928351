// oneDNN convolutions and f32 matrix products for the CPU slots (ops/cpu/onednn.h).
//
// Each problem (direction, shapes, geometry) gets its primitive once and keeps it in a
// cache: oneDNN picks the layouts it computes fastest in (format `any`, usually channel
// blocks of 8 or 16), and the cached entry holds the reorders between those and kiln's
// plain NCHW/OIHW tensors. Scratch memory and reorder buffers come from kiln's CPU
// allocator, which hands the same blocks back every step.
//
// Two kinds of problem go elsewhere, measured faster (kiln_bench_ops convT_dcgan_in /
// convT_dcgan_out, the 28 x 28 DCGAN generator's first and last layers):
// - a kernel that covers the whole unpadded input (one output pixel: a transposed
//   convolution from 1 x 1 latents, a dense layer written as a convolution) is one matrix
//   product in the plain layouts, through oneDNN's sgemm, with no reorders;
// - the data gradient of a convolution with one input channel (a transposed convolution to
//   one channel, the generator's image layer) runs kiln's im2col loops: oneDNN's kernel
//   for it was about 8x slower.
#include <kiln/ops/cpu/onednn.h>

#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <oneapi/dnnl/dnnl.hpp>

#include <kiln/core/parallel.h>
#include <kiln/core/tensor.h>
#include <kiln/ops/op_list.h>

namespace kiln::onednn {
namespace {

using dnnl::memory;
using Dims = memory::dims;
using Fmt = memory::format_tag;
using DT = memory::data_type;

dnnl::engine& cpu_engine() {
  static dnnl::engine e(dnnl::engine::kind::cpu, 0);
  return e;
}

// One argument of a primitive: kiln's plain layout, the layout the primitive computes
// in, and the reorder between them when they differ (plain -> chosen for inputs, chosen
// -> plain for outputs).
struct Arg {
  int id;
  memory::desc plain, chosen;
  bool output;
  std::optional<dnnl::reorder> reorder;
};

struct Entry {
  bool supported = false;
  dnnl::primitive prim;
  std::vector<Arg> args;
  memory::desc scratch;
};

enum class Kind : int64_t { Forward, BackwardData, BackwardWeight };

struct Problem {
  Kind kind;
  int64_t N, C, H, W, O, kH, kW, Ho, Wo;
  Conv2dGeometry g;
  bool bias;
  std::vector<int64_t> key() const {
    return {static_cast<int64_t>(kind), N, C, H, W, O, kH, kW, Ho, Wo, g.stride_h, g.stride_w, g.pad_h, g.pad_w,
            g.dilation_h, g.dilation_w, g.groups, bias};
  }
};

Arg make_arg(int id, const memory::desc& plain, const memory::desc& chosen, bool output) {
  Arg a{id, plain, chosen, output, std::nullopt};
  if (plain != chosen) {
    auto& e = cpu_engine();
    dnnl::reorder::primitive_desc pd =
        output ? dnnl::reorder::primitive_desc(e, chosen, e, plain) : dnnl::reorder::primitive_desc(e, plain, e, chosen);
    a.reorder.emplace(pd);
  }
  return a;
}

Entry build(const Problem& p) {
  const Conv2dGeometry& g = p.g;
  // oneDNN's right padding follows from the output size; it is negative where input rows
  // are read by no output (a strided 1x1 convolution skips the last row of an even image).
  const int64_t pr_h = (p.Ho - 1) * g.stride_h + (p.kH - 1) * g.dilation_h + 1 - p.H - g.pad_h;
  const int64_t pr_w = (p.Wo - 1) * g.stride_w + (p.kW - 1) * g.dilation_w + 1 - p.W - g.pad_w;

  const Dims src_dims{p.N, p.C, p.H, p.W}, dst_dims{p.N, p.O, p.Ho, p.Wo};
  const Dims w_dims = g.groups == 1 ? Dims{p.O, p.C, p.kH, p.kW}
                                    : Dims{g.groups, p.O / g.groups, p.C / g.groups, p.kH, p.kW};
  const Fmt w_fmt = g.groups == 1 ? Fmt::oihw : Fmt::goihw;
  const Dims strides{g.stride_h, g.stride_w}, dilates{g.dilation_h - 1, g.dilation_w - 1};
  const Dims pl{g.pad_h, g.pad_w}, pr{pr_h, pr_w};
  const memory::desc src_plain(src_dims, DT::f32, Fmt::nchw), dst_plain(dst_dims, DT::f32, Fmt::nchw);
  const memory::desc w_plain(w_dims, DT::f32, w_fmt), b_plain(Dims{p.O}, DT::f32, Fmt::x);
  const memory::desc src_any(src_dims, DT::f32, Fmt::any), dst_any(dst_dims, DT::f32, Fmt::any);
  const memory::desc w_any(w_dims, DT::f32, Fmt::any);
  auto& eng = cpu_engine();
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  using dnnl::algorithm;
  using dnnl::prop_kind;

  auto fwd_desc = p.bias && p.kind == Kind::Forward
                      ? dnnl::convolution_forward::desc(prop_kind::forward_training, algorithm::convolution_direct,
                                                        src_any, w_any, b_plain, dst_any, strides, dilates, pl, pr)
                      : dnnl::convolution_forward::desc(prop_kind::forward_training, algorithm::convolution_direct,
                                                        src_any, w_any, dst_any, strides, dilates, pl, pr);
  dnnl::convolution_forward::primitive_desc fwd(fwd_desc, attr, eng);
  Entry e;
  e.supported = true;
  switch (p.kind) {
    case Kind::Forward: {
      e.prim = dnnl::convolution_forward(fwd);
      e.args.push_back(make_arg(DNNL_ARG_SRC, src_plain, fwd.src_desc(), false));
      e.args.push_back(make_arg(DNNL_ARG_WEIGHTS, w_plain, fwd.weights_desc(), false));
      if (p.bias) e.args.push_back(make_arg(DNNL_ARG_BIAS, b_plain, fwd.bias_desc(), false));
      e.args.push_back(make_arg(DNNL_ARG_DST, dst_plain, fwd.dst_desc(), true));
      e.scratch = fwd.scratchpad_desc();
      break;
    }
    case Kind::BackwardData: {
      dnnl::convolution_backward_data::desc d(algorithm::convolution_direct, src_any, w_any, dst_any, strides, dilates,
                                              pl, pr);
      dnnl::convolution_backward_data::primitive_desc pd(d, attr, eng, fwd);
      e.prim = dnnl::convolution_backward_data(pd);
      e.args.push_back(make_arg(DNNL_ARG_DIFF_DST, dst_plain, pd.diff_dst_desc(), false));
      e.args.push_back(make_arg(DNNL_ARG_WEIGHTS, w_plain, pd.weights_desc(), false));
      e.args.push_back(make_arg(DNNL_ARG_DIFF_SRC, src_plain, pd.diff_src_desc(), true));
      e.scratch = pd.scratchpad_desc();
      break;
    }
    case Kind::BackwardWeight: {
      dnnl::convolution_backward_weights::desc d(algorithm::convolution_direct, src_any, w_any, dst_any, strides,
                                                 dilates, pl, pr);
      dnnl::convolution_backward_weights::primitive_desc pd(d, attr, eng, fwd);
      e.prim = dnnl::convolution_backward_weights(pd);
      e.args.push_back(make_arg(DNNL_ARG_SRC, src_plain, pd.src_desc(), false));
      e.args.push_back(make_arg(DNNL_ARG_DIFF_DST, dst_plain, pd.diff_dst_desc(), false));
      e.args.push_back(make_arg(DNNL_ARG_DIFF_WEIGHTS, w_plain, pd.diff_weights_desc(), true));
      e.scratch = pd.scratchpad_desc();
      break;
    }
  }
  return e;
}

// The cached entry of a problem (built on first sight; an unsupported one is remembered).
Entry& entry(const Problem& p) {
  static std::mutex mutex;
  static std::map<std::vector<int64_t>, std::unique_ptr<Entry>> cache;
  std::lock_guard<std::mutex> lock(mutex);
  auto& slot = cache[p.key()];
  if (!slot) {
    try {
      slot = std::make_unique<Entry>(build(p));
    } catch (const dnnl::error&) {
      slot = std::make_unique<Entry>();  // oneDNN has no implementation: kiln's loops run it
    }
  }
  return *slot;
}

Tensor scratch_buffer(size_t bytes) { return empty({static_cast<int64_t>((bytes + 3) / 4)}, DType::F32); }

// Runs a cached entry on kiln's buffers (one per Arg, in order).
void execute(Entry& e, const std::vector<void*>& ptrs) {
  detail::sync_openmp_threads();
  auto& eng = cpu_engine();
  dnnl::stream s(eng);
  std::unordered_map<int, memory> margs;
  std::vector<Tensor> buffers;
  std::vector<std::pair<const Arg*, memory>> outputs;  // (arg, its chosen-layout memory)
  try {
    for (size_t i = 0; i < e.args.size(); ++i) {
      const Arg& a = e.args[i];
      memory user(a.plain, eng, ptrs[i]);
      if (!a.reorder) {
        margs.emplace(a.id, user);
        continue;
      }
      buffers.push_back(scratch_buffer(a.chosen.get_size()));
      memory m(a.chosen, eng, buffers.back().data_ptr());
      if (a.output) outputs.emplace_back(&a, user);
      else a.reorder->execute(s, {{DNNL_ARG_FROM, user}, {DNNL_ARG_TO, m}});
      margs.emplace(a.id, m);
    }
    if (size_t bytes = e.scratch.get_size(); bytes > 0) {
      buffers.push_back(scratch_buffer(bytes));
      margs.emplace(DNNL_ARG_SCRATCHPAD, memory(e.scratch, eng, buffers.back().data_ptr()));
    }
    e.prim.execute(s, margs);
    for (auto& [a, user] : outputs) a->reorder->execute(s, {{DNNL_ARG_FROM, margs.at(a->id)}, {DNNL_ARG_TO, user}});
    s.wait();
  } catch (const dnnl::error& err) {
    throw Error(detail::str("oneDNN convolution failed: ", err.what(), " (status ", static_cast<int>(err.status),
                            "); KILN_ONEDNN=0 runs kiln's own kernels instead"));
  }
}

Problem problem(Kind kind, const TensorView& x, const TensorView& w, const TensorView& y, const Conv2dGeometry& g,
                bool bias) {
  return Problem{kind,       x.size(0), x.size(1), x.size(2), x.size(3), w.size(0), w.size(2), w.size(3), y.size(2),
                 y.size(3), g,         bias};
}

// Row-major C (M, N) = op(A) op(B) + beta C through oneDNN's sgemm ('N' or 'T' per operand), on
// kiln's thread count.
void sgemm(char ta, char tb, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
           int64_t ldb, float beta, float* C, int64_t ldc) {
  detail::sync_openmp_threads();
  const dnnl_status_t st = dnnl_sgemm(ta, tb, M, N, K, 1.0f, A, lda, B, ldb, beta, C, ldc);
  KILN_CHECK(st == dnnl_success, "oneDNN's sgemm failed (status ", static_cast<int>(st), ") for ", M, "x", K, " @ ",
             K, "x", N);
}

// The kernel covers the whole unpadded input: y (N, O) = x (N, K) w (O, K)^T, K = C kH kW.
bool is_dense(const Problem& p) {
  const Conv2dGeometry& g = p.g;
  return p.H == p.kH && p.W == p.kW && p.Ho == 1 && p.Wo == 1 && g.pad_h == 0 && g.pad_w == 0 && g.groups == 1 &&
         g.dilation_h == 1 && g.dilation_w == 1;
}

}  // namespace

bool enabled() {
  static const bool on = [] {
    const char* s = std::getenv("KILN_ONEDNN");
    return !(s && std::strcmp(s, "0") == 0);
  }();
  return on;
}

void register_kernels() {
  set_kernel<op::matmul>(DeviceType::CPU, &matmul);
  set_kernel<op::conv2d_forward>(DeviceType::CPU, &conv2d_forward);
  set_kernel<op::conv2d_backward_data>(DeviceType::CPU, &conv2d_backward_data);
  set_kernel<op::conv2d_backward_weight>(DeviceType::CPU, &conv2d_backward_weight);
}

void conv2d_forward(const TensorView& x, const TensorView& w, const TensorView& bias, const TensorView& y,
                    const Conv2dGeometry& g) {
  if (x.dtype == DType::F32 && y.numel > 0) {
    const Problem p = problem(Kind::Forward, x, w, y, g, bias.defined);
    if (is_dense(p) && x.numel > 0) {
      const int64_t K = p.C * p.kH * p.kW;
      float* py = y.ptr<float>();
      if (bias.defined)
        for (int64_t n = 0; n < p.N; ++n) std::memcpy(py + n * p.O, bias.ptr<const float>(), p.O * sizeof(float));
      return sgemm('N', 'T', p.N, p.O, K, x.ptr<const float>(), K, w.ptr<const float>(), K, bias.defined ? 1.0f : 0.0f,
                   py, p.O);
    }
    Entry& e = entry(p);
    if (e.supported) {
      std::vector<void*> ptrs{x.data, w.data};
      if (bias.defined) ptrs.push_back(bias.data);
      ptrs.push_back(y.data);
      return execute(e, ptrs);
    }
  }
  cpu::conv2d_forward(x, w, bias, y, g);
}

void conv2d_backward_data(const TensorView& gy, const TensorView& w, const TensorView& gx, const Conv2dGeometry& g) {
  if (gx.dtype == DType::F32 && gx.numel > 0 && gy.numel > 0) {
    const Problem p = problem(Kind::BackwardData, gx, w, gy, g, false);
    if (is_dense(p)) {  // gx (N, K) = gy (N, O) w (O, K)
      const int64_t K = p.C * p.kH * p.kW;
      return sgemm('N', 'N', p.N, K, p.O, gy.ptr<const float>(), p.O, w.ptr<const float>(), K, 0.0f,
                   gx.ptr<float>(), K);
    }
    if (p.C > 1) {
      Entry& e = entry(p);
      if (e.supported) return execute(e, {gy.data, w.data, gx.data});
    }
  }
  cpu::conv2d_backward_data(gy, w, gx, g);
}

void conv2d_backward_weight(const TensorView& x, const TensorView& gy, const TensorView& gw,
                            const Conv2dGeometry& g) {
  if (gw.dtype == DType::F32 && gw.numel > 0 && gy.numel > 0 && x.numel > 0) {
    const Problem p = problem(Kind::BackwardWeight, x, gw, gy, g, false);
    if (is_dense(p)) {  // gw (O, K) = gy (N, O)^T x (N, K)
      const int64_t K = p.C * p.kH * p.kW;
      return sgemm('T', 'N', p.O, K, p.N, gy.ptr<const float>(), p.O, x.ptr<const float>(), K, 0.0f,
                   gw.ptr<float>(), K);
    }
    Entry& e = entry(p);
    if (e.supported) return execute(e, {x.data, gy.data, gw.data});
  }
  cpu::conv2d_backward_weight(x, gy, gw, g);
}

void matmul(const TensorView& a, const TensorView& b, const TensorView& out) {
  const int64_t batch = a.size(0), M = a.size(1), K = a.size(2), N = b.size(2);
  if (a.dtype != DType::F32 || M == 0 || N == 0 || K == 0) return cpu::matmul(a, b, out);
  // The operands as cpu::matmul reads them: row-major (R, C) with ld = stride(1), or the
  // transpose of a row-major (C, R) with ld = stride(2) (ops/matmul.cpp's blas_layout).
  auto trans = [](const TensorView& t) { return t.stride(2) == 1 ? 'N' : 'T'; };
  auto ld = [](const TensorView& t) { return t.stride(2) == 1 ? t.stride(1) : t.stride(2); };
  const char ta = trans(a), tb = trans(b);
  const int64_t lda = ld(a), ldb = ld(b);
  const float* pa = a.ptr<const float>();
  const float* pb = b.ptr<const float>();
  float* po = out.ptr<float>();
  for (int64_t i = 0; i < batch; ++i)
    sgemm(ta, tb, M, N, K, pa + i * a.stride(0), lda, pb + i * b.stride(0), ldb, 0.0f, po + i * M * N, N);
}

}  // namespace kiln::onednn
