//! One backward-attention test case: random inputs and dO, the forward's O and LSE, a launch on
//! the GPU with the gradients and the workspace poisoned with NaN, and the check of dQ, dK and dV
//! against the float64 reference backward: per tensor `max|ours − ref| <= 3 · max|plain − ref| +
//! 2 ulp` ([`Tolerance::gradient`]; plain = `backward_plain_as::<T>`, f32 accumulation and rounding
//! to the element type).
//!
//! The forward's O and LSE are the float64 reference forward's (O rounded to the element type,
//! LSE to f32), uploaded, not our forward kernel's. A backward trial then measures the backward
//! alone: an error of the forward would be charged to the gradients (O moves `D = rowsum(dO ∘ O)`,
//! the LSE moves every recomputed `P`), and a broken forward would fail every backward trial and
//! hide which kernel is at fault. The chain — our forward's O and LSE into the backward — is
//! checked by the saved-context trials ([`BackwardCase::run_saved`]).
//!
//! Besides the comparison, every trial checks that nothing outside the gradient views was written
//! (their buffers are poisoned with NaN), that no input (Q, K, V, O, dO, LSE, padding included)
//! changed, and the exact zeros the semantics give: dQ rows that see no key (causal masking with
//! `seqlen_q > seqlen_k`, or `seqlen_k = 0`), and dK = dV = 0 when `seqlen_q = 0`.

use crate::forward_case::{Operand, Placement, report};
use crate::gpu::{download, upload};
use crate::harness::{Context, Failure, TestResult, ensure, fail};
use crate::rng::Rng;
use rustflash::cudarc::driver::{CudaSlice, CudaStream, DevicePtr, DevicePtrMut};
use rustflash::layout::{AttentionShape, HostView, Layout, Layout4};
use rustflash::{
    BackwardOptions, BackwardTile, DeviceTensor, DeviceTensorMut, Element, FlashAttention, ForwardOptions,
    KernelPath, RawBackward, RawTensor,
};
use rustflash::{F32Precision, MmaFamily};
use rustflash_reference::check::{Comparison, Tolerance, compare, max_abs_finite};
use rustflash_reference::{Attention, Gradients, Rows};
use std::sync::Arc;

/// Nanoseconds one worker of the float64 and plain references takes per unit of work (one
/// visible (query, key) pair times the head dim times the group size), the reference forward, the
/// exact and the plain backward together, the two backwards on parallel threads. Measured on a
/// shared 2-core builder (forward ~2, exact backward ~6, plain ~6); used for the tiers' budgets.
pub const REFERENCE_NS_PER_UNIT: f64 = 10.0;

/// Workers a GPU host gives the reference: (batch, K/V head) pairs run in rounds of this many.
pub const REFERENCE_WORKERS: usize = 8;

/// One backward problem and how it runs.
#[derive(Clone, Copy, Debug)]
pub struct BackwardCase {
    pub bf16: bool,
    /// f32 inputs multiplied in this precision (`bf16` is then ignored).
    pub f32: Option<F32Precision>,
    pub shape: AttentionShape,
    pub causal: bool,
    /// Contiguous: every tensor its own buffer. Packed: Q, K, V in one `(b, s, 3, h, d)` buffer
    /// and dQ, dK, dV in one gradient buffer of the same layout (needs equal lengths and heads;
    /// launched through `backward_raw`, as three mutable views of one buffer are not safe Rust).
    /// Padded: every 4-D tensor padded (3 elements per head, 1 per row, 5 per batch: strides only
    /// 2-byte aligned) and the LSE's rows padded by 3.
    pub placement: Placement,
    pub tile: Option<BackwardTile>,
    pub deterministic: bool,
    pub path: KernelPath,
}

impl BackwardCase {
    pub fn name(&self) -> String {
        let s = self.shape;
        format!(
            "{}_b{}_sq{}_sk{}_h{}x{}_d{}{}_{:?}{}{}_{}",
            crate::dtype_name(self.f32, self.bf16),
            s.batch,
            s.seqlen_q,
            s.seqlen_k,
            s.heads_q,
            s.heads_kv,
            s.headdim,
            if self.causal { "_causal" } else { "" },
            self.placement,
            self.tile.map(|t| format!("_{t:?}")).unwrap_or_default(),
            if self.deterministic { "_det" } else { "" },
            self.path.arch()
        )
        .to_lowercase()
    }

    pub fn options(&self) -> BackwardOptions {
        let mut o = BackwardOptions::default()
            .causal(self.causal)
            .deterministic(self.deterministic)
            .f32_precision(self.f32.unwrap_or_default());
        if let Some(t) = self.tile {
            o = o.tile(t);
        }
        o
    }

    /// The float64 reference's problem (the default scale, `1 / sqrt(headdim)`).
    pub fn attention(&self) -> Attention {
        Attention {
            shape: self.shape,
            softmax_scale: 1.0 / (self.shape.headdim as f64).sqrt(),
            causal: self.causal,
        }
    }

