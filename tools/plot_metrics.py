#!/usr/bin/env python3
"""plot_metrics.py: a training run's metrics as PNG curves, one run or several side by side.

usage: plot_metrics.py RUN_OR_METRICS [RUN_OR_METRICS ...] -o OUT.png [--title TEXT]

Each argument is a run directory (its metrics.jsonl is read) or a metrics JSONL file: one
JSON object per line, as kiln's trainers write them (models/run/metrics.h). One figure,
one panel per kind of data found (a panel with no data is left out):
  loss          "loss" of the records with "type": "step", against "step"
  learning rate "lr" of the records that have one, against "step"
  throughput    "images_per_second" of any record, against "step" (else "epoch")
  accuracy      every key ending in "accuracy" (test_accuracy, ...), against "epoch"
Several runs are overlaid, each in its own colour, named by its run directory in the
legend. A torn last line (a run killed mid-write) is ignored; any other line that is not a
JSON object is an error naming the file and line. null values (a non-finite loss) are
left out of the curves.

Exit status: 0 with the PNG written (atomically: a temp file renamed over OUT.png); 1 when
an input is missing, unreadable, malformed, has no records or nothing to plot, or the PNG
cannot be written; 2 for a bad command line. Needs matplotlib (Debian: python3-matplotlib),
drawn with the Agg backend, so no display is needed.
"""

import argparse
import json
import math
import os
import sys
import tempfile

PROG = "plot_metrics.py"


class PlotError(Exception):
    pass


def metrics_path(arg):
    if os.path.isdir(arg):
        return os.path.join(arg, "metrics.jsonl")
    return arg


def run_label(arg):
    """The run's name: its directory (for a metrics file, the directory holding it)."""
    path = os.path.abspath(arg)
    if not os.path.isdir(path):
        path = os.path.dirname(path)
    return os.path.basename(path.rstrip(os.sep)) or path


def read_records(path):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise PlotError(f"{path}: no such file (give a run directory holding metrics.jsonl, or the file)")
    except OSError as e:
        raise PlotError(f"{path}: cannot read: {e.strerror or e}")
    lines = data.split(b"\n")
    # The last piece has no newline after it: a line cut short by a crash or a full disk
    # (or nothing, for a file that ends with its newline).
    torn = lines.pop()
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (ValueError, UnicodeDecodeError) as e:
            raise PlotError(f"{path}:{number}: not a JSON line ({e})")
        if not isinstance(record, dict):
            raise PlotError(f"{path}:{number}: not a JSON object")
        records.append(record)
    if torn.strip():
        try:
            record = json.loads(torn)
            if isinstance(record, dict):
                records.append(record)  # complete, only its newline missing
        except (ValueError, UnicodeDecodeError):
            print(f"{PROG}: note: {path}: ignoring its torn last line ({len(torn)} bytes)", file=sys.stderr)
    if not records:
        raise PlotError(f"{path}: no metrics records in it")
    return records


