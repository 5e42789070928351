#!/usr/bin/python3
"""The Fashion-MNIST DCGAN's sample quality, kiln against PyTorch at equal wall time, under
one classifier.

1. kiln: `kiln_train_gan --classifier C` at its defaults (or the flags after --); its
   summary gives the MODE score, the real test set's, class coverage, the Frechet distance
   and the run's wall time S (training and the per-epoch evaluations).
2. PyTorch (Debian's python3-torch, in its own process, torch.set_num_threads(T) and
   OPENBLAS_NUM_THREADS=1, its fastest setting on this machine): the same DCGAN (the shapes
   of models/zoo/gan.h at 28 x 28, N(0, 0.02) initialisation, BN weights N(1, 0.02)), the
   same non-saturating BCE losses, Adam and batch size as kiln's run (its summary's `lr`,
   `lr_d`, `beta1`, `beta2`, `batch_size`), widths (`width`, `d_width`), minibatch
   discrimination (`mbd_kernels`, `mbd_kernel_dim`; 0 kernels: none) and one-sided label
   smoothing (`label_smoothing`), the relativistic losses where kiln's run had them
   (`relativistic`), D frozen in G's step as kiln's, shuffled epochs, and by default the same exponential average of G's
   weights (the summary's `g_ema`, with kiln's warm-up, optim/average.h), trained for S seconds of pure training (the evaluation's share of
   kiln's S is PyTorch's to train in). Then 10,000 samples of the (averaged) G, with batch
   statistics in BN as kiln samples, written as 8-bit PGM files.
3. kiln scores PyTorch's samples with the same classifier: `kiln_train_gan --eval-images
   folder:DIR --classifier C` (models/eval/gan_metrics.h).

usage: tools/gan_quality_vs_torch.py --classifier RUN_OR_CHECKPOINT [--kiln-exe build/tools/kiln_train_gan]
         [--threads 2] [--g-ema D] [--kiln-summary FILE] [--seconds S] [--json FILE] [-- kiln flags]
--kiln-summary takes the last stdout line of a finished kiln run instead of running one;
--seconds overrides PyTorch's time budget. Run it with Debian's /usr/bin/python3.
"""
import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
FMNIST = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"
# What kiln_train_gan trained with before its summary named these (a --kiln-summary of an older run).
KILN_DEFAULTS_BEFORE = {"batch_size": 64, "lr": 2e-4, "lr_d": 2e-4, "beta1": 0.5, "beta2": 0.999, "g_ema": 0.999,
                        "width": 32, "d_width": 32, "mbd_kernels": 0, "mbd_kernel_dim": 5, "label_smoothing": 1.0,
                        "relativistic": 0}