    /// Units of reference work one (batch, K/V head) pair takes: visible (query, key) pairs of
    /// one query head times the head dim times the group size.
    pub fn reference_units_per_pair(&self) -> f64 {
        let s = self.shape;
        let visible: usize = (0..s.seqlen_q).map(|i| s.visible_keys(i, self.causal)).sum();
        visible as f64 * s.headdim as f64 * s.group_size() as f64
    }

    /// Estimated seconds of the reference evaluations on a GPU host ([`REFERENCE_NS_PER_UNIT`],
    /// pairs in rounds of [`REFERENCE_WORKERS`]); 0 for an empty problem.
    pub fn reference_seconds(&self) -> f64 {
        let s = self.shape;
        if s.batch == 0 || s.heads_kv == 0 {
            return 0.0;
        }
        let rounds = (s.batch * s.heads_kv).div_ceil(REFERENCE_WORKERS);
        REFERENCE_NS_PER_UNIT * 1e-9 * self.reference_units_per_pair() * rounds as f64
    }

    /// One launch, checked.
    pub fn run(&self, ctx: &Context) -> TestResult {
        crate::by_dtype!(self, run(self, ctx, 1))
    }

    /// Two launches on the same inputs, gradients and workspace poisoned before each: the
    /// gradient buffers must match bit for bit (meant for the deterministic mode); the first is
    /// checked against the reference.
    pub fn run_twice_bitwise(&self, ctx: &Context) -> TestResult {
        crate::by_dtype!(self, run(self, ctx, 2))
    }

    /// The host-side checks of a trial exercised on the CPU, no GPU needed (see [`self_test`]):
    /// for the test binary's CPU trials.
    pub fn run_host_self_test(&self, ctx: &Context) -> TestResult {
        crate::by_dtype!(self, self_test(self, ctx))
    }

    /// Through our forward: `forward_saved`, then `SavedForward::backward` deterministic, the
    /// same by `FlashAttention::backward` on the saved O and LSE (bit for bit equal), and
    /// `SavedForward::backward` in the default mode; both modes checked against the reference.
    /// Contiguous tensors; `placement`, `tile` and `deterministic` are not used.
    pub fn run_saved(&self, ctx: &Context) -> TestResult {
        crate::by_dtype!(self, saved(self, ctx))
    }
}

/// Where every operand of a backward call lies.
#[derive(Clone, Debug)]
pub struct BackwardPlaced {
    /// Lengths of the input buffers; q, k and v each name one (perhaps the same).
    pub input_lens: Vec<usize>,
    pub q: Operand,
    pub k: Operand,
    pub v: Operand,
    /// O, dO and the LSE each in a buffer of its own, of these lengths.
    pub out: Operand,
    pub out_len: usize,
    pub dout: Operand,
    pub dout_len: usize,
    pub lse: Operand<3>,
    pub lse_len: usize,
    /// Lengths of the gradient buffers: three (dq, dk, dv in order), or one when packed.
    pub grad_lens: Vec<usize>,
    pub dq: Operand,
    pub dk: Operand,
    pub dv: Operand,
}

impl BackwardPlaced {
    /// dQ, dK and dV share a buffer: only `backward_raw` can take them.
    pub fn packed_grads(&self) -> bool {
        self.grad_lens.len() == 1
    }
}

fn padded4(sh: [usize; 4]) -> Layout4 {
    let head = sh[3] + 3;
    let row = sh[2] * head + 1;
    Layout4 { shape: sh, strides: [sh[1] * row + 5, row, head, 1] }
}

/// Every operand placed for `c`; each buffer ends exactly where its last operand does.
pub fn place(c: &BackwardCase) -> BackwardPlaced {
    let s = c.shape;
    let (qs, ks) = (s.q_shape(), s.kv_shape());
    let in_buf = |buffer: usize, layout: Layout4| Operand { buffer, offset: 0, layout };
    let contiguous_lse = Operand::at(0, Layout::contiguous(s.lse_shape()));
    let separate = |q: Layout4, k: Layout4, lse: Operand<3>| {
        let (q0, k1, v2) = (in_buf(0, q), in_buf(1, k), in_buf(2, k));
        let (dq, dk, dv) = (in_buf(0, q), in_buf(1, k), in_buf(2, k));
        let (out, dout) = (Operand::at(0, q), Operand::at(0, q));
        BackwardPlaced {
            input_lens: vec![q0.end(), k1.end(), v2.end()],
            q: q0,
            k: k1,
            v: v2,
            out,
            out_len: out.end(),
            dout,
            dout_len: dout.end(),
            lse,
            lse_len: lse.end(),
            grad_lens: vec![dq.end(), dk.end(), dv.end()],
            dq,
            dk,
            dv,
        }
    };
    match c.placement {
        Placement::Contiguous => separate(Layout4::contiguous(qs), Layout4::contiguous(ks), contiguous_lse),
        Placement::Padded => {
            let [b, h, sq] = s.lse_shape();
            let lse = Operand::at(0, Layout { shape: [b, h, sq], strides: [h * (sq + 3), sq + 3, 1] });
            separate(padded4(qs), padded4(ks), lse)
        }
        Placement::Packed => {
            assert!(
                s.seqlen_q == s.seqlen_k && s.heads_q == s.heads_kv,
                "packing needs one sequence length and one head count: {s:?}"
            );
            let (h, d) = (s.heads_q, s.headdim);
            let l = Layout4 { shape: qs, strides: [s.seqlen_q * 3 * h * d, 3 * h * d, d, 1] };
            let part = |i: usize| Operand { buffer: 0, offset: i * h * d, layout: l };
            let len = s.batch * s.seqlen_q * 3 * h * d;
            let (out, dout) =
                (Operand::at(0, Layout4::contiguous(qs)), Operand::at(0, Layout4::contiguous(qs)));
            BackwardPlaced {
                input_lens: vec![len],
                q: part(0),
                k: part(1),
                v: part(2),
                out,
                out_len: out.end(),
                dout,
                dout_len: dout.end(),
                lse: contiguous_lse,
                lse_len: contiguous_lse.end(),
                grad_lens: vec![len],
                dq: part(0),
                dk: part(1),
                dv: part(2),
            }
        }
    }
}

