//! Attention backward on the GPU (issue 10): dQ, dK and dV against the float64 reference backward
//! with the brief's criterion, per tensor `max|ours − ref| <= 3 · max|plain − ref| + 2 ulp`, over
//! the forward's matrix — f16 and bf16, head dims 1..=256 (every one, and the bucket edges in the
//! full matrix), lengths of 1 and off every tile, causal or not, GQA groups 1, 2 and 8, contiguous,
//! packed (Q, K, V in one buffer and dQ, dK, dV in one) and padded layouts, each tile class
//! forced and the default, the default (atomic) and the deterministic mode. Gradients and the
//! workspace are poisoned with NaN before every launch. See `backward_case` for what one trial
//! checks and why the forward's O and LSE come from the reference.
//!
//! Also: the deterministic mode run twice, bit for bit; the saved context (`forward_saved`, then
//! `SavedForward::backward`); empty problems; argument errors before any launch. On the CPU: the
//! host side of a trial's check run with plain gradients in place of a kernel's (and shown to
//! catch what it must), and checks of the matrix itself (coverage, tier sizes, the reference's
//! time budget).
//!
//! `RUSTFLASH_TIER=quick` runs about 200 GPU trials (the Volta path's and float32's included) in about a minute; the full tier a few minutes on
//! an H100 host (the CPU reference dominates: shapes are capped so that one (batch, K/V head)
//! pair's reference takes at most ~3 s). Every trial prints its error ratios (`ratio dQ=.. dK=..
//! dV=..`), which the bundle's summary reduces to the worst per tensor.

use half::f16;
use rustflash::cudarc::driver::CudaSlice;
use rustflash::layout::AttentionShape;
use rustflash::{
    BackwardOptions, BackwardTile, BackwardWorkspace, DeviceTensor, DeviceTensorMut, Error, F32Precision,
    FlashAttention, ForwardOptions, KernelPath,
};
use rustflash_tests::backward_case::BackwardCase;
use rustflash_tests::forward_case::Placement;
use rustflash_tests::gpu::{download, open, upload};
use rustflash_tests::harness::{Context, TestResult, Trial, ensure, fail, run};
use std::ops::Range;
use std::process::ExitCode;

/// Every bucket edge (buckets are multiples of 32 up to 256), odd dims, 100.
const HEAD_DIMS: [usize; 15] = [1, 31, 32, 33, 59, 64, 96, 100, 128, 129, 160, 192, 224, 255, 256];
/// Lengths of 1 and off every tile; `seqlen_q > seqlen_k` leaves causal rows without keys.
const SEQLENS: [(usize, usize); 8] =
    [(1, 1), (1, 300), (300, 1), (113, 203), (256, 256), (799, 3), (1000, 1000), (130, 70)];
const QUICK_DIMS: [usize; 4] = [1, 59, 128, 256];
const QUICK_SEQLENS: [(usize, usize); 4] = [(1, 300), (300, 1), (113, 203), (799, 3)];
const GQA: [usize; 3] = [1, 2, 8];
const PLACEMENTS: [Placement; 3] = [Placement::Contiguous, Placement::Packed, Placement::Padded];
const TILES: [Option<BackwardTile>; 3] = [None, Some(BackwardTile::Large), Some(BackwardTile::Small)];
const BUCKETS: [usize; 8] = [32, 64, 96, 128, 160, 192, 224, 256];

/// The most reference work one (batch, K/V head) pair of a matrix case may take (units of
/// `backward_case::REFERENCE_NS_PER_UNIT`, ~2.7 s): larger GQA groups give way to smaller.
const MAX_UNITS_PER_PAIR: f64 = 2.7e8;
/// Budgets of the reference's estimated time, seconds on a 16-core GPU host.
const QUICK_REFERENCE_SECONDS: f64 = 45.0;
const FULL_REFERENCE_SECONDS: f64 = 240.0;
const QUICK_TRIALS: Range<usize> = 150..261;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// One launch, checked.
    Check,
    /// Two launches, bit for bit equal, the first checked.
    Bitwise,
    /// Through `forward_saved` and `SavedForward::backward`.
    Saved,
}

struct Planned {
    name: String,
    case: BackwardCase,
    kind: Kind,
    quick: bool,
    sanitize: bool,
}

fn planned(group: &str, case: BackwardCase, kind: Kind) -> Planned {
    Planned { name: format!("backward::{group}::{}", case.name()), case, kind, quick: true, sanitize: false }
}

impl Planned {
    fn full_only(mut self) -> Self {
        self.quick = false;
        self
    }
    fn quick_if(mut self, quick: bool) -> Self {
        self.quick = quick;
        self
    }
    fn sanitize(mut self) -> Self {
        self.sanitize = true;
        self
    }
    fn trial(self) -> Trial {
        let (case, kind) = (self.case, self.kind);
        let t = Trial::gpu(self.name, move |ctx| match kind {
            Kind::Check => case.run(ctx),
            Kind::Bitwise => case.run_twice_bitwise(ctx),
            Kind::Saved => case.run_saved(ctx),
        });
        let t = if self.quick { t } else { t.full_only() };
        if self.sanitize { t.sanitize() } else { t }
    }
}

