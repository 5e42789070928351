// scaled_dot_product_attention (ops/attention.h) on the CPU: the fused kernels against the
// naive composite (matmul, mask, softmax, matmul) at odd sizes that cross the kernels'
// query and key tiles, causal and not, Tq < Tk, with dropout (the same Philox mask),
// every floating dtype; first- and second-order gradient checks in f64; O(T) memory; the
// error messages.
#include "test_util.h"

namespace kiln {
namespace {

using V = std::vector<Tensor>;

struct Shape4 {
  int64_t B, H, Tq, Tk, D, Dv;
};

V inputs(const Shape4& s, DType dt, uint64_t seed) {
  return {test::random_tensor({s.B, s.H, s.Tq, s.D}, dt, seed), test::random_tensor({s.B, s.H, s.Tk, s.D}, dt, seed + 1),
          test::random_tensor({s.B, s.H, s.Tk, s.Dv}, dt, seed + 2)};
}

// out and the gradients of <out, g> with respect to q, k, v.
V run(const std::function<Tensor(const V&)>& f, const V& in, const Tensor& g) {
  V x;
  for (const Tensor& t : in) x.push_back(t.detach().requires_grad_(true));
  Tensor out = f(x);
  sum(mul(out, g)).backward();
  return {out.detach(), x[0].grad(), x[1].grad(), x[2].grad()};
}

TEST_CASE("fused attention matches the naive composite", "[ops][attention]") {
  const std::vector<Shape4> shapes = {
      {2, 3, 37, 37, 19, 23},  // odd sizes, one key tile, three query tiles
      {1, 2, 130, 130, 8, 8},  // three key tiles
      {2, 1, 5, 70, 16, 4},    // Tq < Tk (decoding with a cache)
      {1, 1, 1, 1, 1, 1},
  };
  uint64_t seed = 100;
  for (const Shape4& s : shapes)
    for (bool causal : {false, true})
      for (DType dt : {DType::F32, DType::F64}) {
        INFO("B " << s.B << " H " << s.H << " Tq " << s.Tq << " Tk " << s.Tk << " D " << s.D << " Dv " << s.Dv
                  << (causal ? " causal " : " ") << dtype_name(dt));
        const V in = inputs(s, dt, seed += 10);
        const Tensor g = test::random_tensor({s.B, s.H, s.Tq, s.Dv}, dt, seed + 5);
        const V fused = run([&](const V& x) { return scaled_dot_product_attention(x[0], x[1], x[2], causal); }, in, g);
        const V naive = run([&](const V& x) { return naive_attention(x[0], x[1], x[2], causal); }, in, g);
        const double tol = dt == DType::F32 ? 2e-5 : 1e-12;
        for (size_t i = 0; i < 4; ++i) {
          INFO("output " << i << " (out, dq, dk, dv)");
          CHECK_CLOSE_TOL(fused[i], naive[i], tol, tol);
        }
      }
}

TEST_CASE("fused attention with dropout draws the naive composite's mask", "[ops][attention]") {
  const Shape4 s{2, 2, 21, 33, 8, 5};
  for (bool causal : {false, true}) {
    INFO((causal ? "causal" : "full"));
    const V in = inputs(s, DType::F64, 7);
    const Tensor g = test::random_tensor({s.B, s.H, s.Tq, s.Dv}, DType::F64, 9);
    Generator gen(42), probe(42);
    const uint64_t offset = probe.reserve(static_cast<uint64_t>(s.B * s.H * s.Tq * s.Tk));
    const V fused =
        run([&](const V& x) { return scaled_dot_product_attention(x[0], x[1], x[2], causal, 0.3, std::nullopt, &gen); },
            in, g);
    const V naive =
        run([&](const V& x) { return naive_attention(x[0], x[1], x[2], causal, 0.3, std::nullopt, 42, offset); }, in, g);
    for (size_t i = 0; i < 4; ++i) CHECK_CLOSE_TOL(fused[i], naive[i], 1e-12, 1e-12);
    // Some weights really were dropped: without dropout the output differs.
    CHECK_FALSE(test::allclose(fused[0], naive_attention(in[0], in[1], in[2], causal), 1e-3, 1e-3));
  }
}

TEST_CASE("attention backends: the composite backend gives the fused result; Auto's choice; the guard", "[ops][attention]") {
  // Forcing the composite through scaled_dot_product_attention: the same values and
  // gradients as the fused kernels, the same dropout mask from the same generator, 3-D too.
  const Shape4 s{2, 2, 21, 33, 8, 5};
  for (double p : {0.0, 0.3})
    for (bool causal : {false, true}) {
      INFO((causal ? "causal" : "full") << " dropout " << p);
      const V in = inputs(s, DType::F64, 17);
      const Tensor g = test::random_tensor({s.B, s.H, s.Tq, s.Dv}, DType::F64, 19);
      auto attend = [&](AttentionBackend b) {
        AttentionBackendGuard guard(b);
        CHECK(attention_backend() == b);
        Generator gen(42);
        return run([&](const V& x) { return scaled_dot_product_attention(x[0], x[1], x[2], causal, p, std::nullopt, &gen); },
                   in, g);
      };
      const V fused = attend(AttentionBackend::Fused), comp = attend(AttentionBackend::Composite);
      for (size_t i = 0; i < 4; ++i) CHECK_CLOSE_TOL(comp[i], fused[i], 1e-12, 1e-12);
    }
  {
    AttentionBackendGuard guard(AttentionBackend::Composite);
    const V in = inputs({1, 3, 9, 9, 4, 4}, DType::F32, 23);
    CHECK_CLOSE_TOL(scaled_dot_product_attention(in[0].squeeze(0), in[1].squeeze(0), in[2].squeeze(0), true),
                    naive_attention(in[0], in[1], in[2], true).squeeze(0), 1e-6, 1e-6);
  }
  // Auto: the fused kernels on the CPU at any size; on CUDA the composite up to
  // kAttentionCompositeMaxScores scores, fused beyond; the guard nests and restores.
  CHECK(attention_backend() == AttentionBackend::Auto);
  const Device gpu = cuda_device(0);
  AttentionParams small;
  small.B = 32, small.H = 6, small.Tq = small.Tk = 256;
  AttentionParams big = small;
  big.Tq = big.Tk = 32768;
  CHECK_FALSE(attention_uses_composite(small, kCPU));
  CHECK(attention_uses_composite(small, gpu));
  CHECK_FALSE(attention_uses_composite(big, gpu));
  {
    AttentionBackendGuard outer(AttentionBackend::Fused);
    CHECK_FALSE(attention_uses_composite(small, gpu));
    {
      AttentionBackendGuard inner(AttentionBackend::Composite);
      CHECK(attention_uses_composite(big, kCPU));
      CHECK(std::string(attention_backend_name(attention_backend())) == "composite");
    }
    CHECK(attention_backend() == AttentionBackend::Fused);
  }
  CHECK(attention_backend() == AttentionBackend::Auto);
}

TEST_CASE("fused attention: 3-D inputs, scale, half dtypes", "[ops][attention]") {
  const V in = inputs({1, 2, 9, 11, 6, 7}, DType::F32, 3);
  Tensor a = scaled_dot_product_attention(in[0].squeeze(0), in[1].squeeze(0), in[2].squeeze(0), false, 0.0, 0.7);
  CHECK(a.sizes() == Shape{2, 9, 7});
  CHECK_CLOSE_TOL(a, naive_attention(in[0], in[1], in[2], false, 0.0, 0.7).squeeze(0), 2e-5, 2e-5);
  for (DType dt : {DType::F16, DType::BF16}) {
    INFO(dtype_name(dt));
    V h;
    for (const Tensor& t : in) h.push_back(t.to(dt));
    Tensor out = scaled_dot_product_attention(h[0], h[1], h[2], true);
    CHECK(out.dtype() == dt);
    const Tensor want = naive_attention(h[0].to(DType::F32), h[1].to(DType::F32), h[2].to(DType::F32), true);
    const test::Tol t = test::tol_for(dt);
    CHECK_CLOSE_TOL(out.to(DType::F32), want, t.rtol * 4, t.atol * 4);
  }
}

TEST_CASE("fused attention: gradcheck and gradgradcheck in f64", "[ops][attention]") {
  const V in = inputs({1, 2, 6, 7, 3, 4}, DType::F64, 11);
  GradcheckOptions opt;
  opt.atol = 1e-6;
  opt.rtol = 1e-5;
  for (bool causal : {false, true}) {
    for (double p : {0.0, 0.25}) {
      INFO((causal ? "causal" : "full") << " dropout " << p);
      // A fixed generator state per call, so that finite differences see the same mask.
      auto f = [&](const V& x) {
        Generator gen(5);
        return scaled_dot_product_attention(x[0], x[1], x[2], causal, p, std::nullopt, &gen);
      };
      GradcheckResult r = gradcheck(f, in, opt);
      INFO(r.message);
      CHECK(r.ok);
      GradcheckResult r2 = gradgradcheck(f, in, opt);
      INFO(r2.message);
      CHECK(r2.ok);
    }
  }
}

TEST_CASE("fused attention keeps O(T) extra memory", "[ops][attention]") {
  const int64_t T = 1024, D = 16;
  const V in = inputs({1, 1, T, T, D, D}, DType::F32, 21);
  Allocator& a = runtime(kCPU).allocator();
  a.reset_peak(kCPU);
  const int64_t before = a.stats(kCPU).allocated;
  Tensor out = scaled_dot_product_attention(in[0], in[1], in[2], true);
  const int64_t extra = a.stats(kCPU).peak_allocated - before;
  // out (T x D) and lse (T) only; the naive scores alone would be T x T x 4 = 4 MiB.
  CHECK(extra <= T * D * 4 + T * 4 + 4096);
  CHECK(extra < T * T * 4 / 16);
}

TEST_CASE("fused attention: bad inputs name the problem", "[ops][attention]") {
  const Tensor q = zeros({2, 4, 8, 16}), k = zeros({2, 4, 10, 16}), v = zeros({2, 4, 10, 16});
  CHECK_KILN_ERROR(scaled_dot_product_attention(q, zeros({2, 3, 10, 16}), v), "same number of heads");
  CHECK_KILN_ERROR(scaled_dot_product_attention(q, zeros({2, 4, 10, 8}), v), "same head dim");
  CHECK_KILN_ERROR(scaled_dot_product_attention(q, k, zeros({2, 4, 9, 16})), "same sequence length");
  CHECK_KILN_ERROR(scaled_dot_product_attention(q, zeros({1, 4, 10, 16}), zeros({1, 4, 10, 16})), "same batch size");
  CHECK_KILN_ERROR(scaled_dot_product_attention(zeros({2, 4, 12, 16}), k, v, true), "no more queries than keys");
  CHECK_KILN_ERROR(scaled_dot_product_attention(q, k, v, false, 1.0), "dropout_p");
  CHECK_KILN_ERROR(scaled_dot_product_attention(q, k.to(DType::F64), v), "share a dtype");
  CHECK_KILN_ERROR(scaled_dot_product_attention(zeros({8, 16}), zeros({8, 16}), zeros({8, 16})), "(B, H, T, D)");
}

}  // namespace
}  // namespace kiln
