#!/usr/bin/env python3
"""Runs every test case of a Catch2 binary in its own process, several at a time.

Used by tools/gpu_check.sh for kiln_cuda_tests on a lent GPU: one test that corrupts the
CUDA context (an illegal address is sticky) or crashes then costs only itself, and the
cases share the GPU in parallel, so the whole suite fits a short lease.

usage: run_tests_isolated.py BINARY [--jobs N] [--timeout S] [--json FILE] [--wrap CMD]
                             [--filter SPEC] [--threads N] [-- EXTRA CATCH2 ARGS]
  --wrap CMD   prefix each run with CMD (split on spaces), e.g. "compute-sanitizer --tool memcheck"
  --filter     a Catch2 test spec: only the cases it selects are listed and run
Prints one line per case (PASS/FAIL/TIMEOUT/SKIP, seconds), the failing cases' output,
and a summary line "test cases: N | P passed | F failed"; exits 1 when any case failed.
"""
import argparse
import concurrent.futures
import json
import os
import subprocess
import sys
import time


def escape(name):
    # Catch2 test specs treat these characters specially; a backslash escapes them.
    out = []
    for c in name:
        if c in '\\,[]*~"':
            out.append("\\")
        out.append(c)
    return "".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("binary")
    ap.add_argument("--jobs", type=int, default=8)
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--json", default="")
    ap.add_argument("--wrap", default="")
    ap.add_argument("--filter", default="")
    ap.add_argument("--threads", type=int, default=2,
                    help="KILN_NUM_THREADS for each case (the CPU references), so N jobs do not oversubscribe")
    ap.add_argument("extra", nargs="*")
    args = ap.parse_args()

    listing = subprocess.run([args.binary, "--list-test-names-only"] + ([args.filter] if args.filter else []),
                             capture_output=True, text=True, timeout=120)
    if listing.returncode == 77:
        print(listing.stdout.strip() or "no usable CUDA device; skipping")
        return 77
    names = [l.rstrip() for l in listing.stdout.splitlines()
             if l.strip() and not l.startswith(" ") and "test case" not in l and "Matching test cases" not in l]
    if not names:
        print("run_tests_isolated: the binary listed no test cases:\n" + listing.stdout + listing.stderr)
        return 1
    wrap = args.wrap.split() if args.wrap else []
    env = dict(os.environ, KILN_NUM_THREADS=str(args.threads), OMP_NUM_THREADS=str(args.threads))
    print(f"run_tests_isolated: {len(names)} test cases, {args.jobs} at a time, {args.timeout:.0f}s each", flush=True)

    def run(name):
        t0 = time.time()
        cmd = wrap + [args.binary, escape(name)] + args.extra
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=args.timeout, env=env)
            rc, text = p.returncode, p.stdout + p.stderr
            status = {0: "PASS", 77: "SKIP"}.get(rc, "FAIL")
        except subprocess.TimeoutExpired as e:
            rc, status = -1, "TIMEOUT"
            text = ((e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")) + \
                   ((e.stderr or b"").decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or ""))
        return {"name": name, "status": status, "exit": rc, "seconds": round(time.time() - t0, 2), "output": text}

    results = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for r in pool.map(run, names):
            results.append(r)
            print(f"{r['status']:7s} {r['seconds']:7.2f}s  {r['name']}", flush=True)

    bad = [r for r in results if r["status"] in ("FAIL", "TIMEOUT")]
    for r in bad:
        print(f"\n===== {r['status']}: {r['name']} (exit {r['exit']}) =====")
        print(r["output"][-6000:])
    passed = sum(r["status"] == "PASS" for r in results)
    skipped = sum(r["status"] == "SKIP" for r in results)
    print(f"\ntest cases: {len(results)} | {passed} passed | {len(bad)} failed | {skipped} skipped")
    if args.json:
        with open(args.json, "w") as f:
            json.dump([{k: v for k, v in r.items() if k != "output" or r["status"] != "PASS"} for r in results], f,
                      indent=1)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
