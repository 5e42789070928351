#!/usr/bin/python3
"""gpt_torch_roundtrip: kiln's GPT (models/zoo/gpt.h) and the same model written here in
torch.nn with nanoGPT's module names load each other's weights (safetensors, strict) and
agree on logits, the cross-entropy loss and every parameter gradient, both ways:

  A. PyTorch's randomly initialised model -> kiln (gpt_interop check-torch)
  B. kiln's model -> PyTorch (gpt_interop write-kiln, then compared here)

for a default-sized and an odd-sized configuration (with and without biases). The lm_head
is tied to the token embedding on both sides (one tensor, two names in the state dict).
Tolerance: max|kiln - torch| <= 1e-5 + 1e-4 max|torch|.

usage: gpt_torch.py GPT_INTEROP_EXE WORK_DIR       (exit 77 without python3-torch)
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "..", "tools"))

try:
    import torch
    import torch.nn.functional as F
except ImportError:
    print("gpt_torch_roundtrip: skipped (no python3-torch)")
    sys.exit(77)

from nanogpt_torch import GPT  # noqa: E402
from safetensors_io import read_safetensors, write_safetensors  # noqa: E402
from torch_compare import compare, run  # noqa: E402

CONFIGS = [
    {"layers": 2, "heads": 4, "embd": 32, "block": 16, "vocab": 65, "batch": 3, "seq": 16, "bias": True},
    {"layers": 3, "heads": 3, "embd": 24, "block": 11, "vocab": 37, "batch": 2, "seq": 9, "bias": False},
]


def flags(cfg, seed=1):
    out = []
    for k in ("layers", "heads", "embd", "block", "vocab", "batch", "seq"):
        out += ["--" + k, str(cfg[k])]
    out += ["--seed", str(seed)]
    return out + ([] if cfg["bias"] else ["--no-bias"])


def results(model, idx, targets):
    model.eval()
    model.zero_grad(set_to_none=True)
    logits = model(idx)
    loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))
    loss.backward()
    out = {"logits": logits.detach(), "loss": loss.detach()}
    for name, p in model.named_parameters():  # the tied weight once, under its first name
        out["grad." + name] = p.grad.detach().clone()
    return out


def torch_to_kiln(exe, work, cfg, failures):
    g = torch.Generator().manual_seed(7)
    model = GPT(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():  # random, non-trivial weights (LayerNorm scales too)
            scale = 0.3 if p.dim() == 1 else 0.1
            is_ln_scale = (".ln_" in name or "ln_f." in name) and name.endswith("weight")
            p.copy_(torch.randn(p.shape, generator=g) * scale + (1.0 if is_ln_scale else 0.0))
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    write_safetensors(os.path.join(work, "torch_model.safetensors"), state, {"format": "pt"},
                      hf_order=True, separators=(", ", ": "))
    idx = torch.randint(0, cfg["vocab"], (cfg["batch"], cfg["seq"]), generator=g)
    targets = torch.randint(0, cfg["vocab"], (cfg["batch"], cfg["seq"]), generator=g)
    io = {"idx": idx, "targets": targets, **results(model, idx, targets)}
    # kiln names the tied gradient under both keys: give it both.
    io["grad.lm_head.weight"] = io.get("grad.lm_head.weight", io.get("grad.transformer.wte.weight"))
    io["grad.transformer.wte.weight"] = io["grad.lm_head.weight"]
    write_safetensors(os.path.join(work, "torch_io.safetensors"), io, None, hf_order=False, separators=(",", ":"))
    if run([exe, "check-torch", work] + flags(cfg)) != 0:
        failures.append(f"A (torch -> kiln) {cfg}: kiln's results differ from PyTorch's, or the load failed")


def kiln_to_torch(exe, work, cfg, failures):
    if run([exe, "write-kiln", work] + flags(cfg)) != 0:
        failures.append(f"B (kiln -> torch) {cfg}: kiln could not write its model")
        return
    state, _ = read_safetensors(os.path.join(work, "kiln_model.safetensors"))
    io, _ = read_safetensors(os.path.join(work, "kiln_io.safetensors"))
    model = GPT(cfg)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        failures.append(f"B (kiln -> torch) {cfg}: load_state_dict(strict=True): {e}")
        return
    got = results(model, io["idx"], io["targets"])
    n = len(failures)
    worst = 0.0
    for name in sorted(got):
        if name not in io:
            failures.append(f"B: kiln's results have no {name!r}")
            continue
        d = compare(name, io[name], got[name], failures, not name.startswith("grad."))
        worst = max(worst, d) if name.startswith("grad.") else worst
    print(f"  {len(state)} state tensors loaded strict; gradients max abs diff {worst:.3g}")
    print("kiln's GPT in PyTorch", "agrees" if len(failures) == n else "DIFFERS")


def main():
    if len(sys.argv) != 3:
        print(__doc__)
        return 2
    exe, work = sys.argv[1], sys.argv[2]
    torch.manual_seed(0)
    failures = []
    for i, cfg in enumerate(CONFIGS):
        d = os.path.join(work, f"config{i}")
        os.makedirs(d, exist_ok=True)
        print(f"config {cfg}")
        torch_to_kiln(exe, d, cfg, failures)
        kiln_to_torch(exe, d, cfg, failures)
    if failures:
        print("FAILED:\n  " + "\n  ".join(failures))
        return 1
    print("gpt_torch_roundtrip: both directions agree")
    return 0


if __name__ == "__main__":
    sys.exit(main())
