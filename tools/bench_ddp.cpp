// kiln_bench_ddp: how much of the gradient all-reduce DistributedDataParallel hides
// behind backward. Run under kiln-run (2+ ranks). In one run, on the same ranks, it times
// a training step of an MLP with >= 25 MiB of gradients four ways:
//   local      forward + backward + step, no communication (the lower bound)
//   comm       the all-reduce of all gradients alone, in DDP's bucket sizes
//   sequential backward, then the all-reduce of every bucket, then step (no overlap)
//   ddp        DistributedDataParallel: buckets all-reduced from the hooks during backward
// and reports hidden = (sequential - ddp) / (sequential - local): the share of what
// communicating after backward costs that DDP's overlap saves (1: communication is free,
// 0: no better than not overlapping). Median of --iters steps after --warmup.
//
// usage: kiln-run --nproc-per-node N kiln_bench_ddp [--layers L] [--width W] [--batch B]
//          [--iters N] [--warmup N] [--bucket-mb M] [--device cpu|cuda]   (--help: CLI11's)
#include <algorithm>
#include <chrono>
#include <map>
#include <cstdio>
#include <limits>
#include <string>
#include <vector>

#include <kiln/kiln.h>

#include "cli.h"

using namespace kiln;
using Clock = std::chrono::steady_clock;

