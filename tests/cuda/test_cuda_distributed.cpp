// The distributed layer on CUDA tensors. The NCCL process group at world size 1: each
// collective against known values for several dtypes, a collective ordered after the
// compute stream's work and wait() ordering later kernels after it, barrier holding the
// host, the tensors of a collective nobody waits for kept until the GPU is done, the
// watchdog's timeout aborting the group, and DistributedDataParallel giving the bare
// model's gradients. NCCL refuses two ranks on one GPU, so the multi-rank tests use the
// Gloo group, which stages CUDA tensors through host memory, with two ranks as two
// threads sharing the one GPU: its collectives, and DDP leaving bit-identical parameters
// on both ranks that match one process trained on the whole batch.
#include "test_util.h"
#include "distributed/dist_test_util.h"

#include <dlfcn.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <functional>
#include <memory>
#include <thread>

#include <kiln/cuda/allocator.h>
#include <kiln/cuda/device.h>

using namespace kiln;
using namespace kiln::dist;
using namespace std::chrono_literals;
using kiln::test::cuda0;
using kiln::test::error_of;
using kiln::test::vec;

namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

void gpu_sync() { synchronize(cuda0()); }

std::shared_ptr<TcpStore> store_server() { return std::make_shared<TcpStore>("127.0.0.1", 0, true, 10s); }

// The NCCL group of a world of one over a TCP store, as init_process_group makes it. A
// minute's timeout: nothing here should take that long, and nothing can hang longer.
std::shared_ptr<ProcessGroup> nccl_world1(const std::shared_ptr<TcpStore>& store, milliseconds timeout = 60s) {
  ProcessGroupOptions o;
  o.timeout = timeout;
  return new_process_group("nccl", std::make_shared<PrefixStore>("pg", store), 0, 1, o);
}

// `world` Gloo ranks on threads, each given its own group. Catch2's assertions are not
// thread-safe: fn records what it saw and the test checks it after the threads joined.
void with_gloo(int world, const std::function<void(const std::shared_ptr<ProcessGroup>&)>& fn) {
  ProcessGroupOptions o;
  o.timeout = 60s;
  kiln::test::with_gloo_groups(world, fn, o);
}

// Timeouts the tests rely on, multiplied by KILN_TEST_TIMEOUT_SCALE (whole seconds; 1 when
// unset): under compute-sanitizer the NCCL communicator's set-up alone can take longer
// than 5 s, so tools/gpu_check.sh runs the sanitizers with a larger scale.
std::chrono::seconds scaled(std::chrono::seconds s) {
  const char* v = std::getenv("KILN_TEST_TIMEOUT_SCALE");
  const long k = v ? std::strtol(v, nullptr, 10) : 1;
  return s * (k >= 1 ? k : 1);
}

double min_of(const Tensor& t) { return min(t).item<double>(); }
double max_of(const Tensor& t) { return max(t).item<double>(); }

// A 4096 x 4096 tensor of 2s made at the end of tens of milliseconds of matmuls on the
// compute stream: a collective that does not wait for the compute stream reads what the
// tensor it is copied into held before.
Tensor slow_twos() {
  const int64_t n = 4096;
  Tensor a = full({n, n}, 2.0, TensorOptions(DType::F32, cuda0()));
  const Tensor id = eye(n, -1, TensorOptions(DType::F32, cuda0()));
  for (int i = 0; i < 8; ++i) a = matmul(a, id);
  return a;
}

// Holds the compute stream of cuda:0 from the host until release() (or 60 s, so that a
// failing test cannot hang the run): a collective queued behind it cannot start, as if a
// peer never arrived. The test binary does not link the CUDA runtime itself; it calls
// the one kiln loaded.
class StreamStall {
 public:
  StreamStall() {
    using LaunchHostFunc = cudaError_t (*)(cudaStream_t, cudaHostFn_t, void*);
    auto launch = reinterpret_cast<LaunchHostFunc>(::dlsym(RTLD_DEFAULT, "cudaLaunchHostFunc"));
    REQUIRE(launch != nullptr);
    auto* arg = new std::shared_ptr<std::atomic<bool>>(released_);
    if (launch(cuda::current_stream(0), &StreamStall::block, arg) != cudaSuccess) {
      delete arg;
      FAIL("cudaLaunchHostFunc failed");
    }
  }
  ~StreamStall() { release(); }
  StreamStall(const StreamStall&) = delete;
  StreamStall& operator=(const StreamStall&) = delete;
  void release() { released_->store(true); }

