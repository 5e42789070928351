"""The command lines of kiln's benchmark and demo programs (CLI11 through tools/cli.h).

A bad value is refused before anything runs: exit 2 and a message naming the flag and what
is wrong ("kiln_bench_kernels --numel 5000abc" once ran with 4096, "--reps -3" with the
default, "--only bogus" ran nothing with exit 0, "kiln_bench_ddp --iters 99999999999"
died of an uncaught std::out_of_range). --help lists every flag and exits 0; a good command
line still runs and prints what it did; output that cannot be written (/dev/full) is a
failure, exit 1.

usage: python3 bench_args.py KILN_BENCH_KERNELS KILN_BENCH_DDP KILN_BENCH_TRAIN_STEP KILN_DEMO
                            [KILN_COMM_MODEL KILN_BENCH_COMM KILN_PALEO [KILN_MCR2]]
"""

import json
import os
import subprocess
import sys

TIMEOUT = 120
failures = []


def run(cmd, stdout=subprocess.PIPE):
    p = subprocess.run(cmd, stdout=stdout, stderr=subprocess.PIPE, timeout=TIMEOUT)
    out = p.stdout.decode(errors="replace") if p.stdout is not None else ""
    return p.returncode, out, p.stderr.decode(errors="replace")


def check(cond, what, cmd, rc, out, err):
    if not cond:
        failures.append(f"{what}\n  command: {' '.join(cmd)}\n  exit: {rc}\n  stdout: {out[-800:]!r}\n"
                        f"  stderr: {err[-800:]!r}")


def expect_usage_error(exe, args, *needles):
    """exit 2, "PROG: error: ..." naming each needle, nothing measured on stdout."""
    cmd = [exe] + args
    rc, out, err = run(cmd)
    name = os.path.basename(exe)
    check(rc == 2, "a bad command line should exit 2", cmd, rc, out, err)
    check(err.startswith(f"{name}: error: "), "the message should start with 'PROG: error:'", cmd, rc, out,
          err)
    for n in needles:
        check(n in err, f"the message should mention {n!r}", cmd, rc, out, err)
    check("terminate" not in err and "what()" not in err, "no uncaught exception", cmd, rc, out, err)
    check(out == "", "nothing should run (stdout should be empty)", cmd, rc, out, err)
    print(f"ok: {name} {' '.join(args)} -> exit {rc}: {err.splitlines()[0] if err else ''}")


def expect_help(exe, flags):
    cmd = [exe, "--help"]
    rc, out, err = run(cmd)
    check(rc == 0, "--help should exit 0", cmd, rc, out, err)
    for f in flags:
        check(f in out, f"--help should list {f}", cmd, rc, out, err)
    print(f"ok: {os.path.basename(exe)} --help lists {', '.join(flags)}")


