// scaled_dot_product_attention on CUDA (cuda/kernels/attention.cu) against the CPU
// kernels: head dims 32, 64, 128 and odd ones, causal and not, Tq < Tk, odd sequence
// lengths, f32, f16 and bf16 (against the CPU in f32), with dropout (the same Philox
// mask); outputs and the gradients of q, k and v. The fused kernels are forced
// (AttentionBackend::Fused: Auto picks the composite for problems this small on CUDA);
// the composite backend on CUDA is checked against the CPU's fused kernels too.
#include "test_util.h"

using namespace kiln;
using test::cuda0;
using V = std::vector<Tensor>;

namespace {

struct Case {
  int64_t B, H, Tq, Tk, D, Dv;
  bool causal;
  double dropout;
};

// out, dq, dk, dv of <attention(q, k, v), g> on `device`, with the generator at `seed`.
V run_attention(const V& in, const Tensor& g, const Case& c, Device device,
                AttentionBackend backend = AttentionBackend::Fused) {
  AttentionBackendGuard guard(backend);
  V x;
  for (const Tensor& t : in) x.push_back(t.to(device).detach().requires_grad_(true));
  Generator gen(77);
  Tensor out = scaled_dot_product_attention(x[0], x[1], x[2], c.causal, c.dropout, std::nullopt, &gen);
  sum(mul(out, g.to(device))).backward();
  return {out.detach().cpu(), x[0].grad().cpu(), x[1].grad().cpu(), x[2].grad().cpu()};
}

// Inputs rounded to dt; the CPU runs them in f32 (exact copies) through its fused
// kernels, the GPU in dt through `backend`: outputs and the gradients of q, k, v.
void check_against_cpu(const Case& c, DType dt, uint64_t seed, AttentionBackend backend) {
  V in = {test::random_tensor({c.B, c.H, c.Tq, c.D}, dt, seed), test::random_tensor({c.B, c.H, c.Tk, c.D}, dt, seed + 1),
          test::random_tensor({c.B, c.H, c.Tk, c.Dv}, dt, seed + 2)};
  const Tensor g = test::random_tensor({c.B, c.H, c.Tq, c.Dv}, dt, seed + 4);
  V in32;
  for (const Tensor& t : in) in32.push_back(t.to(DType::F32));
  const V cpu = run_attention(in32, g.to(DType::F32), c, kCPU);
  const V gpu = run_attention(in, g, c, cuda0(), backend);
  const double tol = dt == DType::F32 ? 1e-4 : 3e-2;
  for (size_t i = 0; i < 4; ++i) {
    INFO("output " << i << " (out, dq, dk, dv)");
    CHECK(gpu[i].dtype() == dt);
    CHECK_CLOSE_TOL(gpu[i].to(DType::F32), cpu[i], tol, tol);
  }
}

}  // namespace

TEST_CASE("cuda attention: fused kernels against the CPU", "[cuda][attention]") {
  const std::vector<Case> cases = {
      {2, 3, 64, 64, 32, 32, false, 0.0}, {2, 3, 64, 64, 32, 32, true, 0.0},   {1, 4, 129, 129, 64, 64, true, 0.0},
      {1, 2, 77, 77, 128, 128, false, 0.0}, {2, 2, 5, 100, 64, 64, true, 0.0}, {1, 2, 33, 41, 19, 23, false, 0.0},
      {2, 2, 50, 50, 64, 64, true, 0.1},
  };
  uint64_t seed = 1;
  for (const Case& c : cases)
    for (DType dt : {DType::F32, DType::F16, DType::BF16}) {
      INFO("B " << c.B << " H " << c.H << " Tq " << c.Tq << " Tk " << c.Tk << " D " << c.D << " Dv " << c.Dv
                << (c.causal ? " causal" : "") << " dropout " << c.dropout << " " << dtype_name(dt));
      check_against_cpu(c, dt, seed += 3, AttentionBackend::Fused);
    }
}

TEST_CASE("cuda attention: f64 and 3-D inputs", "[cuda][attention]") {
  const Case c{1, 2, 17, 17, 40, 40, true, 0.0};
  V in = {test::random_tensor({c.B, c.H, c.Tq, c.D}, DType::F64, 5), test::random_tensor({c.B, c.H, c.Tk, c.D}, DType::F64, 6),
          test::random_tensor({c.B, c.H, c.Tk, c.Dv}, DType::F64, 7)};
  const Tensor g = test::random_tensor({c.B, c.H, c.Tq, c.Dv}, DType::F64, 8);
  const V cpu = run_attention(in, g, c, kCPU), gpu = run_attention(in, g, c, cuda0());
  for (size_t i = 0; i < 4; ++i) CHECK_CLOSE_TOL(gpu[i], cpu[i], 1e-10, 1e-10);
  AttentionBackendGuard fused(AttentionBackend::Fused);
  Tensor a = scaled_dot_product_attention(in[0].squeeze(0).to(cuda0()), in[1].squeeze(0).to(cuda0()),
                                          in[2].squeeze(0).to(cuda0()));
  CHECK_CLOSE_TOL(a.cpu(), scaled_dot_product_attention(in[0].squeeze(0), in[1].squeeze(0), in[2].squeeze(0)), 1e-10,
                  1e-10);
}

TEST_CASE("cuda attention: the composite backend (Auto's choice for small problems) against the CPU",
          "[cuda][attention]") {
  const std::vector<Case> cases = {{2, 3, 64, 64, 32, 32, true, 0.0}, {1, 2, 33, 41, 19, 23, false, 0.0},
                                   {2, 2, 50, 50, 64, 64, true, 0.1}};
  uint64_t seed = 500;
  for (const Case& c : cases)
    for (DType dt : {DType::F32, DType::BF16}) {
      INFO("Tq " << c.Tq << " Tk " << c.Tk << " D " << c.D << (c.causal ? " causal" : "") << " dropout " << c.dropout
                 << " " << dtype_name(dt));
      seed += 3;
      for (AttentionBackend b : {AttentionBackend::Composite, AttentionBackend::Auto}) {
        INFO(attention_backend_name(b));
        check_against_cpu(c, dt, seed, b);
      }
    }
}