namespace {

struct Args {
  int layers = 8;
  int width = 1024;
  int batch = 64;  // per rank
  int warmup = 3;
  int iters = 10;
  double bucket_mb = 25;
  std::string device = "cpu";
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

void sync(const Device& d) {
  if (d.is_cuda()) synchronize(d);
}

int run_bench(const Args& a) {
  dist::LaunchEnv env = dist::launch_env();
  Device device = a.device == "cpu" ? kCPU : dist::local_device(DeviceType::CUDA, env);
  dist::InitOptions io;
  io.device = device;
  auto pg = dist::init_process_group(io, env);
  const bool main_rank = pg->rank() == 0;

  manual_seed(7);
  auto model = std::make_shared<nn::Sequential>();
  for (int l = 0; l < a.layers; ++l) {
    model->push_back(std::make_shared<nn::Linear>(a.width, a.width));
    if (l + 1 < a.layers) model->push_back(std::make_shared<nn::ReLU>());
  }
  model->to(device);
  int64_t grad_bytes = 0;
  for (const Tensor& p : model->parameters()) grad_bytes += p.numel() * static_cast<int64_t>(p.element_size());
  SGDOptions so;
  so.lr = 1e-4;
  SGD opt(model->parameters(), so);
  Tensor x = randn({a.batch, a.width}).to(device);
  Tensor target = randn({a.batch, a.width}).to(device);

  // Buckets for the comm-only and sequential modes: DDP's sizes and order.
  dist::DDPOptions dopt;
  dopt.bucket_cap_mb = a.bucket_mb;
  dist::DistributedDataParallel ddp(model, pg, dopt);
  auto names = ddp.bucket_names();
  std::map<std::string, Tensor> by_name;
  for (auto& [n, p] : model->named_parameters()) by_name[n] = p;
  std::vector<std::vector<Tensor>> bucket_params;
  for (auto& b : names) {
    bucket_params.emplace_back();
    for (auto& n : b) bucket_params.back().push_back(by_name[n]);
  }
  std::vector<Tensor> flats;
  for (auto& b : bucket_params) {
    int64_t n = 0;
    for (auto& p : b) n += p.numel();
    flats.push_back(zeros({n}, TensorOptions(DType::F32, device)));
  }
  auto allreduce_buckets = [&](bool copy_grads) {
    std::vector<std::shared_ptr<dist::Work>> works;
    for (size_t i = 0; i < flats.size(); ++i) {
      if (copy_grads) {
        int64_t off = 0;
        for (auto& p : bucket_params[i]) {
          flats[i].narrow(0, off, p.numel()).copy_(p.grad().reshape({p.numel()}));
          off += p.numel();
        }
      }
      works.push_back(pg->all_reduce(flats[i], dist::ReduceOp::Avg));
    }
    for (auto& w : works) w->wait();
  };

  auto time_mode = [&](const std::string& mode) {
    std::vector<double> ts;
    for (int it = 0; it < a.warmup + a.iters; ++it) {
      pg->barrier()->wait();
      sync(device);
      auto t0 = Clock::now();
      if (mode == "comm") {
        allreduce_buckets(false);
      } else {
        opt.zero_grad();
        Tensor out = mode == "ddp" ? ddp(x) : (*model)(x);
        Tensor loss = mse_loss(out, target);
        if (mode == "ddp") {
          loss.backward();
        } else {
          auto guard = ddp.no_sync();  // plain backward: the hooks stay quiet
          loss.backward();
        }
        if (mode == "sequential") allreduce_buckets(true);
        opt.step();
      }
      sync(device);
      double dt = std::chrono::duration<double>(Clock::now() - t0).count();
      if (it >= a.warmup) ts.push_back(dt);
    }
    // The slowest rank sets the pace: take the max over ranks of each median.
    Tensor m = from_vector(std::vector<double>{median(ts)});
    pg->all_reduce(m, dist::ReduceOp::Max)->wait();
    return m.item<double>();
  };

  double t_local = time_mode("local");
  double t_comm = time_mode("comm");
  double t_seq = time_mode("sequential");
  double t_ddp = time_mode("ddp");
  const auto& st = ddp.last_stats();
  // The cost of communicating after backward is (sequential - local); DDP hides the
  // part of it that it saves against sequential.
  double overhead = t_seq - t_local;
  double hidden = overhead > 0 ? (t_seq - t_ddp) / overhead : 0;
  if (main_rank) {
    std::printf("kiln_bench_ddp: %d ranks (%s), %s, MLP %d x Linear(%d, %d), %.1f MiB of gradients in %d buckets, "
                "batch %d per rank, median of %d steps\n",
                pg->size(), pg->backend_name().c_str(), device.str().c_str(), a.layers, a.width, a.width,
                grad_bytes / 1048576.0, st.buckets, a.batch, a.iters);
    std::printf("  %-11s %9.2f ms   forward + backward + step, no communication\n", "local", t_local * 1e3);
    std::printf("  %-11s %9.2f ms   all-reduce of all gradient buckets alone\n", "comm", t_comm * 1e3);
    std::printf("  %-11s %9.2f ms   backward, then all-reduce, then step (no overlap)\n", "sequential",
                t_seq * 1e3);
    std::printf("  %-11s %9.2f ms   DDP: buckets all-reduced during backward (%d of %d launched before it ended; "
                "%.2f ms waiting after it)\n",
                "ddp", t_ddp * 1e3, st.launched_during_backward, st.buckets, st.wait_seconds * 1e3);
    std::printf("  hidden: %.0f%% of the communication cost is overlapped with backward ((sequential - ddp) / "
                "(sequential - local)); DDP step vs local: %.2fx, vs sequential: %.2fx\n",
                hidden * 100, t_ddp / t_local, t_ddp / t_seq);
    std::printf("{\"ranks\":%d,\"grad_mib\":%.2f,\"buckets\":%d,\"local_ms\":%.3f,\"comm_ms\":%.3f,"
                "\"sequential_ms\":%.3f,\"ddp_ms\":%.3f,\"hidden_fraction\":%.3f}\n",
                pg->size(), grad_bytes / 1048576.0, st.buckets, t_local * 1e3, t_comm * 1e3, t_seq * 1e3,
                t_ddp * 1e3, hidden);
    std::fflush(stdout);
  }
  pg->barrier()->wait();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"kiln_bench_ddp: how much of the gradient all-reduce DistributedDataParallel hides behind backward. "
               "Run it under kiln-run with 2 or more ranks: kiln-run --nproc-per-node 2 kiln_bench_ddp",
               "kiln_bench_ddp"};
  Args a;
  using kiln::tools::positive;
  app.add_option("--layers", a.layers, "Linear layers of the MLP")->check(positive<int>())->capture_default_str();
  app.add_option("--width", a.width, "width of each Linear(W, W)")
      ->check(kiln::tools::integer_range(1, 1 << 20))
      ->capture_default_str();
  app.add_option("--batch", a.batch, "batch size per rank")->check(positive<int>())->capture_default_str();
  app.add_option("--iters", a.iters, "timed steps per mode (the median is reported)")
      ->check(positive<int>())
      ->capture_default_str();
  app.add_option("--warmup", a.warmup, "untimed steps before them")
      ->check(kiln::tools::non_negative<int>())
      ->capture_default_str();
  app.add_option("--bucket-mb", a.bucket_mb, "DDP's bucket size in MiB (DDPOptions::bucket_cap_mb)")
      ->check(kiln::tools::positive_real(false, 1 << 20))
      ->capture_default_str();
  app.add_option("--device", a.device, "cpu (Gloo) or cuda (NCCL, the GPU of LOCAL_RANK)")
      ->check(CLI::IsMember({"cpu", "cuda"}))
      ->capture_default_str();
  return kiln::tools::kiln_main(app, argc, argv, [&] {
    if (static_cast<int64_t>(a.warmup) + a.iters > std::numeric_limits<int>::max())
      throw CLI::ValidationError("--warmup, --iters", "their sum must fit in an int");
    return run_bench(a);
  });
}
