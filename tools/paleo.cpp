// kiln_paleo: a PALEO-style prediction (Qi et al., ICLR 2017) of data-parallel training's
// step time and scaling efficiency for kiln_train_cnn's model (models/zoo/resnet_cnn.h).
//
// Here (under tools/kiln-run, N ranks; 1 without it): every rank measures what it gets of
// this machine at the same time as the others (each op of the model replayed alone at its
// shapes, forward and backward; memory bandwidth and per-op dispatch for the rest:
// models/eval/paleo.h),
// the ranks calibrate the link (alpha,
// beta, gamma of distributed/calibrate.h), and the model predicts
//     step = forward + backward (2 x forward) + update + ring all-reduce of the gradients
// at the rank's share of --batch. --validate S then trains the same model data-parallel
// (DDP, AdamW, random images) for S steps and prints the measured step time beside the
// prediction.
//
// --device cuda measures and trains on the GPU instead (each rank on its local GPU under
// kiln-run): kernels timed with a device synchronisation after each round of calls.
//
// --cluster h100-node|h100-cluster: the same model on GPUs described by --gpu-tflops,
// --gpu-gbs and --launch-us (assumptions printed), for 1 to 1024 GPUs at --per-gpu-batch
// examples each: step time and scaling efficiency (compute / (compute + communication);
// PALEO's no-overlap assumption).
//
// usage: kiln-run --nproc-per-node N kiln_paleo [--width W] [--batch B] [--validate S]
//        kiln_paleo --cluster h100-cluster [--per-gpu-batch B] [--gpu-tflops T] ...
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include <kiln/kiln.h>
#include <kiln/distributed/calibrate.h>
#include <kiln/models/eval/paleo.h>

#include "cli.h"
#include "run_cli.h"

using namespace kiln;
namespace cost = kiln::dist::cost;
using Clock = std::chrono::steady_clock;

