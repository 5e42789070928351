#!/usr/bin/python3
"""kiln_train_gpt beside the same GPT trained by Debian's PyTorch, in one run, on the same
token file, with the same number of threads (kiln: KILN_NUM_THREADS; PyTorch at its best
setting: torch.set_num_threads(T) with OPENBLAS_NUM_THREADS=1, which the issue measured
twice as fast as OpenBLAS's own threads on top of PyTorch's).

Modes:
  time   (default) each trains for --minutes with the same configuration and the same
         time-budget rule (time the first steps, fix the number of steps that fit, cosine
         to the end); prints the validation-loss curve against wall-clock time of both and
         the final losses and tokens/s side by side.
  step   each trains --steps steps; prints training tokens/s side by side (the GPT
         training-step benchmark).
  match  the same initial weights (PyTorch's, given to kiln with --init-from), the same
         training windows (kiln's Philox draws, reproduced here) and the same steps; the
         validation losses at every evaluation must agree within --tolerance (0.02 by
         default; exit 1 otherwise): correctness at scale.

The PyTorch model is tools/nanogpt_torch.py (nanoGPT's layout and names, GPT-2 init),
trained as kiln_train_gpt trains: AdamW (betas 0.9/0.99, weight decay on the matrices only),
linear warmup + cosine to --min-lr, clipping at norm 1, cross-entropy over every position,
validation on the same fixed windows.

usage: gpt_vs_torch.py KILN_TRAIN_GPT [--mode time|step|match] [--minutes M] [--steps N]
       [--threads T] [--out results.json] [--set KEY=VALUE ...] [-- more kiln_train_gpt flags]
"""
import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

# The model configuration both sides train (kiln_train_gpt's defaults: nanoGPT's CPU one).
DEFAULTS = dict(layers=4, heads=4, embd=128, block=64, batch=12, lr=2e-3, min_lr=1e-4, warmup=100,
                weight_decay=0.1, beta1=0.9, beta2=0.99, clip=1.0, eval_every=500, eval_batches=20,
                eval_batch_size=32, seed=0, val_fraction=0.1,
                # vocab: the model's rows (0: the tokenizer's; GPT-2 124M pads to 50304); dtype: f32, or
                # bf16 (kiln --dtype bf16; PyTorch under torch.autocast(bfloat16)); sdpa: PyTorch's
                # attention through F.scaled_dot_product_attention (its flash kernels on CUDA) instead
                # of nanoGPT's explicit masked softmax
                vocab=0, dtype="f32", sdpa=0)
DATA_SEED_XOR = 0x9E3779B97F4A7C15  # kiln_train_gpt's training windows: Generator(seed ^ this)
EVAL_SEED = 0xE7A1                  # and its fixed validation windows


def run_kiln(exe, cfg, threads, run_dir, extra, max_minutes=None, max_steps=None, init_from=None, device="cpu"):
    env = dict(os.environ, KILN_NUM_THREADS=str(threads))
    cmd = [exe, "--run-dir", run_dir, "--overwrite", "--no-plot", "--sample-tokens", "0", "--device", device,
           "--n-layer", str(cfg["layers"]), "--n-head", str(cfg["heads"]), "--n-embd", str(cfg["embd"]),
           "--block-size", str(cfg["block"]), "--batch-size", str(cfg["batch"]), "--lr", str(cfg["lr"]),
           "--min-lr", str(cfg["min_lr"]), "--warmup-steps", str(cfg["warmup"]),
           "--weight-decay", str(cfg["weight_decay"]), "--beta1", str(cfg["beta1"]), "--beta2", str(cfg["beta2"]),
           "--grad-clip", str(cfg["clip"]), "--eval-every", str(cfg["eval_every"]),
           "--eval-batches", str(cfg["eval_batches"]), "--eval-batch-size", str(cfg["eval_batch_size"]),
           "--seed", str(cfg["seed"]), "--val-fraction", str(cfg["val_fraction"]),
           "--vocab-size", str(cfg["vocab"]), "--dtype", cfg["dtype"]]
    cmd += ["--max-minutes", str(max_minutes if max_minutes is not None else 0)]
    cmd += ["--max-steps", str(max_steps if max_steps is not None else 0)]
    if init_from:
        cmd += ["--init-from", init_from]
    cmd += extra
    print("+ KILN_NUM_THREADS=%d %s" % (threads, " ".join(cmd)), flush=True)
    p = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True)
    if p.returncode != 0:
        raise SystemExit(f"kiln_train_gpt failed (exit {p.returncode})")
    summary = json.loads(p.stdout.strip().splitlines()[-1])
    evals = []
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        for line in f:
            r = json.loads(line)
            if r.get("type") == "eval":
                evals.append((r["step"], r["seconds"], r["val_loss"]))
    meta_path = None
    ck = summary.get("checkpoint", "")
    if ck:
        meta_path = ck
    return summary, evals, meta_path


