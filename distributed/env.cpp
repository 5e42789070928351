// Reading the launcher's environment (see env.h). torchrun's variables win over Slurm's
// and Open MPI's, since kiln-run may itself run inside a Slurm allocation.
#include <kiln/distributed/env.h>

#include <cstdlib>
#include <optional>

#include <kiln/core/error.h>

namespace kiln::dist {

namespace {

std::optional<std::string> env(const char* name) {
  const char* v = std::getenv(name);
  if (!v || !*v) return std::nullopt;
  return std::string(v);
}

int env_int(const char* name, int lo, int hi) {
  std::string s = *env(name);
  size_t used = 0;
  long v = 0;
  try {
    v = std::stol(s, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  KILN_CHECK(used == s.size() && used > 0, "environment: ", name, "='", s, "' is not an integer");
  KILN_CHECK(v >= lo && v <= hi, "environment: ", name, "=", v, " is out of range [", lo, ", ", hi, "]");
  return static_cast<int>(v);
}

}  // namespace

LaunchEnv launch_env() {
  LaunchEnv e;
  constexpr int kMax = 1 << 24;
  if (env("RANK") || env("WORLD_SIZE")) {
    KILN_CHECK(env("RANK") && env("WORLD_SIZE"), "environment: RANK and WORLD_SIZE must be set together (",
               env("RANK") ? "WORLD_SIZE" : "RANK", " is missing)");
    e.launcher = "torchrun";
    e.world_size = env_int("WORLD_SIZE", 1, kMax);
    e.rank = env_int("RANK", 0, e.world_size - 1);
    e.local_rank = env("LOCAL_RANK") ? env_int("LOCAL_RANK", 0, kMax) : e.rank;
    e.local_world_size = env("LOCAL_WORLD_SIZE") ? env_int("LOCAL_WORLD_SIZE", 1, kMax) : e.world_size;
  } else if (env("SLURM_PROCID") && env("SLURM_NTASKS")) {
    e.launcher = "slurm";
    e.world_size = env_int("SLURM_NTASKS", 1, kMax);
    e.rank = env_int("SLURM_PROCID", 0, e.world_size - 1);
    e.local_rank = env("SLURM_LOCALID") ? env_int("SLURM_LOCALID", 0, kMax) : 0;
    // SLURM_NTASKS_PER_NODE is only set with --ntasks-per-node; otherwise assume one node.
    if (env("SLURM_NTASKS_PER_NODE") && env("SLURM_NTASKS_PER_NODE")->find_first_not_of("0123456789") == std::string::npos)
      e.local_world_size = env_int("SLURM_NTASKS_PER_NODE", 1, kMax);
    else
      e.local_world_size = env("SLURM_NNODES") && *env("SLURM_NNODES") != "1" ? 1 : e.world_size;
  } else if (env("OMPI_COMM_WORLD_RANK") && env("OMPI_COMM_WORLD_SIZE")) {
    e.launcher = "openmpi";
    e.world_size = env_int("OMPI_COMM_WORLD_SIZE", 1, kMax);
    e.rank = env_int("OMPI_COMM_WORLD_RANK", 0, e.world_size - 1);
    e.local_rank = env("OMPI_COMM_WORLD_LOCAL_RANK") ? env_int("OMPI_COMM_WORLD_LOCAL_RANK", 0, kMax) : 0;
    e.local_world_size = env("OMPI_COMM_WORLD_LOCAL_SIZE") ? env_int("OMPI_COMM_WORLD_LOCAL_SIZE", 1, kMax) : 1;
  }
  KILN_CHECK(e.local_rank < e.local_world_size || e.launcher == "slurm", "environment: local rank ", e.local_rank,
             " is not below the local world size ", e.local_world_size);
  if (auto a = env("MASTER_ADDR")) e.master_addr = *a;
  if (env("MASTER_PORT")) e.master_port = env_int("MASTER_PORT", 1, 65535);
  return e;
}

}  // namespace kiln::dist
