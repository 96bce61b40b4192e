//! One forward-attention test case: random inputs, a launch on the GPU with poisoned outputs,
//! and the check against the float64 reference and plain attention.

use crate::gpu::{download, upload};
use crate::harness::{Context, TestResult, fail};
use crate::rng::Rng;
use rustflash::F32Precision;
use rustflash::layout::{AttentionShape, HostView, Layout4};
use rustflash::{
    DeviceTensor, DeviceTensorMut, Element, FlashAttention, ForwardOptions, ForwardTile, KernelPath,
};
use rustflash_reference::check::{Comparison, Tolerance, compare, max_abs_finite};
use rustflash_reference::{Attention, Rows};

/// How Q, K and V are laid out in device memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// Each its own contiguous buffer.
    Contiguous,
    /// Slices of one `(batch, seqlen, 3, heads, headdim)` buffer (needs equal lengths and heads).
    Packed,
    /// Each padded: 3 extra elements per head and 1 per row, so strides are only 2-byte aligned.
    Padded,
}

#[derive(Clone, Copy, Debug)]
pub struct ForwardCase {
    pub bf16: bool,
    /// f32 inputs multiplied in this precision (`bf16` is then ignored).
    pub f32: Option<F32Precision>,
    pub shape: AttentionShape,
    pub causal: bool,
    pub placement: Placement,
    pub tile: Option<ForwardTile>,
    /// Check only this many sampled query rows (all when `None`).
    pub sample_rows: Option<usize>,
    pub path: KernelPath,
}

impl ForwardCase {
    pub fn name(&self) -> String {
        let s = self.shape;
        format!(
            "{}_b{}_sq{}_sk{}_h{}x{}_d{}{}_{:?}{}_{}",
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
            self.path.arch()
        )
        .to_lowercase()
    }

    pub fn run(&self, ctx: &Context) -> TestResult {
        crate::by_dtype!(self, run(self, ctx))
    }

    /// This problem on the operands of `p` instead of its own placement.
    pub fn run_on(&self, p: &Placed, ctx: &Context) -> TestResult {
        crate::by_dtype!(self, run_placed(self, p, ctx))
    }
}

/// Where one operand lies: which buffer (inputs only; `out` and `lse` have their own), the
/// element offset of its element `(0, .., 0)` there, and its layout.
#[derive(Clone, Copy, Debug)]
pub struct Operand<const N: usize = 4> {
    pub buffer: usize,
    pub offset: usize,
    pub layout: rustflash::layout::Layout<N>,
}

impl<const N: usize> Operand<N> {
    /// `layout` at element `offset` of buffer 0.
    pub fn at(offset: usize, layout: rustflash::layout::Layout<N>) -> Self {
        Operand { buffer: 0, offset, layout }
    }

    /// One past the last element this operand addresses in its buffer.
    pub fn end(&self) -> usize {
        self.offset + self.layout.required_len().expect("a test layout fits usize")
    }
}

/// Every operand of a forward call placed in device buffers.
#[derive(Clone, Debug)]
pub struct Placed {
    /// Lengths (elements) of the input buffers; q, k and v each name one (perhaps the same).
    pub input_lens: Vec<usize>,
    pub q: Operand,
    pub k: Operand,
    pub v: Operand,
    /// `out` in a buffer of its own, `out_len` elements.
    pub out: Operand,
    pub out_len: usize,
    /// `lse` in an f32 buffer of its own, `lse_len` elements.
    pub lse: Operand<3>,
    pub lse_len: usize,
}

impl Placed {
    /// Each operand in its own buffer at `offset`, every buffer ending exactly where its operand
    /// does (so a read or write past a view's end leaves the allocation).
    pub fn separate(q: Operand, k: Operand, v: Operand, out: Operand, lse: Operand<3>) -> Placed {
        let (q, k, v) = (Operand { buffer: 0, ..q }, Operand { buffer: 1, ..k }, Operand { buffer: 2, ..v });
        Placed {
            input_lens: vec![q.end(), k.end(), v.end()],
            q,
            k,
            v,
            out,
            out_len: out.end(),
            lse,
            lse_len: lse.end(),
        }
    }
}

