// Performer and RFA attention (ops/linear_attention.h) on CUDA against the CPU: they are
// composites of ops with CUDA kernels (matmul, exp, sin/cos, reductions), so this checks
// the whole chain on the device, causal (chunks that do not divide T, Tq < Tk) and not,
// outputs and the gradients of q, k and v, in f32.
#include "test_util.h"

#include <kiln/ops/linear_attention.h>

using namespace kiln;
using test::cuda0;
using V = std::vector<Tensor>;

TEST_CASE("cuda linear attention: Performer and RFA against the CPU", "[cuda][linear_attention]") {
  struct Case {
    int64_t B, H, Tq, Tk, D;
    bool causal;
  };
  Generator fg(4);
  uint64_t seed = 10;
  for (const Case& c : std::vector<Case>{{2, 3, 37, 37, 16, true}, {1, 2, 5, 40, 32, true}, {2, 2, 33, 33, 64, false}}) {
    const Tensor w = gaussian_features(24, c.D, fg);
    for (const char* kind : {"performer", "rfa"}) {
      INFO(kind << " Tq " << c.Tq << " Tk " << c.Tk << " D " << c.D << (c.causal ? " causal" : ""));
      const V in = {test::random_tensor({c.B, c.H, c.Tq, c.D}, DType::F32, seed += 3, 0.5),
                    test::random_tensor({c.B, c.H, c.Tk, c.D}, DType::F32, seed + 1, 0.5),
                    test::random_tensor({c.B, c.H, c.Tk, c.D}, DType::F32, seed + 2)};
      const Tensor g = test::random_tensor({c.B, c.H, c.Tq, c.D}, DType::F32, seed + 4);
      auto run = [&](Device d) {
        V x;
        for (const Tensor& t : in) x.push_back(t.to(d).detach().requires_grad_(true));
        Tensor out = std::string(kind) == "performer" ? performer_attention(x[0], x[1], x[2], w, c.causal, -1, 8)
                                                      : rfa_attention(x[0], x[1], x[2], w, c.causal, 0.7, 8);
        sum(mul(out, g.to(d))).backward();
        return V{out.detach().cpu(), x[0].grad().cpu(), x[1].grad().cpu(), x[2].grad().cpu()};
      };
      const V cpu = run(kCPU), gpu = run(cuda0());
      for (size_t i = 0; i < 4; ++i) {
        INFO("output " << i << " (out, dq, dk, dv)");
        CHECK_CLOSE_TOL(gpu[i], cpu[i], 1e-4, 1e-4);
      }
    }
  }
}
