#!/usr/bin/env bash
# kiln's GPU check, run on a lent GPU host from the bundle tools/gpu_bundle.sh makes
# (gpu_bundle/run.sh unpacks it and calls this with --bundle). Needs on the host: an
# NVIDIA driver, python3 with PyTorch and its nvidia-* packages (cuDNN, NCCL, cuBLAS,
# cudart), coreutils' timeout; compute-sanitizer if the CUDA toolkit is there.
#
# Parts, in this order, each stopped at its own time limit and all within --budget:
#   env          GPU, driver, CUDA/cuDNN/NCCL versions of the host's PyTorch
#   cuda_tests   kiln_cuda_tests, every test case
#   train_cnn    kiln_train_cnn --device cuda for one epoch on the bundled Fashion-MNIST subset
#   bench_kernels  kiln_bench_kernels --device cuda (memory-bound kernels as a fraction of
#                the measured device copy bandwidth; matmul against cuBLAS)
#   train_step   tools/bench_vs_torch.py --device cuda: kiln's train step against the same
#                model in the host's PyTorch, side by side
#   attention    kiln_bench_attention --device cuda (causal, head dim 64, T = 1024 and 4096:
#                naive, fused, Performer, RFA) beside the host PyTorch's
#                scaled_dot_product_attention in f32 and bf16 (tools/bench_attention_torch.py)
#   gpt_step     tools/gpt_vs_torch.py --mode step --device cuda: kiln_train_gpt's training step
#                (6 layers, 384 dims, context 256, f32) against the same GPT in the host's PyTorch
#   ddp          kiln-run --nproc-per-node 1 kiln_train_cnn --device cuda (the NCCL process
#                group through the launcher; the multi-rank DDP tests are in cuda_tests)
#   neighbor     kiln_neighbor_check on CUDA tensors: one rank on the NCCL group (neighbor
#                exchanges and the hierarchy need a GPU per rank, so with one GPU the
#                group has world size 1), then 2 ranks sharing the GPU over Gloo (staged)
#   gpt2_bf16    tools/gpt_vs_torch.py --mode step: GPT-2 124M (vocabulary padded to 50304) in bf16
#                autocast against the host PyTorch under autocast with SDPA (flash) attention
#   gan_step     tools/bench_gan_vs_torch.py --device cuda: the 64 x 64 RGB DCGAN (width 64, batch 64, the
#                paper's D without minibatch discrimination)
#                training in kiln_train_gan against the same loop in the host's PyTorch eager
#   gan_profile  Nsight Systems' kernel and CUDA API summaries of a short kiln_train_gan run on
#                the same model (when the host has nsys)
#   paleo        kiln_paleo --device cuda --validate 50: the PALEO-style step prediction for
#                kiln_train_cnn's model on the GPU against its measured step
#   research     kiln_train_cnn --device cuda --optimizer proxadam (the fused ProxAdam kernel)
#                and kiln_mcr2 --device cuda (MCR^2 through cuSOLVER's Cholesky), short runs
#   memcheck     compute-sanitizer --tool memcheck on every CUDA test case
#   racecheck    compute-sanitizer --tool racecheck on the reduction/softmax/norm tests
# Results: one log per part and JSON from the programs that write it, in a scratch folder
# packed (files under 2 MB) into results.tar.gz in $OUT (or --out) after every part, so a
# cut-off still returns what ran; beside it summary.json with every part's status (pass,
# fail, timeout, skipped, dry), seconds and the headline figures. (The device tool brings
# back at most 8 files from $OUT.) The CUDA tests run one process per test case, 8 at a
# time (tools/run_tests_isolated.py), so one case that breaks the CUDA context costs only
# itself; memcheck and racecheck run the same way.
#
# usage: gpu_check.sh --bundle DIR [--out DIR] [--budget SECONDS] [--only a,b,...] [--dry-run]
#   --dry-run   no GPU needed: resolve the libraries, print and record each part's command
set -uo pipefail

