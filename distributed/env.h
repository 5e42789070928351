// Where this process sits in a job, read from the environment its launcher set:
// kiln-run and torchrun (RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR,
// MASTER_PORT), Slurm's srun (SLURM_PROCID, SLURM_LOCALID, SLURM_NTASKS, ...) or Open
// MPI's mpirun (OMPI_COMM_WORLD_*). With none of them set, the process is rank 0 of 1.
#pragma once
#include <string>

namespace kiln::dist {

struct LaunchEnv {
  int rank = 0;
  int local_rank = 0;
  int world_size = 1;
  int local_world_size = 1;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  std::string launcher = "none";  // "torchrun" (kiln-run and torchrun), "slurm", "openmpi" or "none"
};

// Reads the environment; throws kiln::Error naming the variable when a value is not a
// number or is out of range (RANK >= WORLD_SIZE, ...).
LaunchEnv launch_env();

}  // namespace kiln::dist
