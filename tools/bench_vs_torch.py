#!/usr/bin/python3
"""CPU training throughput of train_cnn's model, kiln against PyTorch, side by side.

Runs kiln_bench_train_step and the same model in PyTorch (tools/resnet_cnn_torch.py, the
definition the round-trip test checks against kiln's) with the same step — forward,
cross-entropy, backward, AdamW (lr 3e-3, weight decay 1e-2) on random 28x28 batches — for
each thread setting, and prints images/s and the ratio kiln / torch. Every measurement is
a fresh process; the rounds alternate kiln and torch so that a busy spell of the machine
hits both, and each side's best round counts. A round's rate comes from its median step.

Thread settings: "default" leaves both at their own defaults (kiln: KILN_NUM_THREADS or the
physical cores; PyTorch: torch.get_num_threads(), its physical-core guess); a number N sets
kiln's one thread budget (its loops, OpenBLAS and oneDNN; --threads N) and
torch.set_num_threads(N).

PyTorch at its best: Debian's PyTorch links the pthread build of OpenBLAS, which starts its
own threads beside torch's and oversubscribes the cores. Each torch round is therefore run
twice, with OpenBLAS left at its default and with OPENBLAS_NUM_THREADS=1, and the faster
counts; the table says which it was.

usage: tools/bench_vs_torch.py [--kiln-exe build/tools/kiln_bench_train_step]
         [--threads default,1,2] [--steps 20] [--warmup 3] [--batch 128] [--width 16]
         [--rounds 2] [--device cpu|cuda] [--json FILE]
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


def torch_worker(args):
    """One PyTorch measurement, in its own process; prints a JSON line like kiln's."""
    import torch
    import torch.nn.functional as F
    sys.path.insert(0, HERE)
    from resnet_cnn_torch import resnet_cnn

    if args.worker_threads > 0:
        torch.set_num_threads(args.worker_threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    model = resnet_cnn(args.width).to(device)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-2)
    xs = [torch.randn(args.batch, 1, 28, 28, device=device) for _ in range(4)]
    ys = [torch.randint(0, 10, (args.batch,), device=device) for _ in range(4)]
    times, loss_value = [], float("nan")
    for s in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(xs[s % 4]), ys[s % 4])
        loss.backward()
        opt.step()
        loss_value = loss.item()  # waits for the device, as kiln's step does
        if s >= args.warmup:
            times.append(time.perf_counter() - t0)
    median, mean = statistics.median(times), statistics.fmean(times)
    print(json.dumps({
        "framework": "torch " + torch.__version__, "device": args.device,
        "threads": torch.get_num_threads() if device.type == "cpu" else 0,
        "batch": args.batch, "width": args.width, "params": sum(p.numel() for p in model.parameters()),
        "steps": args.steps, "median_step_ms": median * 1e3, "mean_step_ms": mean * 1e3,
        "min_step_ms": min(times) * 1e3, "images_per_second": args.batch / median,
        "images_per_second_mean": args.batch / mean, "last_loss": loss_value}))
    return 0


def measure(cmd, env_extra=None):
    env = dict(os.environ)
    env.pop("OPENBLAS_NUM_THREADS", None)
    env.update(env_extra or {})
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--kiln-exe", default=os.path.join(HERE, "..", "build", "tools", "kiln_bench_train_step"))
    p.add_argument("--threads", default="default,1,2")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (both sides; on a GPU the thread setting "
                   "only matters for the host-side work)")
    p.add_argument("--json", help="also write the measurements here")
    p.add_argument("--torch-worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--worker-threads", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.torch_worker:
        return torch_worker(args)
    if not os.access(args.kiln_exe, os.X_OK):
        print(f"bench_vs_torch: no kiln_bench_train_step at {args.kiln_exe} (build it, or pass --kiln-exe)")
        return 2
    common = ["--device", args.device, "--steps", str(args.steps), "--warmup", str(args.warmup), "--batch", str(args.batch),
              "--width", str(args.width)]
    settings = [s.strip() for s in args.threads.split(",") if s.strip()]
    rows, raw = [], []
    for setting in settings:
        n = 0 if setting == "default" else int(setting)
        kiln_cmd = [args.kiln_exe] + common + ["--threads", str(n)]
        torch_cmd = [sys.executable, os.path.abspath(__file__), "--torch-worker", "--worker-threads", str(n)] + common
        best = {}
        for r in range(args.rounds):
            runs = [("kiln", kiln_cmd, None, "-"), ("torch", torch_cmd, None, "default"),
                    ("torch", torch_cmd, {"OPENBLAS_NUM_THREADS": "1"}, "1")]
            for name, cmd, env, blas in runs if r % 2 == 0 else runs[::-1]:
                m = measure(cmd, env)
                m["setting"], m["round"], m["openblas_threads"] = setting, r, blas
                raw.append(m)
                extra = f", OPENBLAS_NUM_THREADS {blas}" if name == "torch" else ""
                print(f"  threads {setting:>7} round {r}: {name:5s} {m['images_per_second']:8.1f} img/s "
                      f"(median step {m['median_step_ms']:.1f} ms, {m['threads']} threads{extra})", file=sys.stderr)
                if name not in best or m["images_per_second"] > best[name]["images_per_second"]:
                    best[name] = m
        rows.append((setting, best["kiln"], best["torch"]))

    k0, t0 = rows[0][1], rows[0][2]
    print(f"\ntrain_cnn's model ({k0['params']} params, width {args.width}), batch {args.batch}, AdamW, {args.device}; "
          f"{t0['framework']} at its faster OpenBLAS setting; best of {args.rounds} rounds of {args.steps} steps "
          f"(median step)")
    print(f"{'threads (kiln/torch)':>22} {'kiln img/s':>11} {'torch img/s':>12} {'kiln/torch':>11} {'torch OPENBLAS_NUM_THREADS':>27}")
    summary = []
    for setting, k, t in rows:
        label = f"{setting} ({k['threads']}/{t['threads']})"
        ratio = k["images_per_second"] / t["images_per_second"]
        print(f"{label:>22} {k['images_per_second']:11.1f} {t['images_per_second']:12.1f} "
              f"{ratio:11.3f} {t['openblas_threads']:>27}")
        summary.append({"threads": setting, "kiln_threads": k["threads"], "torch_threads": t["threads"],
                        "kiln_images_per_second": k["images_per_second"],
                        "torch_images_per_second": t["images_per_second"], "ratio": ratio,
                        "torch_openblas_threads": t["openblas_threads"]})
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"settings": summary, "runs": raw}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