#[allow(clippy::too_many_arguments)]
fn case(
    bf16: bool,
    d: usize,
    (sq, sk): (usize, usize),
    causal: bool,
    gqa: usize,
    placement: Placement,
    tile: Option<BackwardTile>,
    deterministic: bool,
) -> BackwardCase {
    // Packing needs one length and one head count: a packed square problem drops its group,
    // otherwise padded strides stand in (as in the forward's matrix).
    let placement = match placement {
        Placement::Packed if sq != sk => Placement::Padded,
        p => p,
    };
    let mut gqa = if placement == Placement::Packed { 1 } else { gqa };
    let batch = if sq * sk > 300_000 { 1 } else { 2 };
    let shape = |gqa: usize| AttentionShape {
        batch,
        seqlen_q: sq,
        seqlen_k: sk,
        heads_q: 2 * gqa,
        heads_kv: 2,
        headdim: d,
    };
    let make = |gqa| BackwardCase {
        bf16,
        f32: None,
        shape: shape(gqa),
        causal,
        placement,
        tile,
        deterministic,
        path: KernelPath::Ampere,
    };
    while gqa > 1 && make(gqa).reference_units_per_pair() > MAX_UNITS_PER_PAIR {
        gqa = if gqa > 2 { 2 } else { 1 };
    }
    make(gqa)
}

fn plan() -> Vec<Planned> {
    let mut plan = Vec::new();

    plan.extend(matrix("matrix", &[false, true], |c| c));
    plan.extend(forced_tiles("tile", |c| c));

    // Every head dim from 1 to 256 at one small shape.
    for d in 1..=256 {
        let c = BackwardCase {
            bf16: d % 2 == 0,
            f32: None,
            shape: AttentionShape {
                batch: 1,
                seqlen_q: 37,
                seqlen_k: 91,
                heads_q: 2,
                heads_kv: 1,
                headdim: d,
            },
            causal: d % 3 == 0,
            placement: if d % 4 == 1 { Placement::Padded } else { Placement::Contiguous },
            tile: None,
            deterministic: d % 5 == 0,
            path: KernelPath::Ampere,
        };
        plan.push(planned("head_dim", c, Kind::Check).quick_if(d % 37 == 1 || d == 256));
    }

    // The Hopper module's copy of the kernels, as an H100 runs by default.
    for (n, (d, lens, placement)) in [
        (64, (113, 203), Placement::Contiguous),
        (128, (256, 256), Placement::Packed),
        (255, (799, 3), Placement::Padded),
    ]
    .into_iter()
    .enumerate()
    {
        let mut c = case(n != 1, d, lens, true, 2, placement, None, n == 1);
        c.path = KernelPath::Hopper;
        plan.push(planned("hopper", c, Kind::Check));
    }

    // The deterministic mode twice, bit for bit: head dims 64, 128, 256, both dtypes, both
    // masks, GQA 2, several key tiles per query row.
    for d in [64, 128, 256] {
        for bf16 in [false, true] {
            for causal in [false, true] {
                let mut c = case(
                    bf16,
                    d,
                    (333, 400),
                    causal,
                    2,
                    if bf16 { Placement::Padded } else { Placement::Contiguous },
                    None,
                    true,
                );
                c.shape.batch = 2;
                plan.push(planned("deterministic_is_bitwise", c, Kind::Bitwise));
            }
        }
    }

    // Our forward's O and LSE into the backward (rows without keys: LSE = +inf from our forward).
    for (n, (bf16, d, lens, causal, gqa)) in
        [(false, 128, (200, 333), true, 2), (true, 59, (300, 77), true, 8), (true, 256, (257, 129), false, 1)]
            .into_iter()
            .enumerate()
    {
        let c = case(bf16, d, lens, causal, gqa, Placement::Contiguous, None, false);
        let p = planned("saved_context", c, Kind::Saved);
        plan.push(if n == 1 { p.sanitize() } else { p });
    }

    // Empty problems: seqlen_q = 0 writes dK = dV = 0; seqlen_k = 0 writes dQ = 0; batch or
    // heads 0 write nothing.
    for (n, (b, sq, sk, hq, hkv, d, causal, placement, tile, det)) in [
        (2, 0, 37, 4, 2, 64, false, Placement::Contiguous, None, false),
        (2, 0, 37, 4, 2, 33, true, Placement::Padded, Some(BackwardTile::Small), true),
        (2, 45, 0, 4, 2, 128, true, Placement::Contiguous, None, false),
        (1, 45, 0, 2, 2, 255, false, Placement::Padded, Some(BackwardTile::Large), true),
        (0, 16, 16, 2, 1, 64, true, Placement::Contiguous, None, false),
        (2, 16, 16, 0, 0, 64, false, Placement::Contiguous, None, true),
    ]
    .into_iter()
    .enumerate()
    {
        let c = BackwardCase {
            bf16: n % 2 == 1,
            f32: None,
            shape: AttentionShape {
                batch: b,
                seqlen_q: sq,
                seqlen_k: sk,
                heads_q: hq,
                heads_kv: hkv,
                headdim: d,
            },
            causal,
            placement,
            tile,
            deterministic: det,
            path: KernelPath::Ampere,
        };
        let p = planned("empty", c, Kind::Check);
        plan.push(if n == 1 || n == 3 { p.sanitize() } else { p });
    }

    // 65536 main-kernel blocks and 131072 dQ blocks (beyond grid.y's 65535), a 2 GB accumulator.
    for det in [false, true] {
        let c = BackwardCase {
            bf16: true,
            f32: None,
            shape: AttentionShape {
                batch: 16_384,
                seqlen_q: 3,
                seqlen_k: 5,
                heads_q: 8,
                heads_kv: 4,
                headdim: 8,
            },
            causal: true,
            placement: Placement::Contiguous,
            tile: None,
            deterministic: det,
            path: KernelPath::Ampere,
        };
        plan.push(planned("many_blocks", c, Kind::Check).full_only());
    }

    // Boundary cases under compute-sanitizer (small, so memcheck stays fast): lengths of 1 and
    // off the tiles, head dims 1 and 255, GQA, causal rows without keys, packed and padded, both
    // tiles, both modes.
    use BackwardTile::{Large, Small};
    use Placement::{Contiguous, Packed, Padded};
    for (n, (d, lens, causal, gqa, placement, tile, det)) in [
        (32, (1, 1), false, 1, Contiguous, Some(Large), false),
        (59, (1, 239), true, 2, Padded, Some(Small), true),
        (1, (300, 1), true, 1, Padded, Some(Large), false),
        (255, (113, 203), true, 8, Padded, Some(Large), false),
        (128, (97, 97), true, 1, Packed, Some(Small), false),
        (256, (65, 65), false, 1, Packed, Some(Large), true),
        (160, (130, 70), true, 2, Contiguous, None, true),
        (1, (17, 33), false, 1, Contiguous, Some(Small), true),
        (96, (200, 129), true, 2, Padded, None, false),
        (255, (64, 64), true, 1, Packed, None, true),
    ]
    .into_iter()
    .enumerate()
    {
        let mut c = case(n % 2 == 1, d, lens, causal, gqa, placement, tile, det);
        c.shape.batch = 1;
        plan.push(planned("sanitize", c, Kind::Check).sanitize());
        plan.push(planned("volta_sanitize", volta(c), Kind::Check).sanitize());
    }
    plan.extend(volta_plan());
    plan.extend(f32_plan());
    plan.extend(volta_f32_plan());
    plan
}