bundle=""
out=${OUT:-}
budget=480
only=""
dry=0
while [ $# -gt 0 ]; do
  case $1 in
    --bundle) bundle=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --budget) budget=$2; shift 2 ;;
    --only) only=$2; shift 2 ;;
    --dry-run) dry=1; shift ;;
    -h|--help) sed -n '2,/^set -uo/p' "${BASH_SOURCE[0]}" | grep '^#' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
  esac
done
[ -n "$bundle" ] || bundle=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
[ -n "$out" ] || out=$bundle/out
mkdir -p "$out"
res=$(mktemp -d "${TMPDIR:-/tmp}/kiln_gpu_results.XXXXXX")
start=$(date +%s)
say() { printf '[gpu_check %4ss] %s\n' "$(( $(date +%s) - start ))" "$*"; }

# ---- libraries -------------------------------------------------------------------------
# cuDNN, NCCL, cuBLAS and cudart from PyTorch's nvidia-* packages (site-packages/nvidia/*/lib).
py=$(command -v python3 || true)
nvidia_libs=""
if [ -n "$py" ]; then
  nvidia_libs=$("$py" - <<'EOF' 2>/dev/null
import glob, os
try:
    import nvidia
    roots = list(nvidia.__path__)
except Exception:
    roots = []
dirs = []
for root in roots:
    dirs += sorted(d for d in glob.glob(os.path.join(root, "*", "lib")) if os.path.isdir(d))
print(":".join(dirs))
EOF
)
fi
kiln_ld="$bundle/lib${nvidia_libs:+:$nvidia_libs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# Wrappers with kiln's library path, so that python (torch) keeps the host's own.
mkdir -p "$bundle/run"
for b in "$bundle"/bin/*; do
  n=$(basename "$b")
  printf '#!/usr/bin/env bash\nLD_LIBRARY_PATH=%q exec %q "$@"\n' "$kiln_ld" "$b" > "$bundle/run/$n"
  chmod +x "$bundle/run/$n"
done
R=$bundle/run
data=$bundle/data/fashion-mnist

sanitizer=$(command -v compute-sanitizer || true)
for d in /usr/local/cuda/bin /usr/local/cuda-13*/bin /opt/nvidia/*/bin; do
  [ -z "$sanitizer" ] && [ -x "$d/compute-sanitizer" ] && sanitizer=$d/compute-sanitizer
done

# Libraries a binary would not find (names).
unresolved() { LD_LIBRARY_PATH=$kiln_ld ldd "$1" 2>/dev/null | awk '/not found/ {print $1}' | sort -u | tr '\n' ' '; }

# ---- parts -----------------------------------------------------------------------------
summary=$res/summary.tsv
pack() {
  (cd "$res" && find . -type f -size -2M -print0 | tar -czf "$out/results.tar.gz" --null -T -) 2>/dev/null
  [ -f "$res/summary.json" ] && cp "$res/summary.json" "$out/summary.json"
  return 0
}
: > "$summary"
want() { [ -z "$only" ] || [[ ",$only," == *",$1,"* ]]; }

# part NAME LIMIT CMD...: runs CMD with stdout+stderr in $res/NAME.log, stopped after
# LIMIT seconds (less if the budget is nearly spent), and records the outcome.
part() {
  local name=$1 limit=$2
  shift 2
  if ! want "$name"; then return; fi
  local left=$(( budget - ($(date +%s) - start) - 10 ))
  if [ "$dry" = 1 ]; then
    printf 'dry run: %s\n' "$*" > "$res/$name.log"
    printf '%s\tdry\t0\t0\t%s\n' "$name" "$*" >> "$summary"
    say "$name: would run (limit ${limit}s): $*"
    return
  fi
  if [ "$left" -lt 20 ]; then
    printf '%s\tskipped\t-\t0\tbudget spent\n' "$name" >> "$summary"
    say "$name: skipped (the budget of ${budget}s is spent)"
    return
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  say "$name: running (limit ${limit}s)"
  local t0=$(date +%s) rc status
  timeout -k 10 "$limit" "$@" > "$res/$name.log" 2>&1
  rc=$?
  case $rc in
    0) status=pass ;;
    124|137) status=timeout ;;
    77) status=skipped ;;
    *) status=fail ;;
  esac
  printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$status" "$rc" "$(( $(date +%s) - t0 ))" "$*" >> "$summary"
  say "$name: $status (exit $rc, $(( $(date +%s) - t0 ))s); log: $res/$name.log"
  tail -n 3 "$res/$name.log" | sed 's/^/    /'
  pack
}

{
  echo "bundle commit: $(cat "$bundle/COMMIT" 2>/dev/null)"
  echo "host: $(uname -a)"
  echo "python: ${py:-none}"
  echo "nvidia library folders: ${nvidia_libs:-none found}"
  echo "compute-sanitizer: ${sanitizer:-not found}"
  for b in "$bundle"/bin/*; do echo "unresolved by $(basename "$b"): $(unresolved "$b")"; done
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv
  [ -n "$py" ] && "$py" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version(), "nccl", torch.cuda.nccl.version() if torch.cuda.is_available() else None, "gpus", torch.cuda.device_count())' 2>&1
} > "$res/env.log" 2>&1
printf 'env\t%s\t0\t0\tversions\n' "$([ "$dry" = 1 ] && echo dry || echo pass)" >> "$summary"
say "environment:"
sed 's/^/    /' "$res/env.log"

iso="${py:-python3} $bundle/tools/run_tests_isolated.py"
part cuda_tests 120 $iso "$R/kiln_cuda_tests" --jobs 8 --timeout 100 --json "$res/cuda_tests.json"
# The sanitizers early: they find what the figures below would hide. On hosts whose
# runtime refuses them (gVisor: "Device not supported") every case fails at once: look
# at the log's first case before reading the rest as kiln's bugs.
if [ -n "$sanitizer" ] || [ "$dry" = 1 ]; then
  # memcheck: every case (94 of them took 54 s at 12 jobs on the second GPU run). Only
  # memory errors count: CUDA API errors are not reported (--report-api-errors no), as
  # some are the point of a test (the out-of-memory case) and NCCL probes its own kernel
  # images through failing calls. Under the sanitizer the tests' own timeouts (NCCL's
  # communicator set-up) are 4 times longer (KILN_TEST_TIMEOUT_SCALE).
  san="env KILN_TEST_TIMEOUT_SCALE=4 ${sanitizer:-compute-sanitizer} --report-api-errors no --error-exitcode 9"
  part memcheck 100 $iso "$R/kiln_cuda_tests" --jobs 12 --timeout 90 --json "$res/memcheck.json" \
    --wrap "$san --tool memcheck"
  # racecheck is slower: the kernels with shared memory or warp exchanges (the reduction
  # and softmax cases took more than 60 s each on the H200).
  part racecheck 110 $iso "$R/kiln_cuda_tests" --jobs 12 --timeout 105 --json "$res/racecheck.json" \
    --wrap "$san --tool racecheck" \
    --filter "[reduce],[softmax],[norm],[attention]"
else
  for n in memcheck racecheck; do
    want "$n" && printf '%s\tskipped\t-\t0\tcompute-sanitizer not found on the host\n' "$n" >> "$summary"
  done
  say "memcheck, racecheck: skipped (no compute-sanitizer on this host)"
fi
part train_cnn 45 "$R/kiln_train_cnn" --device cuda --epochs 1 --data-dir "$data" --run-dir "$res/train_cnn_run" --overwrite
part bench_kernels 30 "$R/kiln_bench_kernels" --device cuda --json-out "$res/bench_kernels.jsonl"
part train_step 45 "${py:-python3}" "$bundle/tools/bench_vs_torch.py" --device cuda --threads default --rounds 2 \
  --steps 30 --kiln-exe "$R/kiln_bench_train_step" --json "$res/train_step.json"
part gpt_step 50 "${py:-python3}" "$bundle/tools/gpt_vs_torch.py" "$R/kiln_train_gpt" --mode step --steps 100 \
  --device cuda --set layers=6 --set heads=6 --set embd=384 --set block=256 --set batch=32 --set eval_batches=2 \
  --out "$res/gpt_step.json" --work "$res/gpt_step" -- --text "$bundle/data/kjv.txt" --cache-dir "$res/cache"
# GPT-2 124M (12 layers, 12 heads, 768 dims, context 1024, vocabulary padded to 50304 as
# nanoGPT does) in bf16 autocast against the host PyTorch under torch.autocast with its
# flash attention (F.scaled_dot_product_attention).
part gpt2_bf16 75 "${py:-python3}" "$bundle/tools/gpt_vs_torch.py" "$R/kiln_train_gpt" --mode step --steps 40 \
  --device cuda --set layers=12 --set heads=12 --set embd=768 --set block=1024 --set batch=8 --set vocab=50304 \
  --set dtype=bf16 --set sdpa=1 --set lr=0.0006 --set min_lr=0.00006 --set warmup=10 --set eval_batches=1 \
  --set eval_batch_size=8 --out "$res/gpt2_bf16.json" --work "$res/gpt2_bf16" -- --text "$bundle/data/kjv.txt" \
  --cache-dir "$res/cache"
part gan_step 75 "${py:-python3}" "$bundle/tools/bench_gan_vs_torch.py" --device cuda --image-size 64 --width 64 \
  --mbd-kernels 0 --iters 300 --warmup 10 --rounds 1 --kiln-exe "$R/kiln_train_gan" --json "$res/gan_step.json"
# Where kiln's DCGAN step spends its GPU time and its CUDA API calls (with Nsight Systems,
# when the host has it): a short run's kernel and API summaries.
nsys=$(command -v nsys || ls /usr/local/cuda/bin/nsys /opt/nvidia/nsight-systems/*/bin/nsys 2>/dev/null | head -1)
if [ -n "$nsys" ] || [ "$dry" = 1 ]; then
  cat > "$res/gan_profile.sh" <<EOF_PROFILE