def number(v):
    """A plottable number, or None (missing, null, a string, a flag)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def series(records, ykey, xkeys, where=lambda r: True):
    """(xs, ys) of records with a number under ykey, x from the first of xkeys present
    (else the record's position), sorted by x."""
    pts = []
    for i, r in enumerate(records):
        if not where(r):
            continue
        y = number(r.get(ykey))
        if y is None:
            continue
        x = None
        for k in xkeys:
            x = number(r.get(k))
            if x is not None:
                break
        pts.append((x if x is not None else float(i), y))
    pts.sort(key=lambda p: p[0])
    return [p[0] for p in pts], [p[1] for p in pts]


def panels_for(records):
    """{panel: [(suffix, xs, ys)]} for one run."""
    out = {}
    xs, ys = series(records, "loss", ["step"], lambda r: r.get("type") == "step")
    if xs:
        out["loss"] = [("", xs, ys)]
    xs, ys = series(records, "lr", ["step"])
    if xs:
        out["lr"] = [("", xs, ys)]
    xs, ys = series(records, "images_per_second", ["step", "epoch"])
    if xs:
        out["throughput"] = [("", xs, ys)]
    keys = sorted({k for r in records for k in r if k.endswith("accuracy")})
    acc = []
    for k in keys:
        xs, ys = series(records, k, ["epoch", "step"])
        if xs:
            acc.append((k, xs, ys))
    if acc:
        out["accuracy"] = acc
    return out


PANELS = [
    ("loss", "training loss", "step", "loss"),
    ("lr", "learning rate", "step", "lr"),
    ("throughput", "throughput", "step", "images / s"),
    ("accuracy", "accuracy", "epoch", "accuracy"),
]


def import_matplotlib(argv):
    """matplotlib with the Agg backend. Debian's python3-matplotlib (what tools/setup.sh
    installs) belongs to /usr/bin/python3: when `python3` on PATH is another interpreter
    without it (pyenv, a venv), the script runs itself again under /usr/bin/python3."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot  # noqa: F401
        return
    except ImportError:
        pass
    system = "/usr/bin/python3"
    if (os.path.exists(system) and os.path.realpath(sys.executable) != os.path.realpath(system)
            and not os.environ.get("KILN_PLOT_METRICS_REEXEC")):
        os.environ["KILN_PLOT_METRICS_REEXEC"] = "1"
        os.execv(system, [system, os.path.abspath(__file__)] + argv)
    raise PlotError(f"matplotlib is not installed for {sys.executable} "
                    "(Debian: apt-get install python3-matplotlib)")


def plot(runs, out_path, title):
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    present = [p for p in PANELS if any(p[0] in data for _, data in runs)]
    if not present:
        raise PlotError("nothing to plot: no loss, lr, images_per_second or *accuracy values in "
                        + ", ".join(label for label, _ in runs))
    n = len(present)
    cols = 1 if n == 1 else 2
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(6.4 * cols, 4.2 * rows), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key().get("color", ["C0", "C1", "C2", "C3"])
    styles = ["-", "--", ":", "-."]
    for ax, (key, name, xlabel, ylabel) in zip(axes.flat, present):
        for i, (label, data) in enumerate(runs):
            colour = colours[i % len(colours)]
            for j, (suffix, xs, ys) in enumerate(data.get(key, [])):
                text = label + (f": {suffix}" if suffix else "")
                many = len(xs) > 40
                ax.plot(xs, ys, styles[j % len(styles)], color=colour, label=text,
                        linewidth=1.0 if many else 1.5, marker=None if many else "o", markersize=3)
        if key == "loss":
            ys = [y for _, data in runs for _, _, s in data.get(key, []) for y in s]
            if ys and min(ys) > 0 and max(ys) / min(ys) > 100:
                ax.set_yscale("log")
        if key == "lr":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
        if xlabel == "epoch":
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(name)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()

    out_dir = os.path.dirname(os.path.abspath(out_path))
    try:
        os.makedirs(out_dir, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".plot_metrics.", suffix=".png", dir=out_dir)
    except OSError as e:
        raise PlotError(f"cannot write {out_path}: {e.strerror or e}")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp's 0600 is for the temp file, not the plot
        with os.fdopen(fd, "wb") as f:
            fig.savefig(f, format="png", dpi=100)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out_path)
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise PlotError(f"cannot write {out_path}: {e.strerror or e}")
    finally:
        plt.close(fig)


def main(argv):
    p = argparse.ArgumentParser(
        prog=PROG, description="Plot training metrics (kiln's metrics.jsonl) as PNG curves: loss, "
                               "learning rate, throughput and accuracy; several runs side by side.")
    p.add_argument("inputs", nargs="+", metavar="RUN_OR_METRICS",
                   help="a run directory (its metrics.jsonl) or a metrics JSONL file")
    p.add_argument("-o", "--output", required=True, metavar="OUT.png", help="the PNG to write")
    p.add_argument("--title", help="a title over the figure")
    a = p.parse_args(argv)
    try:
        import_matplotlib(argv)
        labels = [run_label(x) for x in a.inputs]
        if len(set(labels)) != len(labels):  # two runs of the same name: tell them apart
            labels = [os.path.normpath(x) for x in a.inputs]
        runs = [(label, panels_for(read_records(metrics_path(x)))) for label, x in zip(labels, a.inputs)]
        plot(runs, a.output, a.title)
    except PlotError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
