#!/usr/bin/env python3
"""The 2-D mode-collapse table: kiln_train_gan on a Gaussian mixture (ring8 or grid25) with
each stabiliser, several seeds each, at the trainer's defaults. Prints, per variant and
seed, the modes covered, the share of high-quality samples (within 3 sigma of a mode) and
the wall time, and a Markdown table of them (the README's). Minibatch discrimination runs
at batch 64: its layer costs batch^2 x kernels, and at the default 256 a run takes minutes.

usage: tools/bench_gan_toy.py [--exe build/tools/kiln_train_gan] [--data ring8]
         [--seeds 1,2,3] [--variants vanilla,unrolled,...] [--jobs 1] [--json FILE] [-- extra flags]
"""
import argparse
import concurrent.futures
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
VARIANTS = {
    "vanilla": [],
    "unrolled": ["--unrolled", "5"],  # G's minimax loss, D at lr / 10 (the trainer's defaults)
    "mode-regularized": ["--mode-regularizer"],
    "minibatch-discrimination": ["--minibatch-discrimination", "--batch-size", "64"],
    "feature-matching": ["--feature-matching"],
    "wgan-gp": ["--wgan-gp"],
    # The unrolled GAN before kiln's defaults followed the paper: the non-saturating G loss, D at G's rate.
    "unrolled-non-saturating": ["--unrolled", "5", "--g-loss", "non-saturating", "--lr-d", "1e-3"],
}


def one(exe, data, variant, seed, extra, tmp, threads):
    d = os.path.join(tmp, f"{variant}-{seed}")
    t0 = time.time()
    # Runs side by side share the cores: each gets its part of kiln's thread budget.
    env = dict(os.environ, KILN_NUM_THREADS=str(threads))
    p = subprocess.run([exe, "--data", data, "--seed", str(seed), "--device", "cpu", "--no-plot", "--run-dir", d] +
                       VARIANTS[variant] + extra, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        return {"variant": variant, "seed": seed, "error": p.stderr.strip().splitlines()[-1:]}
    s = json.loads(p.stdout.strip().splitlines()[-1])
    return {"variant": variant, "seed": seed, "modes_covered": s["modes_covered"], "high_quality": s["high_quality"],
            "seconds": time.time() - t0}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--exe", default=os.path.join(HERE, "..", "build", "tools", "kiln_train_gan"))
    ap.add_argument("--data", default="ring8")
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--jobs", type=int, default=1, help="runs at once (each then has fewer cores)")
    ap.add_argument("--json")
    ap.add_argument("extra", nargs="*", help="more kiln_train_gan flags (after --)")
    a = ap.parse_args()
    seeds = [int(s) for s in a.seeds.split(",")]
    variants = a.variants.split(",")
    rows = []
    with tempfile.TemporaryDirectory() as tmp, concurrent.futures.ThreadPoolExecutor(a.jobs) as pool:
        threads = max(1, len(os.sched_getaffinity(0)) // a.jobs)
        futs = [pool.submit(one, a.exe, a.data, v, s, a.extra, tmp, threads) for v in variants for s in seeds]
        for f in futs:
            r = f.result()
            rows.append(r)
            print(json.dumps(r), file=sys.stderr, flush=True)
    print(f"| {a.data} | " + " | ".join(f"seed {s}: modes, high quality" for s in seeds) + " | max seconds |")
    print("|---|" + "---|" * (len(seeds) + 1))
    for v in variants:
        cells, secs = [], []
        for s in seeds:
            r = next(r for r in rows if r["variant"] == v and r["seed"] == s)
            if "error" in r:
                cells.append("error")
                continue
            cells.append(f"{r['modes_covered']}, {100 * r['high_quality']:.0f}%")
            secs.append(r["seconds"])
        print(f"| {v} | " + " | ".join(cells) + f" | {max(secs) if secs else float('nan'):.0f} |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
