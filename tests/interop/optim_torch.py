#!/usr/bin/env python3
"""Optimizer reference test (ctest: optim_torch_reference): kiln's optimizers against
their papers' updates written step by step in PyTorch (Debian's python3-torch), in f64.

A small tanh MLP (W0 (4, 8), b0 (8), W1 (8, 3), b1 (3); mean squared error) trains for
STEPS steps on fixed batches; tests/interop/optim_interop.cpp does the same in kiln and
writes the params after every step; every step's params must agree (and, for SAM, the
losses at w and at w + e(w)). The Hessian instrument's top eigenvalue (power iteration,
models/eval/curvature.h) must come within 1% of the eigenvalue of largest magnitude of
the exact Hessian PyTorch computes (torch.autograd.functional.hessian + eigvalsh), and
the Fisher instrument's that of the exact cross-entropy Fisher (from the Jacobian). The
PyTorch updates below are written from the papers, not
taken from torch.optim, except the base optimizers SAM wraps (torch.optim.SGD / Adam).
Exit status: 0 passed, 1 failed, 77 skipped (python3-torch is not installed).

usage: optim_torch.py OPTIM_INTEROP_EXE WORK_DIR [--verbose]
"""
import math
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tools"))
sys.path.insert(0, HERE)

try:
    import torch
except ImportError:
    print("SKIP: python3-torch is not installed (apt-get install python3-torch)")
    sys.exit(77)

from safetensors_io import read_safetensors, write_safetensors  # noqa: E402
from torch_compare import compare, run  # noqa: E402

STEPS, BATCH = 10, 5


def make_inputs():
    g = torch.Generator().manual_seed(7)
    p = [torch.randn(4, 8, generator=g, dtype=torch.float64) * 0.5, torch.randn(8, generator=g, dtype=torch.float64) * 0.1,
         torch.randn(8, 3, generator=g, dtype=torch.float64) * 0.5, torch.randn(3, generator=g, dtype=torch.float64) * 0.1]
    x = torch.randn(STEPS, BATCH, 4, generator=g, dtype=torch.float64)
    y = torch.randn(STEPS, BATCH, 3, generator=g, dtype=torch.float64)
    return p, x, y


def loss_fn(p, x, y):
    h = torch.tanh(x @ p[0] + p[1])
    return ((h @ p[2] + p[3] - y) ** 2).mean()


def base_optimizer(kind, params, o):
    if kind == "sgd":
        return torch.optim.SGD(params, lr=o.get("lr", 0.1), momentum=o.get("momentum", 0.0),
                               weight_decay=o.get("weight_decay", 0.0), nesterov=bool(o.get("nesterov", 0)))
    if kind in ("adam", "adamw"):
        cls = torch.optim.Adam if kind == "adam" else torch.optim.AdamW
        return cls(params, lr=o.get("lr", 1e-3), betas=(o.get("beta1", 0.9), o.get("beta2", 0.999)),
                   eps=o.get("eps", 1e-8), weight_decay=o.get("weight_decay", 0.0))
    raise ValueError(kind)


def reference_sam(p, x, y, o, adaptive):
    """Foret et al. 2021, Algorithm 1 (ASAM: Kwon et al. 2021, T = |w| + eta on weights)."""
    p = [t.clone().requires_grad_(True) for t in p]
    opt = base_optimizer(o.get("base", "sgd"), p, o)
    rho, eta = o.get("rho", 0.05), o.get("eta", 0.01)
    out = {}
    for s in range(STEPS):
        opt.zero_grad()
        loss = loss_fn(p, x[s], y[s])
        loss.backward()
        with torch.no_grad():
            T = [(w.abs() + eta) if (adaptive and w.dim() >= 2) else torch.ones_like(w) for w in p]
            norm = torch.sqrt(sum(((t * w.grad) ** 2).sum() for t, w in zip(T, p)))
            e = [t * t * w.grad * rho / (norm + 1e-12) for t, w in zip(T, p)]
            for w, ew in zip(p, e):
                w.add_(ew)
        opt.zero_grad()
        perturbed = loss_fn(p, x[s], y[s])
        perturbed.backward()
        with torch.no_grad():
            for w, ew in zip(p, e):
                w.sub_(ew)
        opt.step()
        out[f"step.{s}.loss"] = loss.detach()
        out[f"step.{s}.perturbed_loss"] = perturbed.detach()
        for i, w in enumerate(p):
            out[f"step.{s}.p.{i}"] = w.detach().clone()
    return out