def main():
    kernels, ddp, train_step, demo = sys.argv[1:5]

    # The cases of issue 9.
    expect_usage_error(kernels, ["--numel", "5000abc"], "--numel", "'5000abc' is not an integer")
    expect_usage_error(kernels, ["--reps", "-3"], "--reps", "-3 is out of range")
    expect_usage_error(kernels, ["--only", "bogus"], "--only", "bogus",
                       "copy,fill,unary,binary,where,reduce,softmax,index,matmul")
    expect_usage_error(ddp, ["--iters", "99999999999"], "--iters", "99999999999 is out of range",
                       "2147483647")
    # More of the same kind.
    expect_usage_error(kernels, ["--only", "copy,bogus"], "bogus")
    expect_usage_error(kernels, ["--numel", "0"], "--numel")
    expect_usage_error(kernels, ["--numel", "1e3"], "--numel")
    expect_usage_error(kernels, ["--mm-sizes", "512,x"], "--mm-sizes", "'x'")
    expect_usage_error(kernels, ["--device", "gpu"], "--device", "gpu")
    expect_usage_error(kernels, ["--reps"], "--reps")
    expect_usage_error(kernels, ["--no-such-flag"], "--no-such-flag")
    expect_usage_error(ddp, ["--bucket-mb", "nan"], "--bucket-mb", "finite")
    expect_usage_error(ddp, ["--warmup", "-1"], "--warmup")
    expect_usage_error(ddp, ["--device", "tpu"], "--device", "tpu")
    expect_usage_error(train_step, ["--batch", "128x"], "--batch")
    expect_usage_error(train_step, ["--steps", "0"], "--steps")
    expect_usage_error(train_step, ["--seed", "-1"], "--seed")
    expect_usage_error(train_step, ["--threads", "3.5"], "--threads")
    expect_usage_error(demo, ["--device", "nope"], "--device", "nope")

    expect_help(kernels, ["--device", "--numel", "--reps", "--only", "--mm-sizes", "--json", "--json-out"])
    expect_help(ddp, ["--layers", "--width", "--batch", "--iters", "--warmup", "--bucket-mb", "--device"])
    expect_help(train_step, ["--steps", "--warmup", "--batch", "--width", "--threads", "--device", "--seed"])
    expect_help(demo, ["--device"])

    # Good command lines still run (tiny sizes) and print what they did.
    cmd = [kernels, "--device", "cpu", "--numel", "4096", "--reps", "1", "--only", "fill,copy", "--json"]
    rc, out, err = run(cmd)
    check(rc == 0, "a good command line should run", cmd, rc, out, err)
    fams = [json.loads(line)["family"] for line in out.splitlines() if line.strip()]
    check(fams and fams[0] == "config" and "fill" in fams and "copy" in fams and "unary" not in fams,
          "--only fill,copy should run exactly those families", cmd, rc, out, err)
    # The old parser's spelling --device=cpu and repeated --only still work.
    cmd = [kernels, "--device=cpu", "--numel", "4096", "--reps", "1", "--only", "fill", "--only", "where",
           "--json"]
    rc, out, err = run(cmd)
    fams = {json.loads(line)["family"] for line in out.splitlines() if line.strip()}
    check(rc == 0 and fams == {"config", "fill", "where"}, "--only given twice runs both", cmd, rc, out, err)
    cmd = [train_step, "--steps", "1", "--warmup", "0", "--batch", "2", "--width", "2", "--threads", "0"]
    rc, out, err = run(cmd)
    check(rc == 0 and '"images_per_second"' in out, "kiln_bench_train_step should print its JSON line", cmd,
          rc, out, err)
    print("ok: good command lines run")

    # Output that cannot be written is a failure, not a silent exit 0.
    if os.path.exists("/dev/full"):
        cmd = [kernels, "--device", "cpu", "--numel", "4096", "--reps", "1", "--only", "fill"]
        with open("/dev/full", "wb") as full:
            rc, out, err = run(cmd, stdout=full)
        check(rc == 1 and "cannot write standard output" in err, "stdout on /dev/full should exit 1", cmd, rc,
              out, err)
        cmd = cmd + ["--json-out", "/dev/full"]
        rc, out, err = run(cmd)
        check(rc == 1 and "--json-out" in err and "/dev/full" in err, "--json-out on /dev/full should exit 1",
              cmd, rc, out, err)
        print("ok: write errors exit 1")

    # The communication and scaling models' programs.
    if len(sys.argv) >= 8:
        comm_model, bench_comm, paleo = sys.argv[5:8]
        expect_usage_error(comm_model, ["--cluster", "mars"], "--cluster", "mars")
        expect_usage_error(comm_model, ["--ranks", "0"], "--ranks")
        expect_usage_error(comm_model, ["--bytes", "-5"], "--bytes")
        expect_usage_error(bench_comm, ["--iters", "0"], "--iters")
        expect_usage_error(bench_comm, ["--bytes", "x"], "--bytes")
        expect_usage_error(paleo, ["--batch", "0"], "--batch")
        expect_usage_error(paleo, ["--cluster", "mars"], "--cluster", "mars")
        expect_usage_error(paleo, ["--gpu-tflops", "-1"], "--gpu-tflops")
        expect_usage_error(paleo, ["--device", "tpu"], "--device", "tpu")
        expect_help(comm_model, ["--cluster", "--ranks", "--bytes", "--alpha-us", "--gbs", "--gamma-ps"])
        expect_help(bench_comm, ["--bytes", "--iters"])
        expect_help(paleo, ["--width", "--batch", "--validate", "--device", "--cluster", "--per-gpu-batch"])
        cmd = [comm_model, "--cluster", "h100-cluster", "--ranks", "1024", "--bytes", "1024", "1073741824"]
        rc, out, err = run(cmd)
        check(rc == 0 and "neighbor beats hierarchical below" in out and "| neighbor" in out and
              "| hierarchical" in out, "kiln_comm_model should print the table and the crossovers", cmd, rc, out, err)
        cmd = [paleo, "--cluster", "h100-node"]
        rc, out, err = run(cmd)
        check(rc == 0 and "efficiency" in out and "100.0%" in out, "kiln_paleo --cluster should print its table",
              cmd, rc, out, err)
        cmd = [paleo, "--device", "cuda"]  # a GPU when there is one; else kiln's reason, exit 1
        rc, out, err = run(cmd)
        check(rc == 0 and "predicted step" in out if "no usable CUDA device" not in err else rc == 1,
              "kiln_paleo --device cuda: a prediction on a GPU, or exit 1 naming the missing device", cmd, rc, out, err)
        cmd = [bench_comm]  # one rank: nothing to exchange with
        rc, out, err = run(cmd)
        check(rc == 1 and "2 or more ranks" in err, "kiln_bench_comm on one rank should say it needs two", cmd, rc,
              out, err)
        print("ok: kiln_comm_model, kiln_bench_comm, kiln_paleo command lines")

    # kiln_mcr2: bad values, and a short run whose features have a positive rate reduction
    # and a linear probe better than chance (10 classes).
    if len(sys.argv) >= 9:
        mcr2 = sys.argv[8]
        expect_usage_error(mcr2, ["--eps", "0"], "--eps")
        expect_usage_error(mcr2, ["--batch-size", "1"], "--batch-size")
        expect_usage_error(mcr2, ["--feature-dim", "x"], "--feature-dim")
        expect_help(mcr2, ["--epochs", "--batch-size", "--feature-dim", "--eps", "--probe-epochs"])
        cmd = [mcr2, "--device", "cpu", "--limit-train", "1000", "--limit-test", "500", "--epochs", "1",
               "--batch-size", "200", "--feature-dim", "16", "--probe-epochs", "20"]
        rc, out, err = run(cmd)
        s = json.loads(out.strip().splitlines()[-1]) if rc == 0 and out.strip() else {}
        check(rc == 0 and s.get("test_delta_r", 0) > 0 and s.get("test_r", 0) > s.get("test_rc", 1e9) and
              0.2 < s.get("probe_test_accuracy", 0) <= 1 and s.get("steps") == 5,
              "kiln_mcr2 should learn features with Delta R > 0 and a probe above chance", cmd, rc, out, err)
        cmd = [mcr2, "--device", "cpu", "--limit-train", "100", "--batch-size", "500"]
        rc, out, err = run(cmd)
        check(rc == 1 and "no full batch" in err, "kiln_mcr2 with fewer images than a batch should say so", cmd,
              rc, out, err)
        print("ok: kiln_mcr2")

    # kiln_bench_sparse: bad values; a small run prints both kernels' times for every conv
    # layer and a JSON line per layer whose sparsity is the one asked for.
    if len(sys.argv) >= 10:
        sparse = sys.argv[9]
        expect_usage_error(sparse, ["--sparsity", "1.5"], "--sparsity")
        expect_usage_error(sparse, ["--batch", "0"], "--batch")
        expect_usage_error(sparse, ["--width", "x"], "--width")
        expect_help(sparse, ["--width", "--batch", "--sparsity", "--reps", "--threads"])
        cmd = [sparse, "--width", "4", "--batch", "8", "--sparsity", "0.9", "--reps", "1"]
        rc, out, err = run(cmd)
        rows = [json.loads(l) for l in out.splitlines() if l.startswith("{")]
        check(rc == 0 and len(rows) == 8 and all(0.7 < r["sparsity"] < 1 and r["dense_ms"] > 0 and r["sparse_ms"] > 0
                                                 for r in rows) and "all conv layers" in out,
              "kiln_bench_sparse should time both kernels on the 8 conv layers", cmd, rc, out, err)
        print("ok: kiln_bench_sparse")

    if failures:
        print(f"\n{len(failures)} FAILED:\n" + "\n".join(failures))
        return 1
    print("all bench argument checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