fn randn<T: Element>(rng: &mut Rng, n: usize) -> Vec<T> {
    (0..n).map(|_| T::from_f32(rng.normal() as f32)).collect()
}

/// The elements of a 4-D operand, in row-major order of its shape.
fn indices(l: &Layout4) -> impl Iterator<Item = [usize; 4]> {
    let [b, s, h, d] = l.shape;
    (0..b).flat_map(move |bb| {
        (0..s).flat_map(move |ss| (0..h).flat_map(move |hh| (0..d).map(move |dd| [bb, ss, hh, dd])))
    })
}

/// A strided operand of `buf` copied out contiguously, as f64.
fn gather<T: Element>(buf: &[T], o: &Operand) -> Vec<f64> {
    indices(&o.layout).map(|i| buf[o.offset + o.layout.offset(i)].to_f64()).collect()
}

/// Contiguous `values` written into the operand `o` of `buf`.
fn scatter<T: Element>(buf: &mut [T], o: &Operand, values: &[f64]) {
    for (i, &x) in indices(&o.layout).zip(values) {
        buf[o.offset + o.layout.offset(i)] = T::from_f32(x as f32);
    }
}

/// The bits of an f16 or bf16 value (its conversion to f32 is exact and one-to-one, NaN
/// payloads included).
fn bits<T: Element>(x: T) -> u32 {
    x.to_f32().to_bits()
}

/// Every element of `buf` outside the operands still holds its NaN poison.
fn untouched_outside<T: Element>(what: &str, buf: &[T], ops: &[&Operand]) -> TestResult {
    let mut inside = vec![false; buf.len()];
    for o in ops {
        for i in indices(&o.layout) {
            if let Some(x) = inside.get_mut(o.offset + o.layout.offset(i)) {
                *x = true;
            }
        }
    }
    match buf.iter().zip(&inside).position(|(x, &inside)| !inside && !x.to_f32().is_nan()) {
        Some(i) => Err(fail(format!(
            "{what}: element {i} of the buffer, outside the views, was written ({:?})",
            buf[i]
        ))),
        None => Ok(()),
    }
}

/// `got` equals `want` bit for bit.
fn unchanged<T: Element>(what: &str, got: &[T], want: &[T]) -> TestResult {
    match got.iter().zip(want).position(|(a, b)| bits(*a) != bits(*b)) {
        Some(i) => Err(fail(format!("input {what} changed at element {i}: {:?}, was {:?}", got[i], want[i]))),
        None => ensure(got.len() == want.len(), || {
            format!("input {what}: length {} != {}", got.len(), want.len())
        }),
    }
}

/// Every element is exactly zero (not NaN, not left unwritten).
fn all_zero(what: &str, x: &[f64], shape: [usize; 4]) -> TestResult {
    match x.iter().position(|&v| v != 0.0) {
        Some(i) => {
            Err(fail(format!("{what}: element {:?} is {}, expected exactly 0", unravel(i, shape), x[i])))
        }
        None => Ok(()),
    }
}

fn unravel(mut i: usize, shape: [usize; 4]) -> [usize; 4] {
    let mut idx = [0; 4];
    for k in (0..4).rev() {
        idx[k] = i % shape[k].max(1);
        i /= shape[k].max(1);
    }
    idx
}

/// Exact and plain gradients, the two evaluations on parallel threads.
fn reference_gradients<T: Element>(
    att: &Attention,
    family: MmaFamily,
    q: &HostView<'_, T>,
    k: &HostView<'_, T>,
    v: &HostView<'_, T>,
    dout: &HostView<'_, T>,
) -> Result<(Gradients, Gradients), Failure> {
    let (exact, plain) = std::thread::scope(|scope| {
        let plain = scope.spawn(|| att.backward_plain_as::<T>(family, q, k, v, dout));
        let exact = att.backward(q, k, v, dout);
        (exact, plain.join())
    });
    let plain = plain.map_err(|_| fail("the plain reference backward panicked"))?;
    Ok((exact?, plain?))
}