 private:
  static void block(void* p) {
    auto* released = static_cast<std::shared_ptr<std::atomic<bool>>*>(p);
    const auto limit = Clock::now() + 60s;
    while (!(*released)->load() && Clock::now() < limit) std::this_thread::sleep_for(1ms);
    delete released;
  }
  std::shared_ptr<std::atomic<bool>> released_ = std::make_shared<std::atomic<bool>>(false);
};

// An MLP on cuda:0 drawn from `seed` (the layers initialise from the default generator:
// call this on the main thread).
std::shared_ptr<nn::Module> mlp(uint64_t seed) {
  manual_seed(seed);
  auto m = std::make_shared<nn::Sequential>(std::make_shared<nn::Linear>(8, 32), std::make_shared<nn::ReLU>(),
                                            std::make_shared<nn::Linear>(32, 32), std::make_shared<nn::ReLU>(),
                                            std::make_shared<nn::Linear>(32, 4));
  m->to(cuda0());
  return m;
}

// Caps small enough for several buckets: [fc3.bias, fc3.weight], [fc2.bias],
// [fc2.weight], [fc1.bias, fc1.weight].
DDPOptions small_buckets() {
  DDPOptions o;
  o.first_bucket_cap_mb = 0.0001;
  o.bucket_cap_mb = 0.001;
  return o;
}

SGDOptions sgd_options() {
  SGDOptions o;
  o.lr = 0.1;
  o.momentum = 0.9;
  return o;
}

}  // namespace

TEST_CASE("nccl, world of one: every collective on CUDA tensors of several dtypes", "[distributed][nccl]") {
  auto server = store_server();
  auto pg = nccl_world1(server);
  CHECK(pg->backend_name() == "nccl");
  const std::vector<double> v{1, 2, 3, 4, 5};
  int64_t expected_seq = 0;
  for (DType dt : {DType::F32, DType::F64, DType::F16, DType::BF16, DType::I32, DType::I64, DType::U8}) {
    INFO(dtype_name(dt));
    const TensorOptions on_gpu(dt, cuda0());
    Tensor t = arange(1, 6, 1, TensorOptions(DType::F64)).to(dt).to(cuda0());
    pg->all_reduce(t, dist::ReduceOp::Sum)->wait();
    CHECK(vec<double>(t) == v);
    pg->all_reduce(t, dist::ReduceOp::Max)->wait();
    CHECK(vec<double>(t) == v);
    expected_seq += 2;
    if (is_floating(dt)) {
      pg->all_reduce(t, dist::ReduceOp::Avg)->wait();
      CHECK(vec<double>(t) == v);
      ++expected_seq;
    }
    pg->broadcast(t, 0)->wait();
    CHECK(vec<double>(t) == v);
    // Out of place into zeros: a wrong element size or count leaves zeros behind.
    Tensor gathered = zeros({1, 5}, on_gpu);
    pg->all_gather(gathered, t)->wait();
    CHECK(vec<double>(gathered) == v);
    Tensor scattered = zeros({5}, on_gpu);
    pg->reduce_scatter(scattered, t, dist::ReduceOp::Sum)->wait();
    CHECK(vec<double>(scattered) == v);
    CHECK(t.is_cuda());
    CHECK(gathered.is_cuda());
    expected_seq += 3;
  }
  // Longer than NCCL's chunks, odd length (every value exact in f32).
  const int64_t n = 3000001;
  Tensor big = arange(0, n, 1, TensorOptions(DType::F32, cuda0()));
  Tensor big_out = zeros({n}, TensorOptions(DType::F32, cuda0()));
  pg->all_gather(big_out, big)->wait();
  CHECK(max_of(abs(big_out - big)) == 0.0);
  CHECK(max_of(big_out) == double(n - 1));
  Tensor nothing = zeros({0}, TensorOptions(DType::F32, cuda0()));
  pg->all_reduce(nothing)->wait();
  pg->barrier()->wait();
  expected_seq += 3;
  CHECK(static_cast<int64_t>(pg->sequence_number()) == expected_seq);
  CHECK(!pg->aborted());

  // CPU tensors belong to gloo; the mistake leaves the group usable.
  CHECK_KILN_ERROR(pg->all_reduce(ones({4})), "use gloo for CPU tensors");
  CHECK(!pg->aborted());
  Tensor again = full({4}, 3.0, TensorOptions(DType::F32, cuda0()));
  pg->all_reduce(again, dist::ReduceOp::Avg)->wait();
  CHECK(vec<float>(again) == std::vector<float>(4, 3.0f));

  // A world of one made without a store works too.
  auto solo = new_process_group("nccl", nullptr, 0, 1);
  Tensor s = full({3}, 4.0, TensorOptions(DType::F32, cuda0()));
  solo->all_reduce(s, dist::ReduceOp::Avg)->wait();
  CHECK(vec<float>(s) == std::vector<float>(3, 4.0f));
}

