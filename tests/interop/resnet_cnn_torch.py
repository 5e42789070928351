#!/usr/bin/env python3
"""PyTorch round trip of kiln's model-zoo CNN (ctest: resnet_cnn_torch_roundtrip).

The same architecture in torch.nn (tools/resnet_cnn_torch.py) and in kiln
(models/zoo/resnet_cnn.h); the safetensors files are written and read by hand (the
helpers of safetensors_torch.py), not with the `safetensors` package.
  A. PyTorch builds the model with random weights and non-trivial running statistics and
     writes it; kiln loads it (strict) and compares its logits in eval mode, its logits in
     train mode (batch statistics), the gradients of a cross-entropy loss and the running
     statistics after that step with PyTorch's (resnet_cnn_interop check-torch).
  B. kiln builds the model, trains two AdamW steps and writes it with its results on a
     new input (resnet_cnn_interop write-kiln); PyTorch loads it with
     load_state_dict(strict=True) and compares the same quantities. A seed whose test point
     lies within f32 rounding of a ReLU's kink (where two correct f32 forwards may mask a
     different element) is replaced by the next one.
Both run for the default model (width 16, 28x28x1, 10 classes) and for a small odd one
(width 4, 3 channels, 17x23 images, 7 classes), so a transposed weight, a misnamed or
missing tensor or a layout mistake fails. Tensors agree when
max|kiln - torch| <= 1e-5 + 1e-4 * max|reference|.
Exit status: 0 passed, 1 failed, 77 skipped (python3-torch is not installed).

usage: resnet_cnn_torch.py RESNET_CNN_INTEROP_EXE WORK_DIR
"""
import copy
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "..", "tools"))

try:
    import torch
except ImportError:
    print("SKIP: python3-torch is not installed (apt-get install python3-torch)")
    sys.exit(77)

import torch.nn.functional as F  # noqa: E402
from resnet_cnn_torch import resnet_cnn  # noqa: E402
from safetensors_torch import read_safetensors, write_safetensors  # noqa: E402
from torch_compare import compare, run  # noqa: E402

CONFIGS = [
    {"width": 16, "in_channels": 1, "classes": 10, "batch": 8, "height": 28, "image_width": 28},
    {"width": 4, "in_channels": 3, "classes": 7, "batch": 5, "height": 17, "image_width": 23},
]


def flags(cfg):
    return [a for k, v in cfg.items() for a in ("--" + k.replace("_", "-"), str(v))]


def build(cfg):
    return resnet_cnn(cfg["width"], cfg["in_channels"], cfg["classes"])


