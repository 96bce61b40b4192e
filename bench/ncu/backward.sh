#!/usr/bin/env bash
# Nsight Compute on the backward's main kernel, ours (default mode) beside PyTorch's
# FlashAttention-2 backward (`flash` backend, `flash_bwd_dq_dk_dv_loop...`), on the benchmark's
# shapes (f16, seqlen 4096, no mask). Run on the GPU host from the repository root, after
# `cargo xtask bundle`:   bench/ncu/backward.sh OUT_DIR [HEADDIM..]   (default 128)
# With DQ=1, the deterministic mode's dQ kernel (`flash_bwd_dq_sm80...`) is profiled too
# ("ours-dq"). With BEFORE=path/to/an/older/rustflash-bench set, that build's main kernel is
# profiled too ("before").
# Writes OUT_DIR/<who>-bwd-d<D>.ncu-rep and a CSV of every raw metric per profile, and prints the
# figures docs/performance-notes.md tracks (per-HMMA figures count the backward's matrix work,
# 2.5x the forward's; the dQ kernel alone does 3/5 of it).
#
# Which launch: the backward pass of rustflash-bench makes O and the LSE with one untimed forward,
# then in its warm-up round calls the default mode twice (main kernel launches 1 and 2) and the
# deterministic mode twice (3 and 4; dQ kernel launches 1 and 2), and so on. Only the main kernel's
# name holds `flash_bwd_sm80_` (the others: flash_bwd_pre_sm80_, flash_bwd_dq_sm80_,
# flash_bwd_convert_sm80_), so `--launch-skip 1 -c 1` is the default mode's second call, and for
# the dQ kernel the deterministic mode's second call.
set -u
out=$1; shift
dims=${*:-128}
ncu=$(command -v ncu || echo /usr/local/cuda/bin/ncu)
mkdir -p "$out"
export LD_LIBRARY_PATH=${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}/usr/local/cuda/lib64
here=$(cd "$(dirname "$0")" && pwd)
profile() { # NAME KERNEL_REGEX PROGRAM ARGS..
  local name=$1 regex=$2; shift 2
  "$ncu" --set full -k "regex:$regex" --launch-skip 1 -c 1 -f -o "$out/$name" "$@" > "$out/ncu-$name.log" 2>&1
}
for d in $dims; do
  args=(--pass backward --headdim "$d" --seqlen 4096 --causal no --dtype f16 --no-torch
        --rounds 4 --runs-per-round 5 --out "$out/bench-scratch")
  profile "ours-bwd-d$d" flash_bwd_sm80_ bundle/rustflash-bench "${args[@]}"
  profile "flash-bwd-d$d" flash_bwd_dq_dk_dv_loop python3 "$here/torch_sdpa.py" flash f16 "$d" 4096 0 backward
  who="ours flash"
  if [ "${DQ:-0}" = 1 ]; then
    profile "ours-dq-bwd-d$d" flash_bwd_dq_sm80_ bundle/rustflash-bench "${args[@]}"
    who="$who ours-dq"
  fi
  if [ -n "${BEFORE:-}" ]; then
    profile "before-bwd-d$d" flash_bwd_sm80_ "$BEFORE" "${args[@]}"
    who="before $who"
  fi
  for w in $who; do
    factor=2.5
    [ "$w" = ours-dq ] && factor=1.5
    "$ncu" -i "$out/$w-bwd-d$d.ncu-rep" --page raw --csv > "$out/$w-bwd-d$d.raw.csv" 2>/dev/null
    python3 "$here/summary.py" "$w backward d$d" "$out/$w-bwd-d$d.raw.csv" 4096 "$factor"
  done
done
