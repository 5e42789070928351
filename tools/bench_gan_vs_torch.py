#!/usr/bin/python3
"""DCGAN training throughput, kiln against PyTorch, side by side: on the CPU (the default) or
on a GPU (--device cuda, e.g. --image-size 64 --width 64, the DCGAN paper's 64 x 64 RGB
model with PyTorch's example width, against PyTorch eager).

The model, loss and optimizer are kiln_train_gan's defaults on Fashion-MNIST: the DCGAN of
models/zoo/gan.h at 28 x 28 (G width 48: ConvT 100->96 7x7, BN, ReLU, ConvT 96->48 4/2/1,
BN, ReLU, ConvT 48->1 4/2/1, Tanh; D width 32: Conv 1->32 4/2/1, LeakyReLU 0.2, Conv 32->64 4/2/1, BN,
LeakyReLU, minibatch discrimination with 8 kernels of dimension 5 (--mbd-kernels; 0: none),
Linear 3144->1), batch 64 (--batch-size), the non-saturating BCE losses, Adam(2e-4, 0.5,
0.999) for both. One iteration = G forward, D step on real and fake, G step (D's weights
frozen: no D weight gradients in it, on either side).

kiln: `kiln_train_gan --data fashion-mnist --limit-train N --epochs 1` (its epoch's
images/s: the training loop with data loading, without the evaluation). PyTorch: the same
loop on in-memory tensors, in its own process, at torch.set_num_threads(T), once with
OpenBLAS left at its default threads and once with OPENBLAS_NUM_THREADS=1 (Debian's
PyTorch links a threaded OpenBLAS that otherwise oversubscribes the cores); the faster
counts and is printed. Rounds alternate kiln and torch; each side's best round counts.

At --image-size 64 both sides build the zoo's 64 px DCGAN for 3 channels (G: ConvT nz->8w
4x4, BN, ReLU, three ConvT 4/2/1 halving the channels with BN, ReLU, ConvT w->3 4/2/1, Tanh;
D the mirror image with LeakyReLU 0.2, no BN on its first layer, Linear 8w*16->1), and
kiln reads a folder of random 64 x 64 PPM images written into a scratch folder. On CUDA
PyTorch's timing synchronises the device before and after, and OpenBLAS does not matter;
instead the convolutions' math does: PyTorch runs f32 convolutions on TF32 tensor cores by
default (torch.backends.cudnn.allow_tf32), kiln in f32 unless KILN_ALLOW_TF32=1. On CUDA
both sides run both ways, and the table shows all four; the headline ratio compares equal
math (kiln's default against PyTorch with TF32 off), the second line both with TF32.

usage: tools/bench_gan_vs_torch.py [--kiln-exe build/tools/kiln_train_gan] [--threads 2]
         [--iters 60] [--warmup 5] [--rounds 2] [--device cpu|cuda] [--image-size 28|64]
         [--width 48] [--d-width 32 (0: --width)] [--batch-size 64] [--mbd-kernels 8] [--json FILE]
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
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    dev = torch.device(a.device)
    if dev.type == "cuda":
        torch.backends.cudnn.allow_tf32 = a.torch_tf32 == "on"
    import dcgan_torch
    nz, C = dcgan_torch.NZ, 1 if a.image_size == 28 else 3
    G = dcgan_torch.generator(a.image_size, a.width).to(dev)
    D = dcgan_torch.discriminator(a.image_size, a.d_width or a.width, a.mbd_kernels).to(dev)
    og = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    od = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    B = a.batch_size
    reals = [torch.rand(B, C, a.image_size, a.image_size, device=dev) * 2 - 1 for _ in range(8)]
    ones, zeros = torch.ones(B, device=dev), torch.zeros(B, device=dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    t0 = None
    for i in range(a.warmup + a.iters):
        if i == a.warmup:
            sync()
            t0 = time.perf_counter()
        dcgan_torch.iteration(G, D, og, od, reals[i % 8], torch.randn(B, nz, 1, 1, device=dev), ones, zeros)
    sync()
    dt = time.perf_counter() - t0
    print(json.dumps({"images_per_second": a.iters * B / dt, "threads": torch.get_num_threads(),
                      "torch": torch.__version__}))


def run_torch(a, openblas_one, tf32="on"):
    env = dict(os.environ)
    if openblas_one:
        env["OPENBLAS_NUM_THREADS"] = "1"
    else:
        env.pop("OPENBLAS_NUM_THREADS", None)
    p = subprocess.run([sys.executable, __file__, "--torch-worker", "--threads", str(a.threads), "--iters",
                        str(a.iters), "--warmup", str(a.warmup), "--device", a.device, "--image-size",
                        str(a.image_size), "--width", str(a.width), "--d-width", str(a.d_width),
                        "--batch-size", str(a.batch_size), "--mbd-kernels", str(a.mbd_kernels), "--torch-tf32", tf32],
                       capture_output=True, text=True, env=env)
    if p.returncode != 0:
        sys.exit(f"torch worker failed:\n{p.stderr}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def write_ppm_folder(folder, n, size, seed=0):
    """n random size x size RGB images as binary PPM (no imaging library needed)."""
    os.makedirs(folder, exist_ok=True)
    x = seed * 2654435761 + 1
    for i in range(n):
        x = (x * 6364136223846793005 + 1442695040888963407) % (1 << 64)
        pixels = x.to_bytes(8, "little") * (size * size * 3 // 8)
        with open(os.path.join(folder, f"{i:05d}.ppm"), "wb") as f:
            f.write(b"P6\n%d %d\n255\n" % (size, size) + pixels)


def run_kiln(a, tf32=False):
    with tempfile.TemporaryDirectory() as d:
        env = dict(os.environ, KILN_NUM_THREADS=str(a.threads))  # kiln's one budget (loops, OpenBLAS, oneDNN)
        env["KILN_ALLOW_TF32"] = "1" if tf32 else "0"
        n = a.batch_size * (a.iters + a.warmup)
        data = ["--data", "fashion-mnist"]
        if a.image_size == 64:
            write_ppm_folder(os.path.join(d, "images"), n, 64)
            data = ["--data", "folder:" + os.path.join(d, "images"), "--image-size", "64", "--channels", "3"]
        p = subprocess.run([a.kiln_exe] + data + ["--device", a.device, "--epochs", "1", "--width", str(a.width),
                            "--d-width", str(a.d_width), "--batch-size", str(a.batch_size)] +
                           (["--mbd-kernels", str(a.mbd_kernels)] if a.mbd_kernels > 0
                            else ["--no-minibatch-discrimination"]) + [
                            "--limit-train", str(n), "--no-plot", "--run-dir", os.path.join(d, "run")],
                           capture_output=True, text=True, env=env)
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
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--image-size", type=int, default=28, choices=[28, 64])
    ap.add_argument("--width", type=int, default=48)
    ap.add_argument("--d-width", type=int, default=32, help="D's width (0: --width)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--mbd-kernels", type=int, default=8, help="D's minibatch-discrimination kernels (0: none)")
    ap.add_argument("--json")
    ap.add_argument("--torch-worker", action="store_true")
    ap.add_argument("--torch-tf32", default="on", choices=["on", "off"], help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.torch_worker:
        return torch_worker(a)
    if a.device == "cuda":
        return main_cuda(a)
    kiln, torch_best, torch_setting, torch_ver = 0.0, 0.0, "", ""
    for r in range(a.rounds):
        k = run_kiln(a)
        kiln = max(kiln, k)
        for one in ((False, True) if a.device == "cpu" else (False,)):
            t = run_torch(a, one)
            setting = "OPENBLAS_NUM_THREADS=1" if one else "OpenBLAS default threads"
            print(f"round {r + 1}: kiln {k:.0f} img/s; torch ({setting}) {t['images_per_second']:.0f} img/s",
                  file=sys.stderr)
            if t["images_per_second"] > torch_best:
                torch_best, torch_setting, torch_ver = t["images_per_second"], setting, t["torch"]
    res = {"kiln_images_per_second": kiln, "torch_images_per_second": torch_best, "torch_setting": torch_setting,
           "torch": torch_ver, "threads": a.threads, "ratio_kiln_over_torch": kiln / torch_best, "device": a.device,
           "image_size": a.image_size, "width": a.width, "d_width": a.d_width or a.width, "mbd_kernels": a.mbd_kernels,
           "batch_size": a.batch_size, "kiln_steps_per_second": kiln / a.batch_size,
           "torch_steps_per_second": torch_best / a.batch_size}
    print(f"DCGAN {a.image_size}x{a.image_size} width {a.width} (D {a.d_width or a.width}, minibatch discrimination {a.mbd_kernels}) batch {a.batch_size} on {a.device}, {a.threads} threads: "
          f"kiln {kiln:.0f} img/s, torch {torch_ver} "
          f"{torch_best:.0f} img/s ({torch_setting}); kiln/torch = {kiln / torch_best:.2f}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f)
    print(json.dumps(res))


def main_cuda(a):
    """Both sides with f32 convolutions in f32 and in TF32; each setting's best round."""
    best = {}
    for r in range(a.rounds):
        for tf32 in (False, True):
            k = run_kiln(a, tf32)
            t = run_torch(a, False, "on" if tf32 else "off")
            ts = t["images_per_second"]
            print(f"round {r + 1}, TF32 {'on ' if tf32 else 'off'}: kiln {k:.0f} img/s; torch {ts:.0f} img/s",
                  file=sys.stderr)
            kb, tb, _ = best.get(tf32, (0.0, 0.0, ""))
            best[tf32] = (max(kb, k), max(tb, ts), t["torch"])
    (k32, t32, ver), (ktf, ttf, _) = best[False], best[True]
    print(f"DCGAN {a.image_size}x{a.image_size} width {a.width} (D {a.d_width or a.width}, minibatch discrimination {a.mbd_kernels}) batch {a.batch_size} on cuda, torch {ver}, best of {a.rounds}:")
    print(f"  {'convolutions':28s}{'kiln img/s':>12s}{'torch img/s':>13s}{'kiln/torch':>12s}")
    print(f"  {'f32 (kiln default)':28s}{k32:12.0f}{t32:13.0f}{k32 / t32:12.2f}")
    print(f"  {'TF32 (torch default)':28s}{ktf:12.0f}{ttf:13.0f}{ktf / ttf:12.2f}")
    print(f"  kiln default against torch default: {k32 / ttf:.2f}")
    res = {"kiln_images_per_second": k32, "torch_images_per_second": t32, "torch_setting": "cudnn.allow_tf32=False",
           "torch": ver, "threads": a.threads, "ratio_kiln_over_torch": k32 / t32, "device": "cuda",
           "image_size": a.image_size, "width": a.width, "d_width": a.d_width or a.width, "mbd_kernels": a.mbd_kernels, "batch_size": a.batch_size,
           "kiln_steps_per_second": k32 / a.batch_size, "torch_steps_per_second": t32 / a.batch_size, "kiln_tf32_images_per_second": ktf,
           "torch_tf32_images_per_second": ttf, "ratio_tf32": ktf / ttf, "ratio_defaults": k32 / ttf}
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