set -euo pipefail
"${py:-python3}" -c 'import sys; sys.path.insert(0, sys.argv[1]); import bench_gan_vs_torch as b; b.write_ppm_folder(sys.argv[2], 640, 64)' "$bundle/tools" "$res/gan_profile_data"
"${nsys:-nsys}" profile -t cuda -o "$res/gan_profile" --force-overwrite true "$R/kiln_train_gan" --data "folder:$res/gan_profile_data" --image-size 64 --channels 3 --width 64 --no-minibatch-discrimination --epochs 1 --no-plot --device cuda --run-dir "$res/gan_profile_run" > /dev/null
"${nsys:-nsys}" stats --report cuda_gpu_kern_sum --report cuda_api_sum --format csv "$res/gan_profile.nsys-rep" | cut -c1-220 | head -90
EOF_PROFILE
  part gan_profile 60 bash "$res/gan_profile.sh"
else
  want gan_profile && printf 'gan_profile\tskipped\t-\t0\tno nsys on the host\n' >> "$summary"
  say "gan_profile: skipped (no nsys on this host; looked in PATH, /usr/local/cuda/bin, /opt/nvidia)"
fi
part paleo 45 "$R/kiln_paleo" --device cuda --validate 50 --batch 256
part research 35 bash -c "'$R/kiln_train_cnn' --device cuda --optimizer proxadam --prox-p 0.5 --epochs 1 \
  --limit-train 4096 --limit-test 1000 --data-dir '$data' --run-dir '$res/proxadam_run' --overwrite && \
  '$R/kiln_mcr2' --device cuda --epochs 1 --limit-train 4000 --limit-test 1000 --data-dir '$data'"
