// The distributed layer inside one process: stores (TCP and file), the launcher
// environment, and the Gloo and local process groups with each rank on its own thread
// (Gloo connects the threads over loopback TCP exactly as it would processes). The
// multi-process tests through kiln-run are ctest entries (tests/distributed/*.py).
#include "test_util.h"
#include "distributed/dist_test_util.h"

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <map>
#include <thread>

using namespace kiln;
using namespace kiln::dist;
using namespace std::chrono_literals;
using kiln::test::vec;

using kiln::test::error_of;
using kiln::test::run_ranks;
using kiln::test::StoreServer;
using kiln::test::ThreadChecks;
using kiln::test::with_gloo;

TEST_CASE("TcpStore: set/get/add across clients, blocking get, timeouts", "[distributed][store]") {
  StoreServer srv;
  auto a = srv.client(0);
  auto b = srv.client(1);
  a->set("k", std::string("hello"));
  CHECK(b->get_string("k") == "hello");
  CHECK(!b->try_get("absent").has_value());
  CHECK(a->add("n", 2) == 2);
  CHECK(b->add("n", 5) == 7);
  CHECK(b->add("n", -7) == 0);

  // get blocks until another client sets the key.
  std::thread setter([&] {
    std::this_thread::sleep_for(50ms);
    a->set("late", std::string("v"));
  });
  Bytes v = b->get("late", 5s);
  setter.join();
  CHECK(std::string(v.begin(), v.end()) == "v");

  std::string err = error_of([&] { b->get("never", 100ms); });
  CHECK(err.find("timed out") != std::string::npos);
  CHECK(err.find("'never'") != std::string::npos);

  err = error_of([&] { b->wait({"k", "missing1", "missing2"}, 100ms); });
  CHECK(err.find("'missing1'") != std::string::npos);
  CHECK(err.find("'missing2'") != std::string::npos);
  CHECK(err.find("'k'") == std::string::npos);

  // Binary values survive.
  Bytes bin = {'\0', '\x01', '\xff', '\0'};
  a->set("bin", bin);
  CHECK(b->get("bin") == bin);
}

TEST_CASE("TcpStore: a client names the address when no server comes", "[distributed][store]") {
  // Find a port nobody listens on: open a server, note its port, close it.
  int port;
  {
    TcpStore tmp("127.0.0.1", 0, true, 1s);
    port = tmp.port();
  }
  std::string err = error_of([&] { TcpStore c("127.0.0.1", port, false, 300ms); });
  CHECK(err.find("could not reach the store at tcp://127.0.0.1:" + std::to_string(port)) != std::string::npos);
  // Two servers on one port: the second names the problem.
  StoreServer srv;
  err = error_of([&] { TcpStore second("127.0.0.1", srv.server->port(), true, 1s); });
  CHECK(err.find("cannot listen on port") != std::string::npos);
}

TEST_CASE("TcpStore: a client notices the server going away", "[distributed][store]") {
  auto srv = std::make_unique<StoreServer>();
  auto c = srv->client(1);
  c->set("x", std::string("1"));
  srv.reset();  // rank 0 exits
  std::string err = error_of([&] { c->get("x", 1s); });
  CHECK(err.find("lost the connection") != std::string::npos);
}

