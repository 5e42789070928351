#!/usr/bin/env python3
"""kiln_prune_cnn as a user runs it, on a small kiln_train_cnn model trained first (width 8,
4000 images). One ctest per case:

  channels  l1, taylor and slimming reach --macs 0.5 (at most half the dense MACs) with
            fewer parameters; the saved model is physically smaller and loads in a fresh
            process (--evaluate) with the accuracy the run reported; iterative --sparsity
            removes about that fraction of the channels; the table and metrics are written
  weights   magnitude --sparsity 0.9 (one-shot, global) masks 90% of the conv/linear weights
            and they are still zero after fine-tuning; gradual and iterative reach the same
            sparsity; 2:4 (nm) leaves half of each masked layer's weights; --evaluate agrees
  quantize  --quantize after magnitude pruning, k-means (4 bits): every conv/linear weight of
            the saved model is its codebook[index] (pruned ones zero, at most 2^4 shared values
            per layer), the sizes shrink dense > pruned > quantized as the bits say, --evaluate
            agrees; INQ (3 bits, --method none): every weight is 0 or +-2^n within the saved
            levels; the size table is written
  ddp       2 ranks under kiln-run prune the same channels as the model's MACs say, and a
            magnitude run keeps exactly its sparsity (masks applied on every rank)
  errors    bad targets and flags: exit 1 or 2 with a message naming the problem

usage: test_prune_cnn.py CASE PRUNE_EXE TRAIN_CNN_EXE KILN_RUN WORK_DIR
"""
import json
import os
import shutil
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import check, configure, fail, records, run, summary  # noqa: E402

CASE, EXE, TRAIN, KILN_RUN, WORK = sys.argv[1:6]
configure(CASE, EXE, KILN_RUN)
# (--round-to 4: the width-8 model's groups have 8 to 32 channels)
COMMON = ["--limit-train", "4000", "--limit-test", "1000", "--no-plot", "--bench-batches", "2", "--overwrite",
          "--round-to", "4"]


def dense():
    d = os.path.join(WORK, "dense")
    run(["--width", "8", "--epochs", "2", "--warmup-steps", "5", "--limit-train", "4000", "--limit-test", "1000",
         "--run-dir", d, "--overwrite", "--no-plot"], exe=TRAIN)
    return d


def prune(name, args, ranks=None, ok=True):
    d = os.path.join(WORK, name)
    p = run(["--from", DENSE, "--run-dir", d] + COMMON + args, ranks=ranks, ok=ok)
    return p, d


def evaluate(model):
    return summary(run(["--evaluate", model, "--limit-test", "1000"]))


def case_channels():
    for method in ("l1", "taylor", "slimming"):
        p, d = prune(method, ["--method", method, "--macs", "0.5", "--epochs", "1", "--taylor-batches", "4"])
        s = summary(p)
        for k in ("acc_dense", "acc_pruned", "macs_dense", "macs_pruned", "params_dense", "params_pruned",
                  "speedup_b128", "speedup_b1", "seconds", "model"):
            check(k in s, f"{method}: the summary lacks {k}: {s}")
        check(s["macs_pruned"] <= 0.5 * s["macs_dense"], f"{method}: MACs {s['macs_pruned']} of {s['macs_dense']}")
        check(s["macs_pruned"] >= 0.4 * s["macs_dense"], f"{method}: far below the target: {s}")
        check(s["params_pruned"] < s["params_dense"], f"{method}: no parameters removed: {s}")
        check(s["speedup_b128"] > 0, f"{method}: no latency: {s}")
        e = evaluate(s["model"])
        check(abs(e["test_accuracy"] - s["acc_pruned"]) < 1e-9, f"{method}: a fresh process measures {e} vs {s}")
        check(e["params"] == s["params_pruned"] and e["macs"] == s["macs_pruned"], f"{method}: {e} vs {s}")
        check(os.path.exists(os.path.join(d, "prune_table.md")), f"{method}: no prune_table.md")
        check([r["type"] for r in records(d, "dense")] == ["dense"], f"{method}: no dense record")
        check(len(records(d, "step")) == s["finetune_steps"], f"{method}: step records vs {s['finetune_steps']} steps")
    p, d = prune("iterative", ["--method", "l1", "--sparsity", "0.5", "--schedule", "iterative", "--cycles", "2",
                               "--epochs", "1", "--round-to", "1"])  # (rounding would keep the 8-channel groups)
    s = summary(p)
    cycles = [l for l in p.stderr.splitlines() if "cycle" in l and "removed" in l]
    check(len(cycles) == 2, f"iterative: {cycles}")
    check(0.15 < s["macs_pruned"] / s["macs_dense"] < 0.45, f"iterative --sparsity 0.5: {s}")  # ~ (1 - 0.5)^2 = 0.25