def torch_worker(a):
    import numpy as np
    import torch

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    raw = gzip.open(FMNIST).read()
    n = int.from_bytes(raw[4:8], "big")
    images = torch.from_numpy(np.frombuffer(raw, dtype=np.uint8, offset=16).copy()).view(n, 1, 28, 28)
    images = images.float().div_(255).sub_(0.5).div_(0.5)  # [-1, 1], G's tanh range
    import dcgan_torch
    nz = dcgan_torch.NZ
    G = dcgan_torch.generator(28, a.width)
    D = dcgan_torch.discriminator(28, a.d_width, a.mbd_kernels, a.mbd_kernel_dim)
    G.apply(dcgan_torch.dcgan_init)
    D.apply(dcgan_torch.dcgan_init)
    G_avg = dcgan_torch.generator(28, a.width)
    G_avg.load_state_dict(G.state_dict())
    betas = (a.beta1, a.beta2)
    og = torch.optim.Adam(G.parameters(), lr=a.lr, betas=betas)
    od = torch.optim.Adam(D.parameters(), lr=a.lr_d, betas=betas)
    B = a.batch_size
    ones, zeros = torch.ones(B), torch.zeros(B)
    real_target = torch.full((B,), a.label_smoothing)
    it, ema_t, epochs = 0, 0, 0.0
    t0 = time.perf_counter()
    done = False
    while not done:
        perm = torch.randperm(n)
        for b in range(n // B):
            if time.perf_counter() - t0 >= a.seconds:
                done = True
                break
            ld, lg = dcgan_torch.iteration(G, D, og, od, images[perm[b * B:(b + 1) * B]], torch.randn(B, nz, 1, 1),
                                           ones, zeros, real_target, bool(a.relativistic))
            if a.g_ema > 0:
                d = min(a.g_ema, (1 + ema_t) / (10 + ema_t))
                ema_t += 1
                with torch.no_grad():
                    for pa, p in zip(G_avg.parameters(), G.parameters()):
                        pa.mul_(d).add_(p, alpha=1 - d)
                    for ba, bb in zip(G_avg.buffers(), G.buffers()):
                        ba.copy_(bb)
            it += 1
            if it % 500 == 0:
                el = time.perf_counter() - t0
                print(f"torch: iteration {it} ({it * B / n:.2f} epochs), {it * B / el:.0f} img/s, "
                      f"d_loss {ld.item():.3f} g_loss {lg.item():.3f}", file=sys.stderr, flush=True)
        else:
            epochs += 1
    train_s = time.perf_counter() - t0
    sampler = G_avg if a.g_ema > 0 else G
    sampler.train()  # batch statistics in BN, as kiln samples by default
    os.makedirs(a.out, exist_ok=True)
    k = 0
    with torch.no_grad():
        for s in range(0, a.samples, 500):
            imgs = sampler(torch.randn(min(500, a.samples - s), nz, 1, 1))
            u8 = ((imgs.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
            for im in u8:
                with open(os.path.join(a.out, f"{k:05d}.pgm"), "wb") as f:
                    f.write(b"P5\n28 28\n255\n" + im.tobytes())
                k += 1
    print(json.dumps({"iterations": it, "epochs": it * B / n, "train_seconds": train_s, "batch_size": B,
                      "images_per_second": it * B / train_s, "threads": torch.get_num_threads(),
                      "torch": torch.__version__}))


def kiln_json(p, what):
    if p.returncode != 0:
        sys.exit(f"{what} failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kiln-exe", default=os.path.join(HERE, "..", "build", "tools", "kiln_train_gan"))
    ap.add_argument("--classifier", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--g-ema", type=float, help="G's weight average in PyTorch (default: kiln's run's)")
    ap.add_argument("--kiln-summary")
    ap.add_argument("--seconds", type=float)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json")
    ap.add_argument("--torch-worker", action="store_true")
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--samples", type=int, default=10000, help=argparse.SUPPRESS)
    for flag, kind in (("--batch-size", int), ("--lr", float), ("--lr-d", float), ("--beta1", float),
                       ("--beta2", float), ("--width", int), ("--d-width", int), ("--mbd-kernels", int),
                       ("--mbd-kernel-dim", int), ("--label-smoothing", float), ("--relativistic", int)):
        ap.add_argument(flag, type=kind, help=argparse.SUPPRESS)  # the worker's: kiln's run's values
    ap.add_argument("extra", nargs="*", help="more kiln_train_gan flags (after --)")
    a = ap.parse_args()
    if a.torch_worker:
        return torch_worker(a)
    with tempfile.TemporaryDirectory() as tmp:
        if a.kiln_summary:
            with open(a.kiln_summary) as f:
                kiln = json.loads(f.read().strip().splitlines()[-1])
        else:
            env = dict(os.environ, KILN_NUM_THREADS=str(a.threads))
            print("kiln: training (its defaults)...", file=sys.stderr, flush=True)
            kiln = kiln_json(subprocess.run([a.kiln_exe, "--classifier", a.classifier, "--no-plot", "--run-dir",
                                             os.path.join(tmp, "kiln")] + a.extra,
                                            capture_output=True, text=True, env=env), "kiln_train_gan")
        seconds = a.seconds or kiln["seconds"]
        g_ema = a.g_ema if a.g_ema is not None else kiln.get("g_ema", KILN_DEFAULTS_BEFORE["g_ema"])
        print(f"kiln: {kiln['seconds']:.0f} s, MODE {kiln['mode_score']:.3f}; torch: training for {seconds:.0f} s...",
              file=sys.stderr, flush=True)
        env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
        out = os.path.join(tmp, "torch_samples")
        p = subprocess.run([sys.executable, __file__, "--torch-worker", "--classifier", a.classifier, "--threads",
                            str(a.threads), "--g-ema", str(g_ema), "--seconds", str(seconds), "--seed",
                            str(a.seed), "--out", out] +
                           [f"--{k.replace('_', '-')}={int(x) if isinstance(x, bool) else x}"
                            for k, v in KILN_DEFAULTS_BEFORE.items() if k != "g_ema"
                            for x in [kiln.get(k, v)]],
                           stdout=subprocess.PIPE, text=True, env=env)
        if p.returncode != 0:
            sys.exit("torch worker failed")
        torch_run = json.loads(p.stdout.strip().splitlines()[-1])
        env = dict(os.environ, KILN_NUM_THREADS=str(a.threads))
        scored = kiln_json(subprocess.run([a.kiln_exe, "--eval-images", "folder:" + out, "--classifier",
                                           a.classifier, "--device", "cpu"],
                                          capture_output=True, text=True, env=env), "kiln_train_gan --eval-images")
    real = kiln["mode_score_real"]
    rows = [("kiln", kiln, kiln.get("epochs"), kiln["images_per_second"], kiln["seconds"]),
            (f"PyTorch {torch_run['torch']}", scored, torch_run["epochs"], torch_run["images_per_second"],
             torch_run["train_seconds"])]
    print(f"| framework | MODE (real {real:.2f}) | of real | classes | max/min | Frechet (real-vs-real "
          f"{kiln['frechet_real']:.3f}) | epochs | img/s (training) | seconds |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, m, ep, ips, s in rows:
        print(f"| {name} | {m['mode_score']:.3f} | {100 * m['mode_score'] / real:.0f}% | {m['classes_covered']} | "
              f"{m['class_ratio']:.2f} | {m['frechet']:.2f} | {ep:.1f} | {ips:.0f} | {s:.0f} |")
    res = {"kiln": kiln, "torch": dict(torch_run, **scored)}
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
