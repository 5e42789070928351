#!/usr/bin/env python3
"""kiln_train_cnn as a user runs it: the run directory, resumption and the run library's
guards (models/run/, tools/run_cli.h). One ctest per case:

  resume        straight vs interrupted (mid-epoch, and at an epoch end) + --resume: identical
                per-step losses and final metrics; each step recorded once; the same with
                --optimizer sam (another trajectory, resumed exactly; its sam_sharpness); --hessian-every
                --noise-scale-every, --ov-every and --fisher-at-init record without changing the
                run; --mixup resumes
                exactly
  kill          SIGKILL during training, a torn metrics line, a stale temp file: --resume
                cleans up and still records every step exactly once
  refuse        a second run in a run's directory refuses (naming --resume and --overwrite)
                and leaves it untouched; --overwrite replaces only kiln's files; the lock
                stops a second live run; --resume of an empty directory refuses
  config        config.toml is written; --config <it> reproduces the run bit for bit
  nonfinite     a NaN/inf loss stops the run (exit 3) naming the step, the last checkpoint
                stays and is finite; --on-nonfinite skip trains on
  limits        huge --batch-size / --epochs and bad flags: clear errors, exit 2; every
                --optimizer (and --grad-noise, --mixup, --cutmix) trains a few steps to a finite loss
  fifo          a FIFO where a checkpoint should be: an error at once, no hang
  full_disk     a 1 MiB tmpfs run directory fills up: exit non-zero with "No space left";
                skipped (77) when mounting is not permitted
  ddp           2 ranks under kiln-run: exact resume; the 2-rank checkpoint resumes on 1 and
                4 ranks; an indivisible batch exits 2
  decentralized 4 ranks with --dp neighbor: every mode trains, logs a positive consensus
                distance and resumes exactly (at an epoch end; mid-epoch with --save-every);
                --dp hierarchical on 2 nodes x 2 ranks (KILN_RANKS_PER_NODE=2) matches the
                ring's losses; bad combinations exit 2, ranks that do not split into nodes 1

usage: test_train_cnn_run.py CASE EXE KILN_RUN WORK_DIR
"""
import fcntl
import glob
import json
import math
import os
import shutil
import signal
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import check, configure, fail, run, summary  # noqa: E402

CASE, EXE, KILN_RUN, WORK = sys.argv[1:5]
configure(CASE, EXE, KILN_RUN)
COMMON = ["--device", "cpu", "--limit-train", "512", "--limit-test", "256", "--epochs", "2",
          "--batch-size", "64", "--seed", "7", "--no-plot"]
STEPS = 16  # 512 / 64 per epoch, 2 epochs