def reference_lars(p, x, y, o):
    """You, Gitman & Ginsburg 2017, Algorithm 1 (trust coefficient eta, eps in the denominator)."""
    p = [t.clone().requires_grad_(True) for t in p]
    lr, mom, wd = o["lr"], o["momentum"], o.get("weight_decay", 0.0)
    eta, eps = o.get("trust_coefficient", 1e-3), o.get("eps", 0.0)
    buf = [torch.zeros_like(t) for t in p]
    out = {}
    for s in range(STEPS):
        for t in p:
            t.grad = None
        loss_fn(p, x[s], y[s]).backward()
        with torch.no_grad():
            for w, b in zip(p, buf):
                wn, gn = w.norm().item(), w.grad.norm().item()
                local = eta * wn / (gn + wd * wn + eps) if wn > 0 and gn > 0 else 1.0
                b.mul_(mom).add_((w.grad + wd * w) * (lr * local))
                w.sub_(b)
        for i, w in enumerate(p):
            out[f"step.{s}.p.{i}"] = w.detach().clone()
    return out


def reference_lamb(p, x, y, o):
    """You et al. 2020, Algorithm 2 (LAMB) with Adam's bias correction."""
    p = [t.clone().requires_grad_(True) for t in p]
    lr, b1, b2, eps, wd = o["lr"], o["beta1"], o["beta2"], o["eps"], o["weight_decay"]
    m = [torch.zeros_like(t) for t in p]
    v = [torch.zeros_like(t) for t in p]
    out = {}
    for s in range(STEPS):
        for t in p:
            t.grad = None
        loss_fn(p, x[s], y[s]).backward()
        step = s + 1
        with torch.no_grad():
            for w, mi, vi in zip(p, m, v):
                g = w.grad
                mi.mul_(b1).add_((1 - b1) * g)
                vi.mul_(b2).add_((1 - b2) * g * g)
                r = (mi / (1 - b1 ** step)) / ((vi / (1 - b2 ** step)).sqrt() + eps)
                u = r + wd * w
                wn, un = w.norm().item(), u.norm().item()
                ratio = wn / un if wn > 0 and un > 0 else 1.0
                w.sub_(lr * ratio * u)
        for i, w in enumerate(p):
            out[f"step.{s}.p.{i}"] = w.detach().clone()
    return out


def reference_adams(p, x, y, o):
    """Xie et al., AdamS (Adam with stable weight decay): the decay divided by sqrt(mean v_hat)."""
    p = [t.clone().requires_grad_(True) for t in p]
    lr, b1, b2, eps, wd = o["lr"], o["beta1"], o["beta2"], o["eps"], o["weight_decay"]
    m = [torch.zeros_like(t) for t in p]
    v = [torch.zeros_like(t) for t in p]
    out = {}
    for s in range(STEPS):
        for t in p:
            t.grad = None
        loss_fn(p, x[s], y[s]).backward()
        step = s + 1
        bc1, bc2 = 1 - b1 ** step, 1 - b2 ** step
        with torch.no_grad():
            for w, mi, vi in zip(p, m, v):
                mi.mul_(b1).add_((1 - b1) * w.grad)
                vi.mul_(b2).add_((1 - b2) * w.grad * w.grad)
            v_bar = sum((vi / bc2).sum() for vi in v) / sum(vi.numel() for vi in v)
            for w, mi, vi in zip(p, m, v):
                w.mul_(1 - lr * wd / v_bar.sqrt())
                w.sub_(lr / bc1 * mi / (vi.sqrt() / bc2 ** 0.5 + eps))
        for i, w in enumerate(p):
            out[f"step.{s}.p.{i}"] = w.detach().clone()
    return out