/// dQ, dK and dV (contiguous, f64) against the reference's.
fn compare_gradients<T: Element>(
    family: MmaFamily,
    shape: AttentionShape,
    ours: [&[f64]; 3],
    reference: &Gradients,
    plain: &Gradients,
) -> Vec<Comparison> {
    let (qs, ks) = (shape.q_shape(), shape.kv_shape());
    let magnitude = [&reference.dq, &reference.dk, &reference.dv]
        .map(|g| max_abs_finite(g))
        .into_iter()
        .fold(0.0, f64::max);
    let cmp = |name: &str, shape: &[usize], ours: &[f64], plain: &[f64], reference: &[f64]| -> Comparison {
        compare(
            name,
            shape,
            ours,
            plain,
            reference,
            crate::tolerance(family, Tolerance::gradient::<T>(reference), magnitude),
        )
    };
    vec![
        cmp("dQ", &qs, ours[0], &plain.dq, &reference.dq),
        cmp("dK", &ks, ours[1], &plain.dk, &reference.dk),
        cmp("dV", &ks, ours[2], &plain.dv, &reference.dv),
    ]
}

/// The host side of a trial's check, on the downloaded gradient buffers: nothing outside the
/// gradient views written, the exact zeros, and the comparisons with the reference (none for an
/// empty problem), which the caller reports.
fn check_host<T: Element>(
    c: &BackwardCase,
    p: &BackwardPlaced,
    inputs: &[Vec<T>],
    dout: &[T],
    grads: &[Vec<T>],
) -> Result<Vec<Comparison>, Failure> {
    for (i, buf) in grads.iter().enumerate() {
        let ops: Vec<&Operand> = [&p.dq, &p.dk, &p.dv].into_iter().filter(|o| o.buffer == i).collect();
        untouched_outside(&format!("gradient buffer {i}"), buf, &ops)?;
    }
    let s = c.shape;
    let dq = gather(&grads[p.dq.buffer], &p.dq);
    let dk = gather(&grads[p.dk.buffer], &p.dk);
    let dv = gather(&grads[p.dv.buffer], &p.dv);
    exact_zeros(s, c.causal, &dq, &dk, &dv)?;
    if [s.batch, s.seqlen_q, s.seqlen_k, s.heads_q].contains(&0) {
        return Ok(Vec::new());
    }
    let host = |o: &Operand| HostView { data: &inputs[o.buffer][o.offset..], layout: o.layout };
    let dout = HostView { data: &dout[p.dout.offset..], layout: p.dout.layout };
    let family = crate::family::<T>(c.path, c.f32)?;
    let (reference, plain) =
        reference_gradients(&c.attention(), family, &host(&p.q), &host(&p.k), &host(&p.v), &dout)?;
    Ok(compare_gradients::<T>(family, s, [&dq, &dk, &dv], &reference, &plain))
}

/// What [`check_host`] concludes: `Err` with the message of the first failure.
fn verdict(r: Result<Vec<Comparison>, Failure>) -> Result<(), String> {
    match r {
        Err(Failure::Fail(m) | Failure::Skip(m)) => Err(m),
        Ok(comparisons) => match comparisons.iter().find(|c| !c.passed()) {
            Some(c) => Err(c.to_string()),
            None => Ok(()),
        },
    }
}

