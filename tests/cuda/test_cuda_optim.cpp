// The fused multi-tensor optimizer kernels (cuda/kernels/optim.cu) against the CPU
// reference (optim/cpu/*.cpp): SGD, Adam, AdamW and ProxAdam over many params of odd sizes,
// enough tensors and chunks to take several launches (one tensor cut between two),
// params at unaligned offsets (the scalar path), f32 and half precision; then the
// optimizer classes (the research optimizers too) and clip_grad_norm_ on CUDA params
// against the same on the CPU.
#include "test_util.h"

using namespace kiln;
using test::cuda0;
using TL = std::vector<Tensor>;

namespace {

// 50 small odd tensors (one block each, more than a launch's tensor limit), a tensor of
// 257 chunks, one of 16 chunks that overflows the 320-block launch limit midway, then
// more small ones and an empty one.
std::vector<int64_t> list_sizes() {
  std::vector<int64_t> s;
  for (int i = 0; i < 50; ++i) s.push_back(1 + (i * 397) % 3001);
  s.push_back((int64_t{1} << 24) + 5);
  s.push_back(1000001);
  for (int i = 0; i < 20; ++i) s.push_back(65536 + (i * 7919) % 70001 - 35000);
  s.push_back(0);
  s.push_back(3);
  return s;
}

TL random_list(const std::vector<int64_t>& sizes, DType dt, uint64_t seed, bool nonneg = false) {
  TL out;
  for (size_t i = 0; i < sizes.size(); ++i) {
    Tensor t = test::random_tensor({sizes[i]}, dt, seed * 1000 + i);
    out.push_back(nonneg ? abs(t) : t);
  }
  return out;
}

TL to_cuda(const TL& v) {
  TL out;
  for (const Tensor& t : v) out.push_back(t.to(cuda0()));
  return out;
}

// Views at an element offset of 1 of one flat buffer (16-byte unaligned): params whose
// chunks take the kernel's scalar path, on both devices.
void add_unaligned(TL& cpu, TL& gpu, DType dt, uint64_t seed) {
  Tensor flat = test::random_tensor({70001}, dt, seed);
  Tensor flat_gpu = flat.to(cuda0());
  cpu.push_back(flat.narrow(0, 1, 66000));
  gpu.push_back(flat_gpu.narrow(0, 1, 66000));
  cpu.push_back(flat.narrow(0, 66003, 3997));
  gpu.push_back(flat_gpu.narrow(0, 66003, 3997));
}

void check_list(const TL& gpu, const TL& cpu, double rtol, double atol, const char* what) {
  REQUIRE(gpu.size() == cpu.size());
  for (size_t i = 0; i < gpu.size(); ++i) {
    INFO(what << " " << i << " of " << gpu.size() << ", " << shape_str(cpu[i].sizes()));
    REQUIRE(gpu[i].is_cuda());
    CHECK_CLOSE_TOL(gpu[i].cpu(), cpu[i], rtol, atol);
  }
}

std::vector<int64_t> sizes_of(const TL& v) {
  std::vector<int64_t> s;
  for (const Tensor& t : v) s.push_back(t.numel());
  return s;
}

// f32 update math on the GPU against double math rounded to f32 on the CPU.
constexpr double kRtol = 1e-5, kAtol = 1e-6;

}  // namespace

TEST_CASE("cuda fused adam/adamw match the CPU reference on many params", "[cuda][optim]") {
  struct Variant {
    const char* name;
    AdamUpdateArgs a;
  };
  const std::vector<Variant> variants{
      {"adam", {.lr = 1e-2}},
      {"adam L2 + amsgrad", {.lr = 1e-2, .beta1 = 0.8, .beta2 = 0.95, .weight_decay = 0.1, .amsgrad = true}},
      {"adamw", {.lr = 1e-2, .weight_decay = 0.1, .decoupled_weight_decay = true}},
      {"adamw amsgrad maximize, beta1 < 0.5",
       {.lr = 3e-3, .beta1 = 0.3, .eps = 1e-6, .weight_decay = 0.2, .decoupled_weight_decay = true, .amsgrad = true,
        .maximize = true}},
  };
  const std::vector<int64_t> sizes = list_sizes();
  for (const Variant& v : variants) {
    INFO(v.name);
    TL pc = random_list(sizes, DType::F32, 1), pg;
    pg = to_cuda(pc);
    add_unaligned(pc, pg, DType::F32, 9);
    const std::vector<int64_t> all = sizes_of(pc);
    TL mc = random_list(all, DType::F32, 2), vc = random_list(all, DType::F32, 3, true);
    TL xc = v.a.amsgrad ? random_list(all, DType::F32, 4, true) : TL{};
    TL mg = to_cuda(mc), vg = to_cuda(vc), xg = to_cuda(xc);
    for (int64_t step = 1; step <= 2; ++step) {
      INFO("step " << step);
      TL gc = random_list(all, DType::F32, 10 + step), gg = to_cuda(gc);
      AdamUpdateArgs a = v.a;
      a.step = step;
      fused_adam_update(pc, gc, mc, vc, xc, a);
      fused_adam_update(pg, gg, mg, vg, xg, a);
      check_list(pg, pc, kRtol, kAtol, "param");
      check_list(mg, mc, kRtol, kAtol, "exp_avg");
      check_list(vg, vc, kRtol, kAtol, "exp_avg_sq");
      if (v.a.amsgrad) check_list(xg, xc, kRtol, kAtol, "max_exp_avg_sq");
    }
  }
}