def reference_srsgd(p, x, y, o):
    """Wang et al. 2020, scheduled-restart NAG: mu_k = (k - 1) / (k + 2), k restarting every F."""
    p = [t.clone().requires_grad_(True) for t in p]
    lr, wd, F = o["lr"], o.get("weight_decay", 0.0), o["restart_every"]
    prev = [t.detach().clone() for t in p]
    out = {}
    for s in range(STEPS):
        for t in p:
            t.grad = None
        loss_fn(p, x[s], y[s]).backward()
        k = s % F + 1
        mu = (k - 1) / (k + 2)
        with torch.no_grad():
            for w, v in zip(p, prev):
                nxt = w - lr * (w.grad + wd * w)
                w.copy_(nxt + mu * (nxt - v))
                v.copy_(nxt)
        for i, w in enumerate(p):
            out[f"step.{s}.p.{i}"] = w.detach().clone()
    return out


def reference_entropy_sgd(p, x, y, o):
    """Chaudhari et al. 2017, Algorithm 1, without the Langevin noise; the outer step by the
    base optimizer on the local-entropy gradient gamma (x - mu), gamma scoped per step."""
    p = [t.clone().requires_grad_(True) for t in p]
    opt = base_optimizer(o.get("base", "sgd"), p, o)
    L, g0, scoping = o["inner_steps"], o["gamma"], o["scoping"]
    eta, alpha = o["inner_lr"], o["alpha"]
    out = {}
    for s in range(STEPS):
        gamma = g0 * (1 + scoping) ** s
        x0 = [t.detach().clone() for t in p]
        mu = [t.detach().clone() for t in p]
        losses = []
        for l in range(L):
            for t in p:
                t.grad = None
            loss = loss_fn(p, x[(s + l) % STEPS], y[(s + l) % STEPS])
            loss.backward()
            losses.append(loss.item())
            with torch.no_grad():
                for xp, xi, m in zip(p, x0, mu):
                    xp.sub_(eta * (xp.grad - gamma * (xi - xp)))
                    m.mul_(1 - alpha).add_(alpha * xp)
        with torch.no_grad():
            for xp, xi, m in zip(p, x0, mu):
                xp.copy_(xi)
                xp.grad = gamma * (xi - m)
        opt.step()
        out[f"step.{s}.loss"] = torch.tensor(sum(losses) / L, dtype=torch.float64)
        for i, w in enumerate(p):
            out[f"step.{s}.p.{i}"] = w.detach().clone()
    return out


def reference_apollo(p, x, y, o):
    """Ma 2020, Apollo Algorithm 1 as the author's reference code (rectification bound sigma,
    warmup from init_lr, weight decay 0 = L2, 1 = decoupled, 2 = stable)."""
    p = [t.clone().requires_grad_(True) for t in p]
    lr, beta, eps, sigma = o["lr"], o["beta"], o["eps"], o.get("sigma", 1.0)
    wd, warmup, init_lr, kind = o.get("weight_decay", 0.0), o["warmup"], o["init_lr"], o.get("decay_type", 0)
    m = [torch.zeros_like(t) for t in p]
    B = [torch.zeros_like(t) for t in p]
    d = [torch.zeros_like(t) for t in p]
    out = {}
    for s in range(STEPS):
        for t in p:
            t.grad = None
        loss_fn(p, x[s], y[s]).backward()
        curr_lr = (lr - init_lr) * s / warmup + init_lr if s < warmup else lr
        step = s + 1
        alpha = (1 - beta) / (1 - beta ** step)
        with torch.no_grad():
            for w, mi, Bi, di in zip(p, m, B, d):
                g = w.grad + wd * w if kind == 0 else w.grad
                dg = g - mi
                mi.add_(alpha * dg)
                denom = di.norm(p=4) + eps
                di.div_(denom)
                v_sq = di * di
                delta = -alpha * (dg / denom * di).sum() - (Bi * v_sq).sum()
                Bi.add_(v_sq * delta)
                D = Bi.abs().clamp(min=sigma)
                di.copy_(mi / D)
                if kind == 1:
                    di.add_(wd * w)
                elif kind == 2:
                    di.add_(wd / D.mean().item() * w)
                w.sub_(curr_lr * di)
        for i, w in enumerate(p):
            out[f"step.{s}.p.{i}"] = w.detach().clone()
    return out