/// The host-side checks on the CPU, without a GPU: plain gradients (what a kernel as accurate
/// as plain attention would write) placed into NaN-poisoned buffers as a launch would leave
/// them must pass; each of these must fail: an element outside the views written, an element
/// of each gradient left unwritten (NaN), an element of each gradient off by 1000. Prints no ratio
/// (the bundle's summary of the GPU trials' ratios must not see these).
fn self_test<T: Element>(c: &BackwardCase, ctx: &Context) -> TestResult {
    let p = place(c);
    let s = c.shape;
    let mut rng = ctx.rng();
    let inputs: Vec<Vec<T>> = p.input_lens.iter().map(|&n| randn(&mut rng, n.max(1))).collect();
    let dout: Vec<T> = randn(&mut rng, p.dout_len.max(1));
    let numel = |shape: [usize; 4]| shape.iter().product::<usize>();
    let (mut gq, mut gk, mut gv) =
        (vec![0.0; numel(s.q_shape())], vec![0.0; numel(s.kv_shape())], vec![0.0; numel(s.kv_shape())]);
    if ![s.batch, s.seqlen_q, s.seqlen_k, s.heads_q].contains(&0) {
        let host = |o: &Operand| HostView { data: &inputs[o.buffer][o.offset..], layout: o.layout };
        let hd = HostView { data: &dout[p.dout.offset..], layout: p.dout.layout };
        let g = c.attention().backward_plain_as::<T>(
            crate::family::<T>(c.path, c.f32)?,
            &host(&p.q),
            &host(&p.k),
            &host(&p.v),
            &hd,
        )?;
        (gq, gk, gv) = (g.dq, g.dk, g.dv);
    }
    let nan = T::from_f32(f32::NAN);
    let mut grads: Vec<Vec<T>> = p.grad_lens.iter().map(|&n| vec![nan; n.max(1)]).collect();
    scatter(&mut grads[p.dq.buffer], &p.dq, &gq);
    scatter(&mut grads[p.dk.buffer], &p.dk, &gk);
    scatter(&mut grads[p.dv.buffer], &p.dv, &gv);
    let check = |g: &[Vec<T>]| verdict(check_host(c, &p, &inputs, &dout, g));
    check(&grads).map_err(|m| fail(format!("plain gradients, as a kernel would write them: {m}")))?;

    let expect_failure = |what: &str, change: &dyn Fn(&mut Vec<Vec<T>>)| -> TestResult {
        let mut bad = grads.clone();
        change(&mut bad);
        match check(&bad) {
            Err(m) => {
                // The failure's subject only: its message carries an error ratio, and the
                // bundle's summary must see the GPU trials' ratios alone.
                println!("    {what}: caught ({})", m.split(':').next().unwrap_or_default());
                Ok(())
            }
            Ok(()) => Err(fail(format!("{what}: not caught"))),
        }
    };
    // An element outside every view (the padding of a padded placement, the tail of a buffer).
    for (b, buf) in grads.iter().enumerate() {
        if let Some(i) = buf.iter().position(|x| x.to_f32().is_nan()) {
            expect_failure(&format!("gradient buffer {b}, element {i} outside the views written"), &|g| {
                g[b][i] = T::from_f32(0.0)
            })?;
        }
    }
    for (name, o) in [("dQ", &p.dq), ("dK", &p.dk), ("dV", &p.dv)] {
        if o.layout.is_empty() {
            continue;
        }
        let [b, sq, h, d] = o.layout.shape;
        let last = o.offset + o.layout.offset([b - 1, sq - 1, h - 1, d - 1]);
        let first = o.offset;
        expect_failure(&format!("{name}'s last element left unwritten"), &|g| g[o.buffer][last] = nan)?;
        expect_failure(&format!("{name}'s first element off by 1000"), &|g| {
            g[o.buffer][first] = T::from_f32(g[o.buffer][first].to_f32() + 1000.0)
        })?;
    }
    Ok(())
}

/// The exact zeros the semantics give: dQ rows that see no key, dK and dV without queries.
fn exact_zeros(shape: AttentionShape, causal: bool, dq: &[f64], dk: &[f64], dv: &[f64]) -> TestResult {
    let s = shape;
    if s.seqlen_q == 0 {
        all_zero("seqlen_q = 0: dK", dk, s.kv_shape())?;
        all_zero("seqlen_q = 0: dV", dv, s.kv_shape())?;
    }
    let (h, d) = (s.heads_q, s.headdim);
    for b in 0..s.batch {
        for i in (0..s.seqlen_q).filter(|&i| s.visible_keys(i, causal) == 0) {
            let at = (b * s.seqlen_q + i) * h * d;
            let row = &dq[at..at + h * d];
            if let Some(x) = row.iter().position(|&x| x != 0.0) {
                return Err(fail(format!(
                    "dQ row (batch {b}, query {i}, head {}) sees no key but element {} is {}, expected 0",
                    x / d,
                    x % d,
                    row[x]
                )));
            }
        }
    }
    Ok(())
}

/// A case's buffers on the GPU and their host copies.
struct Setup<T: Element> {
    c: BackwardCase,
    p: BackwardPlaced,
    fa: FlashAttention,
    stream: Arc<CudaStream>,
    options: BackwardOptions,
    inputs: Vec<Vec<T>>,
    out: Vec<T>,
    dout: Vec<T>,
    lse: Vec<f32>,
    d_inputs: Vec<CudaSlice<T>>,
    d_out: CudaSlice<T>,
    d_dout: CudaSlice<T>,
    d_lse: CudaSlice<f32>,
    d_grads: Vec<CudaSlice<T>>,
    d_ws: CudaSlice<f32>,
    ws_len: usize,
}

