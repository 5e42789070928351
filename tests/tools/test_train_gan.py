#!/usr/bin/env python3
"""kiln_train_gan as a user runs it. One ctest per case:

  toy           ring8 with every stabiliser (vanilla, label smoothing, feature matching,
                minibatch discrimination, unrolled second and first order, mode
                regulariser, WGAN-GP, spectral norm, hinge, relativistic; LAMB, ProxAdam, SAM,
                ASAM and Entropy-SGD): exit 0, finite losses, the summary's keys, the scatter
                PNG, SAM's sharpness of each step
  resume        straight vs interrupted + --resume: identical per-step losses, each step once
                (also with SAM, and with Entropy-SGD and WGAN-GP); --max-minutes stops between
                epochs and its clock continues after --resume
  images        Fashion-MNIST DCGAN with a classifier trained by kiln_train_cnn: MODE score,
                its real-data baseline, Frechet distance, class coverage, an 8 x 8 sample grid;
                --eval-images: the real test images score the real baseline exactly
  folder        a generated folder of RGB PNGs (folder:PATH) at 32 px; a folder without images
                and a corrupt image fail with a clear error
  ddp           2 ranks under kiln-run train the single process's G and D (MLP GAN, no BN);
                --dp hierarchical the same; --dp neighbor on 3 ranks trains, records the
                consensus distances and resumes exactly
  errors        bad flag combinations exit 2 with a message naming the flag

usage: test_train_gan.py CASE GAN_EXE CNN_EXE KILN_RUN WORK_DIR
"""
import gzip
import json
import math
import os
import shutil
import struct
import subprocess
import sys
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import check, configure, fail, run, summary  # noqa: E402

CASE, EXE, CNN_EXE, KILN_RUN, WORK = sys.argv[1:6]
configure(CASE, EXE, KILN_RUN)
FMNIST = "/usr/share/datasets/fashion-mnist"


def steps(run_dir):
    out = {}
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        for line in f:
            r = json.loads(line)
            if r.get("type") == "step":
                check(r["step"] not in out, f"step {r['step']} recorded twice in {run_dir}")
                out[r["step"]] = (r["d_loss"], r["g_loss"])
    return out


def last_checkpoint(run_dir):
    d = os.path.join(run_dir, "checkpoints")
    names = sorted(n for n in os.listdir(d) if n.endswith(".safetensors"))
    check(names, f"no checkpoint in {d}")
    return os.path.join(d, names[-1])