/// The matrix: dtype x head dim x lengths x causal; GQA, placement, tile and mode rotate through
/// it; each case as `on` makes it (its path). Quick: 4 head dims x 4 length pairs, each with both
/// masks (one per dtype).
fn matrix(group: &str, dtypes: &[bool], on: fn(BackwardCase) -> BackwardCase) -> Vec<Planned> {
    let mut plan = Vec::new();
    let mut i = 0;
    for &bf16 in dtypes {
        for (di, d) in HEAD_DIMS.into_iter().enumerate() {
            for (li, lens) in SEQLENS.into_iter().enumerate() {
                for causal in [false, true] {
                    let c = case(
                        bf16,
                        d,
                        lens,
                        causal,
                        GQA[i % 3],
                        PLACEMENTS[(i / 3) % 3],
                        TILES[(i / 9) % 3],
                        (i / 27) % 2 == 1,
                    );
                    let quick = QUICK_DIMS.contains(&d)
                        && QUICK_SEQLENS.contains(&lens)
                        && (bf16 as usize + causal as usize + di + li) % 2 == 0;
                    plan.push(planned(group, on(c), Kind::Check).quick_if(quick));
                    i += 1;
                }
            }
        }
    }
    plan
}

/// Each tile class forced on every bucket, in both modes: packed square problems at the bucket's
/// head dim, and padded GQA ones three below it with causal rows without keys; each case as `on`
/// makes it.
fn forced_tiles(group: &str, on: fn(BackwardCase) -> BackwardCase) -> Vec<Planned> {
    let mut plan = Vec::new();
    for (n, bucket) in BUCKETS.into_iter().enumerate() {
        for tile in BackwardTile::ALL {
            for deterministic in [false, true] {
                let (bf16, small) = (n % 2 == 1, tile == BackwardTile::Small);
                let c = if (n + deterministic as usize) % 2 == 0 {
                    case(bf16, bucket, (97, 97), small, 1, Placement::Packed, Some(tile), deterministic)
                } else {
                    case(bf16, bucket - 3, (150, 77), true, 2, Placement::Padded, Some(tile), deterministic)
                };
                plan.push(planned(group, on(c), Kind::Check).quick_if(deterministic == small));
            }
        }
    }
    plan
}

/// `c` in float32, TF32 mode.
fn f32_tf32(c: BackwardCase) -> BackwardCase {
    BackwardCase { f32: Some(F32Precision::Tf32), ..c }
}

/// `c` in float32, accurate (3xTF32) mode.
fn f32_accurate(c: BackwardCase) -> BackwardCase {
    BackwardCase { f32: Some(F32Precision::Accurate), ..c }
}

