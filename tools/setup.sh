#!/usr/bin/env bash
# kiln's set-up script: installs the Debian packages kiln needs, configures kiln (with the
# CUDA backend when a CUDA toolkit is found), builds it, runs a short demo of the runtime
# and then the main job: tools/train_cnn on Fashion-MNIST with its defaults (3 epochs,
# about 10 minutes on a 2-core CPU, on the GPU when one is usable). Idempotent:
# a second run skips apt entirely when every package is installed, and rebuilds only what
# changed. Run it on Debian 12 or a derivative as a user: `bash tools/setup.sh` (only the
# package step runs apt-get through sudo, and only when something is missing; the build
# stays yours), or as root: the same command, no sudo needed.
#
# usage: tools/setup.sh [--no-demo] [--no-train] [--no-install] [--help]
#   --no-demo     build only: no demo, no training (tools/test.sh uses this)
#   --no-train    run the demo but not the training job
#   --no-install  skip the package step (for machines where someone else manages packages)
# environment:
#   KILN_BUILD_DIR             build folder (default: <repo>/build)
#   KILN_CUDA                  auto (default), ON or OFF; auto builds CUDA when nvcc is found
#   KILN_JOBS                  parallel build jobs (default: nproc)
#   KILN_BUILD_TYPE            CMake build type (default: Release)
#   CMAKE_CUDA_ARCHITECTURES   GPU architectures to compile for (kiln's default: 90)
#   KILN_CMAKE_ARGS            extra arguments for the configure step (split on spaces)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir=${KILN_BUILD_DIR:-$repo/build}
jobs=${KILN_JOBS:-$(nproc)}
build_type=${KILN_BUILD_TYPE:-Release}
run_demo=1
run_train=1
install_packages=1

for arg in "$@"; do
  case $arg in
    --no-demo) run_demo=0; run_train=0 ;;
    --no-train) run_train=0 ;;
    --demo) run_demo=1 ;;
    --no-install) install_packages=0 ;;
    -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | grep '^#' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "setup.sh: unknown argument '$arg' (try --help)" >&2; exit 2 ;;
  esac
done

t_start=$(date +%s)
say() { printf '[setup] %s\n' "$*"; }
elapsed() { echo "$(( $(date +%s) - $1 ))s"; }

# ---- packages --------------------------------------------------------------------------
# Required to build and test kiln.
# libgloo-dev: the Gloo process group (distributed/) for data-parallel training on CPUs;
# python3: the launcher tools/kiln-run and the distributed tests;
# libcli11-dev: the command line (flags, --help, config files) of every kiln program (tools/);
# nlohmann-json3-dev: the metrics JSONL and configs of training runs (models/run/);
# python3-matplotlib: tools/plot_metrics.py, the PNG curves each trainer draws at the end;
# libstb-dev: image files (image-folder data sets, GAN sample grids; models/data/images.cpp);
# libopenblas-openmp-dev: OpenBLAS built on OpenMP, so that its GEMM threads are kiln's
# (core/parallel.h; the pthread build would start its own and oversubscribe the cores);
# libdnnl-dev: oneDNN, the CPU convolutions (ops/cpu/onednn.cpp); ocl-icd-opencl-dev: only
# because libdnnl-dev's CMake config looks for OpenCL (Debian makes it a Recommends, which
# --no-install-recommends leaves out);
# libhwy-dev: Google Highway, vector exp/tanh/... for the CPU kernels (ops/cpu/vec_math.cpp).
required=(build-essential cmake ninja-build ccache pkg-config catch2 libspdlog-dev libfmt-dev libopenblas-openmp-dev
          libdnnl-dev ocl-icd-opencl-dev libhwy-dev zlib1g-dev libgloo-dev python3 libcli11-dev nlohmann-json3-dev python3-matplotlib libstb-dev)
# Needed by the Fashion-MNIST examples, by the PyTorch interop tests (python3-torch: about
# 635 MB installed with its dependencies; the tests report skipped without it) and by the
# GPT's default corpus (bible-kjv: the King James Bible, models/data/text.h); installed when
# this distribution has them.
optional=(dataset-fashion-mnist python3-torch bible-kjv)