def prox_lp(z, eta, pw):
    """argmin_x 1/2 (x - z)^2 + eta |x|^p, elementwise (soft / hard thresholding; the closed
    forms of Xu et al. 2012 for p = 1/2 and Cao et al. 2013 for p = 2/3, lam = 2 eta)."""
    a, sign = z.abs(), torch.where(z < 0, -1.0, 1.0).to(z.dtype)
    if pw == 1:
        return sign * (a - eta).clamp(min=0)
    if pw == 0:
        return torch.where(a > (2 * eta).sqrt(), z, torch.zeros_like(z))
    lam = 2 * eta
    if pw == 0.5:
        t = 54 ** (1 / 3) / 4 * lam ** (2 / 3)
        phi = torch.acos((lam / 8 * (a / 3) ** -1.5).clamp(max=1))
        x = 2 / 3 * z * (1 + torch.cos(2 * math.pi / 3 - 2 / 3 * phi))
        return torch.where(a > t, x, torch.zeros_like(z))
    t = 2 / 3 * (3 * lam ** 3) ** 0.25
    phi = torch.acosh((27 / 16 * z * z * lam ** -1.5).clamp(min=1))
    A = 2 / math.sqrt(3) * lam ** 0.25 * torch.cosh(phi / 3).sqrt()
    x = sign * ((A + (2 * a / A - A * A).clamp(min=0).sqrt()) / 2) ** 3
    return torch.where(a > t, x, torch.zeros_like(z))


def reference_proxadam(p, x, y, o):
    """Yun et al. 2021 (ProxGen), Algorithm 1 with Adam's preconditioner C = sqrt(v_hat) + eps
    (bias-corrected as Adam): w = prox_{lr lambda / C}(w - lr m_hat / C)."""
    p = [t.clone().requires_grad_(True) for t in p]
    lr, b1, b2, eps, wd, lam, pw = o["lr"], o["beta1"], o["beta2"], o["eps"], o.get("weight_decay", 0.0), o["lambda"], o["p"]
    m = [torch.zeros_like(t) for t in p]
    v = [torch.zeros_like(t) for t in p]
    out = {}
    zeros = 0
    for s in range(STEPS):
        for t in p:
            t.grad = None
        loss_fn(p, x[s], y[s]).backward()
        step = s + 1
        with torch.no_grad():
            for w, mi, vi in zip(p, m, v):
                g = w.grad + wd * w
                mi.mul_(b1).add_((1 - b1) * g)
                vi.mul_(b2).add_((1 - b2) * g * g)
                C = vi.sqrt() / math.sqrt(1 - b2 ** step) + eps
                w.copy_(prox_lp(w - lr / (1 - b1 ** step) * mi / C, lr * lam / C, pw))
        for i, w in enumerate(p):
            out[f"step.{s}.p.{i}"] = w.detach().clone()
    zeros = sum(int((w == 0).sum()) for w in p)
    if zeros == 0:
        raise AssertionError(f"proxadam p={pw}: no weight reached 0; the case would not test the thresholds")
    return out