/// float32's trials (issue 13), each mode against plain attention that rounds the operands of
/// every product as the mode does: the matrix once, the two modes alternating through it (by
/// length pair, shifted per head dim); each tile class forced on every bucket in both modes;
/// the Hopper module; the deterministic mode bit for bit; our own forward's context; a
/// boundary subset under the sanitizer.
fn f32_plan() -> Vec<Planned> {
    let mut plan = matrix("f32_matrix", &[false], f32_tf32);
    for (i, p) in plan.iter_mut().enumerate() {
        if (i / 2 + i / 16) % 2 == 1 {
            *p = planned("f32_matrix", f32_accurate(p.case), Kind::Check).quick_if(p.quick);
        }
    }
    plan.extend(forced_tiles("f32_tile", f32_tf32));
    plan.extend(forced_tiles("f32_accurate_tile", f32_accurate));
    for (n, (d, lens)) in [(64, (113, 203)), (128, (256, 256)), (255, (799, 3))].into_iter().enumerate() {
        let mut c = case(false, d, lens, true, 2, Placement::Padded, None, n == 1);
        c.path = KernelPath::Hopper;
        let c = if n % 2 == 0 { f32_accurate(c) } else { f32_tf32(c) };
        plan.push(planned("f32_hopper", c, Kind::Check));
    }
    for (d, on) in [(64, f32_tf32 as fn(BackwardCase) -> BackwardCase), (128, f32_accurate), (256, f32_tf32)]
    {
        let c = case(false, d, (333, 400), true, 2, Placement::Contiguous, None, true);
        plan.push(planned("f32_deterministic_is_bitwise", on(c), Kind::Bitwise));
    }
    let c = case(false, 128, (200, 333), true, 2, Placement::Contiguous, None, false);
    plan.push(planned("f32_saved_context", f32_accurate(c), Kind::Saved));
    for (n, (d, lens, placement)) in [
        (33, (97, 131), Placement::Padded),
        (256, (65, 65), Placement::Packed),
        (100, (1, 300), Placement::Padded),
    ]
    .into_iter()
    .enumerate()
    {
        let mut c = case(false, d, lens, n != 1, 2, placement, None, n == 2);
        c.shape.batch = 1;
        let c = if n % 2 == 0 { f32_tf32(c) } else { f32_accurate(c) };
        plan.push(planned("f32_sanitize", c, Kind::Check).sanitize());
    }
    plan
}

/// The Volta path's every-head-dim case at head dim `d`: one small shape, GQA 2:1, the mask,
/// placement and mode rotating with `d`.
fn head_dim_case(d: usize) -> BackwardCase {
    let mut c = case(false, d, (37, 91), d % 3 == 0, 1, Placement::Contiguous, None, d % 5 == 0);
    c.shape.heads_q = 2;
    c.shape.heads_kv = 1;
    if d % 4 == 1 {
        c.placement = Placement::Padded;
    }
    c
}

/// `c` on the Volta path (WMMA: the sm_70 module, forced on this GPU), in float16.
fn volta(mut c: BackwardCase) -> BackwardCase {
    c.bf16 = false;
    c.path = KernelPath::Volta;
    c
}

/// The Volta path's trials: the matrix in float16 (GQA, placement, tile and mode rotating as in
/// the Ampere matrix), each tile class forced on every bucket in both modes, every head dim,
/// the deterministic mode bit for bit, and our own forward's context.
fn volta_plan() -> Vec<Planned> {
    let mut plan = matrix("volta_matrix", &[false], volta);
    plan.extend(forced_tiles("volta_tile", volta));
    for d in 1..=256 {
        plan.push(
            planned("volta_head_dim", volta(head_dim_case(d)), Kind::Check).quick_if(d % 37 == 1 || d == 256),
        );
    }
    for d in [64, 128, 256] {
        let c = case(false, d, (333, 400), true, 2, Placement::Contiguous, None, true);
        plan.push(planned("volta_deterministic_is_bitwise", volta(c), Kind::Bitwise));
    }
    let c = case(false, 128, (200, 333), true, 2, Placement::Contiguous, None, false);
    plan.push(planned("volta_saved_context", volta(c), Kind::Saved));
    plan
}

/// `c` on the Volta path in float32 (the CUDA cores, the sm_70 module forced on this GPU). The
/// precision, which that path ignores, alternates with the query length, so both are shown to
/// give the one CUDA-core family.
fn volta_f32(mut c: BackwardCase) -> BackwardCase {
    c.bf16 = false;
    c.path = KernelPath::Volta;
    c.f32 = Some(if c.shape.seqlen_q % 2 == 0 { F32Precision::Tf32 } else { F32Precision::Accurate });
    c
}

/// Whether the Volta path has a float32 backward for `c`: up to head dim 224, the Small class up
/// to 128 (`rustflash_abi::backward_configs!`: 32 query rows and 16 keys of f32 need more shared
/// memory above). `bad_inputs` checks the error beyond.
fn volta_f32_runs(c: &BackwardCase) -> bool {
    let bucket = c.shape.headdim.div_ceil(32) * 32;
    bucket <= 224 && (c.tile != Some(BackwardTile::Small) || bucket <= 128)
}

/// float32 on the Volta path (CUDA-core products, plain float32 arithmetic, against plain
/// attention in f32): the matrix and each tile class forced on every bucket where it exists,
/// every head dim up to 224, the deterministic mode bit for bit, our own forward's context,
/// boundaries under the sanitizer.
fn volta_f32_plan() -> Vec<Planned> {
    let mut plan = matrix("volta_f32_matrix", &[false], volta_f32);
    plan.extend(forced_tiles("volta_f32_tile", volta_f32));
    plan.retain(|p| volta_f32_runs(&p.case));
    for d in 1..=224 {
        let c = volta_f32(head_dim_case(d));
        plan.push(planned("volta_f32_head_dim", c, Kind::Check).quick_if(d % 37 == 1 || d == 224));
    }
    for d in [64, 224] {
        let c = case(false, d, (333, 400), true, 2, Placement::Contiguous, None, true);
        plan.push(planned("volta_f32_deterministic_is_bitwise", volta_f32(c), Kind::Bitwise));
    }
    let c = case(false, 128, (200, 333), true, 2, Placement::Contiguous, None, false);
    plan.push(planned("volta_f32_saved_context", volta_f32(c), Kind::Saved));
    for (n, (d, lens, placement)) in [
        (33, (97, 131), Placement::Padded),
        (224, (65, 65), Placement::Packed),
        (100, (1, 300), Placement::Padded),
    ]
    .into_iter()
    .enumerate()
    {
        let mut c = case(false, d, lens, n != 1, 2, placement, None, n == 2);
        c.shape.batch = 1;
        plan.push(planned("volta_f32_sanitize", volta_f32(c), Kind::Check).sanitize());
    }
    plan
}