TEST_CASE("nccl: a collective starts after the compute stream's work, and wait() orders later kernels after it",
          "[distributed][nccl]") {
  auto server = store_server();
  auto pg = nccl_world1(server);
  pg->barrier()->wait();  // the communicator exists before the part that races
  const int64_t n = 4096 * 4096;
  const TensorOptions f32(DType::F32, cuda0());

  // Too early a start copies zeros; a wait() that does not order the stream lets the
  // multiplication run on zeros before NCCL writes the 2s.
  Tensor x = zeros({n}, f32);
  Tensor gathered = zeros({n}, f32);
  x.copy_(slow_twos().reshape({n}));
  pg->all_gather(gathered, x)->wait();
  gathered *= 3.0;
  CHECK(min_of(gathered) == 6.0);
  CHECK(max_of(gathered) == 6.0);

  Tensor y = zeros({n}, f32);
  Tensor part = zeros({n}, f32);
  y.copy_(slow_twos().reshape({n}));
  pg->reduce_scatter(part, y)->wait();
  part += 1.0;
  CHECK(min_of(part) == 3.0);
  CHECK(max_of(part) == 3.0);

  Tensor z = zeros({n}, f32);
  z.copy_(slow_twos().reshape({n}));
  pg->all_reduce(z, dist::ReduceOp::Avg)->wait();
  z *= 5.0;
  CHECK(min_of(z) == 10.0);
  CHECK(max_of(z) == 10.0);
}

TEST_CASE("nccl: barrier().wait() holds the host until the GPU is past it; is_completed", "[distributed][nccl]") {
  auto server = store_server();
  auto pg = nccl_world1(server);
  pg->barrier()->wait();
  Tensor busy = slow_twos();
  auto b = pg->barrier();
  b->wait();
  CHECK(b->is_completed());  // false if wait() had returned while the matmuls still ran

  Tensor t = ones({1000}, TensorOptions(DType::F32, cuda0()));
  auto w = pg->all_reduce(t);
  gpu_sync();
  CHECK(w->is_completed());
  w->wait();
  CHECK(vec<float>(t) == std::vector<float>(1000, 1.0f));
}

TEST_CASE("nccl: the tensors of a collective nobody waits for live until the GPU is done with them",
          "[distributed][nccl]") {
  auto server = store_server();
  // Whatever the ops used below keep allocated once used (cuBLAS's workspace) is not
  // counted: use them first.
  Tensor warm = slow_twos();
  (void)min_of(warm);
  (void)max_of(warm);
  warm = Tensor();
  gpu_sync();
  const int64_t before = cuda::memory_stats(0).allocated;
  auto pg = nccl_world1(server);
  pg->barrier()->wait();
  const int64_t n = 4096 * 4096;
  const TensorOptions f32(DType::F32, cuda0());
  {
    Tensor x = zeros({n}, f32);
    x.copy_(slow_twos().reshape({n}));
    Tensor out = full({n}, -1.0, f32);
    pg->all_gather(out, x);  // the Work, x and out are all dropped here
  }
  // Had out's block gone back to the pool when out was dropped, this tensor, made on
  // the compute stream, would get it while NCCL (on its own stream) still wrote 2s there.
  Tensor fresh = full({n}, 7.0, f32);
  gpu_sync();
  CHECK(min_of(fresh) == 7.0);
  CHECK(max_of(fresh) == 7.0);

  // Destroying the group waits for what is in flight and lets go of every tensor it held
  // (the barrier's scratch element included).
  pg.reset();
  gpu_sync();
  CHECK(cuda::memory_stats(0).allocated == before + n * 4);
}