# name -> (kiln optimizer, key=value options, reference)
CASES = {
    "sam-sgd": ("sam", {"base": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 1e-3, "rho": 0.05},
                lambda p, x, y, o: reference_sam(p, x, y, o, False)),
    "sam-adam": ("sam", {"base": "adam", "lr": 1e-2, "rho": 0.1},
                 lambda p, x, y, o: reference_sam(p, x, y, o, False)),
    "lars": ("lars", {"lr": 0.5, "momentum": 0.9, "weight_decay": 1e-2, "trust_coefficient": 0.02, "eps": 1e-9},
             reference_lars),
    "lamb": ("lamb", {"lr": 0.02, "beta1": 0.9, "beta2": 0.99, "eps": 1e-6, "weight_decay": 0.01}, reference_lamb),
    "adams": ("adams", {"lr": 0.01, "beta1": 0.9, "beta2": 0.99, "eps": 1e-8, "weight_decay": 0.05},
              reference_adams),
    "srsgd": ("srsgd", {"lr": 0.1, "weight_decay": 1e-3, "restart_every": 4}, reference_srsgd),
    "entropy-sgd": ("entropy-sgd", {"base": "sgd", "lr": 0.5, "momentum": 0.9, "nesterov": 1, "weight_decay": 1e-3,
                                    "inner_steps": 3, "gamma": 0.5, "scoping": 0.1, "inner_lr": 0.1, "alpha": 0.75},
                    reference_entropy_sgd),
    "apollo": ("apollo", {"lr": 0.5, "beta": 0.9, "eps": 1e-4, "warmup": 3, "init_lr": 0.01, "weight_decay": 1e-3},
               reference_apollo),
    "apollo-decoupled": ("apollo", {"lr": 0.5, "beta": 0.8, "eps": 1e-4, "warmup": 0, "init_lr": 0.01,
                                    "weight_decay": 1e-2, "decay_type": 1, "sigma": 0.5}, reference_apollo),
    "apollo-stable": ("apollo", {"lr": 0.3, "beta": 0.9, "eps": 1e-4, "warmup": 4, "init_lr": 0.05,
                                 "weight_decay": 1e-2, "decay_type": 2}, reference_apollo),
    "proxadam-l1": ("proxadam", {"lr": 0.02, "beta1": 0.9, "beta2": 0.99, "eps": 1e-8, "lambda": 0.05, "p": 1},
                    reference_proxadam),
    "proxadam-l0": ("proxadam", {"lr": 0.02, "beta1": 0.9, "beta2": 0.99, "eps": 1e-8, "lambda": 0.2, "p": 0,
                                 "weight_decay": 1e-3}, reference_proxadam),
    "proxadam-lhalf": ("proxadam", {"lr": 0.02, "beta1": 0.9, "beta2": 0.99, "eps": 1e-8, "lambda": 0.1, "p": 0.5},
                       reference_proxadam),
    "proxadam-ltwothirds": ("proxadam", {"lr": 0.02, "beta1": 0.9, "beta2": 0.99, "eps": 1e-8, "lambda": 0.1,
                                         "p": 2 / 3, "weight_decay": 1e-3}, reference_proxadam),
    "asam-sgd": ("asam", {"base": "sgd", "lr": 0.1, "momentum": 0.9, "rho": 0.5, "eta": 0.01},
                 lambda p, x, y, o: reference_sam(p, x, y, o, True)),
}