fn main() -> ExitCode {
    let mut trials: Vec<Trial> = plan().into_iter().map(Planned::trial).collect();
    trials.push(Trial::gpu("backward::bad_inputs_are_errors_before_launch", bad_inputs).sanitize());
    for c in host_self_test_cases() {
        let name = format!("backward::cpu::host_checks::{}", c.name());
        trials.push(Trial::cpu(name, move |ctx| c.run_host_self_test(ctx)));
    }
    trials.push(Trial::cpu("backward::cpu::trial_names_are_unique", names_unique));
    trials.push(Trial::cpu("backward::cpu::the_matrix_covers_the_brief", coverage));
    trials.push(Trial::cpu("backward::cpu::tiers_fit_their_budgets", budgets));
    trials.push(Trial::cpu("backward::cpu::workspace_lengths", workspace_lengths));
    trials.push(Trial::cpu("backward::cpu::options_follow_the_forward", options_follow_the_forward));
    run(trials)
}

/// Small cases whose host-side checks (placement, poison, gather, exact zeros, comparison) run
/// on the CPU with plain gradients standing in for a kernel's: every placement, GQA, causal rows
/// without keys, head dim 1, and the empty lengths.
fn host_self_test_cases() -> Vec<BackwardCase> {
    [
        (false, (13, 7), 4, 2, 33, true, Placement::Contiguous),
        (true, (9, 9), 2, 2, 16, true, Placement::Packed),
        (false, (5, 11), 2, 1, 1, false, Placement::Padded),
        (true, (21, 17), 8, 1, 40, true, Placement::Padded),
        (true, (0, 7), 2, 1, 8, false, Placement::Padded),
        (false, (6, 0), 2, 2, 8, true, Placement::Contiguous),
    ]
    .into_iter()
    .map(|(bf16, (sq, sk), hq, hkv, d, causal, placement)| BackwardCase {
        bf16,
        f32: None,
        shape: AttentionShape {
            batch: 2,
            seqlen_q: sq,
            seqlen_k: sk,
            heads_q: hq,
            heads_kv: hkv,
            headdim: d,
        },
        causal,
        placement,
        tile: None,
        deterministic: false,
        path: KernelPath::Ampere,
    })
    .chain(
        [
            // float32 in both modes, and on the Volta path's CUDA cores (the plain reference of
            // each family stands in for the kernel).
            (Some(F32Precision::Tf32), Placement::Padded, KernelPath::Ampere),
            (Some(F32Precision::Accurate), Placement::Contiguous, KernelPath::Ampere),
            (Some(F32Precision::Tf32), Placement::Contiguous, KernelPath::Volta),
        ]
        .map(|(f32, placement, path)| BackwardCase {
            bf16: false,
            f32,
            shape: AttentionShape {
                batch: 2,
                seqlen_q: 21,
                seqlen_k: 17,
                heads_q: 4,
                heads_kv: 2,
                headdim: 40,
            },
            causal: true,
            placement,
            tile: None,
            deterministic: false,
            path,
        }),
    )
    .collect()
}

/// `r` is an invalid-argument error naming `argument`; the message is printed.
fn expect_invalid(what: &str, r: rustflash::Result<()>, argument: &str) -> TestResult {
    match r {
        Err(e @ Error::InvalidArgument { argument: a, .. }) if a == argument => {
            println!("    {what}: {e}");
            Ok(())
        }
        other => Err(fail(format!("{what}: expected an invalid `{argument}`, got {other:?}"))),
    }
}

/// One backward call's shapes; the inputs are views of one buffer of ones.
#[derive(Clone)]
struct Call {
    dout: [usize; 4],
    dq: [usize; 4],
    dk: [usize; 4],
    lse: [usize; 3],
    ws: Range<usize>,
    options: BackwardOptions,
}

