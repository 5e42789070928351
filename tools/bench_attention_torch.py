#!/usr/bin/python3
"""PyTorch's side of kiln_bench_attention: forward + backward time of
torch.nn.functional.scaled_dot_product_attention (PyTorch 2: flash / memory-efficient /
cuDNN kernels, whichever it picks) or, on a PyTorch without it (Debian's 1.13), of the
same attention spelled out (matmul, mask, softmax, matmul), at the shapes the kiln
benchmark uses, with the TFLOP/s by the same count (4 B H T^2 D forward, 2.5x that
backward, halved when causal). One JSON line per length.

usage: bench_attention_torch.py [--device cuda] [--t-list 1024,4096] [--batch 1] [--heads 4]
       [--head-dim 64] [--causal] [--dtype float32|bfloat16|float16] [--reps 10]
"""
import argparse
import json
import math
import time


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--t-list", default="1024,4096")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--causal", action="store_true")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args()
    import torch
    import torch.nn.functional as F
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    dev, dt = torch.device(a.device), getattr(torch, a.dtype)
    sdpa = getattr(F, "scaled_dot_product_attention", None)

    def attend(q, k, v):
        if sdpa is not None:
            return sdpa(q, k, v, is_causal=a.causal)
        s = (q @ k.transpose(-2, -1)) / math.sqrt(q.size(-1))
        if a.causal:
            T = q.size(-2)
            s = s.masked_fill(torch.ones(T, T, dtype=torch.bool, device=q.device).tril().logical_not(), float("-inf"))
        return torch.softmax(s, -1) @ v

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    for T in [int(t) for t in a.t_list.split(",")]:
        shape = (a.batch, a.heads, T, a.head_dim)
        q, k, v = (torch.randn(shape, device=dev, dtype=dt, requires_grad=True) for _ in range(3))
        g = torch.randn(shape, device=dev, dtype=dt)
        times = []
        for i in range(a.reps + 1):
            sync()
            t0 = time.perf_counter()
            attend(q, k, v).backward(g)
            sync()
            if i > 0:
                times.append(time.perf_counter() - t0)
            q.grad = k.grad = v.grad = None
        ms = 1e3 * sorted(times)[len(times) // 2]
        flops = 3.5 * 4.0 * a.batch * a.heads * a.head_dim * T * T * (0.5 if a.causal else 1.0)
        print(json.dumps({"bench": "attention_torch", "torch": torch.__version__, "device": a.device,
                          "dtype": a.dtype, "T": T, "batch": a.batch, "heads": a.heads, "head_dim": a.head_dim,
                          "causal": a.causal, "sdpa": sdpa is not None, "ms": round(ms, 4),
                          "tflops": round(flops / (ms * 1e-3) / 1e12, 4)}), flush=True)


if __name__ == "__main__":
    main()