impl<T: Element> Setup<T> {
    /// Random Q, K, V and dO (whole buffers, padding included: a read past a row shows), the
    /// reference forward's O and LSE scattered into random buffers, all uploaded; the gradient
    /// buffers and a workspace of exactly `backward_workspace_len` elements allocated.
    fn new(c: &BackwardCase, ctx: &Context) -> Result<Self, Failure> {
        let p = place(c);
        let (device, stream) = crate::gpu::open(c.path)?;
        let fa = FlashAttention::new(device);
        let s = c.shape;
        let mut rng = ctx.rng();
        let inputs: Vec<Vec<T>> = p.input_lens.iter().map(|&n| randn(&mut rng, n.max(1))).collect();
        let dout: Vec<T> = randn(&mut rng, p.dout_len.max(1));
        let mut out: Vec<T> = randn(&mut rng, p.out_len.max(1));
        let mut lse: Vec<f32> = rng.uniform_vec(p.lse_len.max(1), -3.0, 3.0);
        if s.batch > 0 && s.heads_q > 0 && s.seqlen_q > 0 {
            let host = |o: &Operand| HostView { data: &inputs[o.buffer][o.offset..], layout: o.layout };
            // float32 gets the O and LSE of a forward in its own mode (as ours would give): the
            // exact O differs from `Σ P · tf32(V)` by TF32's rounding, which `D = rowsum(dO ∘ O)`
            // would carry into every dS, unlike the plain reference's own O.
            let (att, (q, k, v)) = (c.attention(), (host(&p.q), host(&p.k), host(&p.v)));
            let fwd = match c.f32 {
                Some(_) => {
                    att.forward_plain_as::<T>(crate::family::<T>(c.path, c.f32)?, &q, &k, &v, &Rows::All)?
                }
                None => att.forward(&q, &k, &v, &Rows::All)?,
            };
            scatter(&mut out, &p.out, &fwd.o);
            let [bn, hn, sn] = s.lse_shape();
            for b in 0..bn {
                for h in 0..hn {
                    for i in 0..sn {
                        lse[p.lse.offset + p.lse.layout.offset([b, h, i])] =
                            fwd.lse[(b * hn + h) * sn + i] as f32;
                    }
                }
            }
        }
        let d_inputs = inputs.iter().map(|b| upload(&stream, b)).collect::<Result<Vec<_>, _>>()?;
        let (d_out, d_dout, d_lse) =
            (upload(&stream, &out)?, upload(&stream, &dout)?, upload(&stream, &lse)?);
        let nan = T::from_f32(f32::NAN);
        let d_grads = p
            .grad_lens
            .iter()
            .map(|&n| upload(&stream, &vec![nan; n.max(1)]))
            .collect::<Result<Vec<_>, _>>()?;
        let options = c.options();
        let ws_len =
            FlashAttention::backward_workspace_len(s.batch, s.heads_q, s.seqlen_q, s.headdim, &options)?;
        let d_ws = upload(&stream, &vec![f32::NAN; ws_len.max(1)])?;
        Ok(Setup {
            c: *c,
            p,
            fa,
            stream,
            options,
            inputs,
            out,
            dout,
            lse,
            d_inputs,
            d_out,
            d_dout,
            d_lse,
            d_grads,
            d_ws,
            ws_len,
        })
    }

    /// Poisons the gradient buffers and the workspace with NaN, launches, and returns the
    /// gradient buffers.
    fn launch(&mut self) -> Result<Vec<Vec<T>>, Failure> {
        let nan = T::from_f32(f32::NAN);
        for (buf, &n) in self.d_grads.iter_mut().zip(&self.p.grad_lens) {
            self.stream.memcpy_htod(&vec![nan; n.max(1)], buf)?;
        }
        self.stream.memcpy_htod(&vec![f32::NAN; self.ws_len.max(1)], &mut self.d_ws)?;
        if self.p.packed_grads() {
            self.launch_raw()?
        } else {
            self.launch_safe()?
        }
        self.d_grads.iter().map(|b| download(&self.stream, b)).collect()
    }

    fn launch_safe(&mut self) -> TestResult {
        let Setup { fa, stream, p, d_inputs, d_out, d_dout, d_lse, d_grads, d_ws, ws_len, options, .. } =
            self;
        let (fa, stream, options): (&FlashAttention, &CudaStream, &BackwardOptions) = (fa, stream, options);
        let view =
            |o: &Operand| DeviceTensor { data: d_inputs[o.buffer].slice(o.offset..), layout: o.layout };
        let (q, k, v) = (view(&p.q), view(&p.k), view(&p.v));
        let out = DeviceTensor { data: d_out.slice(p.out.offset..), layout: p.out.layout };
        let dout = DeviceTensor { data: d_dout.slice(p.dout.offset..), layout: p.dout.layout };
        let lse = DeviceTensor { data: d_lse.slice(p.lse.offset..), layout: p.lse.layout };
        let [gq, gk, gv] = &mut d_grads[..] else {
            return Err(fail("three gradient buffers expected"));
        };
        let mut dq = DeviceTensorMut { data: gq.slice_mut(p.dq.offset..), layout: p.dq.layout };
        let mut dk = DeviceTensorMut { data: gk.slice_mut(p.dk.offset..), layout: p.dk.layout };
        let mut dv = DeviceTensorMut { data: gv.slice_mut(p.dv.offset..), layout: p.dv.layout };
        let mut ws = DeviceTensorMut::contiguous(d_ws.slice_mut(0..*ws_len), [*ws_len]);
        fa.backward(stream, &q, &k, &v, &out, &dout, &lse, &mut dq, &mut dk, &mut dv, &mut ws, options)?;
        Ok(())
    }