/// Each invalid call returns its own error naming the argument, and nothing runs (gradients
/// and workspace keep their NaN poison); the valid calls beside them run; the Volta path is
/// unsupported.
fn bad_inputs(_: &Context) -> TestResult {
    let (device, stream) = open(KernelPath::Ampere)?;
    let fa = FlashAttention::new(device);
    let (b, s, hq, hkv, d) = (1usize, 8usize, 4usize, 2usize, 64usize);
    let (qs, ks, ls) = ([b, s, hq, d], [b, s, hkv, d], [b, hq, s]);
    let input = upload(&stream, &vec![f16::ONE; 1 << 14])?;
    let lse = upload(&stream, &vec![0f32; 1024])?;
    let mut grads = [
        upload(&stream, &vec![f16::NAN; 4096])?,
        upload(&stream, &vec![f16::NAN; 4096])?,
        upload(&stream, &vec![f16::NAN; 4096])?,
    ];
    let default_len = FlashAttention::backward_workspace_len(b, hq, s, d, &BackwardOptions::default())?;
    let det = BackwardOptions::default().deterministic(true);
    let det_len = FlashAttention::backward_workspace_len(b, hq, s, d, &det)?;
    let mut ws = upload(&stream, &vec![f32::NAN; default_len + 4])?;

    type Grads = [CudaSlice<f16>; 3];
    let call = |fa: &FlashAttention, grads: &mut Grads, ws: &mut CudaSlice<f32>, c: &Call| {
        let t = |shape| DeviceTensor::contiguous(input.slice(0..), shape);
        let [gq, gk, gv] = grads;
        fa.backward(
            &stream,
            &t(qs),
            &t(ks),
            &t(ks),
            &t(qs),
            &t(c.dout),
            &DeviceTensor::contiguous(lse.slice(0..), c.lse),
            &mut DeviceTensorMut::contiguous(gq.slice_mut(0..), c.dq),
            &mut DeviceTensorMut::contiguous(gk.slice_mut(0..), c.dk),
            &mut DeviceTensorMut::contiguous(gv.slice_mut(0..), ks),
            &mut DeviceTensorMut::contiguous(ws.slice_mut(c.ws.clone()), [c.ws.len()]),
            &c.options,
        )
    };
    let good =
        Call { dout: qs, dq: qs, dk: ks, lse: ls, ws: 0..default_len, options: BackwardOptions::default() };
    let bad = [
        ("workspace one element short", "workspace", Call { ws: 0..default_len - 1, ..good.clone() }),
        (
            "the deterministic mode's workspace in the default mode",
            "workspace",
            Call { ws: 0..det_len, ..good.clone() },
        ),
        (
            "workspace 4 bytes past a 16-byte boundary",
            "workspace",
            Call { ws: 1..default_len + 1, ..good.clone() },
        ),
        ("dout with half the head dim", "dout", Call { dout: [b, s, hq, d / 2], ..good.clone() }),
        ("dout with one query fewer", "dout", Call { dout: [b, s - 1, hq, d], ..good.clone() }),
        ("dq shaped like k", "dq", Call { dq: ks, ..good.clone() }),
        ("dk shaped like q", "dk", Call { dk: qs, ..good.clone() }),
        ("lse (batch, seqlen, heads)", "lse", Call { lse: [b, s, hq], ..good.clone() }),
        (
            "a NaN softmax scale",
            "options.softmax_scale",
            Call { options: BackwardOptions::default().softmax_scale(f32::NAN), ..good.clone() },
        ),
    ];
    for (what, argument, c) in &bad {
        expect_invalid(what, call(&fa, &mut grads, &mut ws, c), argument)?;
    }
    stream.synchronize()?;
    for (i, g) in grads.iter().enumerate() {
        let host = download(&stream, g)?;
        ensure(host.iter().all(|x| x.is_nan()), || {
            format!("gradient buffer {i} was written by a refused call")
        })?;
    }
    let host = download(&stream, &ws)?;
    ensure(host.iter().all(|x| x.is_nan()), || "the workspace was written by a refused call".into())?;

    // The same calls made valid run: the default mode, the deterministic mode in its smaller
    // workspace, a workspace 16 bytes in.
    call(&fa, &mut grads, &mut ws, &good)?;
    call(&fa, &mut grads, &mut ws, &Call { ws: 0..det_len, options: det.clone(), ..good.clone() })?;
    call(&fa, &mut grads, &mut ws, &Call { ws: 4..default_len + 4, ..good.clone() })?;
    stream.synchronize()?;

    // The Volta path runs the same float16 call; bfloat16 there is an error naming q, and so is
    // float32 above head dim 224 (no CUDA-core backward fits shared memory there).
    let volta = FlashAttention::new(rustflash::Device::with_path(0, KernelPath::Volta)?);
    call(&volta, &mut grads, &mut ws, &good)?;
    stream.synchronize()?;
    volta_refuses::<half::bf16>(&volta, &stream, 64, "bfloat16 on the Volta path")?;
    volta_refuses::<f32>(&volta, &stream, 256, "float32 at head dim 256 on the Volta path")
}

fn names_unique(_: &Context) -> TestResult {
    let plan = plan();
    let mut names: Vec<&str> = plan.iter().map(|p| p.name.as_str()).collect();
    names.sort_unstable();
    match names.windows(2).find(|w| w[0] == w[1]) {
        Some(w) => Err(fail(format!("two trials named {}", w[0]))),
        None => Ok(()),
    }
}

/// Some planned trial of `set` satisfies `pred`.
fn covers(tier: &str, what: &str, set: &[&Planned], pred: impl Fn(&Planned) -> bool) -> TestResult {
    ensure(set.iter().any(|p| pred(p)), || format!("the {tier} trials have no case with {what}"))
}

