// kiln_ddp_check: run under kiln-run (or alone, as a world of one). Trains a small
// BatchNorm-free CNN with DistributedDataParallel for a few steps, each rank on its slice
// of a fixed global batch, then checks that
//   1. every rank holds bit-identical parameters (all_gather of the raw bytes), and
//   2. they match, to f32 tolerance, one process trained on the whole global batch
//      without DDP (computed on every rank).
// The replicas start from different random weights (seed + rank), so the check also
// covers DDP's initial broadcast. Tiny buckets force several all-reduces per step; a
// gradient-accumulation mode (no_sync) and a parameter that gets no gradient are in.
// With --sam RHO the optimizer is wrapped in SAM (optim/sam.h): both of its backward
// passes all-reduce, so the ranks must still agree with the single process.
// Exit code 0 when both hold, 1 otherwise; prints a JSON line from rank 0.
#include <cstdio>
#include <cstring>
#include <iostream>
#include <string>

#include <kiln/kiln.h>

using namespace kiln;

namespace {

struct Args {
  int steps = 6;
  int global_batch = 24;
  int accumulate = 1;        // micro-batches per step; all but the last under no_sync
  double bucket_cap_mb = 0.004;  // about 1000 floats: several buckets
  std::string optimizer = "adamw";
  bool find_unused = true;
  bool set_to_none = true;  // zero_grad(set_to_none); false: .grad stays a view of DDP's bucket
  double sam_rho = 0;       // > 0: SAM around the optimizer
};

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    std::string f = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) throw Error("kiln_ddp_check: " + f + " needs a value");
      return argv[++i];
    };
    if (f == "--steps") a.steps = std::stoi(next());
    else if (f == "--global-batch") a.global_batch = std::stoi(next());
    else if (f == "--accumulate") a.accumulate = std::stoi(next());
    else if (f == "--bucket-cap-mb") a.bucket_cap_mb = std::stod(next());
    else if (f == "--optimizer") a.optimizer = next();
    else if (f == "--no-find-unused") a.find_unused = false;
    else if (f == "--zero-grads-in-place") a.set_to_none = false;
    else if (f == "--sam") a.sam_rho = std::stod(next());
    else throw Error("kiln_ddp_check: unknown option " + f);
  }
  return a;
}

// A branch that forward never takes: its parameters get no gradient.
class Net : public nn::Module {
 public:
  Net() : nn::Module("Net") {
    conv1 = register_module("conv1", std::make_shared<nn::Conv2d>(1, 6, 3, 1, 1));
    conv2 = register_module("conv2", std::make_shared<nn::Conv2d>(6, 8, 3, 2, 1));
    fc1 = register_module("fc1", std::make_shared<nn::Linear>(8 * 4 * 4, 32));
    unused = register_module("unused", std::make_shared<nn::Linear>(32, 32));
    fc2 = register_module("fc2", std::make_shared<nn::Linear>(32, 10));
  }
  Tensor forward(const Tensor& x) override {
    Tensor h = relu((*conv1)(x));
    h = relu((*conv2)(h));
    h = relu((*fc1)(h.flatten(1)));
    return (*fc2)(h);
  }
  std::shared_ptr<nn::Conv2d> conv1, conv2;
  std::shared_ptr<nn::Linear> fc1, unused, fc2;
};

std::shared_ptr<Net> make_net(uint64_t seed) {
  manual_seed(seed);  // layers initialise from the default generator
  return std::make_shared<Net>();
}

std::unique_ptr<Optimizer> make_opt(const Args& a, nn::Module& m) {
  if (a.optimizer == "sgd") {
    SGDOptions o;
    o.lr = 0.05;
    o.momentum = 0.9;
    return std::make_unique<SGD>(m.parameters(), o);
  }
  AdamWOptions o;
  o.lr = 1e-2;
  return std::make_unique<AdamW>(m.parameters(), o);
}

// One training step on `x`, `y` split into `micro` micro-batches; `model_fwd` is the
// plain module or the DDP wrapper; `no_sync` makes a guard for all but the last.
template <class Fwd, class NoSync>
float train_step(Optimizer& opt, SAM* sam, Fwd&& fwd, NoSync&& no_sync, const Tensor& x, const Tensor& y, int micro,
                 bool set_to_none) {
  if (sam) {  // one micro-batch (checked in main)
    Tensor loss = sam->step([&] {
      Tensor l = cross_entropy(fwd(x), y);
      l.backward();
      return l;
    });
    return loss.item<float>();
  }
  opt.zero_grad(set_to_none);
  int64_t n = x.size(0) / micro;
  float total = 0;
  for (int m = 0; m < micro; ++m) {
    Tensor xm = x.narrow(0, m * n, n), ym = y.narrow(0, m * n, n);
    Tensor loss = cross_entropy(fwd(xm), ym) / double(micro);
    if (m + 1 < micro) {
      auto guard = no_sync();
      loss.backward();
    } else {
      loss.backward();
    }
    total += loss.item<float>();
  }
  opt.step();
  return total;
}

