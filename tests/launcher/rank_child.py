"""A stand-in for a kiln program, run by tools/kiln-run in test_kiln_run.py.

usage: rank_child.py DIR SPEC...   where SPEC is RANK=ACTION or *=ACTION (every other rank)

Each rank first writes DIR/env.<RANK>.json (its launcher variables) and DIR/pid.<RANK>,
so the test knows every process it must later find gone. Actions:
  done           exit 0
  print          write lines to stdout and stderr (with a '\\r' progress line and a last
                 line with no newline) and exit 0
  print-big      write 300 lines of 1000 bytes to stdout (300 KB) and exit 0
  exit:N         wait until every rank has written its pid file, say so on stderr and
                 exit with code N
  signal:N       likewise, then kill itself with signal N (no core file)
  sleep          sleep for ever; on SIGTERM write DIR/term.<RANK> and exit 143
  ignore-term    sleep for ever; on SIGTERM write DIR/term.<RANK> and go on sleeping
  grandchild     start `sleep 1000` in its process group, write its pid to
                 DIR/grandchild.<RANK>, then behave as sleep
  grandchild-exit  the same, but exit 0 at once and leave the grandchild behind
"""

import json
import os
import resource
import signal
import subprocess
import sys
import time

VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK",
        "GROUP_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "OMP_NUM_THREADS",
        "OPENBLAS_NUM_THREADS", "KILN_NUM_THREADS")


def write_atomic(path, text):
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


def wait_for_all_pids(d, world):
    # Bounded: if the launcher never starts the others, give up rather than hang.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if all(os.path.exists(os.path.join(d, f"pid.{r}")) for r in range(world)):
            return
        time.sleep(0.02)


def sleep_forever():
    while True:
        time.sleep(1000)


def main():
    d = sys.argv[1]
    rank = int(os.environ["RANK"])
    world = int(os.environ["WORLD_SIZE"])
    specs = dict(s.split("=", 1) for s in sys.argv[2:])
    action = specs.get(str(rank), specs.get("*", "done"))

    env = {k: os.environ.get(k) for k in VARS}
    env["argv"] = sys.argv[2:]
    write_atomic(os.path.join(d, f"env.{rank}.json"), json.dumps(env))

    def record_term(signum, frame):
        write_atomic(os.path.join(d, f"term.{rank}"), "TERM")
        if action != "ignore-term":
            sys.exit(143)

    signal.signal(signal.SIGTERM, record_term)

    if action.startswith("grandchild"):
        g = subprocess.Popen(["sleep", "1000"])
        write_atomic(os.path.join(d, f"grandchild.{rank}"), str(g.pid))
    write_atomic(os.path.join(d, f"pid.{rank}"), str(os.getpid()))

    if action in ("done", "grandchild-exit"):
        return 0
    if action == "print":
        print(f"out line from {rank}", flush=True)
        print(f"err line from {rank}", file=sys.stderr, flush=True)
        sys.stdout.write(f"progress 1 of {rank}\rprogress 2 of {rank}\r\n")
        sys.stdout.write(f"tail of {rank}")
        sys.stdout.flush()
        return 0
    if action == "print-big":
        for i in range(300):
            sys.stdout.write(f"{i:06d} " + "x" * 992 + "\n")
        sys.stdout.flush()
        return 0
    if action.startswith("exit:"):
        wait_for_all_pids(d, world)
        print(f"rank {rank} gives up with exit code {action[5:]}", file=sys.stderr, flush=True)
        return int(action[5:])
    if action.startswith("signal:"):
        wait_for_all_pids(d, world)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        signum = int(action[7:])
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        time.sleep(10)
        return 1
    if action in ("sleep", "ignore-term", "grandchild"):
        sleep_forever()
    print(f"rank_child.py: unknown action {action!r}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