TEST_CASE("nccl: a collective that never completes times out, fails the group and aborts the communicator",
          "[distributed][nccl]") {
  auto server = store_server();
  const auto timeout = scaled(5s);
  auto pg = nccl_world1(server, timeout);  // also bounds the communicator's set-up: not too short
  Tensor t = ones({1024}, TensorOptions(DType::F32, cuda0()));
  pg->all_reduce(t)->wait();  // #0
  gpu_sync();  // the communicator is set up before the stream is held

  StreamStall stall;
  auto w = pg->all_reduce(t);  // #1 cannot start while the stream is held
  const auto limit = Clock::now() + 60s;
  while (!(pg->aborted() && w->is_completed()) && Clock::now() < limit) std::this_thread::sleep_for(10ms);
  REQUIRE(pg->aborted());
  REQUIRE(w->is_completed());
  std::string err = error_of([&] { w->wait(); });
  INFO(err);
  CHECK(err.find("all_reduce #1") != std::string::npos);
  CHECK(err.find("timed out after " + std::to_string(timeout.count()) + " s") != std::string::npos);
  // Later collectives fail at once instead of hanging.
  CHECK(error_of([&] { pg->all_reduce(t)->wait(); }).find("aborted") != std::string::npos);
  CHECK(error_of([&] { pg->barrier()->wait(); }).find("aborted") != std::string::npos);

  stall.release();
  pg.reset();  // the aborted collective's tensors go once the stream is past it
  gpu_sync();
  CHECK(vec<float>(t) == std::vector<float>(1024, 1.0f));
}

TEST_CASE("nccl: DistributedDataParallel at world size 1 gives the bare model's gradients", "[distributed][nccl][ddp]") {
  auto server = store_server();
  auto pg = nccl_world1(server);
  auto plain = mlp(7);
  auto wrapped = mlp(7);
  DistributedDataParallel ddp(wrapped, pg, small_buckets());
  REQUIRE(ddp.bucket_names().size() >= 3);
  Generator g(3);
  Tensor x = randn({16, 8}, DType::F32, &g).to(cuda0());
  Tensor y = randn({16, 4}, DType::F32, &g).to(cuda0());
  SGD opt_plain(plain->parameters(), sgd_options());
  SGD opt_ddp(wrapped->parameters(), sgd_options());
  for (int step = 0; step < 3; ++step) {
    INFO("step " << step);
    opt_plain.zero_grad();
    opt_ddp.zero_grad();
    mse_loss((*plain)(x), y).backward();
    mse_loss(ddp(x), y).backward();
    auto pp = plain->named_parameters();
    auto pd = wrapped->named_parameters();
    REQUIRE(pp.size() == pd.size());
    for (size_t i = 0; i < pp.size(); ++i) {
      INFO(pp[i].first);
      REQUIRE(pd[i].second.grad().defined());
      CHECK(pd[i].second.grad().is_cuda());
      CHECK(test::bit_equal(pd[i].second.grad(), pp[i].second.grad()));
    }
    opt_plain.step();
    opt_ddp.step();
  }
  CHECK(ddp.last_stats().buckets >= 3);
  CHECK(ddp.last_stats().launched_during_backward >= 1);
  auto pp = plain->parameters();
  auto pd = wrapped->parameters();
  for (size_t i = 0; i < pp.size(); ++i) CHECK(test::bit_equal(pd[i], pp[i]));
}

