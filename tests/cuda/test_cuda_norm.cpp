// batch_norm / layer_norm / group_norm on CUDA against the CPU reference: outputs,
// saved-statistics-driven gradients (dx, dweight, dbias) and running statistics, in f32
// and bf16 (with bf16 or f32 parameters), on sizes that take every kernel path: layer
// norm rows of 1, 33, 768, 1024, 1025 and 4097 elements (warp-per-row with and without
// vector loads, block-per-row), many rows (several dweight chunks); batch norm with short
// spatial runs (columns path), long ones (planar path, one or many splits), N * HW large
// and C odd; group norm with rows short and long and S above the block threshold; a
// misaligned base and non-contiguous input.
#include "test_util.h"

#include <algorithm>
#include <cmath>
#include <functional>

using namespace kiln;
using test::cuda0;
using V = std::vector<Tensor>;

namespace {

// Tolerances: relative per element plus absolute relative to the largest reference
// magnitude (sums over many rows grow; a bf16 result may round one ulp apart).
struct Tols {
  double rtol, atol;
};
Tols tols(DType t, bool grad) {
  if (t == DType::BF16 || t == DType::F16) return {2e-2, 2e-2};
  return grad ? Tols{1e-4, 1e-5} : Tols{1e-5, 1e-5};
}

void check_close_scaled(const Tensor& actual, const Tensor& expected, Tols t) {
  REQUIRE(actual.dtype() == expected.dtype());
  std::vector<double> e = test::values(expected);
  double scale = 1.0;
  for (double v : e) scale = std::max(scale, std::fabs(v));
  CHECK_CLOSE_TOL(actual.cpu(), expected, t.rtol, t.atol * scale);
}

// Runs f on CPU leaves and on CUDA copies, compares the outputs, backpropagates the same
// output gradient and compares the gradients of every floating input.
void check_vs_cpu(const std::function<Tensor(const V&)>& f, const V& inputs, uint64_t seed) {
  V cpu, gpu;
  for (const Tensor& in : inputs) {
    if (!in.defined()) {
      cpu.push_back(in);
      gpu.push_back(in);
      continue;
    }
    cpu.push_back(in.clone().set_requires_grad(true));
    gpu.push_back(in.to(cuda0()).set_requires_grad(true));
  }
  Tensor yc = f(cpu), yg = f(gpu);
  REQUIRE(yg.is_cuda());
  {
    INFO("forward");
    check_close_scaled(yg, yc, tols(yc.dtype(), false));
  }
  Generator g(seed);
  Tensor w = randn(yc.sizes(), DType::F32, &g).to(yc.dtype());
  yc.backward(w);
  yg.backward(w.to(cuda0()));
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (!inputs[i].defined()) continue;
    INFO("gradient of input " << i << " " << describe(inputs[i]));
    REQUIRE(gpu[i].grad().defined());
    CHECK(gpu[i].grad().is_cuda());
    check_close_scaled(gpu[i].grad(), cpu[i].grad(), tols(inputs[i].dtype(), true));
  }
}

// A contiguous copy of t whose data starts one element past a 16-byte boundary.
Tensor misaligned(const Tensor& t) {
  Tensor big = empty({t.numel() + 1}, TensorOptions(t.dtype(), t.device()));
  Tensor v = big.narrow(0, 1, t.numel()).view(t.sizes());
  v.copy_(t);
  return v;
}

}  // namespace

