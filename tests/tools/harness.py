"""What the Python tests of kiln's programs share: failing with the case's name, running a
program (alone or under tools/kiln-run), its final JSON summary line, and the records of a
run's metrics.jsonl. A test calls configure(case, exe, kiln_run) first."""
import json
import os
import subprocess
import sys

_CASE, _EXE, _KILN_RUN = "?", None, None


def configure(case, exe, kiln_run=None):
    global _CASE, _EXE, _KILN_RUN
    _CASE, _EXE, _KILN_RUN = case, exe, kiln_run


def fail(msg):
    print(f"FAIL [{_CASE}]: {msg}", file=sys.stderr)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)


def run(args, ok=True, timeout=600, ranks=None, exe=None, env=None):
    """Runs exe (default: the configured one) with args, under kiln-run with `ranks`
    processes when given; fails the test on a non-zero exit unless ok=False."""
    exe = exe or _EXE
    cmd = ([_KILN_RUN, "--nproc-per-node", str(ranks), exe] if ranks else [exe]) + args
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                       env=None if env is None else dict(os.environ, **env))
    if ok and p.returncode != 0:
        fail(f"{' '.join(cmd)} exited {p.returncode}:\n{p.stdout}\n{p.stderr}")
    return p


def summary(p):
    """The last JSON line a program printed on stdout (kiln-run's "[rank N] " prefix removed)."""
    lines = [l.split("] ", 1)[1] if l.startswith("[rank ") else l for l in p.stdout.splitlines()]
    lines = [l for l in lines if l.startswith("{")]
    check(lines, f"no JSON summary line on stdout:\n{p.stdout}\n{p.stderr}")
    return json.loads(lines[-1])


def records(run_dir, kind):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [r for r in map(json.loads, f) if r.get("type") == kind]