part attention 35 bash -c "'$R/kiln_bench_attention' --device cuda --causal --t-list 1024,4096 --json \
  > '$res/attention_kiln.jsonl' && '${py:-python3}' '$bundle/tools/bench_attention_torch.py' --device cuda --causal \
  --t-list 1024,4096 > '$res/attention_torch.jsonl' && '${py:-python3}' '$bundle/tools/bench_attention_torch.py' \
  --device cuda --causal --t-list 1024,4096 --dtype bfloat16 >> '$res/attention_torch.jsonl'"
part ddp 30 "${py:-python3}" "$bundle/tools/kiln-run" --nproc-per-node 1 "$R/kiln_train_cnn" --device cuda \
  --epochs 1 --limit-train 4096 --limit-test 1000 --data-dir "$data" --run-dir "$res/ddp_run" --overwrite
part neighbor 30 bash -c "'${py:-python3}' '$bundle/tools/kiln-run' --nproc-per-node 1 '$R/kiln_neighbor_check' \
  --device cuda --backend nccl && '${py:-python3}' '$bundle/tools/kiln-run' --nproc-per-node 2 \
  '$R/kiln_neighbor_check' --device cuda --backend gloo"

# ---- summary ---------------------------------------------------------------------------
"${py:-python3}" - "$res" "$dry" <<'EOF'
import json, os, re, sys
out, dry = sys.argv[1], sys.argv[2] == "1"
parts = []
for line in open(os.path.join(out, "summary.tsv")):
    name, status, rc, secs, cmd = line.rstrip("\n").split("\t", 4)
    parts.append({"name": name, "status": status, "exit": rc, "seconds": int(secs), "command": cmd,
                  "log": os.path.join(out, name + ".log")})
