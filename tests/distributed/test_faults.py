#!/usr/bin/env python3
"""Fault tests for kiln's distributed layer, through kiln-run with real kiln processes.

usage: test_faults.py KILN_RUN KILN_DIST_FAULT

1. exit: rank 1 exits with code 3 while the others sleep. kiln-run must exit non-zero
   within 30 s, name rank 1 and its exit code, and leave no process running.
2. skip: rank 1 never calls a collective the others call. With KILN_DIST_TIMEOUT=3 the
   others must fail with kiln's timeout error naming rank 1 (not hang), and kiln-run
   must exit non-zero within 30 s with no process left.
3. ok: the same program with no fault exits 0 (the checks above can tell).
4. The same skip with neighbor_allreduce (ring topology, 3 ranks) and with
   hierarchical_allreduce (4 ranks, 2 per node): the neighbors' (and the node's) timeout
   error names rank 1; without the fault both finish.
Each run tags its processes with a unique token argument, so leftovers are found by
scanning /proc for it.
"""
import os
import subprocess
import sys
import time
import uuid


def leftovers(token):
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        if token.encode() in args:
            found.append(int(pid))
    return found


def run(kiln_run, prog, nproc, mode, timeout_s=None, collective="all_reduce", extra_env=None):
    token = "kiln-fault-" + uuid.uuid4().hex
    env = dict(os.environ)
    env.update(extra_env or {})
    if timeout_s is not None:
        env["KILN_DIST_TIMEOUT"] = str(timeout_s)
    cmd = [kiln_run, "--nproc-per-node", str(nproc), "--grace-period", "3", prog, "--mode", mode, "--bad-rank", "1",
           "--collective", collective, token]
    t0 = time.monotonic()
    p = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120)
    elapsed = time.monotonic() - t0
    time.sleep(0.2)
    return p.returncode, p.stdout, elapsed, leftovers(token)


failures = []


def check(cond, what, output=""):
    print(("ok:   " if cond else "FAIL: ") + what)
    if not cond:
        failures.append(what)
        if output:
            print("---- output ----\n" + output + "----------------")


def main():
    kiln_run, prog = sys.argv[1], sys.argv[2]

    rc, out, t, left = run(kiln_run, prog, 3, "ok")
    check(rc == 0, f"no fault: kiln-run exits 0 (got {rc}, {t:.1f} s)", out)
    check(out.count("second all_reduce done") == 3, "no fault: all 3 ranks finished", out)

    rc, out, t, left = run(kiln_run, prog, 3, "exit")
    check(rc != 0, f"exit: kiln-run exits non-zero (got {rc})", out)
    check(t < 30, f"exit: kiln-run returned within 30 s ({t:.1f} s)", out)
    check("rank 1 (local rank 1)" in out and "exit code 3" in out, "exit: kiln-run names rank 1 and exit code 3", out)
    check(not left, f"exit: no process left (found {left})", out)

    rc, out, t, left = run(kiln_run, prog, 3, "skip", timeout_s=3)
    check(rc != 0, f"skip: kiln-run exits non-zero (got {rc})", out)
    check(t < 30, f"skip: kiln-run returned within 30 s ({t:.1f} s)", out)
    check("all_reduce #1" in out and "timed out after 3 s" in out,
          "skip: the waiting ranks fail with the timeout error for all_reduce #1", out)
    check("ranks that did not call it: 1 (last at #0)" in out, "skip: the error names rank 1 as missing", out)
    check(not left, f"skip: no process left (found {left})", out)

    for coll, n, env, desc in (("neighbor", 3, {}, "neighbor_allreduce #1 (f32[256] on cpu, ring, step 1)"),
                               ("hierarchical", 4, {"KILN_RANKS_PER_NODE": "2"}, "hierarchical_allreduce #1")):
        rc, out, t, left = run(kiln_run, prog, n, "ok", collective=coll, extra_env=env)
        check(rc == 0 and out.count(f"second {coll} done") == n, f"{coll} no fault: all {n} ranks finished", out)
        rc, out, t, left = run(kiln_run, prog, n, "skip", timeout_s=3, collective=coll, extra_env=env)
        check(rc != 0, f"{coll} skip: kiln-run exits non-zero (got {rc})", out)
        check(t < 30, f"{coll} skip: kiln-run returned within 30 s ({t:.1f} s)", out)
        check(desc in out and "timed out" in out, f"{coll} skip: the timeout error for {desc}", out)
        check("ranks that did not call it: 1 (last at #0)" in out, f"{coll} skip: the error names rank 1", out)
        check(not left, f"{coll} skip: no process left (found {left})", out)

    if failures:
        print(f"{len(failures)} check(s) failed")
        return 1
    print("all fault checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