std::vector<float> flat_params(nn::Module& m) {
  std::vector<float> out;
  for (const Tensor& p : m.parameters()) {
    auto v = p.to_vector<float>();
    out.insert(out.end(), v.begin(), v.end());
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    Args a = parse(argc, argv);
    auto pg = dist::init_process_group({});
    const int W = pg->size(), r = pg->rank();
    KILN_CHECK(a.sam_rho == 0 || a.accumulate == 1, "--sam takes no --accumulate");
    KILN_CHECK(a.global_batch % (W * a.accumulate) == 0, "global batch ", a.global_batch,
               " must divide by world size x accumulate = ", W * a.accumulate);

    // The data: identical on every rank (seeded), each rank uses its slice.
    Generator data_gen(1234);
    std::vector<Tensor> xs, ys;
    for (int s = 0; s < a.steps; ++s) {
      xs.push_back(randn({a.global_batch, 1, 8, 8}, {}, &data_gen));
      ys.push_back(randint(0, 10, {a.global_batch}, TensorOptions(DType::I64), &data_gen));
    }

    auto net = make_net(100 + static_cast<uint64_t>(r));  // replicas differ until DDP's broadcast
    dist::DDPOptions o;
    o.bucket_cap_mb = a.bucket_cap_mb;
    o.first_bucket_cap_mb = a.bucket_cap_mb / 4;
    o.find_unused_parameters = a.find_unused;
    dist::DistributedDataParallel ddp(net, pg, o);
    auto opt = make_opt(a, *net);
    std::unique_ptr<SAM> sam;
    if (a.sam_rho > 0) sam = std::make_unique<SAM>(*opt, SamOptions{.rho = a.sam_rho});
    const int64_t local = a.global_batch / W;
    std::vector<float> ddp_losses;
    for (int s = 0; s < a.steps; ++s) {
      Tensor x = xs[s].narrow(0, r * local, local), y = ys[s].narrow(0, r * local, local);
      ddp_losses.push_back(train_step(
          *opt, sam.get(), [&](const Tensor& t) { return ddp(t); }, [&] { return ddp.no_sync(); }, x, y, a.accumulate,
          a.set_to_none));
    }
    const auto& st = ddp.last_stats();

    // 1. Bit-identical across ranks.
    std::vector<float> mine = flat_params(*net);
    Tensor mine_t = from_vector(mine);
    Tensor all = zeros({static_cast<int64_t>(W) * mine_t.numel()});
    pg->all_gather(all, mine_t)->wait();
    std::vector<float> all_v = all.to_vector<float>();
    int differing_ranks = 0;
    for (int q = 0; q < W; ++q)
      if (std::memcmp(all_v.data() + q * mine.size(), mine.data(), mine.size() * sizeof(float)) != 0)
        ++differing_ranks;

    // 2. One process on the whole global batch, starting from rank 0's weights.
    auto ref = make_net(100);
    auto ref_opt = make_opt(a, *ref);
    std::unique_ptr<SAM> ref_sam;
    if (a.sam_rho > 0) ref_sam = std::make_unique<SAM>(*ref_opt, SamOptions{.rho = a.sam_rho});
    struct NoGuard {};
    for (int s = 0; s < a.steps; ++s)
      train_step(
          *ref_opt, ref_sam.get(), [&](const Tensor& t) { return (*ref)(t); }, [] { return NoGuard{}; }, xs[s], ys[s], a.accumulate,
          a.set_to_none);
    std::vector<float> want = flat_params(*ref);
    double max_abs = 0, max_rel = 0;
    bool close = want.size() == mine.size();
    for (size_t i = 0; close && i < want.size(); ++i) {
      double d = std::abs(double(mine[i]) - double(want[i]));
      max_abs = std::max(max_abs, d);
      max_rel = std::max(max_rel, d / std::max(1e-3, std::abs(double(want[i]))));
      if (d > 1e-5 + 1e-4 * std::abs(double(want[i]))) close = false;
    }
    // The unused branch: no gradient anywhere, so AdamW (which skips such parameters)
    // must have left rank 0's initial values in place.
    bool unused_untouched = !a.find_unused || !net->unused->weight.grad().defined();

    bool ok = differing_ranks == 0 && close && unused_untouched;
    if (r == 0) {
      std::printf(
          "{\"world_size\": %d, \"steps\": %d, \"global_batch\": %d, \"accumulate\": %d, \"buckets\": %d, "
          "\"launched_during_backward\": %d, \"unused_parameters\": %d, \"ranks_differing\": %d, "
          "\"max_abs_diff_vs_single\": %.3g, \"max_rel_diff_vs_single\": %.3g, \"unused_untouched\": %s, "
          "\"last_loss\": %.6f, \"ok\": %s}\n",
          W, a.steps, a.global_batch, a.accumulate, st.buckets, st.launched_during_backward, st.unused_parameters,
          differing_ranks, max_abs, max_rel, unused_untouched ? "true" : "false", ddp_losses.back(),
          ok ? "true" : "false");
      std::fflush(stdout);
    }
    if (!ok) {
      std::fprintf(stderr, "kiln_ddp_check: rank %d: FAILED (ranks differing %d, max abs diff %.3g, close %d)\n", r,
                   differing_ranks, max_abs, int(close));
      return 1;
    }
    pg->barrier()->wait();  // nobody exits (taking the store down) while others still talk
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kiln_ddp_check: error: %s\n", e.what());
    return 1;
  }
}