TEST_CASE("FileStore: set/get/add, escaping, timeouts", "[distributed][store]") {
  auto dir = std::filesystem::temp_directory_path() / ("kiln_filestore_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  FileStore a(dir.string(), 2s), b(dir.string(), 2s);
  a.set("pg0/seq/1", std::string("17"));
  CHECK(b.get_string("pg0/seq/1") == "17");
  CHECK(!b.try_get("nothing").has_value());
  std::vector<std::thread> adders;
  for (int i = 0; i < 4; ++i)
    adders.emplace_back([&] {
      for (int k = 0; k < 25; ++k) (k % 2 ? a : b).add("counter", 1);
    });
  for (auto& t : adders) t.join();
  CHECK(a.add("counter", 0) == 100);
  CHECK(error_of([&] { a.get("absent", 50ms); }).find("timed out") != std::string::npos);
  std::filesystem::remove_all(dir);
}

TEST_CASE("launch_env reads torchrun, Slurm and Open MPI variables", "[distributed][env]") {
  const char* vars[] = {"RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                        "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "SLURM_NTASKS_PER_NODE", "SLURM_NNODES",
                        "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK",
                        "OMPI_COMM_WORLD_LOCAL_SIZE"};
  std::map<std::string, std::string> saved;
  for (const char* v : vars) {
    if (const char* x = std::getenv(v)) saved[v] = x;
    ::unsetenv(v);
  }
  LaunchEnv e = launch_env();
  CHECK(e.rank == 0);
  CHECK(e.world_size == 1);
  CHECK(e.launcher == "none");

  ::setenv("RANK", "3", 1);
  ::setenv("WORLD_SIZE", "4", 1);
  ::setenv("LOCAL_RANK", "1", 1);
  ::setenv("LOCAL_WORLD_SIZE", "2", 1);
  ::setenv("MASTER_ADDR", "node7", 1);
  ::setenv("MASTER_PORT", "29511", 1);
  ::setenv("SLURM_PROCID", "0", 1);  // torchrun's variables win
  ::setenv("SLURM_NTASKS", "8", 1);
  e = launch_env();
  CHECK(e.launcher == "torchrun");
  CHECK(e.rank == 3);
  CHECK(e.world_size == 4);
  CHECK(e.local_rank == 1);
  CHECK(e.local_world_size == 2);
  CHECK(e.master_addr == "node7");
  CHECK(e.master_port == 29511);

  ::setenv("RANK", "4", 1);
  CHECK(error_of([] { launch_env(); }).find("RANK=4 is out of range") != std::string::npos);
  ::setenv("RANK", "x", 1);
  CHECK(error_of([] { launch_env(); }).find("RANK='x' is not an integer") != std::string::npos);
  ::unsetenv("RANK");
  CHECK(error_of([] { launch_env(); }).find("RANK is missing") != std::string::npos);
  ::unsetenv("WORLD_SIZE");
  ::unsetenv("LOCAL_RANK");
  ::unsetenv("LOCAL_WORLD_SIZE");

  ::setenv("SLURM_PROCID", "5", 1);
  ::setenv("SLURM_LOCALID", "1", 1);
  ::setenv("SLURM_NTASKS_PER_NODE", "4", 1);
  e = launch_env();
  CHECK(e.launcher == "slurm");
  CHECK(e.rank == 5);
  CHECK(e.world_size == 8);
  CHECK(e.local_rank == 1);
  CHECK(e.local_world_size == 4);
  for (const char* v : {"SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "SLURM_NTASKS_PER_NODE"}) ::unsetenv(v);

  ::setenv("OMPI_COMM_WORLD_RANK", "2", 1);
  ::setenv("OMPI_COMM_WORLD_SIZE", "3", 1);
  ::setenv("OMPI_COMM_WORLD_LOCAL_RANK", "0", 1);
  ::setenv("OMPI_COMM_WORLD_LOCAL_SIZE", "1", 1);
  e = launch_env();
  CHECK(e.launcher == "openmpi");
  CHECK(e.rank == 2);
  CHECK(e.world_size == 3);

  for (const char* v : vars) ::unsetenv(v);
  for (auto& [k, v] : saved) ::setenv(k.c_str(), v.c_str(), 1);
}

TEST_CASE("local process group: a world of one", "[distributed][pg]") {
  LaunchEnv env;  // rank 0 of 1
  auto pg = init_process_group({}, env);
  CHECK(pg->backend_name() == "local");
  Tensor t = from_vector(std::vector<float>{1, 2, 3});
  pg->all_reduce(t, dist::ReduceOp::Avg)->wait();
  CHECK(vec<float>(t) == std::vector<float>{1, 2, 3});
  Tensor out = zeros({3});
  pg->all_gather(out, t)->wait();
  CHECK(vec<float>(out) == std::vector<float>{1, 2, 3});
  pg->barrier()->wait();
  CHECK(pg->sequence_number() == 3);
  REQUIRE_KILN_ERROR(pg->all_reduce(from_vector(std::vector<int32_t>{1}), dist::ReduceOp::Avg), "avg needs a floating");
  REQUIRE_KILN_ERROR(pg->all_reduce(zeros({4, 4}).t()), "must be contiguous");
  REQUIRE_KILN_ERROR(pg->all_gather(zeros({4}), zeros({3})), "needs world size 1 x input's 3");
  REQUIRE_KILN_ERROR(new_process_group("nosuch", nullptr, 0, 1), "'nosuch' is not available");
}

TEST_CASE("gloo: collectives on 3 ranks for every dtype", "[distributed][gloo]") {
  const int W = 3;
  ThreadChecks tc;
  with_gloo(W, [&](ProcessGroup& pg) {
    const int r = pg.rank();
    TCHECK(tc, (pg.backend_name() == "gloo"), "");
    for (DType dt : {DType::F32, DType::F64, DType::F16, DType::BF16, DType::I32, DType::I64, DType::U8}) {
      const std::string ctx = std::string("rank ") + std::to_string(r) + " " + dtype_name(dt);
      // all_reduce sum and max: rank r holds (r + 1) * [1, 2, 3, 4, 5]
      Tensor t = (arange(1, 6, 1, TensorOptions(DType::F64)) * double(r + 1)).to(dt);
      pg.all_reduce(t, dist::ReduceOp::Sum)->wait();
      TCHECK(tc, (vec<double>(t) == std::vector<double>{6, 12, 18, 24, 30}), ctx);
      Tensor m = (arange(1, 6, 1, TensorOptions(DType::F64)) * double(r + 1)).to(dt);
      pg.all_reduce(m, dist::ReduceOp::Max)->wait();
      TCHECK(tc, (vec<double>(m) == std::vector<double>{3, 6, 9, 12, 15}), ctx);
      // broadcast from rank 1
      Tensor b = full({4}, double(r * 10), TensorOptions(dt));
      pg.broadcast(b, 1)->wait();
      TCHECK(tc, (vec<double>(b) == std::vector<double>(4, 10)), ctx);
      // all_gather: rank r contributes [r, r]
      Tensor in = full({2}, double(r), TensorOptions(dt));
      Tensor out = zeros({W, 2}, TensorOptions(dt));
      pg.all_gather(out, in)->wait();
      TCHECK(tc, (vec<double>(out) == std::vector<double>{0, 0, 1, 1, 2, 2}), ctx);
      // reduce_scatter: rank r contributes [0..5] + r; gets the sum of its two elements
      Tensor rs_in = (arange(0, 6, 1, TensorOptions(DType::F64)) + double(r)).to(dt);
      Tensor rs_out = zeros({2}, TensorOptions(dt));
      pg.reduce_scatter(rs_out, rs_in, dist::ReduceOp::Sum)->wait();
      TCHECK(tc, (vec<double>(rs_out) == std::vector<double>{double(3 * 2 * r + 3), double(3 * (2 * r + 1) + 3)}), ctx);
    }
    // avg divides by the world size, and every rank holds the same bits.
    Tensor a = full({1000}, 1.0 + pg.rank(), TensorOptions(DType::F32));
    pg.all_reduce(a, dist::ReduceOp::Avg)->wait();
    TCHECK(tc, (vec<float>(a) == std::vector<float>(1000, 2.0f)), "avg");
    // Many collectives in flight at once finish in order.
    std::vector<Tensor> ts;
    std::vector<std::shared_ptr<Work>> works;
    for (int i = 0; i < 8; ++i) {
      ts.push_back(full({1 << 12}, double(i), TensorOptions(DType::F32)));
      works.push_back(pg.all_reduce(ts.back()));
    }
    for (int i = 0; i < 8; ++i) {
      works[i]->wait();
      TCHECK(tc, (ts[i].to_vector<float>()[123] == float(3 * i)), "in flight");
    }
    pg.barrier()->wait();
  });
  REQUIRE_THREAD_CHECKS(tc);
}

TEST_CASE("gloo: a rank that never calls the collective is named in the timeout error", "[distributed][gloo]") {
  ProcessGroupOptions opts;
  opts.timeout = 1500ms;
  std::atomic<bool> rank0_failed{false};
  std::string err0, again;
  with_gloo(
      2,
      [&](ProcessGroup& pg) {
        Tensor t = ones({16});
        pg.all_reduce(t)->wait();  // #0: both call it
        if (pg.rank() == 0) {
          err0 = error_of([&] { pg.all_reduce(t)->wait(); });  // #1: rank 1 never comes
          rank0_failed = true;
          // The group is aborted: a later collective fails at once, naming the cause.
          again = error_of([&] { pg.all_reduce(t)->wait(); });
        } else {
          while (!rank0_failed) std::this_thread::sleep_for(10ms);
        }
      },
      opts);
  INFO(err0);
  CHECK(err0.find("all_reduce #1") != std::string::npos);
  CHECK(err0.find("timed out after 1.5 s") != std::string::npos);
  CHECK(err0.find("ranks that did not call it: 1 (last at #0)") != std::string::npos);
  // The group is aborted: a later collective fails at once, naming the cause.
  CHECK(again.find("aborted") != std::string::npos);
}

TEST_CASE("gloo debug mode reports the first mismatching rank", "[distributed][gloo]") {
  ProcessGroupOptions opts;
  opts.debug = true;
  opts.timeout = 5s;
  std::vector<std::string> errs(3);
  with_gloo(
      3,
      [&](ProcessGroup& pg) {
        Tensor ok = ones({4});
        pg.all_reduce(ok)->wait();  // same everywhere: fine
        Tensor t = ones({pg.rank() == 2 ? 5 : 4});
        errs[pg.rank()] = error_of([&] { pg.all_reduce(t)->wait(); });
      },
      opts);
  INFO(errs[0]);
  CHECK(errs[0].find("collective mismatch at #1") != std::string::npos);
  CHECK(errs[0].find("rank 2 called all_reduce(f32[5] on cpu, sum)") != std::string::npos);
  CHECK(errs[2].find("rank 0 called all_reduce(f32[4] on cpu, sum)") != std::string::npos);
}

TEST_CASE("init_process_group: rendezvous names the ranks that never arrive", "[distributed][init]") {
  StoreServer srv;  // only to find a free port
  int port = srv.server->port();
  srv.server.reset();
  LaunchEnv env;
  env.world_size = 3;
  env.rank = 0;
  env.master_addr = "127.0.0.1";
  env.master_port = port;
  InitOptions o;
  o.backend = "gloo";
  o.options.timeout = 500ms;
  std::string err = error_of([&] { init_process_group(o, env); });
  CHECK(err.find("ranks 1, 2 of 3 never arrived") != std::string::npos);
}