def randomize(model, g):
    """Random weights, and running statistics far from their initial 0 / 1."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("bn1.weight", "bn2.weight", "_bn.weight", ".1.weight")) and p.dim() == 1:
                p.copy_(0.5 + torch.rand(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) * (0.1 if p.dim() == 1 else 1.0 / p[0].numel() ** 0.5))
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=g) * 0.2)
            elif name.endswith("running_var"):
                b.copy_(0.5 + torch.rand(b.shape, generator=g))
            elif name.endswith("num_batches_tracked"):
                b.fill_(5)


def results(model, x, y):
    """Eval logits; train-mode logits, gradients of cross-entropy and buffers after it."""
    out = {}
    model.eval()
    with torch.no_grad():
        out["logits_eval"] = model(x)
    model.train()
    model.zero_grad(set_to_none=True)
    logits = model(x)
    F.cross_entropy(logits, y).backward()
    out["logits_train"] = logits.detach()
    for name, p in model.named_parameters():
        out["grad." + name] = p.grad.detach().clone()
    for name, b in model.named_buffers():
        out["after_train." + name] = b.detach().clone()
    return out


def torch_to_kiln(exe, work, cfg, seed, failures):
    g = torch.Generator().manual_seed(seed)
    model = build(cfg)
    randomize(model, g)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    write_safetensors(os.path.join(work, "torch_model.safetensors"), state, {"format": "pt"},
                      hf_order=True, separators=(", ", ": "))
    x = torch.randn(cfg["batch"], cfg["in_channels"], cfg["height"], cfg["image_width"], generator=g)
    y = torch.randint(0, cfg["classes"], (cfg["batch"],), generator=g)
    io = {"x": x, "y": y, **results(model, x, y)}
    write_safetensors(os.path.join(work, "torch_io.safetensors"), io, None, hf_order=False, separators=(",", ":"))
    if run([exe, "check-torch", work] + flags(cfg)) != 0:
        failures.append(f"A (torch -> kiln) {cfg}: kiln's results differ from PyTorch's, or the load failed")


def relu_margin(model, x):
    """The smallest |input| of any ReLU in a train-mode forward in f64: how far the point is
    from a kink of the loss. Within f32 rounding of one, kiln's and PyTorch's masks may
    differ there and a gradient differs by a whole element, with both right."""
    smallest = [float("inf")]
    relu = F.relu

    def recording(t, *args, **kwargs):
        smallest[0] = min(smallest[0], t.detach().abs().min().item())
        return relu(t, *args, **kwargs)

    m = copy.deepcopy(model).double().train()
    F.relu = recording
    try:
        with torch.no_grad():
            m(x.double())
    finally:
        F.relu = relu
    return smallest[0]


def kiln_to_torch(exe, work, cfg, failures):
    # kiln's weights after its two AdamW steps decide where the ReLUs' kinks are: a seed
    # whose test point lies within 2e-6 of one (f32 forwards differ by up to about 1e-6 there) is
    # replaced by the next.
    for seed in range(1, 11):
        if run([exe, "write-kiln", work] + flags(cfg) + ["--seed", str(seed)]) != 0:
            failures.append(f"B (kiln -> torch) {cfg}: kiln could not write its model")
            return
        state, _ = read_safetensors(os.path.join(work, "kiln_model.safetensors"))
        io, _ = read_safetensors(os.path.join(work, "kiln_io.safetensors"))
        model = build(cfg)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as e:
            failures.append(f"B (kiln -> torch) {cfg}: load_state_dict(strict=True): {e}")
            return
        margin = relu_margin(model, io["x"])
        if margin >= 2e-6:
            break
        print(f"  seed {seed}: a ReLU input {margin:.2g} from its kink (f32 rounding may flip it); next seed")
    else:
        failures.append(f"B (kiln -> torch) {cfg}: every seed put a ReLU input within 2e-6 of its kink")
        return
    got = results(model, io["x"], io["y"])
    n = len(failures)
    worst = {"grad.": 0.0, "after_train.": 0.0}
    for name in sorted(got):
        if name not in io:
            failures.append(f"B: kiln's results have no {name!r}")
            continue
        d = compare(name, io[name], got[name], failures, name.startswith("logits"))
        for prefix in worst:
            if name.startswith(prefix):
                worst[prefix] = max(worst[prefix], d)
    extra = set(io) - set(got) - {"x", "y"}
    if extra:
        failures.append(f"B: kiln wrote results torch has no counterpart for: {sorted(extra)}")
    print(f"  {len(state)} state tensors loaded strict; gradients max abs diff {worst['grad.']:.3g}, "
          f"buffers after the train step {worst['after_train.']:.3g}")
    print("kiln's model in PyTorch", "agrees" if len(failures) == n else "DIFFERS")


def main():
    if len(sys.argv) != 3:
        print(__doc__)
        return 2
    exe, work = sys.argv[1], sys.argv[2]
    assert sys.byteorder == "little"
    torch.set_num_threads(1)  # deterministic sums; the machine is shared
    failures = []
    for i, cfg in enumerate(CONFIGS):
        d = os.path.join(work, f"config{i}")
        os.makedirs(d, exist_ok=True)
        print(f"== config {i}: {cfg}")
        torch_to_kiln(exe, d, cfg, 100 + i, failures)
        kiln_to_torch(exe, d, cfg, failures)
    for f in failures:
        print("FAIL:", f)
    print("resnet_cnn torch round trip:", "FAILED" if failures else "passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