def token_file_of(checkpoint):
    from safetensors_io import read_safetensors
    _, meta = read_safetensors(checkpoint)
    return meta["token_file"]


class TorchTrainer:
    """kiln_train_gpt's loop in PyTorch."""

    def __init__(self, cfg, tokens, vocab, threads, init_state=None, device="cpu"):
        import torch
        from nanogpt_torch import GPT, PhiloxGenerator, gpt2_init, split
        self.torch, self.cfg, self.device = torch, cfg, torch.device(device)
        torch.set_num_threads(threads)
        torch.manual_seed(cfg["seed"])
        self.tokens = tokens
        self.train_span, self.val_span = split(tokens, cfg["val_fraction"])
        mc = dict(layers=cfg["layers"], heads=cfg["heads"], embd=cfg["embd"], block=cfg["block"],
                  vocab=max(vocab, cfg["vocab"]), bias=True, sdpa=bool(cfg["sdpa"]))
        if cfg["dtype"] not in ("f32", "bf16"):
            raise SystemExit(f"dtype {cfg['dtype']!r}: f32 or bf16")
        self.autocast = cfg["dtype"] == "bf16"
        self.model = GPT(mc)
        if init_state is not None:
            self.model.load_state_dict(init_state, strict=True)
        else:
            gpt2_init(self.model, cfg["layers"])
        self.model.to(self.device)
        decay = [p for n, p in self.model.named_parameters()
                 if p.dim() >= 2 and "wte" not in n and "wpe" not in n and "lm_head" not in n]
        ids = {id(p) for p in decay}
        no_decay = [p for p in self.model.parameters() if id(p) not in ids]
        self.opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg["weight_decay"]},
                                      {"params": no_decay, "weight_decay": 0.0}],
                                     lr=cfg["lr"], betas=(cfg["beta1"], cfg["beta2"]), eps=1e-8)
        self.data_gen = PhiloxGenerator(cfg["seed"] ^ DATA_SEED_XOR)
        self.PhiloxGenerator = PhiloxGenerator
        self.step = 0
        self.total = None

    def lr_at(self, s):
        c = self.cfg
        total = self.total if self.total is not None else 2 ** 31 - 1
        warm = min(c["warmup"], total)
        if s < warm:
            return c["lr"] * (s + 1) / warm
        if s >= total:
            return c["min_lr"]
        prog = (s - warm) / (total - warm)
        return c["min_lr"] + (c["lr"] - c["min_lr"]) * 0.5 * (1 + math.cos(math.pi * prog))

    def train_step(self):
        from nanogpt_torch import windows
        torch, c = self.torch, self.cfg
        for g in self.opt.param_groups:
            g["lr"] = self.lr_at(self.step)
        x, y = windows(self.tokens, self.train_span, c["batch"], c["block"], self.data_gen)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            logits = self.model(x.to(self.device))
            loss = torch.nn.functional.cross_entropy(logits.view(-1, logits.size(-1)).float(),
                                                     y.to(self.device).view(-1))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if c["clip"] > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), c["clip"])
        self.opt.step()
        self.step += 1
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return loss

    def evaluate(self):
        from nanogpt_torch import windows
        torch, c = self.torch, self.cfg
        g = self.PhiloxGenerator(EVAL_SEED)
        self.model.eval()
        total = 0.0
        with torch.no_grad():
            for _ in range(c["eval_batches"]):
                x, y = windows(self.tokens, self.val_span, c["eval_batch_size"], c["block"], g)
                with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
                    logits = self.model(x.to(self.device)).float()
                total += torch.nn.functional.cross_entropy(logits.view(-1, logits.size(-1)),
                                                           y.to(self.device).view(-1)).item()
        self.model.train()
        return total / c["eval_batches"]

    def run(self, max_minutes=None, max_steps=None):
        """Trains as kiln_train_gpt does (the same time-budget plan: 300 timed steps, then
        re-planned at 25%, 50% and 75% of the budget; stopping in time for the final
        evaluation); returns (evals [(step, seconds, val)], train seconds, steps)."""
        c = self.cfg
        t0 = time.perf_counter()
        budget = max_minutes * 60 if max_minutes else None
        budgeted = max_steps is None and budget is not None
        self.total = max_steps
        evals = []
        te = time.perf_counter()
        evals.append((0, time.perf_counter() - t0, self.evaluate()))
        eval_s, n_evals = time.perf_counter() - te, 1
        train_s, plan_from, plan_t, plan_eval, replans = 0.0, 100, None, 0.0, 0
        while self.total is None or self.step < self.total:
            if budget and time.perf_counter() - t0 + eval_s / n_evals >= budget:
                break
            ts = time.perf_counter()
            if self.step == plan_from:
                plan_t, plan_eval = ts, eval_s
            self.train_step()
            train_s += time.perf_counter() - ts
            if budgeted and self.step > plan_from:
                n = self.step - plan_from
                window = time.perf_counter() - plan_t - (eval_s - plan_eval)
                now = time.perf_counter() - t0
                want = (n >= 300 or (n >= 5 and window >= 0.05 * budget)) if self.total is None else \
                    (replans < 3 and n >= 100 and now >= (0.25, 0.5, 0.75)[replans] * budget)
                if want:
                    per = window / n
                    per_eval = per + (eval_s / n_evals) / c["eval_every"]
                    planned = self.step + max(1, int(0.98 * (budget - now - eval_s / n_evals) / per_eval))
                    first = self.total is None
                    if not first:
                        replans += 1
                    if first or abs(planned - self.total) > self.total // 200:
                        print(f"torch: {per * 1e3:.1f} ms per step: the run ends at step {planned}", flush=True)
                        self.total = planned
                    plan_from, plan_t, plan_eval = self.step, time.perf_counter(), eval_s
            last = self.total is not None and self.step >= self.total
            if self.step % c["eval_every"] == 0 and not last:
                te = time.perf_counter()
                v = self.evaluate()
                eval_s += time.perf_counter() - te
                n_evals += 1
                evals.append((self.step, time.perf_counter() - t0, v))
                print(f"torch: step {self.step}  val_loss {v:.4f}  ({time.perf_counter() - t0:.0f} s)", flush=True)
        evals.append((self.step, time.perf_counter() - t0, self.evaluate()))
        return evals, train_s, self.step


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("kiln_train_gpt")
    ap.add_argument("--mode", choices=["time", "step", "match"], default="time")
    ap.add_argument("--minutes", type=float, default=15.0)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (both sides)")
    ap.add_argument("--tolerance", type=float, default=0.02)
    ap.add_argument("--work", default=None, help="directory for the runs (default: a temporary one)")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="change the shared configuration (e.g. --set eval_every=100)")
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    a = ap.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    a.extra = extra
    # Before torch is imported: OpenBLAS and OpenMP read these when they load.
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    os.environ["OMP_NUM_THREADS"] = str(a.threads)
    try:
        import torch  # noqa: F401
    except ImportError:
        print("gpt_vs_torch: skipped (no python3-torch)")
        return 77
    cfg = dict(DEFAULTS)
    for kv in a.set:
        k, v = kv.split("=", 1)
        if k not in cfg:
            raise SystemExit(f"--set: unknown key {k!r} (known: {', '.join(cfg)})")
        cfg[k] = type(cfg[k])(v)
    work = a.work or tempfile.mkdtemp(prefix="gpt_vs_torch.")
    os.makedirs(work, exist_ok=True)
    from nanogpt_torch import read_token_file
    from safetensors_io import read_safetensors, write_safetensors
    results = {"mode": a.mode, "threads": a.threads, "device": a.device, "config": cfg}

    init = None
    if a.mode == "match":
        # PyTorch's initial weights, for both sides. The token file is needed first for the
        # vocabulary: a 1-step kiln run prepares it (and is thrown away).
        s, _, ck = run_kiln(a.kiln_train_gpt, dict(cfg, eval_batches=1), a.threads, os.path.join(work, "probe"),
                            a.extra, max_steps=1)
        tok_path = token_file_of(ck)
        tokens, vocab = read_token_file(tok_path)
        t = TorchTrainer(cfg, tokens, vocab, a.threads)
        init = os.path.join(work, "init.safetensors")
        write_safetensors(init, {k: v.detach().contiguous() for k, v in t.model.state_dict().items()},
                          {"format": "pt"}, hf_order=False, separators=(",", ":"))

    kmin = a.minutes if a.mode == "time" else None
    ksteps = a.steps if a.mode in ("step", "match") else None
    ks, kevals, ck = run_kiln(a.kiln_train_gpt, cfg, a.threads, os.path.join(work, "kiln"), a.extra,
                              max_minutes=kmin, max_steps=ksteps, init_from=init, device=a.device)
    tokens, vocab = read_token_file(token_file_of(ck))
    if a.mode == "match":
        state = {k: v.clone() for k, v in t.model.state_dict().items()}
        t = TorchTrainer(cfg, tokens, vocab, a.threads, init_state=state, device=a.device)
    else:
        t = TorchTrainer(cfg, tokens, vocab, a.threads, device=a.device)
    tevals, tsec, tsteps = t.run(max_minutes=kmin, max_steps=ksteps)
    tok_per_step = cfg["batch"] * cfg["block"]
    k_tps = ks["tokens_per_second"]
    t_tps = tsteps * tok_per_step / tsec
    results["kiln"] = {"summary": ks, "evals": kevals}
    results["torch"] = {"evals": tevals, "tokens_per_second": t_tps, "steps": tsteps, "train_seconds": tsec}
    print()
    print(f"GPT {cfg['layers']}L {cfg['heads']}H {cfg['embd']}d, context {cfg['block']}, batch {cfg['batch']}, "
          f"{a.device}, {cfg['dtype']}, {a.threads} threads, {vocab}-symbol vocabulary"
          + (f" padded to {cfg['vocab']} rows" if cfg["vocab"] > vocab else "")
          + f", torch {t.torch.__version__}" + (" (SDPA attention)" if cfg["sdpa"] else ""))
    print(f"{'':24s}{'kiln':>12s}{'PyTorch':>12s}{'kiln/torch':>12s}")
    print(f"{'training tokens/s':24s}{k_tps:12.0f}{t_tps:12.0f}{k_tps / t_tps:12.2f}")
    print(f"{'steps':24s}{ks['steps']:12d}{tsteps:12d}")
    print(f"{'final val_loss':24s}{kevals[-1][2]:12.4f}{tevals[-1][2]:12.4f}")
    if a.mode == "time":
        print("validation loss against wall-clock time (s: loss):")
        print("  kiln : " + "  ".join(f"{s:.0f}:{v:.3f}" for _, s, v in kevals))
        print("  torch: " + "  ".join(f"{s:.0f}:{v:.3f}" for _, s, v in tevals))
    rc = 0
    if a.mode == "match":
        tv = {st: v for st, _, v in tevals}
        worst = 0.0
        print("step  kiln val  torch val  |diff|")
        for st, _, v in kevals:
            if st in tv:
                d = abs(v - tv[st])
                worst = max(worst, d)
                print(f"{st:5d}  {v:8.4f}  {tv[st]:9.4f}  {d:.2e}")
        results["max_abs_diff"] = worst
        ok = worst <= a.tolerance and len(kevals) == len(tevals)
        print(f"max |kiln - torch| over {len(kevals)} evaluations: {worst:.2e} (tolerance {a.tolerance}): "
              + ("agree" if ok else "DIFFER"))
        rc = 0 if ok else 1
    results["ratio_tokens_per_second"] = k_tps / t_tps
    if a.out:
        with open(a.out, "w") as f:
            json.dump(results, f, indent=1)
    return rc


if __name__ == "__main__":
    sys.exit(main())
