#!/usr/bin/env bash
# kiln's test command (and CI's, through .ci/run): sets up and builds kiln with
# tools/setup.sh --no-demo (packages, configure, incremental build), then runs every
# registered test with ctest. On a machine without a GPU the CUDA tests report "skipped".
#
# usage: tools/test.sh [ctest arguments...]   e.g. tools/test.sh -L cpu, tools/test.sh -R consumer
# environment: as tools/setup.sh (KILN_BUILD_DIR, KILN_CUDA, KILN_JOBS, ...)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir=${KILN_BUILD_DIR:-$repo/build}
jobs=${KILN_JOBS:-$(nproc)}
# ctest runs $jobs tests at once: each gets its share of the cores (OpenMP threads that
# outnumber the cores spin against each other; the thread tests set their own counts)
export KILN_NUM_THREADS=${KILN_NUM_THREADS:-$(( $(nproc) / jobs > 0 ? $(nproc) / jobs : 1 ))}

bash "$repo/tools/setup.sh" --no-demo
t=$(date +%s)
echo "[test] KILN_NUM_THREADS=$KILN_NUM_THREADS ctest --test-dir $build_dir --output-on-failure -j $jobs $*"
rc=0
ctest --test-dir "$build_dir" --output-on-failure -j "$jobs" "$@" || rc=$?
echo "[test] tests took $(( $(date +%s) - t ))s, exit status $rc"
exit "$rc"
