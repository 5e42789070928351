// kiln_neighbor_check: the collectives beyond the ring across real processes (run under
// tools/kiln-run; Gloo on the CPU). Every rank:
//   1. neighbor_allreduce on the full topology: all ranks hold bit-identical results (an
//      all_gather compares them), equal to the mean;
//   2. on every sparse topology, 40 averaging steps: the consensus distance (mean over
//      ranks of |x_i - mean|^2) never grows and falls below 1e-6 of where it started (for
//      the one-peer exponential graph on 2^k ranks: exactly 0 after k steps);
//   3. hierarchical_allreduce (both algorithms; KILN_RANKS_PER_NODE sets the nodes) equals
//      all_reduce exactly on integers and on every rank bit for bit on floats.
// Prints one line per check on rank 0 and exits 1 if any failed.
// --device cuda puts the tensors on the rank's GPU (several ranks on one GPU: Gloo staged
// through the host; --backend nccl with one rank per GPU: the NCCL group).
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <kiln/kiln.h>

using namespace kiln;

namespace {

int failures = 0;
void check(bool ok, int rank, const std::string& what) {
  if (!ok) {
    ++failures;
    std::fprintf(stderr, "rank %d: FAIL: %s\n", rank, what.c_str());
  } else if (rank == 0) {
    std::printf("ok: %s\n", what.c_str());
  }
}

Device g_device = kCPU;

Tensor start(int r, int64_t n) {
  std::vector<double> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[i] = std::sin(0.9 * r + 0.13 * i) + 0.5 * r;
  return from_vector(v).to(g_device);
}

// The ranks hold bit-identical copies of t.
bool identical(dist::ProcessGroup& pg, const Tensor& t) {
  Tensor all = zeros({pg.size(), t.numel()}, TensorOptions(t.dtype(), t.device()));
  pg.all_gather(all, t.contiguous())->wait();
  all = all.cpu();
  for (int r = 1; r < pg.size(); ++r)
    if (std::memcmp(all.select(0, r).data_ptr(), all.select(0, 0).data_ptr(), t.numel() * t.element_size()) != 0)
      return false;
  return true;
}

double consensus(dist::ProcessGroup& pg, const Tensor& x) {
  Tensor mean = x.clone();
  pg.all_reduce(mean, dist::ReduceOp::Avg)->wait();
  Tensor d = sum(mul(sub(x, mean), sub(x, mean))).reshape({1});
  pg.all_reduce(d, dist::ReduceOp::Avg)->wait();
  return d.item<double>();
}

}  // namespace

int main(int argc, char** argv) {
  try {
    dist::InitOptions io;
    for (int i = 1; i + 1 < argc; i += 2) {
      const std::string f = argv[i], v = argv[i + 1];
      if (f == "--device") g_device = v == "cuda" ? dist::local_device(DeviceType::CUDA, dist::launch_env()) : kCPU;
      else if (f == "--backend") io.backend = v;
      else throw Error("kiln_neighbor_check: unknown argument " + f + " (--device cpu|cuda, --backend auto|gloo|nccl)");
    }
    io.device = g_device;
    auto pg = dist::init_process_group(io);
    const int n = pg->size(), r = pg->rank();
    if (r == 0) std::printf("kiln_neighbor_check: %d ranks, %s, %s\n", n, pg->backend_name().c_str(), g_device.str().c_str());
    const int64_t len = 4099;

    // 1. full: bit-identical, the mean.
    for (DType dt : {DType::F32, DType::F64}) {
      Tensor x = start(r, len).to(dt);
      pg->neighbor_allreduce(x, dist::Topology::full(n), 0)->wait();
      Tensor mean = start(r, len).to(dt);
      pg->all_reduce(mean, dist::ReduceOp::Avg)->wait();
      const double err = max(abs(sub(x, mean).to(DType::F64))).item<double>();
      check(identical(*pg, x) && err < (dt == DType::F32 ? 1e-5 : 1e-13), r,
            std::string("full topology, ") + dtype_name(dt) + ": bit-identical on " + std::to_string(n) +
                " ranks, |x - mean| = " + detail::str(err));
    }

    // 2. consensus on the sparse topologies.
    for (const std::string& name : {"exp2-dynamic", "exp2", "ring", "torus"}) {
      dist::Topology topo = dist::Topology::named(name, n);
      Tensor x = start(r, len);
      const double d0 = consensus(*pg, x);
      double prev = d0, d = d0;
      bool monotone = true;
      int exact_at = -1;
      for (int step = 0; step < 40; ++step) {
        pg->neighbor_allreduce(x, topo, step)->wait();
        d = consensus(*pg, x);
        monotone = monotone && d <= prev * (1 + 1e-9) + 1e-30;
        if (exact_at < 0 && d < 1e-28 * d0) exact_at = step + 1;
        prev = d;
      }
      // One rank is its own consensus: the distance is 0 from the start and stays 0.
      check(monotone && (d < 1e-6 * d0 || (n == 1 && d == 0)), r,
            name + ": consensus distance " + detail::str(d0) + " -> " + detail::str(d) + " in 40 steps" +
                (exact_at > 0 ? " (exact after " + std::to_string(exact_at) + ")" : ""));
      if (name == "exp2-dynamic" && (n & (n - 1)) == 0 && n > 1) {
        int k = 0;
        while ((1 << k) < n) ++k;
        check(exact_at == k, r, "exp2-dynamic on " + std::to_string(n) + " ranks: exact average after log2(n) = " +
                                    std::to_string(k) + " steps (got " + std::to_string(exact_at) + ")");
      }
    }

    // 3. hierarchical = all_reduce.
    for (auto algo : {dist::HierarchicalAlgorithm::Sharded, dist::HierarchicalAlgorithm::Leader}) {
      const std::string an = algo == dist::HierarchicalAlgorithm::Sharded ? "sharded" : "leader";
      Tensor ints = (arange(0, 1001, 1, TensorOptions(DType::I64)) * int64_t(r + 1)).to(g_device);
      Tensor want = ints.clone();
      pg->hierarchical_allreduce(ints, dist::ReduceOp::Sum, algo)->wait();
      pg->all_reduce(want)->wait();
      check(ints.cpu().to_vector<int64_t>() == want.cpu().to_vector<int64_t>(), r, "hierarchical (" + an + ", " + std::to_string(pg->ranks_per_node()) +
                                      " ranks per node): i64 sum equals all_reduce");
      Tensor f = start(r, len).to(DType::F32);
      pg->hierarchical_allreduce(f, dist::ReduceOp::Avg, algo)->wait();
      Tensor fm = start(r, len).to(DType::F32);
      pg->all_reduce(fm, dist::ReduceOp::Avg)->wait();
      const double err = max(abs(sub(f, fm))).item<double>();
      check(identical(*pg, f) && err < 1e-5, r, "hierarchical (" + an + "): f32 avg bit-identical on every rank, "
                                                "within " + detail::str(err) + " of all_reduce");
    }
    pg->barrier()->wait();
    return failures ? 1 : 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kiln_neighbor_check: error: %s\n", e.what());
    return 1;
  }
}