    /// Packed gradients: three views of one buffer, by address.
    fn launch_raw(&mut self) -> TestResult {
        let Setup { fa, stream, p, d_inputs, d_out, d_dout, d_lse, d_grads, d_ws, ws_len, options, .. } =
            self;
        let (fa, stream, options): (&FlashAttention, &CudaStream, &BackwardOptions) = (fa, stream, options);
        let size = std::mem::size_of::<T>() as u64;
        let at = |base: u64, o: &Operand| RawTensor { ptr: base + o.offset as u64 * size, layout: o.layout };
        let inputs: Vec<_> = d_inputs.iter().map(|b| b.device_ptr(stream)).collect();
        let grads: Vec<_> = d_grads.iter_mut().map(|b| b.device_ptr_mut(stream)).collect();
        let (op, _go) = d_out.device_ptr(stream);
        let (dop, _gd) = d_dout.device_ptr(stream);
        let (lp, _gl) = d_lse.device_ptr(stream);
        let (wp, _gw) = d_ws.device_ptr_mut(stream);
        let args = RawBackward {
            q: at(inputs[p.q.buffer].0, &p.q),
            k: at(inputs[p.k.buffer].0, &p.k),
            v: at(inputs[p.v.buffer].0, &p.v),
            out: at(op, &p.out),
            lse: RawTensor { ptr: lp + 4 * p.lse.offset as u64, layout: p.lse.layout },
            dout: at(dop, &p.dout),
            dq: at(grads[p.dq.buffer].0, &p.dq),
            dk: at(grads[p.dk.buffer].0, &p.dk),
            dv: at(grads[p.dv.buffer].0, &p.dv),
            workspace: RawTensor { ptr: wp, layout: Layout::contiguous([*ws_len]) },
        };
        // SAFETY: every address is a live allocation of this stream's context holding its view
        // (the layouts were built for these buffers); nothing else uses them during the call.
        let r = unsafe { fa.backward_raw::<T>(stream.cu_stream(), &args, options) };
        match r {
            Err(e @ rustflash::Error::InvalidArgument { .. }) => Err(fail(format!(
                "packed gradients (dQ, dK, dV interleaved in one (b, s, 3, h, d) buffer, as \
                 PyTorch's packed QKV backward writes them) were refused: {e}"
            ))),
            r => Ok(r?),
        }
    }

    /// Nothing outside the gradient views written, no input changed, the exact zeros, and the
    /// gradients against the reference.
    fn check(&self, grads: &[Vec<T>]) -> TestResult {
        for (i, (d, h)) in self.d_inputs.iter().zip(&self.inputs).enumerate() {
            unchanged(&format!("buffer {i} (q, k, v)"), &download(&self.stream, d)?, h)?;
        }
        unchanged("out", &download(&self.stream, &self.d_out)?, &self.out)?;
        unchanged("dout", &download(&self.stream, &self.d_dout)?, &self.dout)?;
        let got_lse = download(&self.stream, &self.d_lse)?;
        if let Some(i) = got_lse.iter().zip(&self.lse).position(|(a, b)| a.to_bits() != b.to_bits()) {
            return Err(fail(format!(
                "input lse changed at element {i}: {}, was {}",
                got_lse[i], self.lse[i]
            )));
        }
        let comparisons = check_host(&self.c, &self.p, &self.inputs, &self.dout, grads)?;
        if comparisons.is_empty() { Ok(()) } else { report(&comparisons) }
    }
}

/// `launches` launches (2: compared bit for bit), the first checked.
fn run<T: Element>(c: &BackwardCase, ctx: &Context, launches: usize) -> TestResult {
    let mut setup = Setup::<T>::new(c, ctx)?;
    let first = setup.launch()?;
    for n in 1..launches {
        let again = setup.launch()?;
        for (i, (a, b)) in first.iter().zip(&again).enumerate() {
            if let Some(j) = a.iter().zip(b).position(|(x, y)| bits(*x) != bits(*y)) {
                return Err(fail(format!(
                    "launch {} differs from launch 1: gradient buffer {i}, element {j}: {:?} vs {:?}",
                    n + 1,
                    b[j],
                    a[j]
                )));
            }
        }
        println!("    launch {} bit for bit equal to launch 1", n + 1);
    }
    setup.check(&first)
}