namespace {

struct Args {
  int64_t width = 16;
  int64_t batch = 128;
  int64_t validate = 0;
  int rounds = 10;
  bool ops = false;
  std::string device = "cpu";
  std::string cluster;
  int64_t per_gpu_batch = 256;
  double gpu_tflops = 200, gpu_gbs = 2500, launch_us = 6;
};

std::shared_ptr<nn::Sequential> cnn(int64_t width) {
  Generator gen(0);
  models::ResNetCNNOptions o;
  o.width = width;
  return models::resnet_cnn(o, gen);
}

void print_cost(const eval::ModelCost& c) {
  std::printf("model: %lld parameters, %zu ops per forward; per example: %.2f MFLOP in products, %.2f MFLOP "
              "elsewhere, %.2f MB moved\n", (long long)c.params, c.ops.size(), c.product_flops / c.batch / 1e6,
              c.other_flops / c.batch / 1e6, c.bytes / c.batch / 1e6);
}

int here(const Args& a) {
  const dist::LaunchEnv env = dist::launch_env();
  const Device device = tools::pick_device("kiln_paleo", a.device, env);  // each rank on its own GPU
  dist::InitOptions io;
  io.device = device;
  auto pg = dist::init_process_group(io, env);
  const int n = pg->size();
  const bool main_rank = pg->rank() == 0;
  if (a.batch % n != 0)
    throw CLI::ValidationError("--batch", std::to_string(a.batch) + " must divide by the " + std::to_string(n) + " ranks");
  const int64_t b = a.batch / n;
  auto model = cnn(a.width);
  model->to(device);
  const TensorOptions fo(DType::F32, device);
  eval::ModelCost cost = eval::trace_cost(*model, randn({b, 1, 28, 28}, fo));

  // Every rank measures at once: what each gets of the shared machine. The ops are
  // profiled at their own shapes, PALEO's per-layer step.
  pg->barrier()->wait();
  eval::profile_ops(cost, 0.1, [&] { pg->barrier()->wait(); }, device);
  eval::DeviceSpeed dev = eval::measure_device(device, 0.3);
  Tensor speeds = from_vector(std::vector<double>{dev.flops_per_s, dev.conv_flops_per_s, dev.bytes_per_s,
                                                  dev.dispatch_s}).to(device);  // NCCL reduces device tensors
  pg->all_reduce(speeds, dist::ReduceOp::Avg)->wait();  // the ranks' mean
  const auto sv = speeds.to_vector<double>();
  dev.flops_per_s = sv[0], dev.conv_flops_per_s = sv[1], dev.bytes_per_s = sv[2], dev.dispatch_s = sv[3];

  const eval::StepEstimate e = eval::estimate_step(cost, dev, b);
  double comm = 0;
  std::string link = "none (one rank)";
  if (n > 1) {
    const cost::Calibration cal = cost::calibrate(*pg, a.rounds);
    comm = cost::ring_allreduce_seconds(cal.cluster, n, static_cast<double>(cost.params) * 4);
    link = detail::str("alpha ", cal.cluster.intra_node.alpha * 1e6, " us, ", 1e-9 / cal.cluster.intra_node.beta,
                       " GB/s, gamma ", cal.cluster.gamma * 1e9, " ns/B");
  }
  const double predicted = e.compute_s + comm;
  if (main_rank) {
    print_cost(cost);
    std::printf("device (per rank, %d rank(s) measuring at once): matmul %.2f GFLOP/s, conv %.2f GFLOP/s, memory "
                "%.2f GB/s, %.1f us per op\nlink: %s\n", n, dev.flops_per_s / 1e9, dev.conv_flops_per_s / 1e9,
                dev.bytes_per_s / 1e9, dev.dispatch_s * 1e6, link.c_str());
    std::printf("predicted step at %lld examples per rank: forward %.2f ms + backward %.2f ms + update %.2f ms + "
                "all-reduce %.2f ms = %.2f ms (%.0f images/s over %d ranks)\n", (long long)b, e.forward_s * 1e3,
                e.backward_s * 1e3, e.update_s * 1e3, comm * 1e3, predicted * 1e3, a.batch / predicted, n);
  }
  if (main_rank && a.ops) {
    std::printf("%-4s %-22s %-34s %10s %10s %s\n", "#", "op", "input shapes", "fwd ms", "bwd ms", "how");
    for (size_t i = 0; i < cost.ops.size(); ++i) {
      const eval::OpCost& op = cost.ops[i];
      std::string shapes;
      for (const Shape& s : op.inputs) shapes += (shapes.empty() ? "" : " ") + shape_str(s);
      std::printf("%-4zu %-22s %-34s %10.3f %10.3f %s\n", i, op.op.c_str(), shapes.c_str(), e.op_forward_s[i] * 1e3,
                  e.op_backward_s[i] * 1e3, op.measured_s > 0 ? "replayed" : (op.product ? "flops" : "bytes"));
    }
  }
  if (a.validate <= 0) return 0;

  // The same model, trained data-parallel on random images as kiln_train_cnn trains it.
  model->train();
  std::shared_ptr<nn::Module> net = model;
  if (n > 1) net = std::make_shared<dist::DistributedDataParallel>(model, pg);
  AdamWOptions o;
  o.lr = 1e-3;
  AdamW opt(model->parameters(), o);
  Tensor x = randn({b, 1, 28, 28}, fo);
  Tensor y = randint(0, 10, {b}, TensorOptions(DType::I64, device));
  auto step = [&] {
    opt.zero_grad();
    cross_entropy((*net)(x), y).backward();
    opt.step();
  };
  for (int i = 0; i < 3; ++i) step();
  // The parts, timed apart on each rank (no communication): forward, forward + backward.
  auto time_of = [&](const std::function<void()>& fn) {
    synchronize(device);
    const auto t0 = Clock::now();
    for (int i = 0; i < 5; ++i) fn();
    synchronize(device);
    return std::chrono::duration<double>(Clock::now() - t0).count() / 5;
  };
  pg->barrier()->wait();
  const double fwd = time_of([&] { (void)cross_entropy((*model)(x), y); });
  const double fwd_bwd = time_of([&] {
    model->zero_grad();
    cross_entropy((*model)(x), y).backward();
  });
  if (main_rank)
    std::printf("measured on rank 0 without communication: forward %.2f ms (predicted %.2f), backward %.2f ms "
                "(predicted %.2f)\n", fwd * 1e3, e.forward_s * 1e3, (fwd_bwd - fwd) * 1e3, e.backward_s * 1e3);
  synchronize(device);
  pg->barrier()->wait();
  const auto t0 = Clock::now();
  for (int64_t i = 0; i < a.validate; ++i) step();
  synchronize(device);
  Tensor t = full({1}, std::chrono::duration<double>(Clock::now() - t0).count() / a.validate, TensorOptions(DType::F64, device));
  pg->all_reduce(t, dist::ReduceOp::Max)->wait();
  const double measured = t.item<double>();
  if (main_rank) {
    std::printf("measured step (%lld steps, DDP + AdamW): %.2f ms; prediction / measured = %.2f (error %+.0f%%)\n",
                (long long)a.validate, measured * 1e3, predicted / measured, (predicted / measured - 1) * 100);
    std::printf("{\"ranks\": %d, \"batch\": %lld, \"device\": \"%s\", \"predicted_ms\": %.3f, \"measured_ms\": %.3f, "
                "\"compute_ms\": %.3f, \"allreduce_ms\": %.3f}\n", n, (long long)a.batch, device.str().c_str(),
                predicted * 1e3, measured * 1e3, e.compute_s * 1e3, comm * 1e3);
  }
  return 0;
}

int cluster(const Args& a) {
  const cost::Cluster c = a.cluster == "h100-node" ? cost::h100_node() : cost::h100_cluster();
  auto model = cnn(a.width);
  const eval::ModelCost mc = eval::trace_cost(*model, randn({8, 1, 28, 28}));
  eval::DeviceSpeed gpu;
  gpu.name = "GPU";
  gpu.flops_per_s = gpu.conv_flops_per_s = a.gpu_tflops * 1e12;
  gpu.bytes_per_s = a.gpu_gbs * 1e9;
  gpu.dispatch_s = a.launch_us * 1e-6;
  print_cost(mc);
  std::printf("GPU: %.0f TFLOP/s on products, %.0f GB/s, %.1f us per kernel (assumed: about half an H100's dense "
              "TF32 peak, 75%% of its HBM bandwidth, launch and sync overhead)\n%s\n", a.gpu_tflops, a.gpu_gbs,
              a.launch_us, cost::describe(c).c_str());
  const eval::StepEstimate e = eval::estimate_step(mc, gpu, a.per_gpu_batch);
  const double bytes = static_cast<double>(mc.params) * 4;
  std::printf("%6s %12s | %10s %10s %12s %10s | %s\n", "GPUs", "batch", "compute", "ring", "hierarchical", "tree",
              "efficiency (best all-reduce)");
  const std::vector<int> counts = a.cluster == "h100-node" ? std::vector<int>{1, 2, 4, 8}
                                                             : std::vector<int>{1, 8, 16, 64, 256, 1024};
  for (int n : counts) {
    const double ring = cost::ring_allreduce_seconds(c, n, bytes), hier = cost::hierarchical_allreduce_seconds(c, n, bytes),
                 tree = cost::tree_allreduce_seconds(c, n, bytes);
    const double best = std::min({ring, hier, tree});
    std::printf("%6d %12lld | %8.3f ms %7.3f ms %9.3f ms %7.3f ms | %5.1f%%\n", n, (long long)(a.per_gpu_batch * n),
                e.compute_s * 1e3, ring * 1e3, hier * 1e3, tree * 1e3, 100.0 * e.compute_s / (e.compute_s + best));
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Predicts data-parallel training's step time for kiln_train_cnn's model (PALEO-style), here or on a "
               "GPU cluster; --validate measures it here.",
               "kiln_paleo"};
  Args a;
  app.add_option("--width", a.width, "the CNN's width (kiln_train_cnn --width)")->check(tools::integer_range(1, 1024))
      ->capture_default_str();
  app.add_option("--batch", a.batch, "global batch, split across the ranks")
      ->check(tools::integer_range(1, int64_t{1} << 20))->capture_default_str();
  app.add_option("--validate", a.validate, "train S steps data-parallel and compare (0: predict only)")
      ->check(tools::integer_range(0, 100000));
  app.add_flag("--ops", a.ops, "print every op's predicted forward and backward time and how it was found");
  app.add_option("--rounds", a.rounds, "rounds of the link calibration")->check(tools::integer_range(1, 1000))
      ->capture_default_str();
  app.add_option("--device", a.device, "measure and train here on: cpu | cuda | cuda:N")->check(tools::device_spec())
      ->capture_default_str();
  app.add_option("--cluster", a.cluster, "predict for GPUs instead: h100-node | h100-cluster")
      ->check(CLI::IsMember({"h100-node", "h100-cluster"}));
  app.add_option("--per-gpu-batch", a.per_gpu_batch, "--cluster: examples per GPU")
      ->check(tools::integer_range(1, int64_t{1} << 20))->capture_default_str();
  app.add_option("--gpu-tflops", a.gpu_tflops, "--cluster: FLOP/s on products (TFLOP/s)")->check(tools::positive_real())
      ->capture_default_str();
  app.add_option("--gpu-gbs", a.gpu_gbs, "--cluster: memory bandwidth (GB/s)")->check(tools::positive_real())
      ->capture_default_str();
  app.add_option("--launch-us", a.launch_us, "--cluster: fixed cost per kernel (us)")->check(tools::positive_real(true))
      ->capture_default_str();
  return tools::kiln_main(app, argc, argv, [&] { return a.cluster.empty() ? here(a) : cluster(a); });
}
