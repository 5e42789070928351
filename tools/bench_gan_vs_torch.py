#!/usr/bin/python3
"""DCGAN training throughput on the CPU, kiln against PyTorch, side by side.

The model, loss and optimizer are kiln_train_gan's defaults on Fashion-MNIST: the DCGAN of
models/zoo/gan.h at 28 x 28 (width 32: G ConvT 100->64 7x7, BN, ReLU, ConvT 64->32 4/2/1,
BN, ReLU, ConvT 32->1 4/2/1, Tanh; D Conv 1->32 4/2/1, LeakyReLU 0.2, Conv 32->64 4/2/1, BN,
LeakyReLU, Linear 3136->1), batch 64, the non-saturating BCE losses, Adam(2e-4, 0.5,
0.999) for both. One iteration = G forward, D step on real and fake, G step.

kiln: `kiln_train_gan --data fashion-mnist --limit-train N --epochs 1` (its epoch's
images/s: the training loop with data loading, without the evaluation). PyTorch: the same
loop on in-memory tensors, in its own process, at torch.set_num_threads(T), once with
OpenBLAS left at its default threads and once with OPENBLAS_NUM_THREADS=1 (Debian's
PyTorch links a threaded OpenBLAS that otherwise oversubscribes the cores); the faster
counts and is printed. Rounds alternate kiln and torch; each side's best round counts.

usage: tools/bench_gan_vs_torch.py [--kiln-exe build/tools/kiln_train_gan] [--threads 2]
         [--iters 60] [--warmup 5] [--rounds 2] [--json FILE]
Run it with Debian's /usr/bin/python3 (python3-torch).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def torch_worker(a):
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    nz, w = 100, 32
    G = nn.Sequential(nn.ConvTranspose2d(nz, 2 * w, 7, 1, 0, bias=False), nn.BatchNorm2d(2 * w), nn.ReLU(True),
                      nn.ConvTranspose2d(2 * w, w, 4, 2, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(True),
                      nn.ConvTranspose2d(w, 1, 4, 2, 1, bias=False), nn.Tanh())
    D = nn.Sequential(nn.Conv2d(1, w, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True),
                      nn.Conv2d(w, 2 * w, 4, 2, 1, bias=False), nn.BatchNorm2d(2 * w), nn.LeakyReLU(0.2, True),
                      nn.Flatten(), nn.Linear(2 * w * 49, 1))
    og = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    od = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    B = 64
    reals = [torch.rand(B, 1, 28, 28) * 2 - 1 for _ in range(8)]
    ones, zeros = torch.ones(B), torch.zeros(B)
    t0 = None
    for i in range(a.warmup + a.iters):
        if i == a.warmup:
            t0 = time.perf_counter()
        x = reals[i % 8]
        fake = G(torch.randn(B, nz, 1, 1))
        od.zero_grad(set_to_none=True)
        ld = F.binary_cross_entropy_with_logits(D(x).view(-1), ones) + \
            F.binary_cross_entropy_with_logits(D(fake.detach()).view(-1), zeros)
        ld.backward()
        od.step()
        og.zero_grad(set_to_none=True)
        lg = F.binary_cross_entropy_with_logits(D(fake).view(-1), ones)
        lg.backward()
        og.step()
    dt = time.perf_counter() - t0
    print(json.dumps({"images_per_second": a.iters * B / dt, "threads": torch.get_num_threads(),
                      "torch": torch.__version__}))


def run_torch(a, openblas_one):
    env = dict(os.environ)
    if openblas_one:
        env["OPENBLAS_NUM_THREADS"] = "1"
    else:
        env.pop("OPENBLAS_NUM_THREADS", None)
    p = subprocess.run([sys.executable, __file__, "--torch-worker", "--threads", str(a.threads), "--iters",
                        str(a.iters), "--warmup", str(a.warmup)], capture_output=True, text=True, env=env)
    if p.returncode != 0:
        sys.exit(f"torch worker failed:\n{p.stderr}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def run_kiln(a):
    with tempfile.TemporaryDirectory() as d:
        env = dict(os.environ, KILN_NUM_THREADS=str(a.threads))  # kiln's one budget (loops, OpenBLAS, oneDNN)
        p = subprocess.run([a.kiln_exe, "--data", "fashion-mnist", "--device", "cpu", "--epochs", "1",
                            "--limit-train", str(64 * (a.iters + a.warmup)), "--no-plot", "--run-dir",
                            os.path.join(d, "run")], capture_output=True, text=True, env=env)
        if p.returncode != 0:
            sys.exit(f"kiln_train_gan failed:\n{p.stderr}")
        return json.loads(p.stdout.strip().splitlines()[-1])["images_per_second"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kiln-exe", default=os.path.join(HERE, "..", "build", "tools", "kiln_train_gan"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--json")
    ap.add_argument("--torch-worker", action="store_true")
    a = ap.parse_args()
    if a.torch_worker:
        return torch_worker(a)
    kiln, torch_best, torch_setting, torch_ver = 0.0, 0.0, "", ""
    for r in range(a.rounds):
        k = run_kiln(a)
        kiln = max(kiln, k)
        for one in (False, True):
            t = run_torch(a, one)
            setting = "OPENBLAS_NUM_THREADS=1" if one else "OpenBLAS default threads"
            print(f"round {r + 1}: kiln {k:.0f} img/s; torch ({setting}) {t['images_per_second']:.0f} img/s",
                  file=sys.stderr)
            if t["images_per_second"] > torch_best:
                torch_best, torch_setting, torch_ver = t["images_per_second"], setting, t["torch"]
    res = {"kiln_images_per_second": kiln, "torch_images_per_second": torch_best, "torch_setting": torch_setting,
           "torch": torch_ver, "threads": a.threads, "ratio_kiln_over_torch": kiln / torch_best}
    print(f"DCGAN 28x28 width 32 batch 64, {a.threads} threads: kiln {kiln:.0f} img/s, torch {torch_ver} "
          f"{torch_best:.0f} img/s ({torch_setting}); kiln/torch = {kiln / torch_best:.2f}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
