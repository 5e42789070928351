// scaled_dot_product_attention: checks, the slots attention_forward / attention_backward
// (ops/cpu/attention.cpp, cuda/kernels/attention.cu), dropout counters, the backward
// formula; and naive_attention, the same function from plain ops.
#include <kiln/ops/attention.h>
#include <kiln/ops/autocast.h>

#include <cmath>

#include <kiln/core/autograd.h>
#include <kiln/ops/binary.h>
#include <kiln/ops/checks.h>
#include <kiln/ops/dropout.h>
#include <kiln/ops/matmul.h>
#include <kiln/ops/op_list.h>
#include <kiln/ops/softmax.h>

namespace kiln {
namespace {

constexpr const char* kOp = "scaled_dot_product_attention";

using V = std::vector<Tensor>;

// The checked problem: inputs as 4-D, the parameters.
struct Problem {
  Tensor q, k, v;
  AttentionParams p;
  bool batched;
};

Problem check(const Tensor& q_in, const Tensor& k_in, const Tensor& v_in, bool causal, double dropout_p,
              std::optional<double> scale) {
  detail::check_defined(kOp, q_in);
  detail::check_defined(kOp, k_in);
  detail::check_defined(kOp, v_in);
  detail::check_floating(kOp, q_in);
  KILN_CHECK(q_in.dim() == 4 || q_in.dim() == 3, kOp, ": q must be (B, H, T, D) or (H, T, D), got ", describe(q_in));
  KILN_CHECK(k_in.dim() == q_in.dim() && v_in.dim() == q_in.dim(), kOp, ": q, k and v must have the same number of dims, got q ",
             describe(q_in), ", k ", describe(k_in), ", v ", describe(v_in));
  KILN_CHECK(k_in.dtype() == q_in.dtype() && v_in.dtype() == q_in.dtype(), kOp, ": q, k and v must share a dtype, got q ",
             describe(q_in), ", k ", describe(k_in), ", v ", describe(v_in));
  KILN_CHECK(k_in.device() == q_in.device() && v_in.device() == q_in.device(), kOp,
             ": q, k and v must be on one device, got q ", describe(q_in), ", k ", describe(k_in), ", v ", describe(v_in));
  Problem pr;
  pr.batched = q_in.dim() == 4;
  pr.q = pr.batched ? q_in : q_in.unsqueeze(0);
  pr.k = pr.batched ? k_in : k_in.unsqueeze(0);
  pr.v = pr.batched ? v_in : v_in.unsqueeze(0);
  const Tensor &q = pr.q, &k = pr.k, &v = pr.v;
  KILN_CHECK(k.size(0) == q.size(0) && v.size(0) == q.size(0), kOp, ": q, k and v must have the same batch size, got q ",
             describe(q_in), ", k ", describe(k_in), ", v ", describe(v_in));
  KILN_CHECK(k.size(1) == q.size(1) && v.size(1) == q.size(1), kOp,
             ": q, k and v must have the same number of heads, got q ", describe(q_in), ", k ", describe(k_in), ", v ",
             describe(v_in));
  KILN_CHECK(k.size(3) == q.size(3), kOp, ": q and k must have the same head dim (last dim), got q ", describe(q_in),
             ", k ", describe(k_in));
  KILN_CHECK(v.size(2) == k.size(2), kOp, ": k and v must have the same sequence length, got k ", describe(k_in),
             ", v ", describe(v_in));
  KILN_CHECK(q.size(3) >= 1 && v.size(3) >= 1, kOp, ": head dims must be at least 1, got q ", describe(q_in), ", v ",
             describe(v_in));
  KILN_CHECK(!causal || q.size(2) <= k.size(2), kOp, ": causal attention needs no more queries than keys, got q ",
             describe(q_in), ", k ", describe(k_in));
  KILN_CHECK(dropout_p >= 0.0 && dropout_p < 1.0, kOp, ": dropout_p must lie in [0, 1), got ", dropout_p);
  const double s = scale ? *scale : 1.0 / std::sqrt(static_cast<double>(q.size(3)));
  KILN_CHECK(std::isfinite(s), kOp, ": scale must be finite, got ", s);
  pr.p = AttentionParams{q.size(0), q.size(1), q.size(2), k.size(2), q.size(3), v.size(3), causal, s, dropout_p, 0, 0};
  return pr;
}

// The composite (naive) forward on 4-D inputs: what the fused kernels compute.
Tensor composite(const V& in, const AttentionParams& p) {
  const Tensor &q = in[0], &k = in[1], &v = in[2];
  Tensor s = mul(matmul(q, k.transpose(2, 3)), p.scale);
  if (p.causal) {
    // Key j is masked for query i when j > i + Tk - Tq.
    Tensor i = arange(p.Tq, TensorOptions(DType::I64, q.device())).reshape({p.Tq, 1});
    Tensor j = arange(p.Tk, TensorOptions(DType::I64, q.device())).reshape({1, p.Tk});
    Tensor masked = gt(j, add(i, p.Tk - p.Tq));
    s = where(masked, -INFINITY, s);
  }
  Tensor prob = softmax(s, -1);  // causal rows keep key 0 at least (Tq <= Tk): none is all -inf
  if (p.dropout_p > 0) prob = dropout_with_mask(prob.contiguous(), p.dropout_p, p.seed, p.offset);
  return matmul(prob, v);
}

thread_local AttentionBackend t_backend = AttentionBackend::Auto;

}  // namespace

AttentionBackendGuard::AttentionBackendGuard(AttentionBackend backend) : prev_(t_backend) { t_backend = backend; }
AttentionBackendGuard::~AttentionBackendGuard() { t_backend = prev_; }
AttentionBackend attention_backend() { return t_backend; }

const char* attention_backend_name(AttentionBackend b) {
  switch (b) {
    case AttentionBackend::Fused: return "fused";
    case AttentionBackend::Composite: return "composite";
    default: return "auto";
  }
}

bool attention_uses_composite(const AttentionParams& p, Device device) {
  switch (t_backend) {
    case AttentionBackend::Fused: return false;
    case AttentionBackend::Composite: return true;
    default: return device.is_cuda() && p.B * p.H * p.Tq * p.Tk <= kAttentionCompositeMaxScores;
  }
}

Tensor scaled_dot_product_attention(const Tensor& q_in, const Tensor& k_in, const Tensor& v_in, bool causal,
                                    double dropout_p, std::optional<double> scale, Generator* gen) {
  Problem pr = check(detail::autocast_half(q_in), detail::autocast_half(k_in), detail::autocast_half(v_in), causal,
                     dropout_p, scale);  // ops/autocast.h
  AttentionParams& p = pr.p;
  if (p.dropout_p > 0) {
    Generator& g = gen != nullptr ? *gen : default_generator();
    p.seed = g.seed();
    p.offset = g.reserve(static_cast<uint64_t>(p.B * p.H * p.Tq * p.Tk));
  }
  if (attention_uses_composite(p, pr.q.device())) {
    // The composite keeps autograd's graph (its backward is the ops' own, and twice
    // differentiable); the same counters give the same dropout mask as the kernels.
    Tensor out = composite({pr.q, pr.k, pr.v}, p);
    return pr.batched ? out : out.squeeze(0);
  }
  Tensor qc, kc, vc, out, lse;
  {
    NoGradGuard raw;
    qc = pr.q.contiguous().detach();
    kc = pr.k.contiguous().detach();
    vc = pr.v.contiguous().detach();
    out = empty({p.B, p.H, p.Tq, p.Dv}, TensorOptions(qc.dtype(), qc.device()));
    lse = empty({p.B, p.H, p.Tq}, TensorOptions(accumulate_dtype(qc.dtype()), qc.device()));
    if (out.numel() > 0)
      kernel<op::attention_forward>(qc.device())(kernel_view(qc), kernel_view(kc), kernel_view(vc), kernel_view(out),
                                                 kernel_view(lse), p);
  }
  Tensor result = out;
  if (any_requires_grad({pr.q, pr.k, pr.v})) {
    result = record(kOp, {pr.q, pr.k, pr.v}, out,
                    [in = V{pr.q, pr.k, pr.v}, qc, kc, vc, o = out.detach(), lse, p](const Tensor& g) {
      if (grad_enabled())  // create_graph: the composite's differentiable gradients
        return composite_backward([&](const V& x) { return composite(x, p); }, in, g);
      Tensor dq = empty_like(qc), dk = empty_like(kc), dv = empty_like(vc);
      if (o.numel() == 0 || kc.numel() == 0) {
        dq.fill_(0);
        dk.fill_(0);
        dv.fill_(0);
      } else {
        const Tensor gc = g.contiguous();
        kernel<op::attention_backward>(qc.device())(kernel_view(qc), kernel_view(kc), kernel_view(vc), kernel_view(o),
                                                    kernel_view(gc), kernel_view(lse), kernel_view(dq), kernel_view(dk),
                                                    kernel_view(dv), p);
      }
      return V{dq, dk, dv};
    }, {pr.q, pr.k, pr.v, qc, kc, vc}, true);
  }
  return pr.batched ? result : result.squeeze(0);
}

Tensor naive_attention(const Tensor& q, const Tensor& k, const Tensor& v, bool causal, double dropout_p,
                       std::optional<double> scale, uint64_t seed, uint64_t offset) {
  Problem pr = check(q, k, v, causal, dropout_p, scale);
  pr.p.seed = seed;
  pr.p.offset = offset;
  Tensor out = composite({pr.q, pr.k, pr.v}, pr.p);
  return pr.batched ? out : out.squeeze(0);
}

}  // namespace kiln