TEST_CASE("cuda layer_norm vs cpu", "[cuda][norm]") {
  for (DType dt : {DType::F32, DType::BF16}) {
    for (int64_t D : {1, 33, 64, 768, 1024, 1025, 4097}) {
      for (int64_t M : {1, 7, 300}) {
        INFO(dtype_name(dt) << " M " << M << " D " << D);
        uint64_t seed = static_cast<uint64_t>(D * 1000 + M);
        Tensor x = add(test::random_tensor({M, D}, DType::F32, seed, 2.0), 0.5).to(dt);
        Tensor w = test::random_tensor({D}, dt, seed + 1), b = test::random_tensor({D}, dt, seed + 2);
        check_vs_cpu([D](const V& v) { return layer_norm(v[0], {D}, v[1], v[2]); }, {x, w, b}, seed + 3);
      }
    }
    INFO(dtype_name(dt));
    // No affine; several leading dims; normalised over two dims.
    Tensor x = test::random_tensor({3, 5, 6, 7}, dt, 11);
    check_vs_cpu([](const V& v) { return layer_norm(v[0], {7}); }, {x}, 12);
    check_vs_cpu([](const V& v) { return layer_norm(v[0], {6, 7}, v[1], Tensor()); },
                 {x, test::random_tensor({6, 7}, dt, 13)}, 14);
    // Many rows: several dweight / dbias chunks.
    Tensor xm = test::random_tensor({5000, 48}, dt, 15);
    check_vs_cpu([](const V& v) { return layer_norm(v[0], {48}, v[1], v[2]); },
                 {xm, test::random_tensor({48}, dt, 16), test::random_tensor({48}, dt, 17)}, 18);
  }
  // bf16 input with f32 parameters.
  Tensor xb = test::random_tensor({9, 768}, DType::BF16, 20);
  check_vs_cpu([](const V& v) { return layer_norm(v[0], {768}, v[1], v[2]); },
               {xb, test::random_tensor({768}, DType::F32, 21), test::random_tensor({768}, DType::F32, 22)}, 23);
  // Misaligned base (scalar paths) and a non-contiguous input.
  for (int64_t D : {64, 2048}) {
    Tensor x = test::random_tensor({6, D}, DType::F32, 24 + D);
    Tensor w = test::random_tensor({D}, DType::F32, 25);
    Tensor yc = layer_norm(x, {D}, w, Tensor());
    check_close_scaled(layer_norm(misaligned(x.to(cuda0())), {D}, w.to(cuda0()), Tensor()), yc, tols(DType::F32, false));
    check_close_scaled(layer_norm(test::transposed_copy(x.to(cuda0())), {D}, w.to(cuda0()), Tensor()), yc,
                       tols(DType::F32, false));
  }
  // The saved statistics: rows with a large offset stay accurate.
  Tensor off = add(test::random_tensor({4, 4097}, DType::F32, 26), 1000.0);
  check_close_scaled(layer_norm(off.to(cuda0()), {4097}), layer_norm(off, {4097}), {1e-4, 1e-4});
}

TEST_CASE("cuda batch_norm vs cpu: training, eval and running statistics", "[cuda][norm]") {
  struct Shape3 {
    int64_t N, C, H, W;
  };
  // S = H W: 1 and 2 take the columns path; 49, 1089 and 4096 the planar path (4096 with
  // C = 3 and C = 1: several splits and a finalize kernel).
  const std::vector<Shape3> shapes{{64, 5, 1, 1}, {3, 7, 1, 2}, {5000, 7, 1, 1}, {4, 3, 7, 7},
                                   {2, 17, 33, 33}, {32, 3, 64, 64},  {8, 1, 250, 400}};
  for (DType dt : {DType::F32, DType::BF16}) {
    for (DType pt : {dt, DType::F32}) {
      if (dt == DType::F32 && pt != dt) continue;
      for (const Shape3& s : shapes) {
        INFO(dtype_name(dt) << " params " << dtype_name(pt) << " shape (" << s.N << ", " << s.C << ", " << s.H << ", "
                            << s.W << ")");
        uint64_t seed = static_cast<uint64_t>(s.N * 131 + s.C * 17 + s.H);
        Tensor x = add(mul(test::random_tensor({s.N, s.C, s.H, s.W}, DType::F32, seed), 1.5), 0.25).to(dt);
        Tensor w = test::random_tensor({s.C}, pt, seed + 1), b = test::random_tensor({s.C}, pt, seed + 2);
        // Running stats on both devices, updated by two training steps.
        Tensor rmc = zeros({s.C}, pt), rvc = ones({s.C}, pt);
        Tensor rmg = rmc.to(cuda0()), rvg = rvc.to(cuda0());
        for (int step = 0; step < 2; ++step) {
          INFO("training step " << step);
          Tensor xs = step == 0 ? x : mul(x, 0.5 + step).to(dt);
          check_vs_cpu(
              [&](const V& v) {
                bool gpu = v[0].is_cuda();
                return batch_norm(v[0], gpu ? rmg : rmc, gpu ? rvg : rvc, v[1], v[2], true, 0.1, 1e-5);
              },
              {xs, w, b}, seed + 3 + step);
        }
        // Each step ran one forward per device: both pairs saw the same two updates.
        const Tols rt = pt == DType::F32 ? Tols{1e-5, 1e-6} : Tols{2e-2, 1e-2};
        check_close_scaled(rmg, rmc, rt);
        check_close_scaled(rvg, rvc, rt);
        // Eval mode with the updated statistics.
        check_vs_cpu(
            [&](const V& v) {
              bool gpu = v[0].is_cuda();
              return batch_norm(v[0], gpu ? rmg : rmc, gpu ? rvg : rvc, v[1], v[2], false, 0.1, 1e-5);
            },
            {x, w, b}, seed + 7);
      }
    }
  }
  // No affine, 2-D input; eval with only dx wanted (no reduction launched).
  Tensor x2 = test::random_tensor({1000, 33}, DType::F32, 40);
  check_vs_cpu([](const V& v) { return batch_norm(v[0], Tensor(), Tensor(), Tensor(), Tensor(), true); }, {x2}, 41);
  Tensor rm = test::random_tensor({33}, DType::F32, 42), rv = add(rand({33}), 0.5);
  check_vs_cpu(
      [&](const V& v) {
        bool gpu = v[0].is_cuda();
        return batch_norm(v[0], gpu ? rm.to(cuda0()) : rm, gpu ? rv.to(cuda0()) : rv, Tensor(), Tensor(), false);
      },
      {x2}, 43);
  // Only the weight's gradient; non-contiguous (channels-last style) input.
  Tensor xc = test::random_tensor({4, 6, 5, 3}, DType::F32, 44);
  check_vs_cpu([](const V& v) { return batch_norm(v[0].permute({0, 3, 1, 2}), Tensor(), Tensor(), v[1], Tensor(), true); },
               {xc, test::random_tensor({3}, DType::F32, 45)}, 46);
}

