#!/usr/bin/env python3
"""The optimizer table: kiln_train_cnn at its defaults (3 epochs of Fashion-MNIST) with each
--optimizer, gradient noise, Mixup and CutMix, one run at a time, each with every core.
Prints, per variant, the test accuracy, the final training loss and the wall time, and a
Markdown table of them (the README's).

usage: tools/bench_optimizers.py [--exe build/tools/kiln_train_cnn]
         [--variants adamw,sgd,lars,...] [--json FILE] [-- extra kiln_train_cnn flags]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
VARIANTS = {
    "adamw": ["--optimizer", "adamw"],
    "sgd": ["--optimizer", "sgd"],
    "adam": ["--optimizer", "adam"],
    "adams": ["--optimizer", "adams"],
    "lars": ["--optimizer", "lars"],
    "lamb": ["--optimizer", "lamb"],
    "srsgd": ["--optimizer", "srsgd"],
    "apollo": ["--optimizer", "apollo"],
    "proxadam-l1": ["--optimizer", "proxadam", "--prox-p", "1", "--prox-lambda", "1e-4"],
    "proxadam-lhalf": ["--optimizer", "proxadam", "--prox-p", "0.5", "--prox-lambda", "1e-4"],
    "proxadam-l1-strong": ["--optimizer", "proxadam", "--prox-p", "1", "--prox-lambda", "1e-3"],
    "entropy-sgd": ["--optimizer", "entropy-sgd"],
    "sam": ["--optimizer", "sam", "--sam-base", "sgd"],
    "asam": ["--optimizer", "asam", "--sam-base", "sgd"],
    "adamw+noise": ["--optimizer", "adamw", "--grad-noise", "1e-4"],
    "adamw+mixup": ["--optimizer", "adamw", "--mixup", "0.2"],
    "adamw+cutmix": ["--optimizer", "adamw", "--cutmix", "1"],
}


def read_records(path):
    try:
        with open(path) as f:
            return [json.loads(line) for line in f if line.strip()]
    except (OSError, ValueError):
        return []


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--exe", default=os.path.join(HERE, "..", "build", "tools", "kiln_train_cnn"))
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--json")
    ap.add_argument("extra", nargs="*", help="more kiln_train_cnn flags (after --)")
    a = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for v in a.variants.split(","):
            if v not in VARIANTS:
                sys.exit(f"bench_optimizers: unknown variant {v} (known: {', '.join(VARIANTS)})")
            t0 = time.time()
            p = subprocess.run([a.exe, "--device", "cpu", "--no-plot", "--run-dir", os.path.join(tmp, v)] +
                               VARIANTS[v] + a.extra, capture_output=True, text=True)
            if p.returncode != 0:
                row = {"variant": v, "error": p.stderr.strip().splitlines()[-1:]}
            else:
                s = json.loads(p.stdout.strip().splitlines()[-1])
                row = {"variant": v, "flags": " ".join(VARIANTS[v]), "test_accuracy": s["test_accuracy"],
                       "train_loss": s["train_loss"], "lr": s["lr"], "seconds": round(time.time() - t0, 1)}
                # proxadam: the share of conv/linear weights at exactly 0 after the last epoch
                sparsity = [r for r in read_records(os.path.join(tmp, v, "metrics.jsonl")) if r.get("type") == "sparsity"]
                if sparsity:
                    row["weight_sparsity"] = sparsity[-1]["weight_sparsity"]
            rows.append(row)
            print(json.dumps(row), flush=True)
    print("\n| variant | flags | lr | test accuracy | train loss | seconds |\n|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['variant']} | error: {r['error']} | | | | |")
        else:
            extra = f" ({100 * r['weight_sparsity']:.1f}% of weights 0)" if "weight_sparsity" in r else ""
            print(f"| {r['variant']} | `{r['flags']}` | {r['lr']:g} | {100 * r['test_accuracy']:.2f}%{extra} | "
                  f"{r['train_loss']:.4f} | {r['seconds']:.0f} |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
