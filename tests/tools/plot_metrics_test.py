"""tools/plot_metrics.py on synthetic metrics: the PNG is produced and is not trivial.

Two synthetic runs (step records with loss and lr, epoch records with test_accuracy and
images_per_second, the first with a torn last line) plotted together; the PNG must exist,
start with the PNG signature, be larger than a few KB and, read back with matplotlib, not
be a blank image. Then the errors: a missing run, an empty file, a malformed line, nothing
to plot: each exits 1 with a message naming the file.

usage: python3 plot_metrics_test.py PATH/TO/plot_metrics.py WORK_DIR   (exit 77: skipped)
"""

import json
import math
import os
import shutil
import subprocess
import sys

SKIP = 77


def write_run(d, name, steps, epochs, torn=False, scale=1.0):
    run = os.path.join(d, name)
    os.makedirs(run, exist_ok=True)
    lines = []
    per_epoch = steps // epochs
    for s in range(1, steps + 1):
        lr = 3e-3 * 0.5 * (1 + math.cos(math.pi * s / steps))
        loss = scale * (2.3 * math.exp(-s / 40) + 0.3 + 0.05 * math.sin(s))
        lines.append({"type": "step", "epoch": (s - 1) // per_epoch, "step": s, "loss": loss, "lr": lr})
        if s % per_epoch == 0:
            e = s // per_epoch
            lines.append({"type": "epoch", "epoch": e, "step": s, "train_loss": loss, "test_loss": loss * 1.1,
                          "test_accuracy": 1 - 0.5 / (e * scale + 1), "images_per_second": 600 + 20 * e * scale})
    lines.append({"type": "step", "epoch": 0, "step": steps + 1, "loss": None, "lr": 0.0})  # a non-finite loss
    with open(os.path.join(run, "metrics.jsonl"), "w") as f:
        for r in lines:
            f.write(json.dumps(r) + "\n")
        if torn:
            f.write('{"type": "step", "epoch": 3, "st')  # killed mid-line
    return run


def main():
    script, work = sys.argv[1], sys.argv[2]
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.image as mpimg
    except ImportError:
        print("plot_metrics_test: SKIP: matplotlib is not installed (Debian: python3-matplotlib)")
        return SKIP
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    failures = []

    def run(args):
        p = subprocess.run([sys.executable, script] + args, capture_output=True, text=True, timeout=120)
        return p.returncode, p.stdout, p.stderr

    def check(cond, what, rc, err):
        if not cond:
            failures.append(f"{what} (exit {rc}; stderr: {err.strip()!r})")
        else:
            print(f"ok: {what}")

    a = write_run(work, "run_a", 120, 4, torn=True)
    b = write_run(work, "run_b", 90, 3, scale=1.3)
    out = os.path.join(work, "plots", "compare.png")
    rc, _, err = run([a, os.path.join(b, "metrics.jsonl"), "-o", out, "--title", "two runs"])
    check(rc == 0, "two runs (a directory and a file) are plotted", rc, err)
    check("torn last line" in err, "the torn last line is ignored, with a note", rc, err)
    if rc == 0:
        with open(out, "rb") as f:
            data = f.read()
        check(data.startswith(b"\x89PNG\r\n\x1a\n"), "the output starts with the PNG signature", rc, err)
        check(len(data) > 20_000, f"the PNG is not trivially small ({len(data)} bytes)", rc, err)
        img = mpimg.imread(out)
        print(f"  image {img.shape[1]}x{img.shape[0]}, {len(data)} bytes")
        check(img.shape[0] >= 400 and img.shape[1] >= 600, f"the figure has a sensible size {img.shape}", rc, err)
        rgb = img[..., :3]
        flat = rgb.reshape(-1, 3)
        white = (flat > 0.98).all(axis=1).mean()
        colours = len({tuple(px) for px in (flat[:: max(1, len(flat) // 50000)] * 255).astype(int).tolist()})
        print(f"  std {rgb.std():.3f}, white fraction {white:.3f}, distinct colours (sampled) {colours}")
        check(rgb.std() > 0.02, "the pixel values vary (not a blank image)", rc, err)
        check(white < 0.99, "not almost all white", rc, err)
        check(colours > 20, "curves in several colours", rc, err)
        leftovers = [n for n in os.listdir(os.path.dirname(out)) if n.startswith(".plot_metrics.")]
        check(not leftovers, "no temp file left next to the PNG", rc, err)

    # A run with step records only: one panel pair (loss, lr), still a real image.
    only = os.path.join(work, "steps_only")
    os.makedirs(only)
    with open(os.path.join(only, "metrics.jsonl"), "w") as f:
        for s in range(1, 30):
            f.write(json.dumps({"type": "step", "step": s, "loss": 1.0 / s}) + "\n")
    rc, _, err = run([only, "-o", os.path.join(work, "one.png")])
    check(rc == 0 and os.path.getsize(os.path.join(work, "one.png")) > 5000, "a run with only a loss curve", rc, err)

    # Errors: exit 1, the file named.
    missing = os.path.join(work, "no_such_run")
    rc, _, err = run([a, missing, "-o", os.path.join(work, "x.png")])
    check(rc == 1 and "no_such_run" in err and "no such file" in err, "a missing run is an error", rc, err)
    check(not os.path.exists(os.path.join(work, "x.png")), "no PNG after an error", rc, err)
    empty = os.path.join(work, "empty")
    os.makedirs(empty)
    open(os.path.join(empty, "metrics.jsonl"), "w").close()
    rc, _, err = run([empty, "-o", os.path.join(work, "x.png")])
    check(rc == 1 and "no metrics records" in err and "empty" in err, "an empty metrics file is an error", rc, err)
    torn_only = os.path.join(work, "torn_only.jsonl")
    with open(torn_only, "w") as f:
        f.write('{"type": "st')
    rc, _, err = run([torn_only, "-o", os.path.join(work, "x.png")])
    check(rc == 1 and "no metrics records" in err, "a file holding only a torn line has no records", rc, err)
    bad = os.path.join(work, "bad.jsonl")
    with open(bad, "w") as f:
        f.write('{"type": "step", "step": 1, "loss": 1}\nnot json\n{"type": "step", "step": 2, "loss": 1}\n')
    rc, _, err = run([bad, "-o", os.path.join(work, "x.png")])
    check(rc == 1 and "bad.jsonl:2" in err, "a malformed line is an error naming file:line", rc, err)
    nothing = os.path.join(work, "nothing.jsonl")
    with open(nothing, "w") as f:
        f.write('{"type": "config", "batch_size": 64}\n')
    rc, _, err = run([nothing, "-o", os.path.join(work, "x.png")])
    check(rc == 1 and "nothing to plot" in err, "records with nothing to plot are an error", rc, err)
    rc, _, err = run([a])
    check(rc == 2 and "-o" in err, "-o is required", rc, err)

    if failures:
        print(f"\n{len(failures)} FAILED:\n  " + "\n  ".join(failures))
        return 1
    print("plot_metrics: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
