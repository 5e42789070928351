#!/usr/bin/env python3
"""kiln_prune_cnn as a user runs it, on a small kiln_train_cnn model trained first (width 8,
4000 images). One ctest per case:

  channels  l1, taylor and slimming reach --macs 0.5 (at most half the dense MACs) with
            fewer parameters; the saved model is physically smaller and loads in a fresh
            process (--evaluate) with the accuracy the run reported; iterative --sparsity
            removes about that fraction of the channels; the table and metrics are written
  weights   magnitude --sparsity 0.9 (one-shot, global) masks 90% of the conv/linear weights
            and they are still zero after fine-tuning; gradual and iterative reach the same
            sparsity; 2:4 (nm) leaves half of each masked layer's weights; --evaluate agrees
  ddp       2 ranks under kiln-run prune the same channels as the model's MACs say, and a
            magnitude run keeps exactly its sparsity (masks applied on every rank)
  errors    bad targets and flags: exit 1 or 2 with a message naming the problem

usage: test_prune_cnn.py CASE PRUNE_EXE TRAIN_CNN_EXE KILN_RUN WORK_DIR
"""
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import check, configure, fail, records, run, summary  # noqa: E402

CASE, EXE, TRAIN, KILN_RUN, WORK = sys.argv[1:6]
configure(CASE, EXE, KILN_RUN)
# (--round-to 4: the width-8 model's groups have 8 to 32 channels)
COMMON = ["--limit-train", "4000", "--limit-test", "1000", "--no-plot", "--bench-batches", "2", "--overwrite",
          "--round-to", "4"]


def dense():
    d = os.path.join(WORK, "dense")
    run(["--width", "8", "--epochs", "2", "--warmup-steps", "5", "--limit-train", "4000", "--limit-test", "1000",
         "--run-dir", d, "--overwrite", "--no-plot"], exe=TRAIN)
    return d


def prune(name, args, ranks=None, ok=True):
    d = os.path.join(WORK, name)
    p = run(["--from", DENSE, "--run-dir", d] + COMMON + args, ranks=ranks, ok=ok)
    return p, d


def evaluate(model):
    return summary(run(["--evaluate", model, "--limit-test", "1000"]))


def case_channels():
    for method in ("l1", "taylor", "slimming"):
        p, d = prune(method, ["--method", method, "--macs", "0.5", "--epochs", "1", "--taylor-batches", "4"])
        s = summary(p)
        for k in ("acc_dense", "acc_pruned", "macs_dense", "macs_pruned", "params_dense", "params_pruned",
                  "speedup_b128", "speedup_b1", "seconds", "model"):
            check(k in s, f"{method}: the summary lacks {k}: {s}")
        check(s["macs_pruned"] <= 0.5 * s["macs_dense"], f"{method}: MACs {s['macs_pruned']} of {s['macs_dense']}")
        check(s["macs_pruned"] >= 0.4 * s["macs_dense"], f"{method}: far below the target: {s}")
        check(s["params_pruned"] < s["params_dense"], f"{method}: no parameters removed: {s}")
        check(s["speedup_b128"] > 0, f"{method}: no latency: {s}")
        e = evaluate(s["model"])
        check(abs(e["test_accuracy"] - s["acc_pruned"]) < 1e-9, f"{method}: a fresh process measures {e} vs {s}")
        check(e["params"] == s["params_pruned"] and e["macs"] == s["macs_pruned"], f"{method}: {e} vs {s}")
        check(os.path.exists(os.path.join(d, "prune_table.md")), f"{method}: no prune_table.md")
        check([r["type"] for r in records(d, "dense")] == ["dense"], f"{method}: no dense record")
        check(len(records(d, "step")) == s["finetune_steps"], f"{method}: step records vs {s['finetune_steps']} steps")
    p, d = prune("iterative", ["--method", "l1", "--sparsity", "0.5", "--schedule", "iterative", "--cycles", "2",
                               "--epochs", "1", "--round-to", "1"])  # (rounding would keep the 8-channel groups)
    s = summary(p)
    cycles = [l for l in p.stderr.splitlines() if "cycle" in l and "removed" in l]
    check(len(cycles) == 2, f"iterative: {cycles}")
    check(0.15 < s["macs_pruned"] / s["macs_dense"] < 0.45, f"iterative --sparsity 0.5: {s}")  # ~ (1 - 0.5)^2 = 0.25