def records(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl"), "rb") as f:
        data = f.read()
    check(data.endswith(b"\n") or not data, f"{run_dir}/metrics.jsonl ends in a torn line")
    return [json.loads(l) for l in data.decode().splitlines()]


def step_records(run_dir):
    return [r for r in records(run_dir) if r.get("type") == "step"]


def same_steps(a, b, what):
    sa, sb = step_records(a), step_records(b)
    check([r["step"] for r in sb] == list(range(1, len(sb) + 1)), f"{what}: steps not each once in order: "
          f"{[r['step'] for r in sb]}")
    check(len(sa) == STEPS and len(sb) == STEPS, f"{what}: {len(sa)} and {len(sb)} step records, want {STEPS}")
    for x, y in zip(sa, sb):
        check(x == y, f"{what}: step records differ:\n  {x}\n  {y}")


def same_final(pa, pb, what, keys=("test_accuracy", "test_loss", "train_loss", "steps")):
    a, b = summary(pa), summary(pb)
    for k in keys:
        check(a[k] == b[k], f"{what}: final {k} differs: {a[k]} vs {b[k]}")


def fresh(name):
    d = os.path.join(WORK, name)
    shutil.rmtree(d, ignore_errors=True)
    return d


def safetensors_finite(path):
    """Every F32/F64 value of a safetensors file is finite."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    for name, e in header.items():
        if name == "__metadata__" or e["dtype"] not in ("F32", "F64"):
            continue
        lo, hi = e["data_offsets"]
        fmt = "f" if e["dtype"] == "F32" else "d"
        vals = struct.unpack(f"<{(hi - lo) // struct.calcsize(fmt)}{fmt}", data[lo:hi])
        if not all(math.isfinite(v) for v in vals):
            return False
    return True


def case_resume():
    a, b, c = fresh("straight"), fresh("mid_epoch"), fresh("epoch_end")
    pa = run(COMMON + ["--run-dir", a])
    # Interrupted mid-epoch (step 11 of 16) with a checkpoint every 3 steps: resumes from step 9.
    run(COMMON + ["--run-dir", b, "--save-every", "3", "--stop-after-steps", "11"])
    check(max(r["step"] for r in step_records(b)) == 11, "the interrupted run should have recorded 11 steps")
    pb = run(COMMON + ["--run-dir", b, "--save-every", "3", "--resume"])
    check("dropped 2 metrics record" in pb.stderr, f"resume should drop steps 10 and 11:\n{pb.stderr}")
    same_steps(a, b, "mid-epoch resume")
    same_final(pa, pb, "mid-epoch resume")
    # Stopped at the end of epoch 1.
    run(COMMON + ["--run-dir", c, "--stop-after", "1"])
    pc = run(COMMON + ["--run-dir", c, "--resume"])
    same_steps(a, c, "epoch-end resume")
    same_final(pa, pc, "epoch-end resume")
    # keep-last: only the newest checkpoints remain.
    ck = sorted(glob.glob(os.path.join(b, "checkpoints", "step-*.safetensors")))
    check(len(ck) == 2, f"--keep-last 2 (default) should leave 2 checkpoints, found {ck}")
    epochs = [r for r in records(a) if r.get("type") == "epoch"]
    check(len(epochs) == 2 and 0 < epochs[-1]["test_accuracy"] <= 1, f"epoch records: {epochs}")
    # SAM (two passes per step, no state of its own): another trajectory, resumed exactly.
    d, e = fresh("sam_straight"), fresh("sam_mid_epoch")
    pd = run(COMMON + ["--run-dir", d, "--optimizer", "sam", "--sam-base", "adamw", "--hessian-every", "8",
                       "--hessian-iterations", "4", "--noise-scale-every", "5", "--ov-every", "6", "--fisher-at-init"])
    run(COMMON + ["--run-dir", e, "--optimizer", "sam", "--sam-base", "adamw", "--save-every", "3", "--stop-after-steps", "7"])
    pe = run(COMMON + ["--run-dir", e, "--optimizer", "sam", "--sam-base", "adamw", "--save-every", "3", "--resume"])
    same_steps(d, e, "SAM mid-epoch resume")
    same_final(pd, pe, "SAM mid-epoch resume")
    la = [r["loss"] for r in step_records(a)]
    ld = [r["loss"] for r in step_records(d)]
    check(la[0] == ld[0] and la[1:] != ld[1:], "SAM around AdamW should change the steps after the first")
    sharp = [r.get("sam_sharpness") for r in step_records(d)]
    check(len(sharp) == STEPS and all(v is not None and math.isfinite(v) for v in sharp) and max(sharp) > 0,
          f"SAM runs should record a finite sam_sharpness per step (some > 0): {sharp}")
    # Mixup: mid-epoch resume mixes exactly as the straight run.
    f, g = fresh("mixup_straight"), fresh("mixup_mid_epoch")
    pf = run(COMMON + ["--run-dir", f, "--mixup", "0.4"])
    run(COMMON + ["--run-dir", g, "--mixup", "0.4", "--save-every", "3", "--stop-after-steps", "7"])
    pg = run(COMMON + ["--run-dir", g, "--mixup", "0.4", "--save-every", "3", "--resume"])
    same_steps(f, g, "Mixup mid-epoch resume")
    same_final(pf, pg, "Mixup mid-epoch resume")
    lf = [r["loss"] for r in step_records(f)]
    check(lf[0] != la[0], "--mixup should change the first step's loss")
    # Entropy-SGD (its inner loop on slices of each batch, its scoping counted by the step):
    # a mid-epoch resume continues exactly.
    h, i = fresh("esgd_straight"), fresh("esgd_mid_epoch")
    esgd = ["--optimizer", "entropy-sgd", "--esgd-inner-steps", "3"]
    ph = run(COMMON + ["--run-dir", h] + esgd)
    run(COMMON + ["--run-dir", i, "--save-every", "3", "--stop-after-steps", "7"] + esgd)
    pi = run(COMMON + ["--run-dir", i, "--save-every", "3", "--resume"] + esgd)
    same_steps(h, i, "Entropy-SGD mid-epoch resume")
    same_final(ph, pi, "Entropy-SGD mid-epoch resume")
    lh = [r["loss"] for r in step_records(h)]
    check(lh != la and all(math.isfinite(v) for v in lh), "Entropy-SGD should take other steps than AdamW")
    # --hessian-every (run d only) measures without moving the training: d and e agree above.
    hs = [r for r in records(d) if r.get("type") == "hessian"]
    check([r["step"] for r in hs] == [8, 16] and all(math.isfinite(r["lambda_max"]) and r["lambda_max"] != 0 and
                                                     1 <= r["iterations"] <= 4 for r in hs),
          f"--hessian-every 8: want finite eigenvalues at steps 8 and 16, got {hs}")
    ns = [r for r in records(d) if r.get("type") == "noise_scale"]
    check([r["step"] for r in ns] == [5, 10, 15] and all(math.isfinite(r["b_simple"]) and r["micro_batch"] == 16
                                                         for r in ns),
          f"--noise-scale-every 5: want finite noise scales at steps 5, 10, 15, got {ns}")
    ov = [r for r in records(d) if r.get("type") == "optimization_variance"]
    check([r["step"] for r in ov] == [6, 12] and all(0 < r["ov"] < 1 for r in ov),
          f"--ov-every 6: want optimization variances in (0, 1) at steps 6 and 12, got {ov}")
    fi = [r for r in records(d) if r.get("type") == "fisher_at_init"]
    check(len(fi) == 1 and fi[0]["lambda_0"] > 0 and fi[0]["catapult_lr"] == 2 / fi[0]["lambda_0"],
          f"--fisher-at-init: want one record with lambda_0 > 0, got {fi}")


def case_kill():
    a, b = fresh("straight"), fresh("killed")
    run(COMMON + ["--run-dir", a])
    # Slow enough to be killed mid-run: every step checkpointed.
    p = subprocess.Popen([EXE] + COMMON + ["--run-dir", b, "--save-every", "1", "--log-every", "1"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(glob.glob(os.path.join(b, "checkpoints", "step-*"))) < 2:
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait()
    check(p.returncode == -signal.SIGKILL, "the run ended before it could be killed")
    # What a kill can leave: a torn last metrics line and a temp file of a save.
    with open(os.path.join(b, "metrics.jsonl"), "ab") as f:
        f.write(b'{"type":"step","epoch":1,"st')
    stale = os.path.join(b, "checkpoints", "step-000000000099.safetensors.tmp.999999.1")
    with open(stale, "wb") as f:
        f.write(b"partial")
    pb = run(COMMON + ["--run-dir", b, "--resume"])
    check(not os.path.exists(stale), "the stale temp file of a killed save was not removed")
    same_steps(a, b, "resume after SIGKILL")
    check(summary(pb)["steps"] == STEPS, f"{summary(pb)}")


def case_refuse():
    d = fresh("run")
    run(COMMON + ["--run-dir", d, "--epochs", "1"])
    before = open(os.path.join(d, "metrics.jsonl"), "rb").read()
    ck_before = sorted(os.listdir(os.path.join(d, "checkpoints")))
    p = run(COMMON + ["--run-dir", d], ok=False)
    check(p.returncode != 0, "a second fresh run in a run directory should refuse")
    check("--resume" in p.stderr and "--overwrite" in p.stderr, f"the refusal should name --resume and --overwrite:\n"
          f"{p.stderr}")
    check(open(os.path.join(d, "metrics.jsonl"), "rb").read() == before, "the refused run changed metrics.jsonl")
    check(sorted(os.listdir(os.path.join(d, "checkpoints"))) == ck_before, "the refused run changed the checkpoints")
    # --overwrite replaces kiln's files only.
    keep = os.path.join(d, "notes.txt")
    with open(keep, "w") as f:
        f.write("mine")
    run(COMMON + ["--run-dir", d, "--overwrite", "--epochs", "1"])
    check(open(keep).read() == "mine", "--overwrite deleted a file that is not kiln's")
    check(len(step_records(d)) == STEPS // 2, "after --overwrite the metrics hold only the new run")
    # A live run holds the lock: a second one fails at once, naming the holder.
    with open(os.path.join(d, "run.lock"), "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        lock.seek(0)
        lock.truncate()
        lock.write(str(os.getpid()))
        lock.flush()
        p = run(COMMON + ["--run-dir", d, "--resume"], ok=False, timeout=60)
        check(p.returncode != 0 and str(os.getpid()) in p.stderr, f"a locked run should refuse naming pid "
              f"{os.getpid()}:\n{p.stderr}")
    # --resume of a directory without a run.
    p = run(COMMON + ["--run-dir", fresh("empty"), "--resume"], ok=False)
    check(p.returncode != 0 and "empty" in p.stderr, f"--resume of an empty directory: {p.returncode}\n{p.stderr}")
    p = run(COMMON + ["--run-dir", d, "--resume", "--overwrite"], ok=False)
    check(p.returncode == 2, "--resume with --overwrite should be a usage error")


def case_config():
    a, b = fresh("a"), fresh("b")
    run(COMMON + ["--run-dir", a, "--epochs", "1", "--optimizer", "sgd", "--lr", "0.05"])
    cfg = os.path.join(a, "config.toml")
    check(os.path.exists(cfg), "no config.toml in the run directory")
    text = open(cfg).read()
    check("optimizer" in text and "sgd" in text and "0.05" in text, f"config.toml misses the flags:\n{text}")
    check("resume" not in text.replace("stop-after", ""), f"config.toml should not hold --resume:\n{text}")
    run(["--config", cfg, "--run-dir", b])
    sa, sb = step_records(a), step_records(b)
    check(sa == sb and len(sa) == STEPS // 2, "--config of a run's config.toml did not reproduce its steps")
    p = run(["--help"])
    check("--run-dir" in p.stdout and "--on-nonfinite" in p.stdout and "--config" in p.stdout, p.stdout)


def case_nonfinite():
    d = fresh("nan")
    # An absurd learning rate drives the loss to inf/NaN within a few steps.
    p = run(COMMON + ["--run-dir", d, "--optimizer", "sgd", "--lr", "1e12", "--save-every", "1", "--log-every", "1",
                      "--epochs", "1"], ok=False)
    check(p.returncode == 3, f"a non-finite loss should exit 3, got {p.returncode}:\n{p.stderr}")
    check(("nan" in p.stderr or "inf" in p.stderr) and "step" in p.stderr and "--on-nonfinite skip" in p.stderr,
          f"the message should name the value, the step and the skip flag:\n{p.stderr}")
    ck = sorted(glob.glob(os.path.join(d, "checkpoints", "step-*.safetensors")))
    check(ck, "the last good checkpoint should remain")
    check(safetensors_finite(ck[-1]), f"{ck[-1]} holds non-finite values: a checkpoint was written after the NaN")
    bad = [r for r in step_records(d) if r["loss"] is None]
    last_step = int(os.path.basename(ck[-1])[5:17])
    check(all(r["step"] > last_step for r in bad), "a checkpoint names a step at or after a non-finite loss")
    # skip: trains on, counting the skipped steps.
    s = fresh("skip")
    p = run(COMMON + ["--run-dir", s, "--optimizer", "sgd", "--lr", "1e12", "--epochs", "1", "--on-nonfinite", "skip"],
            ok=False)
    check(p.returncode in (0, 3), f"skip: {p.returncode}\n{p.stderr}")
    if p.returncode == 0:
        check(summary(p)["skipped_steps"] > 0, f"skip: no skipped steps counted: {p.stdout}")
    check("skip" in p.stderr, f"skip: no warning:\n{p.stderr}")


def case_limits():
    for args, needle in ((["--batch-size", "9223372036854775807"], "batch-size"),
                         (["--epochs", "99999999999999999"], "epochs"),
                         (["--epochs", "0"], "epochs"),
                         (["--lr", "-1"], "lr"),
                         (["--optimizer", "rmsprop"], "optimizer"),
                         (["--optimizer", "sam", "--sam-rho", "-0.1"], "sam-rho"),
                         (["--optimizer", "sam", "--sam-base", "lamb"], "sam-base"),
                         (["--optimizer", "proxadam", "--prox-p", "0.3"], "prox-p"),
                         (["--optimizer", "entropy-sgd", "--on-nonfinite", "skip"], "entropy-sgd"),
                         (["--optimizer", "entropy-sgd", "--grad-noise", "0.1"], "esgd-noise"),
                         (["--optimizer", "entropy-sgd", "--esgd-inner-steps", "0"], "esgd-inner-steps"),
                         (["--mixup", "0.2", "--cutmix", "1"], "--mixup"),
                         (["--mixup", "-1"], "mixup"),
                         (["--no-such-flag"], "no-such-flag")):
        p = run(COMMON + ["--run-dir", fresh("limits")] + args, ok=False, timeout=60)
        check(p.returncode == 2 and needle in p.stderr, f"{args}: want exit 2 naming {needle}, got {p.returncode}:\n"
              f"{p.stderr}")
    for args in [["--optimizer", o] for o in ("sgd", "adam", "lars", "lamb", "adams", "srsgd", "apollo", "sam",
                                              "asam")] + \
            [["--mixup", "0.4"], ["--cutmix", "1"], ["--optimizer", "sam", "--cutmix", "1"],
             ["--optimizer", "proxadam", "--prox-p", "2/3", "--prox-lambda", "1e-3"],
             ["--optimizer", "entropy-sgd", "--mixup", "0.4"]]:
        noise = [] if "entropy-sgd" in args else ["--grad-noise", "1e-6"]
        d = fresh("optimizers")
        p = run(["--device", "cpu", "--limit-train", "256", "--limit-test", "64", "--epochs", "1", "--batch-size", "64",
                 "--no-plot", "--run-dir", d] + args + noise)
        s = json.loads(p.stdout.strip().splitlines()[-1])
        check(math.isfinite(s["train_loss"]) and s["steps"] == 4, f"{args}: {s}")
        if "proxadam" in args:  # the proximal steps put weights at exactly 0, and the run says how many
            sp = [r for r in records(d) if r.get("type") == "sparsity"]
            check(len(sp) == 1 and 0 < sp[0]["weight_sparsity"] < 1 and sp[0]["zero_weights"] > 0 and
                  sp[0]["penalty"] > 0, f"proxadam: want one sparsity record with some exact zeros, got {sp}")


def case_fifo():
    d = fresh("fifo")
    run(COMMON + ["--run-dir", d, "--epochs", "1", "--save-every", "4"])
    for f in glob.glob(os.path.join(d, "checkpoints", "step-*.safetensors")):
        os.remove(f)
    os.mkfifo(os.path.join(d, "checkpoints", "step-000000000008.safetensors"))
    t0 = time.time()
    p = run(COMMON + ["--run-dir", d, "--resume"], ok=False, timeout=60)
    check(p.returncode != 0 and "step-000000000008" in p.stderr, f"a FIFO checkpoint: {p.returncode}\n{p.stderr}")
    check(time.time() - t0 < 30, "the FIFO made the run wait")


def case_full_disk():
    d = fresh("tmpfs")
    os.makedirs(d)
    m = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", d], capture_output=True, text=True)
    if m.returncode != 0:
        print(f"skipped: cannot mount a tmpfs here ({m.stderr.strip()})")
        sys.exit(77)
    try:
        # Each checkpoint is ~1 MB (77,754 params, AdamW state): the second does not fit.
        p = run(COMMON + ["--run-dir", os.path.join(d, "run"), "--save-every", "1", "--keep-last", "5"], ok=False)
        check(p.returncode != 0, "a full disk must not end in exit 0")
        check("No space left" in p.stderr or "space" in p.stderr.lower(), f"the error should say the disk is full:\n"
              f"{p.stderr}")
        # Whatever was written is whole: the metrics parse and the checkpoints that exist load.
        records(os.path.join(d, "run"))
    finally:
        subprocess.run(["umount", d])


def case_ddp():
    common = [a for a in COMMON]
    a, b = fresh("ddp_a"), fresh("ddp_b")
    pa = run(common + ["--run-dir", a], ranks=2)
    run(common + ["--run-dir", b, "--stop-after", "1"], ranks=2)
    c, d = fresh("ddp_c"), fresh("ddp_d")
    shutil.copytree(b, c)
    shutil.copytree(b, d)
    pb = run(common + ["--run-dir", b, "--resume"], ranks=2)
    same_steps(a, b, "2-rank resume")
    same_final(pa, pb, "2-rank resume", keys=("test_accuracy", "test_loss", "train_loss", "steps", "world_size"))
    ref = summary(pa)["train_loss"]
    for m, dd in ((1, c), (4, d)):
        p = run(common + ["--run-dir", dd, "--resume"], ranks=m)
        check(f"written by 2 rank(s), now {m}" in p.stderr, f"2 -> {m}: no note:\n{p.stderr}")
        s = summary(p)
        check(s["steps"] == STEPS and s["world_size"] == m, f"2 -> {m}: {s}")
        steps = [r["step"] for r in step_records(dd)]
        check(steps == list(range(1, STEPS + 1)), f"2 -> {m}: steps {steps}")
        check(abs(s["train_loss"] - ref) < 0.05, f"2 -> {m}: train loss {s['train_loss']} far from {ref}")
    p = run(common + ["--run-dir", fresh("ddp_bad"), "--batch-size", "63"], ok=False, ranks=2)
    check(p.returncode != 0 and "must divide by the 2 ranks" in p.stderr, f"batch 63 on 2 ranks:\n{p.stderr}")


def case_decentralized():
    common = [a for a in COMMON]
    for mode, topo in (("atc", "exp2-dynamic"), ("overlap", "exp2"), ("gradient-tracking", "ring")):
        flags = common + ["--dp", "neighbor", "--neighbor-mode", mode, "--topology", topo, "--log-every", "2"]
        a, b = fresh(f"dec_{mode}_a"), fresh(f"dec_{mode}_b")
        pa = run(flags + ["--run-dir", a], ranks=4)
        s = summary(pa)
        check(s["data_parallel"] == f"neighbor {topo} {mode}", f"{mode}: summary {s}")
        check(math.isfinite(s["train_loss"]) and s["train_loss"] < 2.2, f"{mode}: did not train (loss from ln 10 = 2.30): {s}")
        cons = [r for r in records(a) if r.get("type") == "consensus"]
        check(len(cons) == STEPS // 2, f"{mode}: {len(cons)} consensus records, want {STEPS // 2}")
        check(all(r["distance"] > 0 and math.isfinite(r["distance"]) for r in cons), f"{mode}: distances {cons}")
        # Interrupted at the epoch end (the exact average there makes the checkpoint one
        # model), or mid-epoch after a checkpoint at step 5 (gradient tracking restarts
        # there in both runs).
        if mode == "gradient-tracking":
            pa = run(flags + ["--run-dir", a, "--overwrite", "--save-every", "5"], ranks=4)
            run(flags + ["--run-dir", b, "--save-every", "5", "--stop-after-steps", "7"], ranks=4)
            pb = run(flags + ["--run-dir", b, "--resume", "--save-every", "5"], ranks=4)
        else:
            run(flags + ["--run-dir", b, "--stop-after", "1"], ranks=4)
            pb = run(flags + ["--run-dir", b, "--resume"], ranks=4)
        same_steps(a, b, f"{mode} resume")
        same_final(pa, pb, f"{mode} resume")
    # Hierarchical: 2 "nodes" of 2 ranks on this machine; the same losses as the ring up to
    # the order of the sums.
    pr = run(common + ["--run-dir", fresh("dec_ring")], ranks=4)
    ph = run(common + ["--run-dir", fresh("dec_hier"), "--dp", "hierarchical"], ranks=4,
             env={"KILN_RANKS_PER_NODE": "2"})
    check(summary(ph)["data_parallel"] == "hierarchical, 2 ranks per node", f"hierarchical: {summary(ph)}")
    for x, y in zip(step_records(os.path.join(WORK, "dec_ring")), step_records(os.path.join(WORK, "dec_hier"))):
        check(abs(x["loss"] - y["loss"]) < 1e-3 * max(1.0, abs(x["loss"])), f"hierarchical vs ring: {x} vs {y}")
    p = run(common + ["--run-dir", fresh("dec_bad1"), "--dp", "hierarchical"], ok=False, ranks=4,
            env={"KILN_RANKS_PER_NODE": "3"})
    check(p.returncode == 1 and "do not split into nodes of 3" in p.stderr, f"3 per node:\n{p.stderr}")
    p = run(common + ["--run-dir", fresh("dec_bad2"), "--topology", "ring"], ok=False)
    check(p.returncode == 2 and "only with --dp neighbor" in p.stderr, f"--topology alone:\n{p.stderr}")
    p = run(common + ["--run-dir", fresh("dec_bad3"), "--dp", "neighbor", "--optimizer", "sam"], ok=False)
    check(p.returncode == 2 and "does not combine" in p.stderr, f"neighbor + sam:\n{p.stderr}")
    p = run(common + ["--run-dir", fresh("dec_bad4"), "--dp", "neighbor", "--topology", "star"], ok=False)
    check(p.returncode == 2 and "star" in p.stderr, f"unknown topology:\n{p.stderr}")


os.makedirs(WORK, exist_ok=True)
os.chdir(WORK)
globals()["case_" + CASE]()
print(f"train_cnn run [{CASE}]: ok")
