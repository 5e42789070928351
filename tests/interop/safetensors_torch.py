#!/usr/bin/env python3
"""PyTorch interop test of kiln's safetensors files (ctest: safetensors_torch_interop).

PyTorch's side writes and reads the format by hand (struct + json + raw tensor bytes), not
with the `safetensors` package, so that the test depends on the format's definition only:
  1. PyTorch writes tensors built from formulas (HF's order and JSON spacing); kiln loads
     them and compares with the same formulas (safetensors_interop check-torch).
  2. kiln writes those tensors from non-contiguous views; PyTorch reads the file and
     compares with its formulas.
  3. PyTorch writes random tensors of every dtype (NaNs included); kiln loads and saves
     them again; PyTorch compares the bytes.
Exit status: 0 passed, 1 failed, 77 skipped (python3-torch is not installed).

usage: safetensors_torch.py SAFETENSORS_INTEROP_EXE WORK_DIR
"""
import json
import os
import struct
import subprocess
import sys
import zlib

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools"))

try:
    import torch
except ImportError:
    print("SKIP: python3-torch is not installed (apt-get install python3-torch)")
    sys.exit(77)

from safetensors_io import CRC_PREFIX, DTYPES, NAME_OF, read_safetensors, tensor_bytes, write_safetensors  # noqa: E402,F401


def expected_tensors():
    """Keep in step with expected() in safetensors_interop.cpp."""
    inf = float("inf")
    return {
        "f32": torch.tensor([i * 0.25 - 1.0 for i in range(12)], dtype=torch.float32).reshape(3, 4),
        "f64": torch.tensor([i / 3.0 for i in range(6)], dtype=torch.float64).reshape(2, 3),
        "f16": torch.tensor([(i - 5) * 0.125 for i in range(10)] + [inf, -inf, -0.0, 65504.0, 2.0 ** -24],
                            dtype=torch.float16),
        "bf16": torch.tensor([(i - 5) * 0.5 for i in range(10)], dtype=torch.bfloat16).reshape(2, 5),
        "bf16_special": torch.tensor([inf, -0.0, 2.0 ** 100, -(2.0 ** -130)], dtype=torch.bfloat16),
        "i32": torch.tensor([-2 ** 31, -1000000, 0, 1, 1000000, 2 ** 31 - 1], dtype=torch.int32),
        "i64": torch.tensor([-2 ** 63, -1, 0, 2 ** 53 + 1, 2 ** 63 - 1], dtype=torch.int64),
        "u8": torch.tensor([i * 17 for i in range(16)], dtype=torch.uint8).reshape(4, 4),
        "bool": torch.tensor([i % 3 == 0 for i in range(7)], dtype=torch.bool),
        "scalar": torch.tensor(3.5, dtype=torch.float32),
        "empty": torch.zeros(0, 3, dtype=torch.float32),
        "empty_i64": torch.zeros(2, 0, 4, dtype=torch.int64),
        "name_\u00df_\U0001F525": torch.tensor([1.0, 2.0], dtype=torch.float32),
    }


def same(a, b):
    """Same dtype, shape and bits (so NaN == NaN and -0.0 != 0.0)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    return tensor_bytes(a) == tensor_bytes(b)


def run(cmd):
    print("+", " ".join(cmd), flush=True)
    return subprocess.run(cmd).returncode


def main():
    if len(sys.argv) != 3:
        print(__doc__)
        return 2
    exe, work = sys.argv[1], sys.argv[2]
    os.makedirs(work, exist_ok=True)
    assert sys.byteorder == "little"
    failures = []
    want = expected_tensors()

    # 1. PyTorch writes, kiln reads.
    torch_file = os.path.join(work, "torch_written.safetensors")
    write_safetensors(torch_file, want, {"format": "pt", "source": "torch \u00e9"}, hf_order=True,
                      separators=(", ", ": "))
    if run([exe, "check-torch", torch_file]) != 0:
        failures.append("kiln did not read PyTorch's file as expected")

    # 2. kiln writes, PyTorch reads.
    kiln_file = os.path.join(work, "kiln_written.safetensors")
    if run([exe, "write-kiln", kiln_file]) != 0:
        failures.append("kiln could not write its file")
    else:
        got, meta = read_safetensors(kiln_file)
        if meta != {"format": "pt", "writer": "kiln \u2713"}:
            failures.append(f"metadata of kiln's file: {meta}")
        if set(got) != set(want):
            failures.append(f"tensor names of kiln's file: {sorted(got)}")
        for name in sorted(set(got) & set(want)):
            if not same(got[name], want[name]):
                failures.append(f"kiln wrote {name!r} as {got[name]}, expected {want[name]}")
        print(f"torch read {len(got)} tensors from kiln's file")

    # 3. Random tensors of every dtype through kiln and back.
    g = torch.Generator().manual_seed(1234)
    rnd = {
        "f32": torch.randn(17, 5, generator=g),
        "f64": torch.randn(3, 7, generator=g, dtype=torch.float64),
        "f16": torch.randn(33, generator=g).to(torch.float16),
        "bf16": torch.randn(4, 4, 4, generator=g).to(torch.bfloat16),
        "i32": torch.randint(-2 ** 31, 2 ** 31 - 1, (9,), generator=g, dtype=torch.int32),
        "i64": torch.randint(-2 ** 63, 2 ** 63 - 1, (2, 3), generator=g, dtype=torch.int64),
        "u8": torch.randint(0, 256, (31,), generator=g, dtype=torch.uint8),
        "bool": torch.rand(13, generator=g) < 0.5,
        "transposed": torch.randn(6, 4, generator=g).t(),
        "nans": torch.tensor([float("nan"), -float("nan"), 1.0]),
        "nans_bf16": torch.tensor([float("nan"), float("inf")]).to(torch.bfloat16),
    }
    src = os.path.join(work, "torch_random.safetensors")
    dst = os.path.join(work, "kiln_resaved.safetensors")
    write_safetensors(src, rnd, None, hf_order=False, separators=(",", ":"))
    if run([exe, "resave", src, dst]) != 0:
        failures.append("kiln could not load and save PyTorch's random tensors")
    else:
        got, meta = read_safetensors(dst)
        if meta is not None:
            failures.append(f"kiln invented metadata: {meta}")
        for name, t in rnd.items():
            if name not in got or not same(got[name], t):
                failures.append(f"random tensor {name!r} changed on its way through kiln")
        print(f"torch compared {len(rnd)} random tensors after kiln's load and save")

    for f in failures:
        print("FAIL:", f)
    print("safetensors torch interop:", "FAILED" if failures else "passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