TEST_CASE("cuda group_norm vs cpu", "[cuda][norm]") {
  struct Case {
    Shape shape;
    int64_t G;
  };
  // Rows (n, g) of Cg S: short (warp path) and long (block path); S = 1; S > 2048 (a
  // block per (n, c) in the backward sums); one group and one group per channel.
  const std::vector<Case> cases{{{2, 6, 5}, 1},        {{2, 6, 5}, 2},          {{2, 6, 5}, 3},
                                {{2, 6, 5}, 6},        {{7, 12, 1}, 3},         {{4, 32, 16, 16}, 8},
                                {{2, 64, 33, 33}, 32}, {{2, 4, 4097}, 2},       {{3, 10, 7, 9}, 5}};
  for (DType dt : {DType::F32, DType::BF16}) {
    for (const Case& c : cases) {
      INFO(dtype_name(dt) << " shape " << shape_str(c.shape) << " groups " << c.G);
      uint64_t seed = static_cast<uint64_t>(shape_numel(c.shape) + c.G);
      Tensor x = add(test::random_tensor(c.shape, DType::F32, seed, 2.0), -0.5).to(dt);
      const int64_t C = c.shape[1];
      Tensor w = test::random_tensor({C}, dt, seed + 1), b = test::random_tensor({C}, dt, seed + 2);
      const int64_t G = c.G;
      check_vs_cpu([G](const V& v) { return group_norm(v[0], G, v[1], v[2]); }, {x, w, b}, seed + 3);
    }
  }
  // No affine; f32 parameters with bf16 input; non-contiguous input.
  Tensor x = test::random_tensor({3, 8, 6}, DType::BF16, 60);
  check_vs_cpu([](const V& v) { return group_norm(v[0], 4); }, {x}, 61);
  check_vs_cpu([](const V& v) { return group_norm(v[0], 2, v[1], v[2]); },
               {x, test::random_tensor({8}, DType::F32, 62), test::random_tensor({8}, DType::F32, 63)}, 64);
  Tensor xt = test::random_tensor({6, 8, 3}, DType::F32, 65);
  check_vs_cpu([](const V& v) { return group_norm(v[0].transpose(0, 2).transpose(1, 2), 3, v[1], Tensor()); },
               {xt, test::random_tensor({6}, DType::F32, 66)}, 67);
}

TEST_CASE("cuda norm ops: device and dtype errors", "[cuda][norm]") {
  Tensor x = ones({4, 3, 5}, TensorOptions(DType::F32, cuda0()));
  REQUIRE_KILN_ERROR(batch_norm(x, Tensor(), Tensor(), ones({3}), Tensor(), true), "not on the input's device");
  REQUIRE_KILN_ERROR(layer_norm(x, {5}, ones({5}, TensorOptions(DType::F32, cuda0())), ones({5})), "bias");
  REQUIRE_KILN_ERROR(group_norm(x, 3, ones({3}, TensorOptions(DType::BF16, cuda0()))), "weight must be f32");
}