TEST_CASE("cuda fused sgd matches the CPU reference on many params", "[cuda][optim]") {
  struct Variant {
    const char* name;
    SgdUpdateArgs a;
  };
  const std::vector<Variant> variants{
      {"plain", {.lr = 0.1}},
      {"momentum + dampening", {.lr = 0.05, .momentum = 0.9, .dampening = 0.2}},
      {"nesterov + weight decay", {.lr = 0.05, .momentum = 0.9, .weight_decay = 0.01, .nesterov = true}},
      {"maximize", {.lr = 0.05, .momentum = 0.5, .weight_decay = 0.1, .maximize = true}},
  };
  const std::vector<int64_t> sizes = list_sizes();
  for (const Variant& v : variants) {
    INFO(v.name);
    TL pc = random_list(sizes, DType::F32, 21), pg = to_cuda(pc);
    add_unaligned(pc, pg, DType::F32, 29);
    const std::vector<int64_t> all = sizes_of(pc);
    const bool mom = v.a.momentum != 0;
    // The first step creates the buffers (their old contents must not matter: NaN on the
    // GPU), the second uses them.
    TL bc = mom ? random_list(all, DType::F32, 22) : TL{}, bg;
    for (const Tensor& b : bc) bg.push_back(full(b.sizes(), std::nan(""), TensorOptions(DType::F32, cuda0())));
    for (int step = 0; step < 2; ++step) {
      INFO("step " << step);
      TL gc = random_list(all, DType::F32, 30 + step), gg = to_cuda(gc);
      SgdUpdateArgs a = v.a;
      a.init_momentum = mom && step == 0;
      fused_sgd_update(pc, gc, bc, a);
      fused_sgd_update(pg, gg, bg, a);
      check_list(pg, pc, kRtol, kAtol, "param");
      if (mom) check_list(bg, bc, kRtol, kAtol, "momentum_buffer");
    }
  }
}

TEST_CASE("cuda fused updates with f16/bf16 params and f32 state", "[cuda][optim]") {
  std::vector<int64_t> sizes{1, 7, 33, 65537, 200003, 4096};
  for (DType dt : {DType::BF16, DType::F16}) {
    INFO(dtype_name(dt));
    // One rounding of a param to its dtype may differ by an ulp between the devices.
    const test::Tol t = test::tol_for(dt);
    TL pc = random_list(sizes, dt, 41), pg = to_cuda(pc);
    add_unaligned(pc, pg, dt, 49);
    const std::vector<int64_t> all = sizes_of(pc);
    TL mc = random_list(all, DType::F32, 42), vc = random_list(all, DType::F32, 43, true);
    TL mg = to_cuda(mc), vg = to_cuda(vc);
    TL gc = random_list(all, dt, 44), gg = to_cuda(gc);
    AdamUpdateArgs a{.lr = 1e-2, .weight_decay = 0.1, .step = 3, .decoupled_weight_decay = true};
    fused_adam_update(pc, gc, mc, vc, {}, a);
    fused_adam_update(pg, gg, mg, vg, {}, a);
    check_list(pg, pc, t.rtol, t.atol, "param");
    check_list(mg, mc, kRtol, kAtol, "exp_avg");
    check_list(vg, vc, kRtol, kAtol, "exp_avg_sq");
    TL bc = random_list(all, DType::F32, 45), bg = to_cuda(bc);
    SgdUpdateArgs s{.lr = 0.1, .momentum = 0.9, .nesterov = true};
    fused_sgd_update(pc, gc, bc, s);
    fused_sgd_update(pg, gg, bg, s);
    check_list(pg, pc, t.rtol, t.atol, "param after sgd");
    check_list(bg, bc, kRtol, kAtol, "momentum_buffer");
  }
}

