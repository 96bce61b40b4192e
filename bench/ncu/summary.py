# Prints the figures of one Nsight Compute raw CSV (one kernel) that the performance notes track.
import csv
import sys

label, path = sys.argv[1], sys.argv[2]
try:
    rows = list(csv.reader(open(path)))
    names, values = rows[0], rows[2]
except Exception as e:  # noqa: BLE001
    print(f"{label}: no profile ({e})")
    sys.exit(0)
m = dict(zip(names, values))

def num(key):
    try:
        return float(m.get(key, "nan").replace(",", ""))
    except ValueError:
        return float("nan")

def first(*keys):
    for k in keys:
        if k in m:
            return num(k)
    return float("nan")

inst = first("smsp__inst_executed.sum")
# mma.sync m16n8k16 does 4096 flops; the profiled shapes (batch x seqlen = 16384, heads x headdim
# = 2048, seqlen 4096, no mask) do 4 B S^2 H D = 32768 S · 4096 flops in the forward, whatever the
# head dim; a kernel doing FACTOR times the forward's matrix work (the backward's: 2.5) does
# FACTOR times as many.   usage: summary.py LABEL CSV [SEQLEN] [FACTOR]
seqlen = int(sys.argv[3]) if len(sys.argv) > 3 else 4096
factor = float(sys.argv[4]) if len(sys.argv) > 4 else 1.0
hmma = 32768 * seqlen * factor
ldsm = first("smsp__inst_executed_op_ldsm.sum")
print(f"{label}: kernel {m.get('Kernel Name', '?')[:70]}")
print(f"  time {first('gpu__time_duration.sum'):.3f} ms, registers {first('launch__registers_per_thread'):.0f}, "
      f"blocks/SM {first('launch__occupancy_limit_registers'):.0f} by registers, {first('launch__occupancy_limit_shared_mem'):.0f} by shared memory, "
      f"achieved occupancy {first('sm__warps_active.avg.pct_of_peak_sustained_active'):.1f}%")
print(f"  instructions {inst:.4g}, per HMMA {inst / hmma:.2f}, ldmatrix per HMMA {ldsm / hmma:.3f}, "
      f"tensor pipe {first('sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active'):.1f}% of peak, "
      f"issue active {first('smsp__issue_active.avg.pct_of_peak_sustained_active'):.1f}%")
stall = lambda r: first(f"smsp__average_warps_issue_stalled_{r}_per_issue_active.ratio")
print("  stalls per issued instruction: " + ", ".join(
    f"{r} {stall(r):.2f}" for r in ("barrier", "wait", "math_pipe_throttle", "short_scoreboard", "long_scoreboard",
                                    "mio_throttle", "not_selected", "dispatch_stall")))
