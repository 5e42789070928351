#!/usr/bin/python3
"""Single CPU operators, kiln against PyTorch at equal threads, side by side.

Runs kiln_bench_ops and the same operator list in PyTorch (below; it must match
tools/bench_ops.cpp) at each thread setting, forward and forward + backward, and prints a
table of median milliseconds and the ratio torch / kiln (above 1: kiln is faster). Each
side runs in its own process; PyTorch runs with OPENBLAS_NUM_THREADS=1 (Debian's PyTorch
links the pthread OpenBLAS, whose own threads otherwise oversubscribe the cores; its
matmuls go through it either way).

usage: tools/bench_ops_vs_torch.py [--kiln-exe build/tools/kiln_bench_ops] [--threads 1,2]
         [--reps 20] [--json FILE]
Run it with Debian's /usr/bin/python3 (python3-torch).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def torch_benches(torch, F):
    B = 128
    return [
        ("conv3x3", [(B, 16, 28, 28), (16, 16, 3, 3)], 2, lambda t: F.conv2d(t[0], t[1], None, 1, 1)),
        ("conv3x3_s2", [(B, 16, 28, 28), (32, 16, 3, 3)], 2, lambda t: F.conv2d(t[0], t[1], None, 2, 1)),
        ("conv1x1_s2", [(B, 16, 28, 28), (32, 16, 1, 1)], 2, lambda t: F.conv2d(t[0], t[1], None, 2, 0)),
        ("convT_dcgan_in", [(64, 100, 1, 1), (100, 64, 7, 7)], 2, lambda t: F.conv_transpose2d(t[0], t[1])),
        ("convT_dcgan_out", [(64, 32, 14, 14), (32, 1, 4, 4)], 2,
         lambda t: F.conv_transpose2d(t[0], t[1], None, 2, 1)),
        ("batch_norm", [(B, 16, 28, 28), (16,), (16,)], 3,
         lambda t: F.batch_norm(t[0], None, None, t[1], t[2], training=True)),
        ("max_pool2d", [(B, 16, 28, 28)], 1, lambda t: F.max_pool2d(t[0], 2)),
        ("avg_pool2d", [(B, 16, 28, 28)], 1, lambda t: F.avg_pool2d(t[0], 2)),
        ("relu", [(B, 16, 28, 28)], 1, lambda t: F.relu(t[0])),
        ("leaky_relu", [(B, 16, 28, 28)], 1, lambda t: F.leaky_relu(t[0], 0.2)),
        ("add", [(B, 16, 28, 28), (B, 16, 28, 28)], 2, lambda t: t[0] + t[1]),
        ("gelu_tanh", [(4096, 512)], 1, lambda t: F.gelu(t[0], approximate="tanh")),
        ("softmax", [(4096, 256)], 1, lambda t: F.softmax(t[0], -1)),
        ("layer_norm", [(4096, 256), (256,), (256,)], 3, lambda t: F.layer_norm(t[0], (256,), t[1], t[2])),
        ("matmul", [(512, 512), (512, 512)], 2, lambda t: t[0] @ t[1]),
        ("linear_gpt", [(4096, 128), (128, 512)], 2, lambda t: t[0] @ t[1]),
    ]


def torch_worker(args):
    import torch
    import torch.nn.functional as F
    if args.worker_threads > 0:
        torch.set_num_threads(args.worker_threads)
    torch.manual_seed(0)
    for name, shapes, grads, fn in torch_benches(torch, F):
        if args.only and name not in args.only.split(","):
            continue
        ins = [torch.randn(s) for s in shapes]
        g = torch.randn(fn(ins).shape)
        for pas in ("forward", "forward+backward"):
            bwd = pas != "forward"
            xs = [x.clone().requires_grad_(bwd and i < grads) for i, x in enumerate(ins)]
            times = []
            for r in range(args.reps + 2):
                t0 = time.perf_counter()
                with torch.set_grad_enabled(bwd):
                    y = fn(xs)
                    if bwd:
                        y.backward(g)
                if r >= 2:
                    times.append(time.perf_counter() - t0)
                for x in xs:
                    x.grad = None
            print(json.dumps({"framework": "torch " + torch.__version__, "threads": torch.get_num_threads(),
                              "op": name, "pass": pas, "median_ms": statistics.median(times) * 1e3}), flush=True)
    return 0


def lines(cmd, env=None):
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True, env=env).stdout
    return [json.loads(l) for l in out.splitlines() if l.startswith("{")]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--kiln-exe", default=os.path.join(HERE, "..", "build", "tools", "kiln_bench_ops"))
    p.add_argument("--threads", default="1,2")
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--only", default="")
    p.add_argument("--json", help="also write the measurements here")
    p.add_argument("--torch-worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--worker-threads", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.torch_worker:
        return torch_worker(args)
    if not os.access(args.kiln_exe, os.X_OK):
        print(f"bench_ops_vs_torch: no kiln_bench_ops at {args.kiln_exe} (build it, or pass --kiln-exe)")
        return 2
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    results = []
    for setting in [s.strip() for s in args.threads.split(",") if s.strip()]:
        n = int(setting)
        extra = ["--only", args.only] if args.only else []
        k = lines([args.kiln_exe, "--threads", str(n), "--reps", str(args.reps)] + extra)
        t = lines([sys.executable, os.path.abspath(__file__), "--torch-worker", "--worker-threads", str(n),
                   "--reps", str(args.reps)] + extra, env)
        tk = {(r["op"], r["pass"]): r for r in t}
        print(f"\nthreads {n}: median ms per call (CPU, f32); torch {t[0]['framework'].split()[1] if t else '?'}")
        print(f"{'op':<12} {'pass':<17} {'shape':<44} {'kiln ms':>9} {'torch ms':>9} {'torch/kiln':>10}")
        for r in k:
            tr = tk.get((r["op"], r["pass"]))
            if not tr:
                continue
            ratio = tr["median_ms"] / r["median_ms"]
            print(f"{r['op']:<12} {r['pass']:<17} {r['shape']:<44} {r['median_ms']:9.3f} {tr['median_ms']:9.3f} "
                  f"{ratio:10.2f}")
            results.append({"threads": n, "op": r["op"], "pass": r["pass"], "shape": r["shape"],
                            "kiln_ms": r["median_ms"], "torch_ms": tr["median_ms"], "torch_over_kiln": ratio})
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