TEST_CASE("cuda fused prox_adam matches the CPU reference for every penalty", "[cuda][optim]") {
  // Hard, half and two-thirds thresholding jump at their thresholds: an element whose
  // f32 value lands within rounding of one may go to 0 on one device and not the other.
  // Such elements are counted and must be few; every other element agrees to f32 rounding.
  const std::vector<int64_t> sizes{1, 7, 33, 65537, 200003, 4096};
  for (LpPenalty pen : {LpPenalty::L1, LpPenalty::L0, LpPenalty::LHalf, LpPenalty::LTwoThirds}) {
    INFO("penalty " << static_cast<int>(pen));
    TL pc = random_list(sizes, DType::F32, 51), pg = to_cuda(pc);
    add_unaligned(pc, pg, DType::F32, 59);
    const std::vector<int64_t> all = sizes_of(pc);
    TL mc = random_list(all, DType::F32, 52), vc = random_list(all, DType::F32, 53, true);
    TL mg = to_cuda(mc), vg = to_cuda(vc);
    for (int64_t step = 1; step <= 2; ++step) {
      TL gc = random_list(all, DType::F32, 54 + step), gg = to_cuda(gc);
      ProxAdamUpdateArgs a{.lr = 0.05, .weight_decay = 0.01, .step = step, .lambda = 100, .penalty = pen};
      fused_prox_adam_update(pc, gc, mc, vc, a);
      fused_prox_adam_update(pg, gg, mg, vg, a);
      check_list(mg, mc, kRtol, kAtol, "exp_avg");
      check_list(vg, vc, kRtol, kAtol, "exp_avg_sq");
      int64_t zeros_c = 0, zeros_g = 0, flips = 0, total = 0;
      for (size_t i = 0; i < pc.size(); ++i) {
        const std::vector<double> c = test::values(pc[i]), g = test::values(pg[i].cpu());
        for (size_t j = 0; j < c.size(); ++j) {
          ++total;
          zeros_c += c[j] == 0;
          zeros_g += g[j] == 0;
          if ((c[j] == 0) != (g[j] == 0)) ++flips;
          else CHECK(std::abs(g[j] - c[j]) <= kAtol + kRtol * std::abs(c[j]));
        }
      }
      INFO("zeros cpu " << zeros_c << " cuda " << zeros_g << " of " << total << ", flips " << flips);
      CHECK(zeros_c > total / 20);  // the penalty does zero weights here
      CHECK(flips <= total / 100000 + 2);
    }
  }
}

TEST_CASE("cuda optimizers and clip_grad_norm_ step CUDA params like CPU ones", "[cuda][optim]") {
  const std::vector<Shape> shapes{{64, 33}, {33}, {3, 5, 7}, {1}, {300000}};
  auto make = [&](Device dev) {
    TL ps;
    for (size_t i = 0; i < shapes.size(); ++i)
      ps.push_back(test::random_tensor(shapes[i], DType::F32, 70 + i).to(dev).set_requires_grad(true));
    return ps;
  };
  auto run = [&](Optimizer& opt, const TL& ps, int steps) {
    for (int s = 0; s < steps; ++s) {
      for (size_t i = 0; i < ps.size(); ++i) {
        Tensor p = ps[i];
        p.set_grad(test::random_tensor(p.sizes(), DType::F32, 900 + 10 * s + i, 3.0).to(p.device()));
      }
      Tensor norm = clip_grad_norm_(ps, 5.0);
      REQUIRE(norm.device() == ps[0].device());
      opt.step();
    }
  };
  // Every optimizer, made the same way for both devices (kinds 3-8: the research
  // optimizers, composed of ops, and ProxAdam's fused kernel with the soft threshold).
  auto make_opt = [](int kind, const TL& ps) -> std::unique_ptr<Optimizer> {
    switch (kind) {
      case 0: return std::make_unique<SGD>(ps, SGDOptions{.lr = 0.05, .momentum = 0.9, .nesterov = true});
      case 1: return std::make_unique<Adam>(ps, AdamOptions{.lr = 1e-2, .amsgrad = true});
      case 2: return std::make_unique<AdamW>(ps, AdamWOptions{.lr = 1e-2});
      case 3: return std::make_unique<LARS>(ps, LARSOptions{.lr = 0.5, .weight_decay = 1e-3, .trust_coefficient = 0.01});
      case 4: return std::make_unique<LAMB>(ps, LAMBOptions{.lr = 1e-2});
      case 5: return std::make_unique<AdamS>(ps, AdamSOptions{.lr = 1e-2, .weight_decay = 1e-2});
      case 6: return std::make_unique<SRSGD>(ps, SRSGDOptions{.lr = 0.05, .restart_every = 2});
      case 7: return std::make_unique<Apollo>(ps, ApolloOptions{.lr = 0.5, .weight_decay = 1e-3, .warmup = 2});
      default: return std::make_unique<ProxAdam>(ps, ProxAdamOptions{.lr = 1e-2, .lambda = 0.01});
    }
  };
  for (int kind = 0; kind < 9; ++kind) {
    INFO("optimizer " << kind);
    TL pc = make(kCPU), pg = make(cuda0());
    std::unique_ptr<Optimizer> oc = make_opt(kind, pc), og = make_opt(kind, pg);
    run(*oc, pc, 3);
    run(*og, pg, 3);
    // Clipping sums in a different order on the GPU, so allow a little more than one step.
    check_list(pg, pc, 1e-4, 1e-5, "param");
    // The state dict moves between devices.
    auto saved = og->state_dict();
    TL pc2;
    for (const Tensor& p : pg) pc2.push_back(p.detach().cpu().set_requires_grad(true));
    std::unique_ptr<Optimizer> oc2 = make_opt(kind, pc2);
    oc2->load_state_dict(saved);
    for (size_t i = 0; i < pc2.size(); ++i)
      for (const auto& [k, t] : oc2->state(i).buffers) {
        INFO(k);
        CHECK(t.device() == kCPU);
        CHECK(test::bit_equal(t, og->state(i).buffers.at(k).cpu()));
      }
  }
}
