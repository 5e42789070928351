#!/usr/bin/env bash
# tools/gpu_bundle.sh: packs what a one-command GPU check needs into one folder that the
# `device` tool can carry to a lent GPU host (no apt, no internet there; 64 MiB in all).
#
# It builds kiln with CUDA here (sm_90 by default) unless --no-build, then writes OUT
# (default gpu_bundle/, git-ignored):
#   OUT/kiln_gpu.tar.xz   bin/ (the CUDA tests, kiln_bench_kernels, kiln_bench_train_step,
#                         kiln_train_cnn, kiln_train_gan; stripped), lib/ (libkiln and every
#                         shared library they load from ldd, except the C library and the
#                         ones the host provides: the CUDA driver, cudart, cuBLAS(Lt), cuDNN
#                         and NCCL, found there in PyTorch's nvidia-* Python packages),
#                         data/fashion-mnist (the first 12,000 training and 2,000 test
#                         images), tools/ (the PyTorch side of the benchmarks, kiln-run)
#   OUT/run.sh            the runner: unpacks the archive and runs the check
#                         (tools/gpu_check.sh; `OUT/run.sh --help`)
# Then it checks the bundle: its size, and that `ldd` of every binary inside, with only
# the bundle's lib/ added, finds everything except the host-provided libraries; and runs
# the runner with --dry-run.
#
# usage: tools/gpu_bundle.sh [--build-dir DIR] [--out DIR] [--no-build] [--no-check]
# On the device:  bash gpu_bundle/run.sh        (writes its results into $OUT)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir=${KILN_BUILD_DIR:-$repo/build}
out=$repo/gpu_bundle
do_build=1
do_check=1
limit_mib=60  # the device tool carries 64 MiB; leave room for the runner and the tree

while [ $# -gt 0 ]; do
  case $1 in
    --build-dir) build_dir=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --no-build) do_build=0; shift ;;
    --no-check) do_check=0; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | grep '^#' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu_bundle.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
  esac
done

say() { printf '[gpu_bundle] %s\n' "$*"; }
die() { printf '[gpu_bundle] error: %s\n' "$*" >&2; exit 1; }

programs=(tests/kiln_cuda_tests tools/kiln_bench_kernels tools/kiln_bench_train_step tools/kiln_train_cnn
          tools/kiln_train_gan tools/kiln_train_gpt tools/kiln_bench_attention tests/kiln_neighbor_check
          tools/kiln_mcr2 tools/kiln_paleo)

# ---- build -----------------------------------------------------------------------------
if [ "$do_build" = 1 ]; then
  if [ ! -f "$build_dir/CMakeCache.txt" ]; then
    say "configuring $build_dir with CUDA (sm_${CMAKE_CUDA_ARCHITECTURES:-90})"
    cmake -S "$repo" -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release -DKILN_CUDA=ON \
      -DCMAKE_CUDA_ARCHITECTURES="${CMAKE_CUDA_ARCHITECTURES:-90}" >/dev/null
  fi
  targets=()
  for p in "${programs[@]}"; do targets+=("$(basename "$p")"); done
  say "building ${targets[*]} in $build_dir"
  cmake --build "$build_dir" --target "${targets[@]}"
fi
grep -q '^KILN_CUDA:BOOL=ON' "$build_dir/CMakeCache.txt" 2>/dev/null ||
  die "$build_dir is not a CUDA build of kiln (configure it with -DKILN_CUDA=ON, or drop --no-build)"
for p in "${programs[@]}"; do [ -x "$build_dir/$p" ] || die "missing $build_dir/$p (build it, or drop --no-build)"; done

# ---- stage -----------------------------------------------------------------------------
stage=$(mktemp -d "${TMPDIR:-/tmp}/kiln_gpu_bundle.XXXXXX")
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/bin" "$stage/lib" "$stage/data/fashion-mnist" "$stage/tools"

# Libraries the host provides (driver; CUDA libraries from PyTorch's nvidia-* packages) and
# the C library, which must come from the host: kept out. Everything else ldd names goes in.
host_provided='^(libcuda\.so|libcudart\.so|libcublas\.so|libcublasLt\.so|libcudnn[a-z_]*\.so|libnccl\.so|libnvrtc)'
system_libs='^(linux-vdso\.so|ld-linux|libc\.so|libm\.so|libdl\.so|libpthread\.so|librt\.so|libutil\.so)'

for p in "${programs[@]}"; do
  cp "$build_dir/$p" "$stage/bin/"
  strip --strip-unneeded "$stage/bin/$(basename "$p")"
done
declare -A seen=()
for p in "${programs[@]}"; do
  while read -r name path; do
    [ -n "$name" ] || continue
    name=$(basename "$name")
    [[ $name =~ $host_provided || $name =~ $system_libs ]] && continue
    [ -n "${seen[$name]:-}" ] && continue
    seen[$name]=1
    [ -f "$path" ] || die "ldd of $p: $name not found here ($path)"
    cp -L "$path" "$stage/lib/$name"
    chmod u+w "$stage/lib/$name"
    strip --strip-unneeded "$stage/lib/$name" 2>/dev/null || true
  done < <(ldd "$build_dir/$p" | awk '/=>/ {print $1, $3} !/=>/ {print $1, ""}')
