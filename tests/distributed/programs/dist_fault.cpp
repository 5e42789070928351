// kiln_dist_fault: misbehaving ranks for the fault tests (tests/distributed/test_faults.py),
// run under kiln-run. Every rank first meets the others (init + one all_reduce), then:
//   --mode exit:        rank --bad-rank exits with code 3; the others sleep (the
//                       launcher must stop them);
//   --mode skip:        rank --bad-rank never calls the next all_reduce and sleeps;
//                       the others must fail with the timeout error naming it
//                       (set KILN_DIST_TIMEOUT to a few seconds);
//   --mode ok:          every rank calls it; all exit 0.
// --collective all_reduce (default) | neighbor (neighbor_allreduce on the ring topology)
// | hierarchical (hierarchical_allreduce; set KILN_RANKS_PER_NODE) is the collective that
// is skipped (the first, which meets the others, is always an all_reduce).
// Trailing arguments are ignored (the tests tag processes with a unique token there).
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <thread>

#include <kiln/kiln.h>

using namespace kiln;

int main(int argc, char** argv) {
  std::string mode = "ok";
  int bad = 1;
  std::string collective = "all_reduce";
  for (int i = 1; i + 1 < argc; ++i) {
    std::string f = argv[i];
    if (f == "--mode") mode = argv[++i];
    else if (f == "--bad-rank") bad = std::stoi(argv[++i]);
    else if (f == "--collective") collective = argv[++i];
  }
  try {
    auto pg = dist::init_process_group({});
    Tensor t = ones({256});
    pg->all_reduce(t)->wait();
    std::printf("rank %d: met %d ranks (pid %d)\n", pg->rank(), pg->size(), int(::getpid()));
    std::fflush(stdout);
    if (pg->rank() == bad && mode == "exit") {
      std::fprintf(stderr, "rank %d: exiting with code 3 on purpose\n", bad);
      return 3;
    }
    if ((pg->rank() == bad && mode == "skip") || mode == "exit") {
      std::this_thread::sleep_for(std::chrono::minutes(10));
      return 0;
    }
    if (collective == "neighbor")
      pg->neighbor_allreduce(t, dist::Topology::ring(pg->size()), 1)->wait();
    else if (collective == "hierarchical")
      pg->hierarchical_allreduce(t)->wait();
    else
      pg->all_reduce(t)->wait();
    std::printf("rank %d: second %s done\n", pg->rank(), collective.c_str());
    pg->barrier()->wait();
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kiln_dist_fault: error: %s\n", e.what());
    return 1;
  }
}