fn coverage(_: &Context) -> TestResult {
    let plan = plan();
    let all: Vec<&Planned> = plan.iter().collect();
    let quick: Vec<&Planned> = plan.iter().filter(|p| p.quick).collect();
    let sanitize: Vec<&Planned> = plan.iter().filter(|p| p.sanitize).collect();
    let checked = |p: &Planned| p.kind == Kind::Check;

    // The matrix: every bucket edge x lengths x mask x dtype; every head dim 1..=256.
    for d in HEAD_DIMS {
        for lens in SEQLENS {
            for causal in [false, true] {
                for bf16 in [false, true] {
                    covers(
                        "full",
                        &format!("d {d}, lengths {lens:?}, causal {causal}, bf16 {bf16}"),
                        &all,
                        |p| {
                            let s = p.case.shape;
                            checked(p)
                                && (s.headdim, s.seqlen_q, s.seqlen_k, p.case.causal, p.case.bf16)
                                    == (d, lens.0, lens.1, causal, bf16)
                        },
                    )?;
                }
            }
        }
    }
    for d in 1..=256 {
        covers("full", &format!("head dim {d}"), &all, |p| checked(p) && p.case.shape.headdim == d)?;
    }
    // Every tile class on every bucket in both modes.
    for bucket in BUCKETS {
        for tile in BackwardTile::ALL {
            for det in [false, true] {
                covers("full", &format!("bucket {bucket}, {tile:?}, deterministic {det}"), &all, |p| {
                    let d = p.case.shape.headdim;
                    checked(p)
                        && d <= bucket
                        && d + 32 > bucket
                        && p.case.tile == Some(tile)
                        && p.case.deterministic == det
                })?;
            }
        }
    }
    // Each tier: every option of every axis.
    for (tier, set) in [("full", &all), ("quick", &quick)] {
        for bf16 in [false, true] {
            covers(tier, &format!("bf16 {bf16}"), set, |p| checked(p) && p.case.bf16 == bf16)?;
        }
        for causal in [false, true] {
            covers(tier, &format!("causal {causal}"), set, |p| checked(p) && p.case.causal == causal)?;
        }
        for g in GQA {
            covers(tier, &format!("GQA {g}"), set, |p| checked(p) && p.case.shape.group_size() == g)?;
        }
        for placement in PLACEMENTS {
            covers(tier, &format!("{placement:?}"), set, |p| checked(p) && p.case.placement == placement)?;
        }
        for tile in TILES {
            covers(tier, &format!("tile {tile:?}"), set, |p| checked(p) && p.case.tile == tile)?;
        }
        for det in [false, true] {
            covers(tier, &format!("deterministic {det}"), set, |p| {
                checked(p) && p.case.deterministic == det
            })?;
        }
        covers(tier, "causal rows without keys", set, |p| {
            checked(p) && p.case.causal && p.case.shape.seqlen_q > p.case.shape.seqlen_k
        })?;
        for (what, kind) in [("the bitwise check", Kind::Bitwise), ("the saved context", Kind::Saved)] {
            covers(tier, what, set, |p| p.kind == kind)?;
        }
        covers(tier, "the Hopper path", set, |p| p.case.path == KernelPath::Hopper)?;
    }
    // Bit for bit: 64, 128, 256 x dtype x mask, GQA 2, deterministic.
    for d in [64, 128, 256] {
        for bf16 in [false, true] {
            for causal in [false, true] {
                covers("quick", &format!("bitwise d {d} bf16 {bf16} causal {causal}"), &quick, |p| {
                    let c = &p.case;
                    p.kind == Kind::Bitwise
                        && c.deterministic
                        && c.shape.group_size() == 2
                        && (c.shape.headdim, c.bf16, c.causal) == (d, bf16, causal)
                })?;
            }
        }
    }
    // Empty problems.
    let empty = |f: fn(&AttentionShape) -> bool| move |p: &Planned| checked(p) && f(&p.case.shape);
    covers("quick", "seqlen_q = 0", &quick, empty(|s| s.seqlen_q == 0 && s.batch > 0 && s.heads_q > 0))?;
    covers("quick", "seqlen_k = 0", &quick, empty(|s| s.seqlen_k == 0 && s.batch > 0 && s.heads_q > 0))?;
    covers("quick", "batch = 0", &quick, empty(|s| s.batch == 0))?;
    covers("quick", "heads = 0", &quick, empty(|s| s.heads_q == 0))?;
    // The sanitizer's subset: every boundary.
    let s = |f: fn(&BackwardCase) -> bool| move |p: &Planned| checked(p) && f(&p.case);
    type Boundary = (&'static str, fn(&BackwardCase) -> bool);
    let boundaries: [Boundary; 14] = [
        ("seqlen_q = 1", |c| c.shape.seqlen_q == 1),
        ("seqlen_k = 1", |c| c.shape.seqlen_k == 1),
        ("lengths off every tile", |c| c.shape.seqlen_q % 16 != 0 && c.shape.seqlen_k % 16 != 0),
        ("head dim 1", |c| c.shape.headdim == 1),
        ("head dim 255", |c| c.shape.headdim == 255),
        ("GQA", |c| c.shape.group_size() > 1),
        ("causal rows without keys", |c| c.causal && c.shape.seqlen_q > c.shape.seqlen_k),
        ("packed", |c| c.placement == Placement::Packed),
        ("padded", |c| c.placement == Placement::Padded),
        ("the large tiles", |c| c.tile == Some(BackwardTile::Large)),
        ("the small tiles", |c| c.tile == Some(BackwardTile::Small)),
        ("the default mode", |c| !c.deterministic),
        ("the deterministic mode", |c| c.deterministic),
        ("seqlen_q = 0", |c| c.shape.seqlen_q == 0),
    ];
    for (what, f) in boundaries {
        covers("sanitizer", what, &sanitize, s(f))?;
    }
    Ok(())
}

fn budgets(_: &Context) -> TestResult {
    let plan = plan();
    let seconds = |p: &&Planned| p.case.reference_seconds();
    let quick: Vec<&Planned> = plan.iter().filter(|p| p.quick).collect();
    // + bad_inputs, quick.
    let (quick_n, full_n) = (quick.len() + 1, plan.len() + 1);
    let sanitize_n = plan.iter().filter(|p| p.sanitize).count() + 1;
    let quick_s: f64 = quick.iter().map(seconds).sum();
    let full_s: f64 = plan.iter().map(|p| seconds(&p)).sum();
    let worst = plan.iter().max_by(|a, b| seconds(a).total_cmp(&seconds(b))).expect("a plan");
    println!(
        "    GPU trials: {quick_n} quick (reference ~{quick_s:.0} s), {full_n} full (~{full_s:.0} s), \
         {sanitize_n} for the sanitizer; the longest reference: {} (~{:.1} s)",
        worst.name,
        seconds(&worst)
    );
    ensure(QUICK_TRIALS.contains(&quick_n), || format!("{quick_n} quick trials, expected {QUICK_TRIALS:?}"))?;
    ensure(quick_s <= QUICK_REFERENCE_SECONDS, || format!("quick tier: ~{quick_s:.0} s of reference"))?;
    ensure(full_s <= FULL_REFERENCE_SECONDS, || format!("full tier: ~{full_s:.0} s of reference"))?;
    ensure(seconds(&worst) <= 4.0, || format!("{}: ~{:.1} s of reference", worst.name, seconds(&worst)))
}

/// `backward_workspace_len` is the ABI's layout: `2 · rows` f32 (LSE and delta rows,
/// `rows = batch · heads_q · seqlen_q` rounded up to 128 per head), plus `rows · bucket` for the
/// default mode's dQ accumulator; 0 for empty problems.
fn workspace_lengths(_: &Context) -> TestResult {
    for (b, hq, sq, d) in [
        (2usize, 8usize, 113usize, 59usize),
        (1, 1, 1, 1),
        (3, 5, 128, 256),
        (1, 2, 129, 100),
        (4, 16, 1000, 255),
        (0, 8, 5, 64),
        (2, 0, 5, 64),
        (2, 8, 0, 64),
    ] {
        let bucket = d.div_ceil(32) * 32;
        let rows = b * hq * sq.div_ceil(128) * 128;
        for det in [false, true] {
            let options = BackwardOptions::default().deterministic(det);
            let got = FlashAttention::backward_workspace_len(b, hq, sq, d, &options)?;
            // The accumulator: only for the default mode's atomic schedule (buckets 32 and 64).
            let atomic = !det && bucket <= 64;
            let want = 2 * rows + if atomic { rows * bucket } else { 0 };
            let abi =
                BackwardWorkspace::new(b, hq, sq, if atomic { bucket } else { 0 }).and_then(|w| w.len());
            ensure(got == want && abi == Some(want), || {
                format!(
                    "(b {b}, hq {hq}, sq {sq}, d {d}, deterministic {det}): {got}, ABI {abi:?}, expected {want}"
                )
            })?;
        }
    }
    for d in [0, 257] {
        let r = FlashAttention::backward_workspace_len(1, 1, 1, d, &BackwardOptions::default());
        ensure(r.is_err(), || format!("head dim {d}: {r:?}"))?;
    }
    Ok(())
}

/// `BackwardOptions::from(&ForwardOptions)`: the same scale and mask, the default mode and tile.
fn options_follow_the_forward(_: &Context) -> TestResult {
    let f = ForwardOptions::default().causal(true).softmax_scale(0.25);
    let b = BackwardOptions::from(&f);
    ensure(b == BackwardOptions::default().causal(true).softmax_scale(0.25), || format!("{b:?}"))?;
    ensure(!b.deterministic && b.tile.is_none(), || format!("{b:?}"))?;
    let b = BackwardOptions::from(&ForwardOptions::default());
    ensure(b == BackwardOptions::default(), || format!("{b:?}"))
}

/// A backward of `T` at head dim `d` that the Volta path has no kernel for is an error naming q,
/// before any launch: the gradients keep their poison.
fn volta_refuses<T: rustflash::Element>(
    fa: &FlashAttention,
    stream: &std::sync::Arc<rustflash::cudarc::driver::CudaStream>,
    d: usize,
    what: &str,
) -> TestResult {
    let shape = [1, 8, 2, d];
    let n = 16 * d;
    let input = upload(stream, &vec![T::from_f32(1.0); n])?;
    let poisoned = || upload(stream, &vec![T::from_f32(f32::NAN); n]);
    let [mut gq, mut gk, mut gv] = [poisoned()?, poisoned()?, poisoned()?];
    let lse = upload(stream, &[0f32; 16])?;
    let mut ws = upload(stream, &vec![f32::NAN; 1 << 16])?;
    let t = || DeviceTensor::contiguous(input.slice(0..), shape);
    let r = fa.backward(
        stream,
        &t(),
        &t(),
        &t(),
        &t(),
        &t(),
        &DeviceTensor::contiguous(lse.slice(0..), [1, 2, 8]),
        &mut DeviceTensorMut::contiguous(gq.slice_mut(0..), shape),
        &mut DeviceTensorMut::contiguous(gk.slice_mut(0..), shape),
        &mut DeviceTensorMut::contiguous(gv.slice_mut(0..), shape),
        &mut DeviceTensorMut::contiguous(ws.slice_mut(0..), [1 << 16]),
        &BackwardOptions::default(),
    );
    expect_invalid(what, r, "q")?;
    stream.synchronize()?;
    let g = download(stream, &gq)?;
    ensure(g.iter().all(|x| x.to_f32().is_nan()), || format!("{what}: dq was written"))
}