def case_weights():
    for name, args, want in (("magnitude", ["--sparsity", "0.9"], 0.9),
                             ("gradual", ["--sparsity", "0.9", "--schedule", "gradual", "--prune-every", "5"], 0.9),
                             ("iterative", ["--sparsity", "0.8", "--schedule", "iterative", "--cycles", "2",
                                            "--scope", "layer"], 0.8)):
        p, d = prune(name, ["--method", "magnitude", "--epochs", "1"] + args)
        s = summary(p)
        check(abs(s["weight_sparsity"] - want) < 1e-3, f"{name}: weight sparsity {s['weight_sparsity']} vs {want}")
        e = evaluate(s["model"])
        check(abs(e["test_accuracy"] - s["acc_pruned"]) < 1e-9, f"{name}: a fresh process measures {e} vs {s}")
        # the saved weights are still zero (BatchNorm and biases stay dense)
        check(e["nonzero_params"] == s["nonzero_params_pruned"], f"{name}: {e} vs {s}")
        check(s["nonzero_params_pruned"] < (1.05 - want) * s["params_dense"], f"{name}: {s}")
        # (by weights, not MACs: the first convolutions have few weights and many MACs each)
        check(s["nonzero_macs_pruned"] < 0.5 * s["macs_dense"], f"{name}: {s}")
    p, d = prune("nm", ["--method", "nm", "--epochs", "1"])
    s = summary(p)
    check(abs(s["weight_sparsity"] - 0.5) < 1e-9, f"nm: {s}")
    check("stays dense" in p.stderr, f"nm: the first conv (1 input channel) should be named as dense:\n{p.stderr}")


def case_ddp():
    p, d = prune("ddp_l1", ["--method", "l1", "--macs", "0.5", "--epochs", "1", "--batch-size", "64"], ranks=2)
    s = summary(p)
    check(s["world_size"] == 2 and s["macs_pruned"] <= 0.5 * s["macs_dense"], f"ddp l1: {s}")
    one, _ = prune("one_l1", ["--method", "l1", "--macs", "0.5", "--epochs", "1", "--batch-size", "64"])
    check(summary(one)["params_pruned"] == s["params_pruned"], "2 ranks pruned other channels than 1 process")
    p, d = prune("ddp_mag", ["--method", "magnitude", "--sparsity", "0.9", "--epochs", "1", "--batch-size", "64"],
                 ranks=2)
    s = summary(p)
    check(abs(s["weight_sparsity"] - 0.9) < 1e-3, f"ddp magnitude: {s}")


def case_errors():
    def bad(args, text, code=1):
        p, _ = prune("bad", args, ok=False)
        check(p.returncode == code and text in p.stderr, f"{args}: exit {p.returncode}, wanted {code} and "
              f"{text!r}:\n{p.stderr[-1500:]}")
    bad(["--method", "magnitude", "--sparsity", "1"], "would remove every weight")
    bad(["--method", "l1", "--macs", "1.5"], "is not below the dense model's MACs")
    bad(["--method", "l1", "--macs", "0.5", "--sparsity", "0.3"], "not both")
    bad(["--method", "magnitude", "--macs", "0.5"], "give --sparsity")
    bad(["--method", "nm", "--sparsity", "0.5"], "does not apply")
    bad(["--method", "l1", "--schedule", "gradual"], "channel methods take oneshot or iterative")
    bad(["--method", "l1", "--macs", "0.001"], "cannot bring the MACs down")
    bad(["--method", "bogus"], "bogus", code=2)
    p = run(["--run-dir", os.path.join(WORK, "nofrom")] + COMMON, ok=False)
    check(p.returncode == 1 and "--from" in p.stderr, f"no --from: {p.stderr}")
    p = run(["--from", os.path.join(WORK, "missing"), "--run-dir", os.path.join(WORK, "m")] + COMMON, ok=False)
    check(p.returncode == 1 and "missing" in p.stderr, f"a missing model: {p.stderr}")
    p = run(["--evaluate", os.path.join(WORK, "missing")], ok=False)
    check(p.returncode == 1 and "missing" in p.stderr, f"--evaluate of a missing model: {p.stderr}")


if __name__ == "__main__":
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    DENSE = dense()
    {"channels": case_channels, "weights": case_weights, "ddp": case_ddp, "errors": case_errors}[CASE]()
    print(f"prune_cnn_{CASE}: ok")
