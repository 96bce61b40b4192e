#!/usr/bin/env bash
# Runs rustflash's GPU tests from a bundle made by `cargo xtask bundle`, on a host with an NVIDIA
# GPU and no Rust toolchain. Every log and JSON result ends up in one archive.
#
#   run.sh [quick|full] [--sanitize] [--only NAME] [--out DIR]
#   run.sh bench [--out DIR] [rustflash-bench arguments: --full, --pass backward, --dtype f16,
#                 --max-minutes 8.5, ...]   (forward, backward and forward+backward unless --pass)
#   run.sh startup [--out DIR]
#   run.sh python [--out DIR] [pytest arguments]
#
# quick: the quick tier (a few minutes at most); full: everything. --sanitize: afterwards, run the
# trials marked for it under compute-sanitizer (memcheck, racecheck). --only runs one test binary
# (bin/NAME). startup: the time a fresh process waits for its first forward result, twice with an
# empty driver JIT cache (CUDA_CACHE_PATH a new empty folder each time), then twice with the cache
# the second run filled. python: installs the bundled wheel (no dependencies: the host's PyTorch
# is used) into a folder on PYTHONPATH for $PYTHON (default python3), runs its pytest suite, then
# times flash_attn_func beside torch's flash backend. The archive goes to --out,
# else $OUT, else ./out. A GPU test that cannot find a GPU fails here (REQUIRE_GPU=1).
set -u
here=$(cd "$(dirname "$0")" && pwd)
tier=quick sanitize=0 only='*' out=${OUT:-$here/out}
# Python keeps the caller's library path: the system folder below can shadow the interpreter's
# own libpython (a pyenv or conda Python then loses its site-packages).
python_ld_path=${LD_LIBRARY_PATH-}
export LD_LIBRARY_PATH=${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}/usr/local/nvidia/lib64:/usr/lib/x86_64-linux-gnu:/usr/local/cuda/lib64

if [ "${1:-}" = bench ]; then
  # The benchmark: results (.json, .md) and its log straight into the output folder.
  shift
  if [ "${1:-}" = --out ]; then out=$2; shift 2; fi
  mkdir -p "$out"
  nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1
  "$here/rustflash-bench" --out "$out" "$@" 2> "$out/bench.log"
  rc=$?
  tail -5 "$out/bench.log"
  exit $rc
fi
if [ "${1:-}" = python ]; then
  shift
  if [ "${1:-}" = --out ]; then out=$2; shift 2; fi
  mkdir -p "$out"
  [ -d "$here/python/wheels" ] || { echo "no Python wheel in this bundle (maturin was missing)" >&2; exit 2; }
  # The interpreter that has PyTorch: PYTHON, else python3. The wheel goes into a folder of its
  # own on PYTHONPATH (no venv: ensurepip is often missing on GPU images).
  py=${PYTHON:-python3}
  export LD_LIBRARY_PATH=$python_ld_path
  site=$(mktemp -d)
  "$py" -m pip install -q --no-deps --no-index --target "$site" "$here"/python/wheels/rustflash-*.whl || exit 1
  nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1
  # From outside the bundle, so that the installed package is the one imported.
  (cd "$site" && PYTHONPATH="$site" REQUIRE_GPU=1 "$py" -m pytest -q -rs -p no:cacheprovider "$here/python/tests" "$@") \
    > "$out/pytest.log" 2>&1
  rc=$?
  tail -15 "$out/pytest.log"
  # Then the short timing of flash_attn_func beside torch's flash backend (same process for both).
  (cd "$site" && PYTHONPATH="$site" "$py" "$here/python/bench/time_interface.py" --out "$out") \
    > "$out/timing.log" 2>&1 || rc=1
  cat "$out/timing.log"
  # float32: both modes beside torch's efficient and math backends.
  (cd "$site" && PYTHONPATH="$site:$here/python/bench" "$py" "$here/python/bench/time_float32.py" --out "$out") \
    > "$out/timing_f32.log" 2>&1 || rc=1
  cat "$out/timing_f32.log"
  exit $rc
fi
if [ "${1:-}" = startup ]; then
  shift
  if [ "${1:-}" = --out ]; then out=$2; shift 2; fi
  mkdir -p "$out"
  log=$out/startup.log
  unset CUDA_CACHE_DISABLE
  nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1 | tee "$log"
  status=0 cache=
  for run in cold-1 cold-2 warm-1 warm-2; do
    case $run in
      cold-*) [ -n "$cache" ] && rm -rf "$cache"; cache=$(mktemp -d) ;;
    esac
    echo "== $run: CUDA_CACHE_PATH=$cache ($(du -sk "$cache" | cut -f1) KB cached)" | tee -a "$log"
    CUDA_CACHE_PATH=$cache "$here/rustflash-startup" 2>&1 | tee -a "$log"
    [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
  done
  rm -rf "$cache"
  echo "log: $log; exit status $status"
  exit $status
fi
while [ $# -gt 0 ]; do
  case $1 in
    quick|full) tier=$1 ;;
    --sanitize) sanitize=1 ;;
    --only) only=$2; shift ;;
    --out) out=$2; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

work=$(mktemp -d)
logs=$work/rustflash-logs
mkdir -p "$logs" "$out"
export REQUIRE_GPU=1 RUSTFLASH_TIER=$tier
nvidia-smi > "$logs/nvidia-smi.txt" 2>&1 || true
gpu=$(nvidia-smi --query-gpu=name,driver_version,compute_cap --format=csv,noheader 2>/dev/null | head -1)
echo "GPU: ${gpu:-unknown}" | tee "$logs/gpu.txt"

status=0
for t in "$here"/bin/$only; do
  name=$(basename "$t")
  echo "== $name ($tier)"
  RUSTFLASH_RESULTS="$logs/$name.results.jsonl" "$t" > "$logs/$name.log" 2>&1
  rc=$?
  grep -E "^test result|FAILED|panicked" "$logs/$name.log" | tail -20
  # Worst error ratio per tensor over the run (lines "    ratio O=0.412 LSE=0.031").
  grep -o "ratio .*" "$logs/$name.log" | tr ' ' '\n' | grep = |
    awk -F= '{ if (!($1 in w) || $2 > w[$1]) w[$1] = $2 } END { for (k in w) printf "worst ratio %s = %s\n", k, w[k] }' | sort
  [ $rc -eq 0 ] || status=1
done

if [ $sanitize = 1 ]; then
  cs=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
  for t in "$here"/bin/$only; do
    name=$(basename "$t")
    # Only binaries with trials marked for the sanitizer (it refuses a program with no CUDA call).
    [ "$(RUSTFLASH_SANITIZE=1 "$t" --list | grep -c ': test$')" -gt 0 ] || continue
    for tool in memcheck racecheck; do
      echo "== $name under compute-sanitizer --tool $tool"
      RUSTFLASH_SANITIZE=1 RUSTFLASH_RESULTS="$logs/$name.$tool.results.jsonl" \
        "$cs" --tool $tool --error-exitcode 99 "$t" > "$logs/$name.$tool.log" 2>&1
      rc=$?
      grep -E "^test result|ERROR SUMMARY|RACECHECK SUMMARY" "$logs/$name.$tool.log" | tail -3
      [ $rc -eq 0 ] || status=1
    done
  done
fi

archive="$out/rustflash-logs-$tier${only:+-$only}.tar.gz"
archive=${archive//\*/all}
tar czf "$archive" -C "$work" rustflash-logs
echo "logs: $archive; exit status $status"
exit $status