def case_weights():
    for name, args, want in (("magnitude", ["--sparsity", "0.9"], 0.9),
                             ("gradual", ["--sparsity", "0.9", "--schedule", "gradual", "--prune-every", "5"], 0.9),
                             ("iterative", ["--sparsity", "0.8", "--schedule", "iterative", "--cycles", "2",
                                            "--scope", "layer"], 0.8)):
        p, d = prune(name, ["--method", "magnitude", "--epochs", "1"] + args)
        s = summary(p)
        check(abs(s["weight_sparsity"] - want) < 1e-3, f"{name}: weight sparsity {s['weight_sparsity']} vs {want}")
        e = evaluate(s["model"])
        check(abs(e["test_accuracy"] - s["acc_pruned"]) < 1e-9, f"{name}: a fresh process measures {e} vs {s}")
        # the saved weights are still zero (BatchNorm and biases stay dense)
        check(e["nonzero_params"] == s["nonzero_params_pruned"], f"{name}: {e} vs {s}")
        check(s["nonzero_params_pruned"] < (1.05 - want) * s["params_dense"], f"{name}: {s}")
        # (by weights, not MACs: the first convolutions have few weights and many MACs each)
        check(s["nonzero_macs_pruned"] < 0.5 * s["macs_dense"], f"{name}: {s}")
    p, d = prune("nm", ["--method", "nm", "--epochs", "1"])
    s = summary(p)
    check(abs(s["weight_sparsity"] - 0.5) < 1e-9, f"nm: {s}")
    check("stays dense" in p.stderr, f"nm: the first conv (1 input channel) should be named as dense:\n{p.stderr}")