summary = {"dry_run": dry, "parts": parts}
def read(name):
    try:
        return open(os.path.join(out, name), errors="replace").read()
    except OSError:
        return ""
m = re.search(r"test cases:\s*(\d+)\s*\|\s*(\d+) passed(?:\s*\|\s*(\d+) failed)?", read("cuda_tests.log"))
if m:
    summary["cuda_tests"] = {"cases": int(m.group(1)), "passed": int(m.group(2)), "failed": int(m.group(3) or 0)}
elif "All tests passed" in read("cuda_tests.log"):
    m = re.search(r"All tests passed \((\d+) assertions in (\d+) test cases\)", read("cuda_tests.log"))
    if m:
        summary["cuda_tests"] = {"cases": int(m.group(2)), "passed": int(m.group(2)), "failed": 0}
for name in ("train_cnn", "ddp", "paleo"):
    lines = [l for l in read(name + ".log").splitlines() if l.startswith("{")]
    if lines:
        try:
            summary[name] = json.loads(lines[-1])
        except ValueError:
            pass
try:
    summary["gan_step"] = json.load(open(os.path.join(out, "gan_step.json")))
except (OSError, ValueError):
    pass
try:
    summary["train_step"] = json.load(open(os.path.join(out, "train_step.json")))["settings"]
except (OSError, ValueError, KeyError):
    pass
for name in ("attention_kiln", "attention_torch"):
    got = []
    for line in read(name + ".jsonl").splitlines():
        try:
            got.append(json.loads(line))
        except ValueError:
            pass
    if got:
        summary[name] = got
for name in ("gpt_step", "gpt2_bf16"):
    try:
        g = json.load(open(os.path.join(out, name + ".json")))
        summary[name] = {"kiln_tokens_per_second": g["kiln"]["summary"]["tokens_per_second"],
                         "torch_tokens_per_second": g["torch"]["tokens_per_second"],
                         "ratio": g["ratio_tokens_per_second"], "config": g["config"]}
    except (OSError, ValueError, KeyError):
        pass
rows = []
for line in read("bench_kernels.jsonl").splitlines():
    try:
        rows.append(json.loads(line))
    except ValueError:
        pass
if rows:
    summary["bench_kernels"] = rows
with open(os.path.join(out, "summary.json"), "w") as f:
    json.dump(summary, f, indent=1)
bad = [p["name"] for p in parts if p["status"] in ("fail", "timeout")]
print("gpu_check: " + ("dry run, nothing executed" if dry else
      ("all parts passed or were skipped" if not bad else "failed: " + ", ".join(bad))))
sys.exit(1 if bad else 0)
EOF
rc=$?
pack
say "results: $out/results.tar.gz (every part's log), $out/summary.json"
exit $rc