fn place(c: &ForwardCase) -> Placed {
    let s = c.shape;
    let (qs, ks) = (s.q_shape(), s.kv_shape());
    let lse = Operand::at(0, rustflash::layout::Layout::contiguous(s.lse_shape()));
    let lse_len = lse.end();
    match c.placement {
        Placement::Contiguous => {
            let (q, k) = (Layout4::contiguous(qs), Layout4::contiguous(ks));
            Placed::separate(Operand::at(0, q), Operand::at(0, k), Operand::at(0, k), Operand::at(0, q), lse)
        }
        Placement::Packed => {
            let (h, d) = (s.heads_q, s.headdim);
            let strides = [s.seqlen_q * 3 * h * d, 3 * h * d, d, 1];
            let l = Layout4 { shape: qs, strides };
            let len = s.batch * s.seqlen_q * 3 * h * d;
            // out with the same packed strides, in a buffer of its own.
            let out = Operand::at(0, l);
            Placed {
                input_lens: vec![len],
                q: Operand::at(0, l),
                k: Operand::at(h * d, l),
                v: Operand::at(2 * h * d, l),
                out,
                out_len: out.end(),
                lse,
                lse_len,
            }
        }
        Placement::Padded => {
            let padded = |sh: [usize; 4]| {
                let head = sh[3] + 3;
                let row = sh[2] * head + 1;
                Layout4 { shape: sh, strides: [sh[1] * row + 5, row, head, 1] }
            };
            let (q, k) = (padded(qs), padded(ks));
            Placed::separate(Operand::at(0, q), Operand::at(0, k), Operand::at(0, k), Operand::at(0, q), lse)
        }
    }
}

fn randn<T: Element>(rng: &mut Rng, n: usize) -> Vec<T> {
    (0..n).map(|_| T::from_f32(rng.normal() as f32)).collect()
}

/// Copies a strided tensor into a contiguous one (`rows`: which seq positions to keep).
fn gather<T: Element>(data: &[T], layout: Layout4, rows: &[usize]) -> Vec<T> {
    let [b, _, h, d] = layout.shape;
    let view = HostView { data, layout };
    let mut out = Vec::with_capacity(b * rows.len() * h * d);
    for bb in 0..b {
        for &s in rows {
            for hh in 0..h {
                for dd in 0..d {
                    out.push(view.at([bb, s, hh, dd]));
                }
            }
        }
    }
    out
}

fn sample_rows(seqlen_q: usize, n: usize, rng: &mut Rng) -> Vec<usize> {
    let mut rows: Vec<usize> = [0, 1, 63, 64, 127, 128, seqlen_q / 2, seqlen_q - 2, seqlen_q - 1]
        .into_iter()
        .filter(|&r| r < seqlen_q)
        .collect();
    while rows.len() < n.min(seqlen_q) {
        rows.push((rng.next_u64() % seqlen_q as u64) as usize);
    }
    rows.sort_unstable();
    rows.dedup();
    rows
}

fn run<T: Element>(c: &ForwardCase, ctx: &Context) -> TestResult {
    run_placed::<T>(c, &place(c), ctx)
}

/// Every element of `buf` outside the operand still holds the NaN it was poisoned with: the
/// launch wrote nothing outside the view.
fn untouched_outside<const N: usize>(what: &str, buf: &[f32], op: &Operand<N>) -> TestResult {
    let mut inside = vec![false; buf.len()];
    let l = op.layout;
    let n = l.numel().unwrap_or(0);
    for flat in 0..n {
        let mut idx = [0usize; N];
        let mut rest = flat;
        for i in (0..N).rev() {
            idx[i] = rest % l.shape[i];
            rest /= l.shape[i];
        }
        if let Some(x) = l.checked_offset(idx).and_then(|o| inside.get_mut(op.offset + o)) {
            *x = true;
        }
    }
    match buf.iter().zip(&inside).position(|(x, &inside)| !inside && !x.is_nan()) {
        Some(i) => Err(fail(format!(
            "{what}: element {i} of the buffer, outside the view, was written ({})",
            buf[i]
        ))),
        None => Ok(()),
    }
}

