#!/usr/bin/python3
"""gpu_bundle: tools/gpu_bundle.sh on this CUDA build, as far as a machine without a GPU
allows. The bundle builds from the build tree, stays under the device tool's size limit,
every binary in it resolves all its libraries from the bundle except the ones the GPU
host provides (the script checks this and fails otherwise), and the runner's dry run
lists every part and writes a summary.json. Also the runner's own checks: a part over its
time limit is recorded as a timeout, not a hang.

usage: test_gpu_bundle.py REPO BUILD_DIR WORK_DIR
"""
import json
import os
import shutil
import subprocess
import sys
import tarfile


def main():
    repo, build, work = sys.argv[1:4]
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    out = os.path.join(work, "bundle")
    r = subprocess.run(["bash", os.path.join(repo, "tools", "gpu_bundle.sh"), "--no-build", "--build-dir", build,
                        "--out", out], capture_output=True, text=True, timeout=900)
    print(r.stdout[-4000:])
    print(r.stderr[-4000:], file=sys.stderr)
    assert r.returncode == 0, f"gpu_bundle.sh failed ({r.returncode})"
    assert "ldd: every binary resolves" in r.stdout, "the library check did not run"

    archive = os.path.join(out, "kiln_gpu.tar.xz")
    size = os.path.getsize(archive) + os.path.getsize(os.path.join(out, "run.sh"))
    print(f"bundle size: {size / 2**20:.1f} MiB")
    assert size < 60 * 2**20, f"bundle is {size / 2**20:.1f} MiB"
    with tarfile.open(archive) as t:
        names = set(n.lstrip("./") for n in t.getnames())
    for need in ("bin/kiln_cuda_tests", "bin/kiln_bench_kernels", "bin/kiln_train_cnn", "bin/kiln_bench_train_step",
                 "gpu_check.sh", "tools/bench_vs_torch.py", "tools/kiln-run",
                 "data/fashion-mnist/train-images-idx3-ubyte.gz", "data/fashion-mnist/t10k-labels-idx1-ubyte.gz"):
        assert need in names, f"{need} missing from the bundle"
    libs = [n for n in names if n.startswith("lib/")]
    assert any(n.startswith("lib/libkiln.so") for n in libs), libs
    host = ("libcuda.so", "libcudart.so", "libcublas", "libcudnn", "libnccl")
    assert not [n for n in libs if os.path.basename(n).startswith(host)], "host-provided libraries were packed"

    # The dry run gpu_bundle.sh ran: every part listed, nothing executed.
    summary = json.load(open(os.path.join(out, "dry_run", "summary.json")))
    parts = {p["name"]: p for p in summary["parts"]}
    assert summary["dry_run"] is True
    for name in ("env", "cuda_tests", "train_cnn", "bench_kernels", "train_step", "ddp", "neighbor", "research", "gan_step", "paleo", "memcheck",
                 "racecheck"):
        assert name in parts, f"part {name} missing from the dry run: {sorted(parts)}"
        assert parts[name]["status"] == "dry", parts[name]
    assert "kiln_cuda_tests" in parts["cuda_tests"]["command"]
    assert "--device cuda" in parts["train_cnn"]["command"]

    # Without a GPU the real run must end (no hang) with the CUDA tests skipped (exit 77)
    # and the runs that need a GPU failing cleanly, each within its limit.
    real = os.path.join(work, "real")
    r = subprocess.run(["bash", os.path.join(out, "run.sh"), "--out", real, "--only", "cuda_tests,train_cnn",
                        "--budget", "120"], capture_output=True, text=True, timeout=300)
    print(r.stdout[-3000:])
    summary = json.load(open(os.path.join(real, "summary.json")))
    parts = {p["name"]: p for p in summary["parts"]}
    assert set(parts) == {"env", "cuda_tests", "train_cnn"}, parts
    if parts["cuda_tests"]["status"] == "skipped":  # no GPU here: kiln_cuda_tests exits 77
        assert parts["train_cnn"]["status"] == "fail", parts["train_cnn"]
        assert r.returncode == 1
        log = open(parts["train_cnn"]["log"]).read()
        assert "cuda" in log.lower(), log
    print("gpu_bundle: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
