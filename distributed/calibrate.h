// Calibrating the collectives' cost model (cost_model.h) on the ranks of a process group:
// alpha and beta from shift exchanges (every rank sends to rank + 1 and receives from
// rank - 1 at once, the pattern of every ring step) of 64 B to 4 MiB, less the combine
// neighbor_allreduce does after them, fitted by least squares in relative error; gamma from
// an add on this rank. Probes (other collectives to time) are sampled in the same rounds,
// interleaved, so that a slow spell of the machine falls on all of them alike. Each sample
// is 10 back-to-back calls after an untimed one, the slowest rank's time per call.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include <kiln/distributed/cost_model.h>
#include <kiln/distributed/process_group.h>

namespace kiln::dist::cost {

struct Probe {
  std::string name;
  std::function<void()> fn;  // runs the collective once (every rank)
  double seconds = 0;        // out: the median per call
};

struct Calibration {
  Cluster cluster;                  // one node of pg's ranks: the calibrated link and gamma
  std::vector<double> bytes;        // the exchange sizes
  std::vector<double> exchange_s;   // measured (less the combine)
};

// Every rank of pg calls it (with the same probes, in the same order). Needs 2+ ranks.
Calibration calibrate(ProcessGroup& pg, int rounds, std::vector<Probe>* probes = nullptr);

}  // namespace kiln::dist::cost
