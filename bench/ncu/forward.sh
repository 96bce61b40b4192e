#!/usr/bin/env bash
# Nsight Compute on the forward kernels, ours beside PyTorch's FlashAttention-2 (`flash` backend),
# on the benchmark's shapes. Run on the GPU host from the repository root, after
# `cargo xtask bundle`:   bench/ncu/forward.sh OUT_DIR [HEADDIM..]   (default 64 128)
# With BEFORE=path/to/an/older/rustflash-bench set, that build's kernel is profiled too
# ("before"; its kernels' names also start with flash_fwd_sm80).
# Writes OUT_DIR/<who>-d<D>.ncu-rep and a CSV of every raw metric per profile, and prints the
# figures docs/performance-notes.md tracks.
set -u
out=$1; shift
dims=${*:-64 128}
ncu=$(command -v ncu || echo /usr/local/cuda/bin/ncu)
mkdir -p "$out"
export LD_LIBRARY_PATH=${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}/usr/local/cuda/lib64
here=$(cd "$(dirname "$0")" && pwd)
for d in $dims; do
  "$ncu" --set full -k regex:flash_fwd_sm80 --launch-skip 3 -c 1 -f -o "$out/ours-d$d" \
    bundle/rustflash-bench --pass forward --headdim "$d" --seqlen 4096 --causal no --dtype f16 --no-torch \
    --rounds 4 --runs-per-round 5 --out "$out/bench-scratch" > "$out/ncu-ours-d$d.log" 2>&1
  "$ncu" --set full -k regex:flash_fwd --launch-skip 1 -c 1 -f -o "$out/flash-d$d" \
    python3 "$here/torch_sdpa.py" flash f16 "$d" 4096 0 > "$out/ncu-flash-d$d.log" 2>&1
  if [ -n "${BEFORE:-}" ]; then
    "$ncu" --set full -k regex:flash_fwd_sm80 --launch-skip 3 -c 1 -f -o "$out/before-d$d" \
      "$BEFORE" --headdim "$d" --seqlen 4096 --causal no --dtype f16 --no-torch \
      --rounds 4 --runs-per-round 5 --out "$out/bench-scratch" > "$out/ncu-before-d$d.log" 2>&1
  fi
  for who in ${BEFORE:+before} ours flash; do
    "$ncu" -i "$out/$who-d$d.ncu-rep" --page raw --csv > "$out/$who-d$d.raw.csv" 2>/dev/null
    python3 "$here/summary.py" "$who d$d" "$out/$who-d$d.raw.csv"
  done
done