/// `c`'s problem (shape, mask, tile, path, rows; not its placement) on the operands of `p`:
/// random inputs (padding included), outputs poisoned with NaN; O and LSE checked against the
/// float64 reference, and every output element outside the views checked to be untouched. With
/// seqlen_k = 0 every row must be O = 0, LSE = +inf.
pub fn run_placed<T: Element>(c: &ForwardCase, p: &Placed, ctx: &Context) -> TestResult {
    let (device, stream) = crate::gpu::open(c.path)?;
    let fa = FlashAttention::new(device);
    let s = c.shape;
    let mut rng = ctx.rng();

    // Inputs: whole buffers of random values (padding included), so reads past a row show.
    // (At least one element: an allocation cannot be empty; an empty view reads nothing.)
    let bufs: Vec<Vec<T>> = p.input_lens.iter().map(|&n| randn(&mut rng, n.max(1))).collect();
    let dbufs = bufs.iter().map(|b| upload(&stream, b)).collect::<Result<Vec<_>, _>>()?;
    let nan = T::from_f32(f32::NAN);
    let mut dout = upload(&stream, &vec![nan; p.out_len.max(1)])?;
    let mut dlse = upload(&stream, &vec![f32::NAN; p.lse_len.max(1)])?;

    let view = |o: &Operand| DeviceTensor { data: dbufs[o.buffer].slice(o.offset..), layout: o.layout };
    let (q, k, v) = (view(&p.q), view(&p.k), view(&p.v));
    let mut out = DeviceTensorMut { data: dout.slice_mut(p.out.offset..), layout: p.out.layout };
    let mut lse = DeviceTensorMut { data: dlse.slice_mut(p.lse.offset..), layout: p.lse.layout };
    let mut options = ForwardOptions::default().causal(c.causal).f32_precision(c.f32.unwrap_or_default());
    if let Some(t) = c.tile {
        options = options.tile(t);
    }
    fa.forward(&stream, &q, &k, &v, &mut out, &mut lse, &options)?;
    let got_o = download(&stream, &dout)?;
    let got_lse = download(&stream, &dlse)?;
    let got_o32: Vec<f32> = got_o.iter().map(|x| x.to_f32()).collect();
    untouched_outside("out", &got_o32, &p.out)?;
    untouched_outside("lse", &got_lse, &p.lse)?;

    let rows: Vec<usize> = match c.sample_rows {
        Some(n) => sample_rows(s.seqlen_q, n, &mut rng),
        None => (0..s.seqlen_q).collect(),
    };
    let ours: Vec<f64> =
        gather(&got_o[p.out.offset..], p.out.layout, &rows).into_iter().map(|x| x.to_f64()).collect();
    let lse_at = |b, h, r| {
        p.lse
            .layout
            .checked_offset([b, h, r])
            .and_then(|o| got_lse.get(p.lse.offset + o))
            .map_or(f64::NAN, |&x| x as f64)
    };
    let ours_lse: Vec<f64> = (0..s.batch)
        .flat_map(|b| (0..s.heads_q).map(move |h| (b, h)))
        .flat_map(|(b, h)| rows.iter().map(move |&r| (b, h, r)))
        .map(|(b, h, r)| lse_at(b, h, r))
        .collect();
    if s.seqlen_k == 0 {
        // No key: every row is empty, as a fully masked one.
        if let Some(i) = ours.iter().position(|&x| x != 0.0) {
            return Err(fail(format!("seqlen_k = 0: O[{i}] = {}, expected 0", ours[i])));
        }
        if let Some(i) = ours_lse.iter().position(|&x| x != f64::INFINITY) {
            return Err(fail(format!("seqlen_k = 0: LSE[{i}] = {}, expected +inf", ours_lse[i])));
        }
        return Ok(());
    }

    let att = Attention { shape: s, softmax_scale: 1.0 / (s.headdim as f64).sqrt(), causal: c.causal };
    let host = |o: &Operand| HostView { data: &bufs[o.buffer][o.offset..], layout: o.layout };
    let (hq, hk, hvv) = (host(&p.q), host(&p.k), host(&p.v));
    let sel = if c.sample_rows.is_some() { Rows::Sample(rows.clone()) } else { Rows::All };
    let reference = att.forward(&hq, &hk, &hvv, &sel)?;
    let family = crate::family::<T>(c.path, c.f32)?;
    let plain = att.forward_plain_as::<T>(family, &hq, &hk, &hvv, &sel)?;

    let o_shape = [s.batch, rows.len(), s.heads_q, s.headdim];
    let o = compare(
        "O",
        &o_shape,
        &ours,
        &plain.o,
        &reference.o,
        crate::tolerance(family, Tolerance::output::<T>(&reference.o), max_abs_finite(&reference.o)),
    );
    let lse = compare(
        "LSE",
        &[s.batch, s.heads_q, rows.len()],
        &ours_lse,
        &plain.lse,
        &reference.lse,
        Tolerance::lse(&reference.lse),
    );
    report(&[o, lse])
}