fn saved<T: Element>(c: &BackwardCase, ctx: &Context) -> TestResult {
    let (device, stream) = crate::gpu::open(c.path)?;
    let fa = FlashAttention::new(device);
    let s = c.shape;
    let (qs, ks, ls) = (s.q_shape(), s.kv_shape(), s.lse_shape());
    let (qn, kn) = (qs.iter().product::<usize>(), ks.iter().product::<usize>());
    let mut rng = ctx.rng();
    let host: Vec<Vec<T>> = [qn, kn, kn, qn].iter().map(|&n| randn(&mut rng, n.max(1))).collect();
    let [hq, hk, hv, hdout] = [&host[0], &host[1], &host[2], &host[3]];
    let (d_q, d_k, d_v, d_dout) =
        (upload(&stream, hq)?, upload(&stream, hk)?, upload(&stream, hv)?, upload(&stream, hdout)?);
    let nan = T::from_f32(f32::NAN);
    let mut d_out = upload(&stream, &vec![nan; qn.max(1)])?;
    let mut d_lse = upload(&stream, &vec![f32::NAN; ls.iter().product::<usize>().max(1)])?;
    let mut grads = [
        upload(&stream, &vec![nan; qn.max(1)])?,
        upload(&stream, &vec![nan; kn.max(1)])?,
        upload(&stream, &vec![nan; kn.max(1)])?,
    ];

    let precision = c.f32.unwrap_or_default();
    let fwd_options = ForwardOptions::default().causal(c.causal).f32_precision(precision);
    let default_mode = BackwardOptions::from(&fwd_options);
    ensure(default_mode == BackwardOptions::default().causal(c.causal).f32_precision(precision), || {
        format!("BackwardOptions::from({fwd_options:?}) = {default_mode:?}")
    })?;
    // The default mode's workspace, the larger: it serves both modes.
    let ws_len =
        FlashAttention::backward_workspace_len(s.batch, s.heads_q, s.seqlen_q, s.headdim, &default_mode)?;
    let mut d_ws = upload(&stream, &vec![f32::NAN; ws_len.max(1)])?;

    let q = || DeviceTensor::contiguous(d_q.slice(0..), qs);
    let k = || DeviceTensor::contiguous(d_k.slice(0..), ks);
    let v = || DeviceTensor::contiguous(d_v.slice(0..), ks);
    let dout = DeviceTensor::contiguous(d_dout.slice(0..), qs);
    let saved = fa.forward_saved(
        &stream,
        q(),
        k(),
        v(),
        DeviceTensorMut::contiguous(d_out.slice_mut(0..), qs),
        DeviceTensorMut::contiguous(d_lse.slice_mut(0..), ls),
        &fwd_options,
    )?;
    ensure(saved.backward_options() == default_mode, || {
        format!("saved.backward_options() = {:?}, expected {default_mode:?}", saved.backward_options())
    })?;

    // (deterministic, through SavedForward::backward)
    let runs = [(true, true), (true, false), (false, true)];
    let mut results: Vec<Vec<Vec<T>>> = Vec::new();
    for (deterministic, through_saved) in runs {
        for (g, n) in grads.iter_mut().zip([qn, kn, kn]) {
            stream.memcpy_htod(&vec![nan; n.max(1)], g)?;
        }
        stream.memcpy_htod(&vec![f32::NAN; ws_len.max(1)], &mut d_ws)?;
        {
            let [gq, gk, gv] = &mut grads;
            let mut dq = DeviceTensorMut::contiguous(gq.slice_mut(0..), qs);
            let mut dk = DeviceTensorMut::contiguous(gk.slice_mut(0..), ks);
            let mut dv = DeviceTensorMut::contiguous(gv.slice_mut(0..), ks);
            let mut ws = DeviceTensorMut::contiguous(d_ws.slice_mut(0..ws_len), [ws_len]);
            if through_saved {
                saved.backward(&stream, &dout, &mut dq, &mut dk, &mut dv, &mut ws, deterministic)?;
            } else {
                let options = saved.backward_options().deterministic(deterministic);
                fa.backward(
                    &stream,
                    saved.q(),
                    saved.k(),
                    saved.v(),
                    saved.out(),
                    &dout,
                    saved.lse(),
                    &mut dq,
                    &mut dk,
                    &mut dv,
                    &mut ws,
                    &options,
                )?;
            }
        }
        results.push(grads.iter().map(|g| download(&stream, g)).collect::<Result<Vec<_>, _>>()?);
    }

    let names = ["dQ", "dK", "dV"];
    for (i, (a, b)) in results[0].iter().zip(&results[1]).enumerate() {
        if let Some(j) = a.iter().zip(b).position(|(x, y)| bits(*x) != bits(*y)) {
            return Err(fail(format!(
                "{}: SavedForward::backward and FlashAttention::backward on the saved O and LSE \
                 (deterministic) differ at element {j}: {:?} vs {:?}",
                names[i], a[j], b[j]
            )));
        }
    }
    if [s.batch, s.seqlen_q, s.seqlen_k, s.heads_q].contains(&0) {
        return Ok(());
    }
    fn view<T>(data: &[T], shape: [usize; 4]) -> HostView<'_, T> {
        HostView { data, layout: Layout4::contiguous(shape) }
    }
    let family = crate::family::<T>(c.path, c.f32)?;
    let (reference, plain) = reference_gradients(
        &c.attention(),
        family,
        &view(hq, qs),
        &view(hk, ks),
        &view(hv, ks),
        &view(hdout, qs),
    )?;
    for (mode, r) in [("deterministic", &results[0]), ("default", &results[2])] {
        let g: Vec<Vec<f64>> = r.iter().map(|b| b.iter().map(|x| x.to_f64()).collect()).collect();
        exact_zeros(s, c.causal, &g[0], &g[1], &g[2])?;
        println!("    {mode} mode:");
        report(&compare_gradients::<T>(family, s, [&g[0], &g[1], &g[2]], &reference, &plain))?;
    }
    Ok(())
}