def check_hessian(exe, inp, work, p, x, y, failures):
    out = os.path.join(work, "hessian.safetensors")
    if run([exe, inp, out, "hessian"]) != 0:
        failures.append("hessian: optim_interop failed")
        return
    got, _ = read_safetensors(out)
    sizes = [t.numel() for t in p]

    def flat_loss(theta):
        parts, at = [], 0
        for t, n in zip(p, sizes):
            parts.append(theta[at:at + n].reshape(t.shape))
            at += n
        return loss_fn(parts, x[0], y[0])

    H = torch.autograd.functional.hessian(flat_loss, torch.cat([t.reshape(-1) for t in p]))
    eig = torch.linalg.eigvalsh(H)
    want = eig[eig.abs().argmax()].item()
    have = got["hessian.eigenvalue"].item()
    rel = abs(have - want) / abs(want)
    print(f"hessian: kiln {have:.6g} ({int(got['hessian.iterations'].item())} Hessian-vector products, "
          f"{got['hessian.seconds'].item() * 1e3:.1f} ms), exact {want:.6g} of {H.shape[0]} x {H.shape[0]}, "
          f"relative error {rel:.2e}")
    if not rel <= 0.01:
        failures.append(f"hessian: kiln's top eigenvalue {have} vs exact {want} (relative error {rel:.3g} > 1%)")


def check_fisher(exe, inp, work, p, x, failures):
    out = os.path.join(work, "fisher.safetensors")
    if run([exe, inp, out, "fisher"]) != 0:
        failures.append("fisher: optim_interop failed")
        return
    got, _ = read_safetensors(out)
    sizes = [t.numel() for t in p]

    def logits(theta):
        parts, at = [], 0
        for t, n in zip(p, sizes):
            parts.append(theta[at:at + n].reshape(t.shape))
            at += n
        return torch.tanh(x[0] @ parts[0] + parts[1]) @ parts[2] + parts[3]

    theta = torch.cat([t.reshape(-1) for t in p])
    f = logits(theta)
    J = torch.autograd.functional.jacobian(logits, theta)  # (N, C, P)
    prob = torch.softmax(f, 1)
    F = sum(J[i].T @ (torch.diag(prob[i]) - torch.outer(prob[i], prob[i])) @ J[i] for i in range(f.shape[0]))
    F = F / f.shape[0]
    want = torch.linalg.eigvalsh(F)[-1].item()
    have = got["fisher.eigenvalue"].item()
    rel = abs(have - want) / abs(want)
    print(f"fisher: kiln {have:.6g} ({int(got['fisher.iterations'].item())} Fisher-vector products), exact {want:.6g}, "
          f"relative error {rel:.2e}")
    if not rel <= 0.01:
        failures.append(f"fisher: kiln's top eigenvalue {have} vs exact {want} (relative error {rel:.3g} > 1%)")


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    verbose = "--verbose" in sys.argv
    if len(args) != 2:
        print(__doc__)
        return 2
    exe, work = args
    os.makedirs(work, exist_ok=True)
    p, x, y = make_inputs()
    inp = os.path.join(work, "in.safetensors")
    tensors = {f"p.{i}": t for i, t in enumerate(p)}
    tensors.update({"x": x, "y": y})
    write_safetensors(inp, tensors, {}, hf_order=False, separators=(",", ":"))
    failures = []
    for name, (kind, opts, ref) in CASES.items():
        out = os.path.join(work, f"{name}.safetensors")
        kv = [f"{k}={v}" for k, v in opts.items()]
        if run([exe, inp, out, kind] + kv) != 0:
            failures.append(f"{name}: optim_interop failed")
            continue
        got, _ = read_safetensors(out)
        want = ref(p, x, y, opts)
        before = len(failures)
        worst = 0.0
        for k in sorted(want):
            if k not in got:
                failures.append(f"{name}: kiln wrote no {k}")
                continue
            worst = max(worst, compare(f"{name} {k}", got[k], want[k], failures, verbose))
        moved = (want[f"step.{STEPS - 1}.p.0"] - p[0]).abs().max().item()
        if moved < 1e-3:
            failures.append(f"{name}: the params hardly moved ({moved:.3g}); the test would not see a wrong update")
        print(f"{name}: {STEPS} steps, max abs diff {worst:.3g}, params moved {moved:.3g}: "
              + ("ok" if len(failures) == before else "FAILED"))
    check_hessian(exe, inp, work, p, x, y, failures)
    check_fisher(exe, inp, work, p, x, failures)
    for f in failures:
        print("FAIL:", f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