/// Prints the ratios (the bundle's summary collects the worst) and fails on any tensor over its bound.
pub fn report(comparisons: &[Comparison]) -> TestResult {
    let ratios: Vec<String> = comparisons.iter().map(|c| format!("{}={:.3}", c.name, c.ratio)).collect();
    println!("    ratio {}", ratios.join(" "));
    match comparisons.iter().find(|c| !c.passed()) {
        Some(c) => Err(fail(c.to_string())),
        None => Ok(()),
    }
}

/// A random valid layout of `shape`: the dimensions in a random order in memory (the last one
/// innermost and contiguous when `contiguous_last`), each level padded by 0 to 4 elements now
/// and then — odd head dims in wider pitches, transposed and strided views.
pub fn random_layout<const N: usize>(
    rng: &mut Rng,
    shape: [usize; N],
    contiguous_last: bool,
) -> rustflash::layout::Layout<N> {
    let mut order: Vec<usize> = (0..N).collect();
    let outer = if contiguous_last { N - 1 } else { N };
    for i in (1..outer).rev() {
        order.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
    }
    let pad = |rng: &mut Rng| if rng.next_u64() % 2 == 0 { 0 } else { (rng.next_u64() % 5) as usize };
    let mut strides = [0usize; N];
    // Innermost first: the contiguous last dimension, or a random one with stride 1 to 3.
    let mut extent = 1usize;
    for (level, &dim) in order.iter().rev().enumerate() {
        let stride = if level == 0 {
            if contiguous_last { 1 } else { 1 + (rng.next_u64() % 3) as usize }
        } else {
            extent + pad(rng)
        };
        strides[dim] = stride;
        extent = stride * shape[dim].max(1);
    }
    rustflash::layout::Layout { shape, strides }
}

/// Random valid operands for `shape`: random layouts ([`random_layout`]), each tensor at a random
/// element offset in its buffer and ending exactly at the buffer's end; now and then K and V
/// interleaved in one buffer (a KV cache), or Q, K and V packed in one (equal lengths and heads).
pub fn random_placed(rng: &mut Rng, s: AttentionShape) -> Placed {
    let offset = |rng: &mut Rng| if rng.next_u64() % 3 == 0 { 0 } else { (rng.next_u64() % 9) as usize };
    let (qs, ks) = (s.q_shape(), s.kv_shape());
    let lse = Operand::at(offset(rng), random_layout(rng, s.lse_shape(), false));
    let out = Operand::at(offset(rng), random_layout(rng, qs, true));
    let pitch =
        |rng: &mut Rng| s.headdim + if rng.next_u64() % 2 == 0 { 0 } else { (rng.next_u64() % 4) as usize };
    match rng.next_u64() % 4 {
        // (b, s, [q|k|v], h, pitch): one buffer.
        0 if s.seqlen_q == s.seqlen_k && s.heads_q == s.heads_kv => {
            let p = pitch(rng);
            let row = 3 * s.heads_q * p;
            let strides = [s.seqlen_q * row, row, p, 1];
            let off = offset(rng);
            let part = |i: usize| Operand {
                buffer: 0,
                offset: off + i * s.heads_q * p,
                layout: Layout4 { shape: qs, strides },
            };
            let (q, k, v) = (part(0), part(1), part(2));
            Placed { input_lens: vec![v.end()], q, k, v, out, out_len: out.end(), lse, lse_len: lse.end() }
        }
        // (b, sk, [k|v], h_kv, pitch): K and V in one buffer.
        1 => {
            let q = Operand { buffer: 0, ..Operand::at(offset(rng), random_layout(rng, qs, true)) };
            let p = pitch(rng);
            let row = 2 * s.heads_kv * p;
            let strides = [s.seqlen_k * row, row, p, 1];
            let off = offset(rng);
            let part = |i: usize| Operand {
                buffer: 1,
                offset: off + i * s.heads_kv * p,
                layout: Layout4 { shape: ks, strides },
            };
            let (k, v) = (part(0), part(1));
            Placed {
                input_lens: vec![q.end(), v.end()],
                q,
                k,
                v,
                out,
                out_len: out.end(),
                lse,
                lse_len: lse.end(),
            }
        }
        _ => {
            let mut op = |shape| Operand::at(offset(rng), random_layout(rng, shape, true));
            let (q, k, v) = (op(qs), op(ks), op(ks));
            Placed::separate(q, k, v, out, lse)
        }
    }
}