TEST_CASE("gloo on CUDA tensors: collectives over 2 ranks on 2 threads sharing the GPU", "[distributed][gloo]") {
  const int W = 2;
  const std::vector<DType> dtypes{DType::F32, DType::F64, DType::F16, DType::BF16, DType::I32, DType::I64, DType::U8};
  std::vector<std::vector<std::vector<double>>> got(W);
  std::vector<int> not_on_gpu(W, 0);
  with_gloo(W, [&](const std::shared_ptr<ProcessGroup>& pg) {
    const int r = pg->rank();
    auto keep = [&](const Tensor& t) {
      if (!t.is_cuda()) ++not_on_gpu[r];
      got[r].push_back(vec<double>(t));
    };
    for (DType dt : dtypes) {
      const TensorOptions opt(dt, cuda0());
      // rank r holds (r + 1) * [1, 2, 3, 4, 5]
      Tensor s = (arange(1, 6, 1, TensorOptions(DType::F64)) * double(r + 1)).to(dt).to(cuda0());
      pg->all_reduce(s, dist::ReduceOp::Sum)->wait();
      keep(s);
      Tensor m = (arange(1, 6, 1, TensorOptions(DType::F64)) * double(r + 1)).to(dt).to(cuda0());
      pg->all_reduce(m, dist::ReduceOp::Max)->wait();
      keep(m);
      Tensor b = full({4}, double(r * 10), opt);
      pg->broadcast(b, 1)->wait();
      keep(b);
      Tensor in = full({2}, double(r), opt);
      Tensor out = zeros({W, 2}, opt);
      pg->all_gather(out, in)->wait();
      keep(out);
      // rank r contributes [0, 1, 2, 3] + r and gets the sums of its two elements
      Tensor rs_in = (arange(0, 4, 1, TensorOptions(DType::F64)) + double(r)).to(dt).to(cuda0());
      Tensor rs_out = zeros({2}, opt);
      pg->reduce_scatter(rs_out, rs_in, dist::ReduceOp::Sum)->wait();
      keep(rs_out);
      if (is_floating(dt)) {
        Tensor a = full({3}, 1.0 + r, opt);
        pg->all_reduce(a, dist::ReduceOp::Avg)->wait();
        keep(a);
      }
    }
    pg->barrier()->wait();
  });
  for (int r = 0; r < W; ++r) {
    INFO("rank " << r);
    CHECK(not_on_gpu[r] == 0);
    size_t i = 0;
    for (DType dt : dtypes) {
      INFO(dtype_name(dt));
      REQUIRE(i + 5 <= got[r].size());
      CHECK(got[r][i++] == std::vector<double>{3, 6, 9, 12, 15});
      CHECK(got[r][i++] == std::vector<double>{2, 4, 6, 8, 10});
      CHECK(got[r][i++] == std::vector<double>(4, 10.0));
      CHECK(got[r][i++] == std::vector<double>{0, 0, 1, 1});
      CHECK(got[r][i++] == (r == 0 ? std::vector<double>{1, 3} : std::vector<double>{5, 7}));
      if (is_floating(dt)) {
        REQUIRE(i < got[r].size());
        CHECK(got[r][i++] == std::vector<double>(3, 1.5));
      }
    }
    CHECK(i == got[r].size());
  }
}

TEST_CASE("gloo on CUDA tensors: DDP over 2 threads sharing the GPU leaves bit-identical parameters",
          "[distributed][gloo][ddp]") {
  const int W = 2;
  const int kSteps = 4;
  // Different initial weights per rank: DDP's first broadcast must make them rank 0's.
  std::vector<std::shared_ptr<nn::Module>> models{mlp(100), mlp(101)};
  CHECK_FALSE(test::bit_equal(models[0]->parameters()[0], models[1]->parameters()[0]));
  auto reference = mlp(100);  // rank 0's start, trained alone on the whole batch
  Generator g(5);
  Tensor X = randn({8, 8}, DType::F32, &g).to(cuda0());
  Tensor Y = randn({8, 4}, DType::F32, &g).to(cuda0());

  std::vector<int> buckets(W, 0), launched(W, 0);
  with_gloo(W, [&](const std::shared_ptr<ProcessGroup>& pg) {
    const int r = pg->rank();
    DistributedDataParallel ddp(models[r], pg, small_buckets());
    SGD opt(models[r]->parameters(), sgd_options());
    Tensor x = X.narrow(0, 4 * r, 4);
    Tensor y = Y.narrow(0, 4 * r, 4);
    for (int step = 0; step < kSteps; ++step) {
      opt.zero_grad();
      mse_loss(ddp(x), y).backward();
      opt.step();
    }
    buckets[r] = ddp.last_stats().buckets;
    launched[r] = ddp.last_stats().launched_during_backward;
  });
  CHECK(buckets[0] >= 3);
  CHECK(launched[0] >= 1);

  SGD opt(reference->parameters(), sgd_options());
  for (int step = 0; step < kSteps; ++step) {
    opt.zero_grad();
    mse_loss((*reference)(X), Y).backward();
    opt.step();
  }
  auto p0 = models[0]->named_parameters();
  auto p1 = models[1]->named_parameters();
  auto pr = reference->named_parameters();
  REQUIRE(p0.size() == pr.size());
  for (size_t i = 0; i < p0.size(); ++i) {
    INFO(p0[i].first);
    CHECK(p0[i].second.is_cuda());
    CHECK(test::bit_equal(p0[i].second, p1[i].second));
    // The mean of the two halves' mean losses is the whole batch's mean loss.
    CHECK_CLOSE_TOL(p0[i].second.cpu(), pr[i].second.cpu(), 1e-4, 1e-5);
  }
}