done

# A subset of Fashion-MNIST in its own IDX format (the training run on the GPU is a check,
# not a result).
data_src=${KILN_FASHION_MNIST:-/usr/share/datasets/fashion-mnist}
python3 - "$data_src" "$stage/data/fashion-mnist" <<'EOF'
import gzip, struct, sys
src, dst = sys.argv[1], sys.argv[2]
for prefix, n in (("train", 12000), ("t10k", 2000)):
    with gzip.open(f"{src}/{prefix}-images-idx3-ubyte.gz") as f:
        magic, count, rows, cols = struct.unpack(">IIII", f.read(16))
        pixels = f.read(n * rows * cols)
    with gzip.open(f"{dst}/{prefix}-images-idx3-ubyte.gz", "wb", compresslevel=9) as f:
        f.write(struct.pack(">IIII", magic, n, rows, cols) + pixels)
    with gzip.open(f"{src}/{prefix}-labels-idx1-ubyte.gz") as f:
        magic, count = struct.unpack(">II", f.read(8))
        labels = f.read(n)
    with gzip.open(f"{dst}/{prefix}-labels-idx1-ubyte.gz", "wb", compresslevel=9) as f:
        f.write(struct.pack(">II", magic, n) + labels)
EOF
cp "$repo/tools/bench_vs_torch.py" "$repo/tools/resnet_cnn_torch.py" "$repo/tools/kiln-run" \
   "$repo/tools/gpt_vs_torch.py" "$repo/tools/nanogpt_torch.py" "$repo/tools/safetensors_io.py" \
   "$repo/tools/bench_attention_torch.py" "$repo/tools/run_tests_isolated.py" \
   "$repo/tools/bench_gan_vs_torch.py" "$repo/tools/dcgan_torch.py" "$stage/tools/"
# GPT's text: the first 1.5 MB of the King James Bible (bible-kjv), when it is installed here.
if command -v bible > /dev/null; then
  bible -f 'gen1:1-rev22:21' 2> /dev/null | head -c 1500000 > "$stage/data/kjv.txt" || true
fi
cp "$repo/tools/gpu_check.sh" "$stage/gpu_check.sh"
git -C "$repo" rev-parse HEAD > "$stage/COMMIT" 2>/dev/null || echo unknown > "$stage/COMMIT"

# ---- pack ------------------------------------------------------------------------------
mkdir -p "$out"
rm -f "$out/kiln_gpu.tar.xz" "$out/run.sh"
say "compressing $(du -sh "$stage" | cut -f1) into $out/kiln_gpu.tar.xz"
XZ_OPT="-6 -T0" tar -cJf "$out/kiln_gpu.tar.xz" -C "$stage" .
cat > "$out/run.sh" <<'EOF'
#!/usr/bin/env bash
# The GPU check of kiln, carried by the device tool: unpacks kiln_gpu.tar.xz (beside this
# script) into a scratch folder and runs its gpu_check.sh with the same arguments.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/kiln_gpu.XXXXXX")
tar -xJf "$here/kiln_gpu.tar.xz" -C "$work"
exec bash "$work/gpu_check.sh" --bundle "$work" "$@"
EOF
chmod +x "$out/run.sh"
size=$(du -cb "$out/kiln_gpu.tar.xz" "$out/run.sh" | tail -1 | cut -f1)
say "bundle: $out ($(( size / 1024 / 1024 )) MiB; limit ${limit_mib} MiB)"
[ "$size" -le $(( limit_mib * 1024 * 1024 )) ] || die "the bundle is $(( size / 1024 / 1024 )) MiB, over ${limit_mib} MiB"

# ---- check -----------------------------------------------------------------------------
if [ "$do_check" = 1 ]; then
  # Every binary inside must resolve every library from the bundle or the system's C
  # library, except the ones the host provides: checked with this machine's CUDA folders
  # hidden (the loader must not find them here either).
  missing=0
  for b in "$stage"/bin/* "$stage"/lib/*.so*; do
    while read -r name; do
      [[ $name =~ $host_provided ]] && continue
      echo "[gpu_bundle] $(basename "$b"): $name would be missing on the host" >&2
      missing=1
    done < <(env -i PATH="$PATH" LD_LIBRARY_PATH="$stage/lib" ldd "$b" 2>/dev/null |
             awk '/=>/ && ($3 == "not" || $3 !~ /^\//) {print $1} /=>/ && $3 ~ /^\// {print "@" $1 " " $3}' |
             while read -r n p; do
               case $n in
                 @*) n=${n#@}
                     # Found outside the bundle: fine for the C library, not for anything else.
                     if [[ ! $n =~ $system_libs && ! $n =~ $host_provided && $p != "$stage"/* ]]; then echo "$n"; fi ;;
                 *) echo "$n" ;;
               esac
             done)
  done
  [ "$missing" = 0 ] || die "the bundle does not resolve its libraries"
  say "ldd: every binary resolves all but the host's CUDA libraries from the bundle"
  say "dry run of the runner:"
  rm -rf "$out/dry_run"
  OUT="$out/dry_run" bash "$out/run.sh" --dry-run
fi
say "done: carry the repository (gpu_bundle/ is git-ignored: name it in carry) and run 'bash gpu_bundle/run.sh'"