is_installed() { [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]; }
has_candidate() {
  local c
  c=$(apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ {print $2}')
  [ -n "$c" ] && [ "$c" != "(none)" ]
}

if [ "$install_packages" = 1 ]; then
  missing=()
  for p in "${required[@]}"; do is_installed "$p" || missing+=("$p"); done
  # An optional package only counts as missing when apt knows it, so that a distribution
  # without it does not cost an apt-get update on every run.
  missing_optional=()
  for p in "${optional[@]}"; do is_installed "$p" || { has_candidate "$p" && missing_optional+=("$p"); }; done

  if [ ${#missing[@]} -eq 0 ] && [ ${#missing_optional[@]} -eq 0 ]; then
    say "packages: all installed, skipping apt"
  else
    if [ "$(id -u)" -eq 0 ]; then
      sudo=()
    elif command -v sudo >/dev/null; then
      sudo=(sudo)
    else
      echo "setup.sh: packages missing (${missing[*]} ${missing_optional[*]}); not root and sudo is not installed:" \
           "run this script as root, or install them as root, or pass --no-install" >&2
      exit 1
    fi
    t=$(date +%s)
    say "installing packages: ${missing[*]} ${missing_optional[*]}"
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get update -q
    # After the update, install every optional package this distribution offers.
    to_install=("${missing[@]}")
    for p in "${optional[@]}"; do
      if ! is_installed "$p"; then
        if has_candidate "$p"; then to_install+=("$p"); else say "optional package $p is not available here; skipping"; fi
      fi
    done
    "${sudo[@]}" apt-get install -y -q --no-install-recommends "${to_install[@]}"
    say "packages installed in $(elapsed "$t")"
  fi
else
  say "packages: skipped (--no-install)"
fi

# ---- CUDA --------------------------------------------------------------------------------
kiln_cuda=${KILN_CUDA:-auto}
nvcc=""
case ${kiln_cuda^^} in
  OFF|0|NO|FALSE) kiln_cuda=OFF; why="turned off by KILN_CUDA=$KILN_CUDA" ;;
  ON|1|YES|TRUE|AUTO)
    if [ -x /usr/local/cuda/bin/nvcc ]; then nvcc=/usr/local/cuda/bin/nvcc
    elif command -v nvcc >/dev/null; then nvcc=$(command -v nvcc)
    fi
    if [ -n "$nvcc" ]; then
      kiln_cuda=ON; why="$nvcc ($("$nvcc" --version | sed -n 's/.*release \([0-9.]*\).*/\1/p'))"
    elif [ "${kiln_cuda^^}" = AUTO ]; then
      kiln_cuda=OFF; why="no nvcc at /usr/local/cuda/bin/nvcc or on PATH"
    else
      echo "setup.sh: KILN_CUDA=$kiln_cuda but no nvcc at /usr/local/cuda/bin/nvcc or on PATH" >&2
      exit 1
    fi ;;
  *) echo "setup.sh: KILN_CUDA must be auto, ON or OFF (got '$kiln_cuda')" >&2; exit 2 ;;
esac
say "CUDA: $why -> KILN_CUDA=$kiln_cuda"

# ---- configure and build --------------------------------------------------------------------
cmake_args=(-S "$repo" -B "$build_dir" -DCMAKE_BUILD_TYPE="$build_type" -DKILN_CUDA="$kiln_cuda")
# The generator is fixed when a build folder is first configured.
[ -f "$build_dir/CMakeCache.txt" ] || cmake_args+=(-G Ninja)
[ "$kiln_cuda" = ON ] && cmake_args+=(-DCMAKE_CUDA_COMPILER="$nvcc")
[ -n "${CMAKE_CUDA_ARCHITECTURES:-}" ] && cmake_args+=(-DCMAKE_CUDA_ARCHITECTURES="$CMAKE_CUDA_ARCHITECTURES")
# shellcheck disable=SC2206  # deliberately split on spaces
[ -n "${KILN_CMAKE_ARGS:-}" ] && cmake_args+=($KILN_CMAKE_ARGS)

say "tools: $(cmake --version | head -1), ninja $(ninja --version), $(c++ --version | head -1)"
t=$(date +%s)
say "configuring $build_dir ($build_type, KILN_CUDA=$kiln_cuda)"
mkdir -p "$build_dir"
cmake "${cmake_args[@]}" > "$build_dir/configure.log" 2>&1 || {
  cat "$build_dir/configure.log" >&2
  echo "setup.sh: configure failed (log: $build_dir/configure.log)" >&2
  exit 1
}
say "configured in $(elapsed "$t") (log: $build_dir/configure.log)"

t=$(date +%s)
say "building with $jobs jobs"
cmake --build "$build_dir" -j "$jobs" || { say "build FAILED after $(elapsed "$t")"; exit 1; }
say "build took $(elapsed "$t")"

# ---- demo ------------------------------------------------------------------------------------
if [ "$run_demo" = 1 ]; then
  say "running the demo: $build_dir/tools/kiln_demo"
  echo
  "$build_dir/tools/kiln_demo"
  echo
fi

# ---- the main job ----------------------------------------------------------------------------
if [ "$run_train" = 1 ]; then
  # A new run directory each time (config, metrics, checkpoints, plots): earlier runs stay.
  run_dir="$build_dir/runs/train_cnn-$(date +%Y%m%d-%H%M%S)"
  say "training: $build_dir/tools/kiln_train_cnn (defaults; the run goes to $run_dir)"
  "$build_dir/tools/kiln_train_cnn" --run-dir "$run_dir"
fi
say "done in $(elapsed "$t_start"). Tests: bash tools/test.sh"