def read_safetensors(path):
    """The f32/f64 tensors of a safetensors file as flat lists of floats."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for k, v in header.items():
        if k == "__metadata__" or v["dtype"] not in ("F32", "F64"):
            continue
        a, b = v["data_offsets"]
        fmt = "f" if v["dtype"] == "F32" else "d"
        out[k] = struct.unpack(f"<{(b - a) // struct.calcsize(fmt)}{fmt}", data[a:b])
    return out


def fresh(name):
    d = os.path.join(WORK, name)
    shutil.rmtree(d, ignore_errors=True)
    return d


def png_size(path):
    with open(path, "rb") as f:
        head = f.read(24)
    check(head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG")
    return struct.unpack(">II", head[16:24])


def write_png(path, w, h, rgb):
    raw = b"".join(b"\x00" + bytes(rgb) * w for _ in range(h))
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
    data += chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


TOY = ["--data", "ring8", "--device", "cpu", "--no-plot", "--seed", "3", "--batch-size", "128"]

os.makedirs(WORK, exist_ok=True)

if CASE == "toy":
    variants = {
        "vanilla": [],
        "smooth": ["--label-smoothing", "0.9"],
        "fm": ["--feature-matching"],
        "mbd": ["--minibatch-discrimination", "--mbd-kernels", "8"],
        "unrolled": ["--unrolled", "3"],
        "unrolled1": ["--unrolled", "3", "--unrolled-first-order"],
        "unrolled-ns": ["--unrolled", "3", "--g-loss", "non-saturating"],
        "minimax-ema": ["--g-loss", "minimax", "--g-ema", "0.99"],
        "mr": ["--mode-regularizer"],
        "gp": ["--wgan-gp"],
        "lamb-noise": ["--optimizer", "lamb", "--grad-noise", "1e-4"],
        "proxadam": ["--optimizer", "proxadam", "--prox-lambda", "1e-2", "--prox-p", "0.5"],
        "sam": ["--optimizer", "sam"],
        "asam-gp": ["--optimizer", "asam", "--sam-base", "lamb", "--wgan-gp"],
        "esgd": ["--optimizer", "entropy-sgd"],
        "esgd-gp": ["--optimizer", "entropy-sgd", "--wgan-gp", "--esgd-inner-steps", "2"],
        "topk": ["--top-k", "--top-k-gamma", "0.5"],
        "topk-gp": ["--top-k", "--top-k-gamma", "0.5", "--wgan-gp"],
        "topk-unrolled": ["--top-k", "--top-k-gamma", "0.5", "--unrolled", "2"],
        "sn": ["--spectral-norm"],
        "sn-hinge": ["--spectral-norm", "--hinge"],
        "sn-unrolled": ["--spectral-norm", "--unrolled", "2"],
        "ra": ["--relativistic"],
        "ra-mr-esgd": ["--relativistic", "--label-smoothing", "0.9", "--mode-regularizer", "--optimizer",
                       "entropy-sgd", "--esgd-inner-steps", "2"],
    }
    for name, flags in variants.items():
        d = fresh(name)
        p = run(TOY + ["--epochs", "2", "--steps-per-epoch", "10", "--run-dir", d] + flags)
        s = summary(p)
        for k in ("modes_covered", "high_quality", "images_per_second", "seconds", "samples_png", "metrics"):
            check(k in s, f"{name}: summary lacks {k}: {s}")
        check(0 <= s["modes_covered"] <= 8 and 0 <= s["high_quality"] <= 1, f"{name}: {s}")
        check(math.isfinite(s["d_loss"]) and math.isfinite(s["g_loss"]), f"{name}: non-finite losses {s}")
        check(s["iterations"] == 20, f"{name}: {s['iterations']} iterations")
        check(png_size(s["samples_png"]) == (512, 512), f"{name}: scatter size")
        check(os.path.exists(os.path.join(d, "samples", "epoch-002.png")), f"{name}: no per-epoch scatter")
        check("D(G(z))" in p.stderr, f"{name}: no progress line with D(G(z)):\n{p.stderr}")
    # WGAN-GP updates G every 5th iteration: 20 iterations, 4 G steps.
    v = summary(run(TOY + ["--epochs", "1", "--steps-per-epoch", "2", "--run-dir", fresh("defaults")]))
    check(v["mbd_kernels"] == 0 and v["label_smoothing"] == 1 and v["lr_d"] == v["lr"] == 1e-3, f"2-D defaults: {v}")
    st = steps(os.path.join(WORK, "gp"))
    check(sum(1 for v in st.values() if v[1] is not None) == 4, f"gp: G steps {st}")
    # SAM: every step records the sharpness L(w + e(w)) - L(w) of D's and of G's step; SAM's
    # ascent step raises the loss it climbs, so the sharpness is positive on average.
    for name in ("sam", "asam-gp"):
        recs = [json.loads(l) for l in open(os.path.join(WORK, name, "metrics.jsonl"))]
        rs = [r for r in recs if r.get("type") == "step"]
        ds = [r.get("d_sharpness") for r in rs]
        gs = [r.get("g_sharpness") for r in rs if r.get("g_loss") is not None]
        check(len(rs) == 20 and all(v is not None and math.isfinite(v) for v in ds + gs) and gs,
              f"{name}: sharpness per step {ds} {gs}")
        check(sum(ds) > 0 and sum(gs) > 0, f"{name}: sharpness {ds} {gs}")
    check(steps(os.path.join(WORK, "sam")) != steps(os.path.join(WORK, "vanilla")), "sam gave Adam's losses")
    check(steps(os.path.join(WORK, "esgd")) != steps(os.path.join(WORK, "vanilla")), "entropy-sgd gave Adam's losses")
    # --top-k at gamma 0.5: k is the whole batch in epoch 1 (the vanilla run's steps exactly),
    # half of it in epoch 2 (G's loss over the 64 of 128 samples D rates most real: other steps).
    tk, va = steps(os.path.join(WORK, "topk")), steps(os.path.join(WORK, "vanilla"))
    check(all(tk[i] == va[i] for i in range(1, 11)), f"top-k changed epoch 1: {tk} {va}")
    check(all(tk[i][1] != va[i][1] for i in range(11, 21)), f"top-k did not change epoch 2's G losses: {tk} {va}")
    # --spectral-norm changes D from the first step; the hinge loss of D is never negative.
    sn, snh = steps(os.path.join(WORK, "sn")), steps(os.path.join(WORK, "sn-hinge"))
    check(sn[1] != va[1] and sn != snh, f"--spectral-norm / --hinge: {sn[1]} {snh[1]} {va[1]}")
    check(all(d >= 0 for d, _ in snh.values()), f"hinge D losses {snh}")
    # --relativistic: D's and G's losses differ from the first step; D(x) and D(G(z)) are the
    # relativistic ones, sigmoid(D(x) - mean D(G(z))) and sigmoid(D(G(z)) - mean D(x)), whose
    # logits are opposite in the mean: their mean is 1/2 only when D cannot tell the sides apart.
    ra = steps(os.path.join(WORK, "ra"))
    check(ra[1][0] != va[1][0] and ra[1][1] != va[1][1], f"--relativistic: {ra[1]} vs {va[1]}")
    rr = [json.loads(l) for l in open(os.path.join(WORK, "ra", "metrics.jsonl"))]
    rr = [r for r in rr if r.get("type") == "step"]
    check(all(0 < r["d_real"] < 1 and 0 < r["d_fake"] < 1 for r in rr), f"--relativistic D outputs {rr[:2]}")
    check(sum(r["d_real"] > 0.5 for r in rr) > len(rr) / 2, f"--relativistic: D(x) not above 1/2 mostly {rr}")

elif CASE == "resume":
    # --g-ema: the metrics sample the averaged G, whose weights and count the checkpoint holds.
    common = TOY + ["--epochs", "3", "--steps-per-epoch", "12", "--unrolled", "2", "--minibatch-discrimination",
                    "--mbd-kernels", "4", "--g-ema", "0.9"]
    a, b = fresh("straight"), fresh("interrupted")
    sa = summary(run(common + ["--run-dir", a]))
    p = run(common + ["--run-dir", b, "--save-every", "5", "--stop-after-steps", "17"])
    check("--resume" in p.stderr, f"interrupted run does not say how to resume:\n{p.stderr}")
    sb = summary(run(common + ["--run-dir", b, "--resume"]))
    la, lb = steps(a), steps(b)
    check(sorted(la) == list(range(1, 37)) and sorted(lb) == list(range(1, 37)), f"steps {sorted(lb)}")
    check(la == lb, "per-step losses differ after resume:\n" +
          "\n".join(f"{k}: {la[k]} vs {lb.get(k)}" for k in sorted(la) if la[k] != lb.get(k)))
    check(sa["modes_covered"] == sb["modes_covered"] and sa["high_quality"] == sb["high_quality"], f"{sa} vs {sb}")
    p = run(common + ["--run-dir", b, "--resume", "--batch-size", "64"], ok=False)
    check(p.returncode == 1 and "batch_size" in p.stderr, f"resume with another batch: {p.returncode} {p.stderr}")
    # SAM keeps no state between steps: a SAM run resumes exactly as well.
    common = TOY + ["--epochs", "2", "--steps-per-epoch", "10", "--optimizer", "sam", "--minibatch-discrimination",
                    "--mbd-kernels", "4"]
    a, b = fresh("sam-straight"), fresh("sam-interrupted")
    run(common + ["--run-dir", a])
    run(common + ["--run-dir", b, "--save-every", "5", "--stop-after-steps", "7"])
    run(common + ["--run-dir", b, "--resume"])
    check(steps(a) == steps(b), "sam: per-step losses differ after resume")
    # Entropy-SGD too: D's and G's scoping and Langevin noise continue at their steps.
    common = TOY + ["--epochs", "2", "--steps-per-epoch", "10", "--optimizer", "entropy-sgd", "--wgan-gp"]
    a, b = fresh("esgd-straight"), fresh("esgd-interrupted")
    run(common + ["--run-dir", a])
    run(common + ["--run-dir", b, "--save-every", "5", "--stop-after-steps", "7"])
    run(common + ["--run-dir", b, "--resume"])
    check(steps(a) == steps(b), "entropy-sgd: per-step losses differ after resume")
    # Spectral normalisation: the power iteration's u and v are in the checkpoint.
    common = TOY + ["--epochs", "2", "--steps-per-epoch", "10", "--spectral-norm", "--hinge"]
    a, b = fresh("sn-straight"), fresh("sn-interrupted")
    run(common + ["--run-dir", a])
    run(common + ["--run-dir", b, "--save-every", "5", "--stop-after-steps", "7"])
    run(common + ["--run-dir", b, "--resume"])
    check(steps(a) == steps(b), "spectral norm: per-step losses differ after resume")
    check("D.main.0.u" in read_safetensors(last_checkpoint(b)), "spectral norm: no D.main.0.u in the checkpoint")
    # --max-minutes: no epoch starts that would end after the budget; the checkpoint keeps
    # the time spent, and a resumed run (here without a budget) trains on from there.
    common = TOY + ["--steps-per-epoch", "300", "--lr-decay", "none"]
    c = fresh("budget")
    p = run(common + ["--epochs", "30", "--run-dir", c, "--max-minutes", "0.04"])
    s = summary(p)
    check(s["out_of_time"] is True and s["epochs"] < 30 and "--max-minutes 0.04 budget" in p.stderr,
          f"--max-minutes 0.04 (2.4 s) of 30 epochs: {s}\n{p.stderr[-2000:]}")
    if s["epochs"] > 0:
        spent = read_safetensors(last_checkpoint(c))["train.seconds"][0]
        check(spent > 0, f"checkpointed train.seconds {spent}")
    r = summary(run(common + ["--epochs", str(s["epochs"] + 1), "--run-dir", c, "--resume", "--max-minutes", "0"]))
    check(r["epochs"] == s["epochs"] + 1 and r["out_of_time"] is False, f"resumed without a budget: {r}")

elif CASE == "images":
    if not os.path.exists(os.path.join(FMNIST, "train-images-idx3-ubyte.gz")):
        print("skipped: dataset-fashion-mnist is not installed")
        sys.exit(77)
    cls = fresh("classifier")
    run(["--device", "cpu", "--limit-train", "1024", "--limit-test", "256", "--epochs", "1", "--width", "4",
         "--batch-size", "128", "--no-plot", "--run-dir", cls], exe=CNN_EXE)
    d = fresh("dcgan")
    p = run(["--data", "fashion-mnist", "--device", "cpu", "--no-plot", "--limit-train", "256", "--batch-size", "32",
             "--epochs", "1", "--width", "8", "--eval-samples", "300", "--classifier", cls, "--run-dir", d])
    s = summary(p)
    for k in ("mode_score", "mode_score_real", "inception_score", "frechet", "frechet_real", "classes_covered",
              "class_ratio", "images_per_second", "seconds", "samples_png", "metrics"):
        check(k in s, f"summary lacks {k}: {s}")
    check(1 <= s["mode_score"] <= 10 and 1 <= s["mode_score_real"] <= 10, f"MODE scores out of [1, 10]: {s}")
    # The image defaults: minibatch discrimination (8 kernels), label smoothing 0.7, G at 3e-4
    # and D at two thirds of it.
    check(s["mbd_kernels"] == 8 and s["label_smoothing"] == 0.7, f"image defaults: {s}")
    check(s["lr"] == 3e-4 and s["lr_d"] == 2e-4, f"image learning rates: {s}")
    for flags, want in [(["--lr", "6e-4"], (6e-4, 4e-4)), (["--lr-d", "5e-4"], (3e-4, 5e-4)),
                        (["--wgan-gp"], (1e-4, 1e-4)), (["--hinge"], (3e-4, 3e-4))]:
        w = summary(run(["--data", "fashion-mnist", "--device", "cpu", "--no-plot", "--limit-train", "64",
                         "--batch-size", "32", "--epochs", "1", "--width", "4", "--run-dir", fresh("lrs")] + flags))
        check((w["lr"], w["lr_d"]) == want, f"{flags}: lr {w['lr']}, lr_d {w['lr_d']}, want {want}")
    # Widths: G 48 and D 32 by default; --width alone sets both, --d-width D's alone.
    for flags, want in [([], (48, 32)), (["--width", "16"], (16, 16)), (["--width", "16", "--d-width", "8"], (16, 8))]:
        w = summary(run(["--data", "fashion-mnist", "--device", "cpu", "--no-plot", "--limit-train", "64",
                         "--batch-size", "32", "--epochs", "1", "--run-dir", fresh("widths")] + flags))
        check((w["width"], w["d_width"]) == want, f"{flags}: widths {w['width']}, {w['d_width']}, want {want}")
    check(s["frechet"] >= 0 and s["frechet_real"] >= 0, f"{s}")
    check(1 <= s["classes_covered"] <= 10, f"{s}")
    check(png_size(s["samples_png"]) == (242, 242), f"grid size {png_size(s['samples_png'])}")
    check("MODE" in p.stderr and "real test images" in p.stderr, f"no real baseline line:\n{p.stderr}")
    # --eval-only re-evaluates the newest checkpoint (both ways of sampling BN) without
    # touching the run's metrics or samples.png.
    before = [open(os.path.join(d, f), "rb").read() for f in ("metrics.jsonl", "samples.png")]
    for bn in ("batch", "running"):
        e = summary(run(["--data", "fashion-mnist", "--device", "cpu", "--limit-train", "256", "--batch-size", "32",
                         "--width", "8", "--eval-samples", "300", "--classifier", cls, "--run-dir", d, "--eval-only",
                         "--sample-bn", bn]))
        check(e["sample_bn"] == bn and 1 <= e["mode_score"] <= 10 and e["iterations"] == 8, f"eval-only: {e}")
        check(os.path.exists(os.path.join(d, "samples", "eval.png")), "no samples/eval.png")
    after = [open(os.path.join(d, f), "rb").read() for f in ("metrics.jsonl", "samples.png")]
    check(before == after, "--eval-only changed the run's metrics or samples.png")
    # --eval-images scores a folder of pictures (another generator's samples) with the same
    # metrics: the real test images themselves, as 8-bit PGM files, score exactly the real
    # baseline with a Frechet distance of 0; 300 copies of one image cover one class.
    raw = gzip.open(os.path.join(FMNIST, "t10k-images-idx3-ubyte.gz")).read()
    real_dir, one_dir = fresh("real_pgm"), fresh("one_pgm")
    os.makedirs(real_dir), os.makedirs(one_dir)
    for i in range(300):
        for folder, k in ((real_dir, i), (one_dir, 0)):
            with open(os.path.join(folder, f"{i:05d}.pgm"), "wb") as f:
                f.write(b"P5\n28 28\n255\n" + raw[16 + k * 784:16 + (k + 1) * 784])
    scored = lambda folder: summary(run(["--eval-images", "folder:" + folder, "--classifier", cls, "--device", "cpu",
                                         "--eval-samples", "300"]))
    e = scored(real_dir)
    check(e["images"] == 300 and abs(e["mode_score"] - e["mode_score_real"]) < 1e-9 and abs(e["frechet"]) < 1e-6,
          f"--eval-images of the real test images: {e}")
    o = scored(one_dir)
    check(o["classes_covered"] == 1 and o["mode_score"] < e["mode_score"] and o["frechet"] > 1e-3,
          f"--eval-images of one image 300 times: {o}")
    for flags, needle in [(["--eval-images", "folder:" + real_dir], "--classifier"),
                          (["--eval-images", real_dir, "--classifier", cls], "folder:PATH")]:
        p = run(flags + ["--device", "cpu"], ok=False)
        check(p.returncode == 2 and needle in p.stderr, f"{flags}: exit {p.returncode}, stderr:\n{p.stderr}")
    p = run(["--data", "fashion-mnist", "--device", "cpu", "--no-plot", "--limit-train", "64", "--batch-size", "32",
             "--epochs", "1", "--width", "8", "--classifier", os.path.join(WORK, "nope"), "--run-dir",
             fresh("badcls")], ok=False)
    check(p.returncode == 1 and "classifier" in p.stderr, f"missing classifier: {p.returncode} {p.stderr}")

elif CASE == "folder":
    pics = fresh("pictures")
    for i in range(24):
        write_png(os.path.join(pics, "red" if i % 2 else "blue", f"{i:03d}.png"), 40 + i, 36,
                  (200, 20, 20) if i % 2 else (20, 20, 200))
    d = fresh("folder_run")
    s = summary(run(["--data", "folder:" + pics, "--image-size", "32", "--device", "cpu", "--no-plot",
                     "--batch-size", "8", "--epochs", "1", "--width", "8", "--run-dir", d]))
    check(png_size(s["samples_png"]) == (8 * 34 + 2, 8 * 34 + 2), f"grid size {png_size(s['samples_png'])}")
    check(s["iterations"] == 3, f"{s}")
    empty = fresh("empty_pictures")
    os.makedirs(empty)
    p = run(["--data", "folder:" + empty, "--device", "cpu", "--run-dir", fresh("e")], ok=False)
    check(p.returncode == 1 and "no image files" in p.stderr, f"empty folder: {p.returncode} {p.stderr}")
    with open(os.path.join(pics, "broken.png"), "wb") as f:
        f.write(b"not an image")
    p = run(["--data", "folder:" + pics, "--device", "cpu", "--run-dir", fresh("b")], ok=False)
    check(p.returncode == 1 and "broken.png" in p.stderr, f"corrupt image: {p.returncode} {p.stderr}")

elif CASE == "ddp":
    # No minibatch discrimination or BN here: like BN, that layer sees each rank's share.
    common = TOY + ["--epochs", "2", "--steps-per-epoch", "8", "--label-smoothing", "0.9"]
    one, two = fresh("one"), fresh("two")
    s1 = summary(run(common + ["--run-dir", one]))
    s2 = summary(run(common + ["--run-dir", two], ranks=2))
    check(s2["world_size"] == 2, f"{s2}")
    # The trained G and D (and Adam states) of 2 ranks are the single process's.
    t1, t2 = read_safetensors(last_checkpoint(one)), read_safetensors(last_checkpoint(two))
    check(sorted(t1) == sorted(t2), "different checkpoint keys")
    worst = 0.0
    for k in t1:
        if not (k.startswith("G.") or k.startswith("D.")):
            continue
        for a, b in zip(t1[k], t2[k]):
            worst = max(worst, abs(a - b) / max(1.0, abs(a)))
    check(worst < 1e-4, f"2 ranks differ from 1 process by {worst}")
    check(s1["modes_covered"] == s2["modes_covered"], f"{s1} vs {s2}")
    # Spectral normalisation: every rank runs the same power iteration on the same weights.
    sn1, sn2 = fresh("sn-one"), fresh("sn-two")
    run(common + ["--spectral-norm", "--run-dir", sn1])
    run(common + ["--spectral-norm", "--run-dir", sn2], ranks=2)
    t1s, t2s = read_safetensors(last_checkpoint(sn1)), read_safetensors(last_checkpoint(sn2))
    worst = max(abs(a - b) / max(1.0, abs(a)) for k in t1s if k.startswith(("G.", "D.")) for a, b in zip(t1s[k], t2s[k]))
    check(worst < 1e-4 and "D.main.0.u" in t1s, f"--spectral-norm: 2 ranks differ from 1 process by {worst}")
    # --dp hierarchical over 2 one-rank "nodes": the same exact mean gradients.
    h = fresh("hier")
    run(common + ["--run-dir", h, "--dp", "hierarchical"], ranks=2, env={"KILN_RANKS_PER_NODE": "1"})
    t3 = read_safetensors(last_checkpoint(h))
    worst = max(abs(a - b) / max(1.0, abs(a)) for k in t1 if k.startswith(("G.", "D.")) for a, b in zip(t1[k], t3[k]))
    check(worst < 1e-4, f"--dp hierarchical differs from 1 process by {worst}")
    # --dp neighbor on 3 ranks (one-peer exp2 averaging is not exact for 3, so the nets drift
    # apart between the exact averages at each checkpoint): trains, records the consensus
    # distances it closes, and a run stopped and resumed takes the straight run's steps.
    nb = TOY + ["--batch-size", "129", "--epochs", "2", "--steps-per-epoch", "8", "--dp", "neighbor",
                "--mode-regularizer", "--save-every", "4"]
    straight, resumed = fresh("neighbor"), fresh("neighbor_resumed")
    sn = summary(run(nb + ["--run-dir", straight], ranks=3))
    run(nb + ["--run-dir", resumed, "--stop-after-steps", "6"], ranks=3)
    run(nb + ["--run-dir", resumed, "--resume"], ranks=3)
    a, b = steps(straight), steps(resumed)
    check(len(a) == 16 and a == b, f"--dp neighbor: resumed steps differ from the straight run's")
    check(all(math.isfinite(v) for d, g in a.values() for v in (d, g)), f"--dp neighbor: losses {a}")
    cons = [json.loads(l) for l in open(os.path.join(straight, "metrics.jsonl")) if '"consensus"' in l]
    check([c["step"] for c in cons] == [4, 8, 12, 16], f"--dp neighbor: consensus records {cons}")
    check(all(c["distance_g"] > 0 and c["distance_d"] > 0 for c in cons), f"--dp neighbor: {cons}")
    check(sn["world_size"] == 3 and "modes_covered" in sn, f"{sn}")
    # After the exact average every rank holds the same G and D: the checkpoint rank 0 wrote
    # is the one evaluated; an overlapped exchange with WGAN-GP's 5 critic steps per G step.
    ov = fresh("neighbor_overlap")
    so = summary(run([f for f in nb if f != "--mode-regularizer"] +
                     ["--run-dir", ov, "--neighbor-mode", "overlap", "--wgan-gp"], ranks=3))
    check(math.isfinite(so["d_loss"]) and math.isfinite(so["g_loss"]), f"overlap + WGAN-GP: {so}")
    p = run(TOY + ["--batch-size", "127", "--run-dir", fresh("odd")], ok=False, ranks=2)
    check(p.returncode != 0 and "must divide by the 2 ranks" in p.stderr, f"odd batch: {p.stderr}")

elif CASE == "errors":
    for flags, needle in [
        (["--data", "ring8", "--model", "dcgan"], "--model"),
        (["--data", "fashion-mnist", "--model", "mlp"], "--model"),
        (["--data", "ring8", "--wgan-gp", "--label-smoothing", "0.9"], "--wgan-gp"),
        (["--data", "ring8", "--wgan-gp", "--unrolled", "2"], "--wgan-gp"),
        (["--data", "ring8", "--unrolled-first-order"], "--unrolled"),
        (["--data", "ring9"], "--data"),
        (["--data", "folder:"], "folder"),
        (["--data", "ring8", "--classifier", "x"], "--classifier"),
        (["--data", "ring8", "--label-smoothing", "0.2"], "--label-smoothing"),
        (["--data", "ring8", "--unrolled", "-1"], "--unrolled"),
        (["--data", "fashion-mnist", "--image-size", "64"], "--image-size"),
        (["--data", "ring8", "--wgan-gp", "--g-loss", "minimax"], "--g-loss"),
        (["--data", "ring8", "--g-loss", "maximin"], "--g-loss"),
        (["--data", "ring8", "--g-ema", "1"], "--g-ema"),
        (["--data", "ring8", "--top-k", "--feature-matching"], "--top-k"),
        (["--data", "ring8", "--hinge", "--wgan-gp"], "--hinge"),
        (["--data", "ring8", "--minibatch-discrimination", "--no-minibatch-discrimination"],
         "--no-minibatch-discrimination"),
        (["--data", "fashion-mnist", "--wgan-gp", "--label-smoothing", "0.9"], "--wgan-gp"),
        (["--data", "ring8", "--hinge", "--label-smoothing", "0.9"], "--hinge"),
        (["--data", "ring8", "--hinge", "--g-loss", "minimax"], "--hinge"),
        (["--data", "ring8", "--relativistic", "--hinge"], "--relativistic"),
        (["--data", "ring8", "--relativistic", "--wgan-gp"], "--relativistic"),
        (["--data", "ring8", "--relativistic", "--unrolled", "2"], "--relativistic"),
        (["--data", "ring8", "--relativistic", "--feature-matching"], "--relativistic"),
        (["--data", "ring8", "--relativistic", "--top-k"], "--relativistic"),
        (["--data", "ring8", "--relativistic", "--g-loss", "minimax"], "--relativistic"),
        (["--data", "ring8", "--top-k", "--top-k-nu", "0"], "--top-k"),
        (["--data", "ring8", "--unrolled", "2", "--optimizer", "lamb"], "--unrolled"),
        (["--data", "ring8", "--unrolled", "2", "--optimizer", "sam"], "--unrolled"),
        (["--data", "ring8", "--optimizer", "sam", "--sam-base", "sgd"], "--sam-base"),
        (["--data", "ring8", "--optimizer", "sam", "--sam-rho", "-1"], "--sam-rho"),
        (["--data", "ring8", "--optimizer", "entropy-sgd", "--grad-noise", "0.1"], "--grad-noise"),
        (["--data", "ring8", "--optimizer", "entropy-sgd", "--esgd-inner-steps", "0"], "--esgd-inner-steps"),
        (["--data", "ring8", "--optimizer", "sgd"], "--optimizer"),
        (["--data", "ring8", "--prox-p", "2"], "--prox-p"),
        (["--data", "ring8", "--grad-noise", "-1"], "--grad-noise"),
        (["--data", "ring8", "--topology", "ring"], "--dp neighbor"),
        (["--data", "ring8", "--dp", "neighbor", "--optimizer", "sam"], "--dp neighbor"),
        (["--data", "ring8", "--dp", "neighbor", "--optimizer", "entropy-sgd"], "--dp neighbor"),
        (["--data", "ring8", "--dp", "star"], "--dp"),
    ]:
        p = run(flags + ["--device", "cpu", "--run-dir", fresh("err")], ok=False)
        check(p.returncode == 2 and needle in p.stderr, f"{flags}: exit {p.returncode}, stderr:\n{p.stderr}")
else:
    fail(f"unknown case {CASE}")
print(f"ok [{CASE}]")