def read_safetensors(path):
    """{name: (shape, flat values)} of a safetensors file (F32, I32, I64, U8), without numpy."""
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    fmt = {"F32": "f", "I32": "i", "I64": "q", "U8": "B"}
    out = {}
    for name, v in header.items():
        if name == "__metadata__":
            continue
        a, b = v["data_offsets"]
        raw = data[8 + n + a:8 + n + b]
        c = fmt[v["dtype"]]
        out[name] = (v["shape"], struct.unpack("<%d%s" % (len(raw) // struct.calcsize(c), c), raw))
    return out


def conv_linear_weights(tensors):
    return {k[len("model."):]: v for k, v in tensors.items()
            if k.startswith("model.") and k.endswith(".weight") and len(v[0]) in (2, 4)}


def case_quantize():
    p, d = prune("kmeans", ["--method", "magnitude", "--sparsity", "0.5", "--epochs", "1", "--quantize", "4",
                            "--quantize-method", "kmeans", "--quantize-epochs", "1"])
    s = summary(p)
    for k in ("acc_dense", "acc_before_quantization", "acc_quantized_before_finetune", "acc_pruned"):
        check(isinstance(s[k], float) and 0 <= s[k] <= 1, f"kmeans: {k} is not an accuracy: {s}")
    check(s["quantize_bits"] == 4 and s["quantize_method"] == "kmeans", f"kmeans: {s}")
    check(s["bytes_dense"] > s["bytes_pruned"] > s["bytes_quantized"] > 0, f"kmeans: sizes {s}")
    check(abs(s["compression_ratio"] - s["bytes_dense"] / s["bytes_quantized"]) < 0.01, f"kmeans: ratio {s}")
    # 4-bit indices of half the weights: the conv/linear part alone would be 16x smaller
    check(4 < s["compression_ratio"] < 16, f"kmeans: ratio {s['compression_ratio']}")
    t = read_safetensors(s["model"])
    weights = conv_linear_weights(t)
    check(len(weights) >= 8, f"kmeans: conv/linear weights in the checkpoint: {sorted(weights)}")
    for name, (shape, w) in weights.items():
        cb = t["quant." + name + ".codebook"][1]
        idx = t["quant." + name + ".index"][1]
        check(len(cb) <= 16 and len(idx) == len(w), f"kmeans: {name}: {len(cb)} centroids, {len(idx)} indices")
        check(all((v == 0.0 if i < 0 else v == cb[i]) for v, i in zip(w, idx)),
              f"kmeans: {name}: the weights are not codebook[index]")
        check(len(set(w) - {0.0}) <= 16, f"kmeans: {name}: {len(set(w))} distinct values")
    total = sum(len(t["quant." + name + ".index"][1]) for name in weights)
    pruned = sum(sum(1 for i in t["quant." + name + ".index"][1] if i < 0) for name in weights)
    check(pruned == total // 2, f"kmeans: {pruned} of {total} weights pruned (not coded), wanted half")
    e = evaluate(s["model"])
    check(abs(e["test_accuracy"] - s["acc_pruned"]) < 1e-9, f"kmeans: a fresh process measures {e} vs {s}")
    table = open(os.path.join(d, "prune_table.md")).read()
    check("k-means 4 bits" in table and "compression vs dense f32" in table, f"kmeans: the table:\n{table}")

    p, d = prune("inq", ["--method", "none", "--quantize", "3", "--quantize-method", "inq", "--quantize-epochs", "1"])
    s = summary(p)
    check(isinstance(s["acc_pruned"], float) and 0 <= s["acc_pruned"] <= 1, f"inq: {s}")
    check(s["quantize_method"] == "inq" and s["bytes_quantized"] < s["bytes_dense"] / 5, f"inq: {s}")
    rounds = [l for l in p.stderr.splitlines() if "INQ:" in l and "quantized to powers of two" in l]
    check([r.split("INQ: ")[1].split("%")[0] for r in rounds] == ["50.0", "75.0", "87.5", "100.0"], f"inq: {rounds}")
    t = read_safetensors(s["model"])
    for name, (shape, w) in conv_linear_weights(t).items():
        bits, n1, n2 = t["quant." + name + ".levels"][1]
        check(bits == 3 and n1 - n2 + 1 == 2, f"inq: {name}: levels {bits, n1, n2}")
        levels = {0.0} | {sg * 2.0 ** n for n in range(n2, n1 + 1) for sg in (1, -1)}
        bad = [v for v in w if v not in levels]
        check(not bad, f"inq: {name}: {len(bad)} weights outside {sorted(levels)}, e.g. {bad[:3]}")
    check(os.path.exists(os.path.join(d, "prune_table.md")), "inq: no prune_table.md")


def case_ddp():
    p, d = prune("ddp_l1", ["--method", "l1", "--macs", "0.5", "--epochs", "1", "--batch-size", "64"], ranks=2)
    s = summary(p)
    check(s["world_size"] == 2 and s["macs_pruned"] <= 0.5 * s["macs_dense"], f"ddp l1: {s}")
    one, _ = prune("one_l1", ["--method", "l1", "--macs", "0.5", "--epochs", "1", "--batch-size", "64"])
    check(summary(one)["params_pruned"] == s["params_pruned"], "2 ranks pruned other channels than 1 process")
    p, d = prune("ddp_mag", ["--method", "magnitude", "--sparsity", "0.9", "--epochs", "1", "--batch-size", "64"],
                 ranks=2)
    s = summary(p)
    check(abs(s["weight_sparsity"] - 0.9) < 1e-3, f"ddp magnitude: {s}")


def case_errors():
    def bad(args, text, code=1):
        p, _ = prune("bad", args, ok=False)
        check(p.returncode == code and text in p.stderr, f"{args}: exit {p.returncode}, wanted {code} and "
              f"{text!r}:\n{p.stderr[-1500:]}")
    bad(["--method", "magnitude", "--sparsity", "1"], "would remove every weight")
    bad(["--method", "l1", "--macs", "1.5"], "is not below the dense model's MACs")
    bad(["--method", "l1", "--macs", "0.5", "--sparsity", "0.3"], "not both")
    bad(["--method", "magnitude", "--macs", "0.5"], "give --sparsity")
    bad(["--method", "nm", "--sparsity", "0.5"], "does not apply")
    bad(["--method", "l1", "--schedule", "gradual"], "channel methods take oneshot or iterative")
    bad(["--method", "l1", "--macs", "0.001"], "cannot bring the MACs down")
    bad(["--method", "bogus"], "bogus", code=2)
    bad(["--method", "magnitude", "--quantize", "9"], "--quantize", code=2)
    bad(["--method", "magnitude", "--quantize", "four"], "--quantize", code=2)
    bad(["--method", "magnitude", "--quantize", "6", "--quantize-method", "inq"], "takes 2 to 5", code=2)
    bad(["--method", "magnitude", "--quantize", "1", "--quantize-method", "inq"], "takes 2 to 5", code=2)
    bad(["--method", "magnitude", "--quantize", "4", "--quantize-method", "lloyd"], "lloyd", code=2)
    bad(["--method", "none"], "give --quantize", code=2)
    p = run(["--run-dir", os.path.join(WORK, "nofrom")] + COMMON, ok=False)
    check(p.returncode == 1 and "--from" in p.stderr, f"no --from: {p.stderr}")
    p = run(["--from", os.path.join(WORK, "missing"), "--run-dir", os.path.join(WORK, "m")] + COMMON, ok=False)
    check(p.returncode == 1 and "missing" in p.stderr, f"a missing model: {p.stderr}")
    p = run(["--evaluate", os.path.join(WORK, "missing")], ok=False)
    check(p.returncode == 1 and "missing" in p.stderr, f"--evaluate of a missing model: {p.stderr}")


if __name__ == "__main__":
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    DENSE = dense()
    {"channels": case_channels, "weights": case_weights, "quantize": case_quantize, "ddp": case_ddp,
     "errors": case_errors}[CASE]()
    print(f"prune_cnn_{CASE}: ok")
