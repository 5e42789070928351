"""Helpers of the PyTorch round-trip tests (tests/interop/*_torch.py): comparing kiln's
tensors with PyTorch's and running kiln's side."""
import subprocess


def compare(what, got, want, failures, verbose):
    if got.shape != want.shape or got.dtype != want.dtype:
        failures.append(f"{what}: kiln {got.dtype} {tuple(got.shape)} vs torch {want.dtype} {tuple(want.shape)}")
        return 0.0
    diff = (got.double() - want.double()).abs().max().item() if got.numel() else 0.0
    scale = want.double().abs().max().item() if want.numel() else 0.0
    tol = 1e-5 + 1e-4 * scale
    ok = diff <= tol
    if verbose or not ok:
        print(f"  {what:40s} max abs diff {diff:.3g} (max |kiln| {scale:.3g}, tol {tol:.3g})"
              + ("" if ok else "  MISMATCH"))
    if not ok:
        failures.append(f"{what}: max abs diff {diff:.3g} > {tol:.3g}")
    return diff


def run(cmd):
    print("+", " ".join(cmd), flush=True)
    return subprocess.run(cmd).returncode
