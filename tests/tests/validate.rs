//! The forward's validation on the CPU (no GPU): [`ForwardPlan::new`], the pure function behind
//! `FlashAttention::forward` and `forward_raw`.
//!
//! - The cases of issue 14, and the new-user findings of issue 9, by name.
//! - A property test over many thousands of random calls (random shapes with zeros and huge
//!   sizes, huge and wrapping strides, random buffer lengths, addresses and alignments, random
//!   LSE layouts, aliased outputs). Every accepted call is checked from its launch parameters —
//!   what the kernel will address — by walking every index of every view (or, for views too large
//!   to walk, by exact 128-bit extents): inside the caller's buffers, offsets below 2^63, outputs
//!   sharing no byte with each other or any input. Every rejected call must name an argument that
//!   an independent statement of the rules finds at fault, and every call those rules find no
//!   fault in must be accepted.
//! - The backward's [`BackwardPlan::new`]: a smaller property test of random calls (contiguous,
//!   transposed and packed `(batch, seqlen, 3, heads, headdim)` layouts, then random mutations of
//!   sizes, strides, addresses, lengths, the workspace and the mode), each accepted plan checked
//!   against the spec's launch sequence and the caller's operands, outputs compared byte run by
//!   byte run with every other operand (interleaved gradients must share no byte), each rejection
//!   against an independent statement of the rules.

use half::{bf16, f16};
use rustflash::layout::{AttentionShape, Layout};
use rustflash::{
    BackwardConfig, BackwardKernel, BackwardLaunch, BackwardLens, BackwardOptions, BackwardPlan,
    BackwardTile, Error, ForwardConfig, ForwardLens, ForwardOptions, ForwardPlan, ForwardTile, RawBackward,
    RawForward, RawTensor,
};
use rustflash_tests::forward_case::random_placed;
use rustflash_tests::harness::{Context, TestResult, Trial, ensure, fail, run};
use rustflash_tests::rng::Rng;
use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitCode;
use std::time::Instant;

/// H100's shared memory per block: every tile class fits.
const SHARED: usize = 227 * 1024;
/// Random calls in the property test.
const CALLS: usize = 30_000;

fn main() -> ExitCode {
    run(vec![
        Trial::cpu("validate::issue14::size_products_that_wrap_are_rejected", size_products_wrap),
        Trial::cpu("validate::issue14::strides_that_wrap_are_rejected", strides_wrap),
        Trial::cpu("validate::issue14::odd_head_dims_in_wider_pitches_are_accepted", odd_head_dims),
        Trial::cpu("validate::issue14::raw_lse_must_be_aligned", raw_lse_alignment),
        Trial::cpu("validate::issue14::scale_and_size_errors_name_the_argument", scale_and_sizes),
        Trial::cpu("validate::issue9::overlapping_outputs_are_rejected", overlapping_outputs),
        Trial::cpu("validate::issue9::lse_is_a_tensor", lse_is_a_tensor),
        Trial::cpu("validate::issue9::empty_problems_are_valid", empty_problems),
        Trial::cpu("validate::property::random_calls", random_calls),
        Trial::cpu("validate::backward::property::random_calls", backward_random_calls),
    ])
}

/// One call of the pure function.
#[derive(Clone, Debug)]
struct Call {
    bf16: bool,
    args: RawForward,
    lens: Option<ForwardLens>,
    options: ForwardOptions,
}

impl Call {
    fn plan(&self) -> rustflash::Result<Option<ForwardPlan>> {
        if self.bf16 {
            ForwardPlan::new::<bf16>(
                &self.args,
                self.lens.as_ref(),
                &self.options,
                rustflash::KernelPath::Ampere,
                SHARED,
            )
        } else {
            ForwardPlan::new::<f16>(
                &self.args,
                self.lens.as_ref(),
                &self.options,
                rustflash::KernelPath::Ampere,
                SHARED,
            )
        }
    }

    fn lens_mut(&mut self) -> &mut ForwardLens {
        self.lens.get_or_insert(ForwardLens { q: 0, k: 0, v: 0, out: 0, lse: 0 })
    }
}

/// Region `i` of a fake device address space: 2^57 bytes each.
fn region(i: usize) -> u64 {
    (1 << 48) + ((i as u64) << 57)
}

/// Every operand contiguous in its own region, each buffer exactly as long as its view.
fn contiguous_call(s: AttentionShape) -> Call {
    let t = |i, shape: [usize; 4]| RawTensor { ptr: region(i), layout: Layout::contiguous(shape) };
    let args = RawForward {
        q: t(0, s.q_shape()),
        k: t(1, s.kv_shape()),
        v: t(2, s.kv_shape()),
        out: t(3, s.q_shape()),
        lse: RawTensor { ptr: region(4), layout: Layout::contiguous(s.lse_shape()) },
    };
    let need = |l: &Layout<4>| l.required_len().unwrap_or(usize::MAX);
    let lens = ForwardLens {
        q: need(&args.q.layout),
        k: need(&args.k.layout),
        v: need(&args.v.layout),
        out: need(&args.out.layout),
        lse: args.lse.layout.required_len().unwrap_or(usize::MAX),
    };
    Call { bf16: false, args, lens: Some(lens), options: ForwardOptions::default() }
}

fn shape(batch: usize, sq: usize, sk: usize, hq: usize, hkv: usize, d: usize) -> AttentionShape {
    AttentionShape { batch, seqlen_q: sq, seqlen_k: sk, heads_q: hq, heads_kv: hkv, headdim: d }
}

/// The call is rejected naming `argument`, with `needle` in the message; the message is printed.
fn rejects(what: &str, c: &Call, argument: &str, needle: &str) -> TestResult {
    match c.plan() {
        Err(e @ Error::InvalidArgument { argument: a, .. }) if a == argument => {
            let text = e.to_string();
            println!("    {what}: {text}");
            ensure(text.contains(needle), || format!("{what}: `{needle}` is not in the message `{text}`"))
        }
        other => Err(fail(format!("{what}: expected an invalid `{argument}`, got {other:?}"))),
    }
}

fn accepts(what: &str, c: &Call) -> Result<ForwardPlan, rustflash_tests::harness::Failure> {
    match c.plan() {
        Ok(Some(p)) => Ok(p),
        other => Err(fail(format!("{what}: expected a launch, got {other:?}"))),
    }
}

/// Issue 14, case 1: q and out of shape (2174825477, 2539115648, 1493470474, 64), k and v of
/// (2174825477, 1, 1, 64), strides (0, 0, 0, 1), 64-element buffers, an lse of 256: the products
/// wrapped (to an lse length of 256 and 2 blocks). Now the grid's size is checked exactly and
/// names q.
fn size_products_wrap(_: &Context) -> TestResult {
    let (b, sq, hq) = (2174825477usize, 2539115648usize, 1493470474usize);
    let mut c = contiguous_call(shape(1, 1, 1, 1, 1, 64));
    let zero = [0, 0, 0, 1];
    c.args.q.layout = Layout { shape: [b, sq, hq, 64], strides: zero };
    c.args.out.layout = c.args.q.layout;
    c.args.k.layout = Layout { shape: [b, 1, 1, 64], strides: zero };
    c.args.v.layout = c.args.k.layout;
    c.args.lse.layout = Layout { shape: [b, hq, sq], strides: [0, 0, 0] };
    c.lens = Some(ForwardLens { q: 64, k: 64, v: 64, out: 64, lse: 256 });
    rejects("wrapping block count", &c, "q", "blocks")?;
    // The lse contiguous (its strides saturate), or raw: the same.
    c.args.lse.layout = Layout::contiguous([b, hq, sq]);
    rejects("contiguous lse", &c, "q", "blocks")?;
    c.lens = None;
    rejects("raw", &c, "q", "blocks")?;
    // A grid that fits: out's stride 0 is the fault, then lse's, then the lengths.
    let mut c = contiguous_call(shape(1, 3, 1, 5, 1, 64));
    c.args.q.layout.strides = zero;
    c.args.out.layout.strides = zero;
    c.lens = Some(ForwardLens { q: 64, k: 64, v: 64, out: 64, lse: 256 });
    rejects("out with stride 0", &c, "out", "share an address")?;
    c.args.out.layout = Layout::contiguous([1, 3, 5, 64]);
    c.args.lse.layout.strides = [0, 0, 0];
    rejects("out now longer than its buffer", &c, "out", "960 elements")?;
    c.lens_mut().out = 960;
    rejects("lse with stride 0", &c, "lse", "share an address")
}

/// Issue 14, case 2 (and issue 9's 2^62 stride): strides that wrap acted as negative strides
/// (the 64 elements before out's view were written), a head stride of 2^63 put three heads in
/// one place. Each is now an offset beyond 2^63, naming the view and printing its strides.
fn strides_wrap(_: &Context) -> TestResult {
    let minus_64 = (u64::MAX - 63) as usize;
    fn tensor<'a>(c: &'a mut Call, name: &str) -> &'a mut RawTensor {
        match name {
            "out" => &mut c.args.out,
            "k" => &mut c.args.k,
            "q" => &mut c.args.q,
            _ => &mut c.args.v,
        }
    }
    for name in ["out", "k", "q", "v"] {
        let mut c = contiguous_call(shape(1, 1, 1, 2, 2, 64));
        c.lens = Some(ForwardLens { q: 256, k: 256, v: 256, out: 256, lse: 256 });
        tensor(&mut c, name).layout.strides = [128, 128, minus_64, 1];
        rejects(&format!("{name}: head stride 2^64 − 64"), &c, name, "18446744073709551552")?;
        // Three heads, all at one place: q and out get 3 heads, k and v 3 or 1.
        let kv_heads = if name == "k" || name == "v" { 3 } else { 1 };
        c.args.q.layout = Layout::contiguous([1, 1, 3, 64]);
        c.args.out.layout = Layout::contiguous([1, 1, 3, 64]);
        c.args.k.layout = Layout::contiguous([1, 1, kv_heads, 64]);
        c.args.v.layout = Layout::contiguous([1, 1, kv_heads, 64]);
        c.args.lse.layout = Layout::contiguous([1, 3, 1]);
        tensor(&mut c, name).layout.strides = [0, 0, 1 << 63, 1];
        rejects(&format!("{name}: 3 heads, head stride 2^63"), &c, name, "9223372036854775808")?;
    }
    // Issue 9: k (1, 5, 2, 64) with strides (0, 2^62, 64, 1) over 256 elements.
    let mut c = contiguous_call(shape(1, 5, 5, 2, 2, 64));
    c.args.k.layout.strides = [0, 1 << 62, 64, 1];
    c.lens_mut().k = 256;
    rejects("k with a sequence stride of 2^62", &c, "k", "4611686018427387904")?;
    // The same stride in a buffer it would fit in were the offsets not above 2^63 bytes.
    c.lens_mut().k = usize::MAX;
    rejects("k with a sequence stride of 2^62, any buffer", &c, "k", "2^63")
}

/// Issue 14, case 3: odd head dims in wider pitches, tensors ending at their buffer's end. Valid:
/// accepted with buffers exactly as long as the views (one element less is an error). The
/// kernel's loads must not read past a row's last valid element: the GPU trials check that under
/// compute-sanitizer.
fn odd_head_dims(_: &Context) -> TestResult {
    // (head dim, pitch, buffer length, expected load width in bytes)
    for (d, pitch, len, width) in [(37usize, 38usize, 75usize, 4u32), (38, 44, 82, 8), (37, 40, 77, 16)] {
        let mut c = contiguous_call(shape(1, 2, 2, 1, 1, d));
        c.bf16 = true;
        for t in [&mut c.args.q, &mut c.args.k, &mut c.args.v, &mut c.args.out] {
            t.layout.strides = [2 * pitch, pitch, pitch, 1];
        }
        c.lens = Some(ForwardLens { q: len, k: len, v: len, out: len, lse: 2 });
        let p = accepts(&format!("head dim {d} in pitch {pitch}"), &c)?;
        ensure(p.params.load_bytes == width && p.params.store_bytes == width, || {
            format!(
                "head dim {d} in pitch {pitch}: widths {} / {}, expected {width}",
                p.params.load_bytes, p.params.store_bytes
            )
        })?;
        for name in ["q", "k", "v", "out"] {
            let mut short = c.clone();
            let l = short.lens_mut();
            *match name {
                "q" => &mut l.q,
                "k" => &mut l.k,
                "v" => &mut l.v,
                _ => &mut l.out,
            } = len - 1;
            rejects(&format!("{name} one element short"), &short, name, &format!("at least {len} elements"))?;
        }
    }
    Ok(())
}

/// Issue 14, case 4: `forward_raw` did not check lse's alignment (a 1- or 2-byte offset faulted).
fn raw_lse_alignment(_: &Context) -> TestResult {
    let mut c = contiguous_call(shape(2, 3, 4, 2, 1, 32));
    c.lens = None;
    for delta in [1u64, 2, 3] {
        let mut m = c.clone();
        m.args.lse.ptr += delta;
        rejects(&format!("lse + {delta} bytes"), &m, "lse", "4-byte element")?;
    }
    let mut m = c.clone();
    m.args.lse.ptr += 4;
    accepts("lse + 4 bytes", &m)?;
    for name in ["q", "k", "v", "out"] {
        let mut m = c.clone();
        match name {
            "q" => m.args.q.ptr += 1,
            "k" => m.args.k.ptr += 1,
            "v" => m.args.v.ptr += 1,
            _ => m.args.out.ptr += 1,
        }
        rejects(&format!("{name} + 1 byte"), &m, name, "2-byte element")?;
    }
    Ok(())
}

/// Issue 14, case 5, and issue 9's NaN scale: a finite scale near f32::MAX overflowed
/// `scale · log2 e`; a seqlen_k of 2^32 + 1 was blamed on q with q's shape.
fn scale_and_sizes(_: &Context) -> TestResult {
    let base = contiguous_call(shape(1, 4, 4, 2, 2, 64));
    for scale in [f32::MAX, 2.4e38, -3e38, f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut c = base.clone();
        c.options = c.options.softmax_scale(scale);
        rejects(&format!("scale {scale}"), &c, "options.softmax_scale", "finite")?;
    }
    for scale in [2.3e38, -2.3e38, 0.0, -1.0, 1e-45, 1e30] {
        let mut c = base.clone();
        c.options = c.options.softmax_scale(scale);
        accepts(&format!("scale {scale}"), &c)?;
    }
    // seqlen_k of 2^32 + 1 (a broadcast k and v, so the buffers are small): k, with its shape.
    let sk = (1usize << 32) + 1;
    let mut c = base.clone();
    for t in [&mut c.args.k, &mut c.args.v] {
        t.layout = Layout { shape: [1, sk, 2, 64], strides: [0, 0, 64, 1] };
    }
    rejects("seqlen_k 2^32 + 1", &c, "k", "[1, 4294967297, 2, 64]")?;
    // seqlen_q of 2^32 − 1: rounded up to the tile it no longer fits 32 bits.
    let sq = u32::MAX as usize;
    let mut c = base.clone();
    c.args.q.layout = Layout { shape: [1, sq, 2, 64], strides: [0, 0, 64, 1] };
    c.args.out.layout = Layout { shape: [1, sq, 2, 64], strides: [0, 128, 64, 1] };
    c.args.lse.layout = Layout::contiguous([1, 2, sq]);
    c.lens = None;
    rejects("seqlen_q 2^32 − 1", &c, "q", "seqlen_q at most")?;
    // A huge but valid broadcast: 2^32 − 128 keys of one K/V row.
    let mut c = base.clone();
    for t in [&mut c.args.k, &mut c.args.v] {
        t.layout = Layout { shape: [1, (1 << 32) - 128, 2, 64], strides: [0, 0, 64, 1] };
    }
    accepts("2^32 − 128 keys, broadcast", &c)?;
    Ok(())
}

/// Issue 9: an `out` whose rows overlap (a stride of 0: concurrent writes) was accepted; now any
/// self-overlap, and any overlap between outputs or with an input, is an error. Inputs may alias.
fn overlapping_outputs(_: &Context) -> TestResult {
    let base = contiguous_call(shape(2, 8, 8, 4, 2, 64));
    let mut c = base.clone();
    c.args.out.layout.strides[1] = 0;
    rejects("out with a sequence stride of 0", &c, "out", "share an address")?;
    let mut c = base.clone();
    c.args.out.layout.strides = [2048, 64, 128, 1]; // heads and rows interleave
    rejects("out's heads interleaving its rows", &c, "out", "share an address")?;
    let mut c = base.clone();
    c.args.out.ptr = c.args.q.ptr;
    rejects("out in place of q", &c, "out", "`q`")?;
    let mut c = base.clone();
    c.args.lse.ptr = c.args.out.ptr + 4 * 2047;
    c.lens = None;
    rejects("lse inside out", &c, "lse", "`out`")?;
    let mut c = base.clone();
    c.args.lse.ptr = c.args.k.ptr + 64;
    c.lens = None;
    rejects("lse inside k", &c, "lse", "`k`")?;
    // q, k and v in one packed buffer, k and v the same view: fine.
    let mut c = base.clone();
    c.args.v = c.args.k;
    c.args.q.ptr = c.args.k.ptr;
    c.args.q.layout.strides = [8 * 4 * 64, 4 * 64, 64, 1];
    c.lens = None;
    accepts("inputs aliasing each other", &c)?;
    // A transposed (batch, heads, seqlen, headdim) out and a (seqlen, batch, heads) lse: fine.
    let mut c = base.clone();
    c.args.out.layout.strides = [4 * 8 * 64, 64, 8 * 64, 1];
    c.args.lse.layout.strides = [4, 1, 8];
    accepts("transposed outputs", &c)?;
    Ok(())
}

/// Issue 9: the LSE was a bare slice of fixed layout; now a (batch, heads_q, seqlen_q) tensor
/// with strides: a longer buffer is fine, a wrong shape or a short buffer is an error.
fn lse_is_a_tensor(_: &Context) -> TestResult {
    let base = contiguous_call(shape(2, 5, 7, 3, 1, 16));
    let mut c = base.clone();
    c.lens_mut().lse += 1000;
    accepts("a longer lse buffer", &c)?;
    for bad in [[2, 5, 3], [2, 3, 6], [1, 3, 5], [2, 3, 5 * 7]] {
        let mut c = base.clone();
        c.args.lse.layout = Layout::contiguous(bad);
        c.lens_mut().lse = 1 << 20;
        rejects(&format!("lse of shape {bad:?}"), &c, "lse", "(batch, heads_q, seqlen_q) = [2, 3, 5]")?;
    }
    let mut c = base.clone();
    c.lens_mut().lse -= 1;
    rejects("lse one short", &c, "lse", "at least 30 elements")?;
    // Strided: every other f32, heads outermost.
    let mut c = base.clone();
    c.args.lse.layout.strides = [10, 20, 2];
    c.lens_mut().lse = 59;
    let p = accepts("strided lse", &c)?;
    ensure(p.params.lse_strides == [10, 20, 2], || format!("lse strides {:?}", p.params.lse_strides))
}

/// Issue 9: empty problems were errors; now batch, seqlen_q or heads 0 launch nothing (and check
/// no address), and seqlen_k 0 launches a kernel that reads no key. Head dim 0 stays an error, as
/// in FlashAttention (head dims 1..=256).
fn empty_problems(_: &Context) -> TestResult {
    for (b, sq, hq, hkv) in [(0, 5, 2, 1), (2, 0, 2, 1), (2, 5, 0, 1), (2, 5, 0, 0), (0, 0, 0, 0)] {
        let mut c = contiguous_call(shape(b, sq, 3, hq, hkv, 64));
        c.args.out.ptr = 1; // misaligned and overlapping: but nothing is addressed
        c.args.out.layout.strides = [0; 4];
        c.lens = Some(ForwardLens { q: 0, k: 0, v: 0, out: 0, lse: 0 });
        let r = c.plan();
        ensure(matches!(r, Ok(None)), || format!("({b}, {sq}, {hq}, {hkv}): {r:?}"))?;
    }
    rejects("head dim 0", &contiguous_call(shape(0, 5, 3, 2, 1, 0)), "q", "head dim 1..=256")?;
    rejects("head dim 257", &contiguous_call(shape(1, 5, 3, 2, 1, 257)), "q", "head dim 1..=256")?;
    let mut c = contiguous_call(shape(2, 5, 0, 2, 1, 64));
    c.args.k.ptr = 3; // never read
    let p = accepts("seqlen_k 0", &c)?;
    ensure(p.params.seqlen_k == 0 && p.blocks == 2 * 2, || format!("seqlen_k 0: {p:?}"))
}

// ---------------------------------------------------------------------------------------------
// The property test.

fn chance(rng: &mut Rng, one_in: u64) -> bool {
    rng.next_u64() % one_in == 0
}

fn below(rng: &mut Rng, n: u64) -> u64 {
    rng.next_u64() % n
}

fn pick<T: Copy>(rng: &mut Rng, xs: &[T]) -> T {
    xs[below(rng, xs.len() as u64) as usize]
}

/// Sizes that stress the checks.
const HUGE_SIZES: [usize; 12] = [
    (1 << 31) - 1,
    1 << 31,
    (1 << 32) - 129,
    (1 << 32) - 128,
    (1 << 32) - 1,
    1 << 32,
    (1 << 32) + 1,
    1 << 40,
    1 << 62,
    1 << 63,
    usize::MAX - 1,
    usize::MAX,
];

fn random_size(rng: &mut Rng) -> usize {
    match below(rng, 4) {
        0 => pick(rng, &HUGE_SIZES),
        1 => below(rng, 4) as usize,
        2 => pick(rng, &[64, 255, 256, 257, 1000]),
        _ => below(rng, 300) as usize,
    }
}

fn random_stride(rng: &mut Rng, current: usize) -> usize {
    match below(rng, 8) {
        0 => pick(rng, &[0, 1, 2, 3, 37, 64]),
        1 => pick(
            rng,
            &[
                1 << 31,
                1 << 32,
                1 << 61,
                1 << 62,
                (1 << 62) + 1,
                1 << 63,
                usize::MAX - 63,
                usize::MAX - 1,
                usize::MAX,
            ],
        ),
        2 => rng.next_u64() as usize,
        3 => current.wrapping_neg(), // "negative"
        4 => current.saturating_mul(2),
        5 => current.wrapping_add(1),
        6 => current.saturating_sub(1),
        _ => below(rng, 500) as usize,
    }
}

/// A random call: a valid one (random layouts in buffers that end where the views end), then
/// zero to four random mutations, each of which may or may not make it invalid.
fn random_call(rng: &mut Rng) -> Call {
    let d = pick(rng, &[1, 2, 3, 7, 8, 16, 31, 37, 38, 64, 100, 128, 129, 200, 255, 256]);
    let size = |rng: &mut Rng| {
        if chance(rng, 10) { 60 + below(rng, 200) as usize } else { 1 + below(rng, 6) as usize }
    };
    let (batch, seqlen_q) = (size(rng).min(4), size(rng));
    let seqlen_k = if chance(rng, 8) { 0 } else { size(rng) };
    let heads_kv = 1 + below(rng, 3) as usize;
    let heads_q = heads_kv * (1 + below(rng, 3) as usize);
    let s = AttentionShape { batch, seqlen_q, seqlen_k, heads_q, heads_kv, headdim: d };
    let p = random_placed(rng, s);
    let e = 2u64;
    let t = |op: &rustflash_tests::forward_case::Operand| RawTensor {
        ptr: region(op.buffer) + op.offset as u64 * e,
        layout: op.layout,
    };
    let args = RawForward {
        q: t(&p.q),
        k: t(&p.k),
        v: t(&p.v),
        out: RawTensor { ptr: region(6) + p.out.offset as u64 * e, layout: p.out.layout },
        lse: RawTensor { ptr: region(7) + p.lse.offset as u64 * 4, layout: p.lse.layout },
    };
    let lens = ForwardLens {
        q: p.input_lens[p.q.buffer] - p.q.offset,
        k: p.input_lens[p.k.buffer] - p.k.offset,
        v: p.input_lens[p.v.buffer] - p.v.offset,
        out: p.out_len - p.out.offset,
        lse: p.lse_len - p.lse.offset,
    };
    let mut c = Call { bf16: chance(rng, 2), args, lens: Some(lens), options: ForwardOptions::default() };
    c.options.causal = chance(rng, 2);
    c.options.tile = pick(rng, &[None, None, Some(ForwardTile::Large), Some(ForwardTile::Small)]);
    let mutations = pick(rng, &[0, 0, 1, 1, 1, 2, 2, 3, 4]);
    for _ in 0..mutations {
        mutate(rng, &mut c);
    }
    c
}

const NAMES: [&str; 5] = ["q", "k", "v", "out", "lse"];

/// Shape and strides of operand `i` (lse's as its first three).
fn dims(c: &mut Call, i: usize) -> (&mut [usize], &mut [usize], &mut u64) {
    let a = &mut c.args;
    match i {
        0 => (&mut a.q.layout.shape[..], &mut a.q.layout.strides[..], &mut a.q.ptr),
        1 => (&mut a.k.layout.shape[..], &mut a.k.layout.strides[..], &mut a.k.ptr),
        2 => (&mut a.v.layout.shape[..], &mut a.v.layout.strides[..], &mut a.v.ptr),
        3 => (&mut a.out.layout.shape[..], &mut a.out.layout.strides[..], &mut a.out.ptr),
        _ => (&mut a.lse.layout.shape[..], &mut a.lse.layout.strides[..], &mut a.lse.ptr),
    }
}

fn len_mut(l: &mut ForwardLens, i: usize) -> &mut usize {
    match i {
        0 => &mut l.q,
        1 => &mut l.k,
        2 => &mut l.v,
        3 => &mut l.out,
        _ => &mut l.lse,
    }
}

fn mutate(rng: &mut Rng, c: &mut Call) {
    let i = below(rng, 5) as usize;
    let ptrs = [c.args.q.ptr, c.args.k.ptr, c.args.v.ptr, c.args.out.ptr, c.args.lse.ptr];
    match below(rng, 19) {
        // One size of one operand.
        0 => {
            let (shape, _, _) = dims(c, i);
            let j = below(rng, shape.len() as u64) as usize;
            shape[j] = random_size(rng);
        }
        // One stride of one operand (twice as likely: the heart of the matter).
        1 | 2 => {
            let (_, strides, _) = dims(c, i);
            let j = below(rng, strides.len() as u64) as usize;
            strides[j] = random_stride(rng, strides[j]);
        }
        // Misaligned by 1 to 3 bytes.
        3 => {
            let p = dims(c, i).2;
            *p = p.wrapping_add(1 + below(rng, 3));
        }
        // Near the top of the address space.
        4 => *dims(c, i).2 = u64::MAX - below(rng, 1 << 16),
        // At, or a few elements into, another operand.
        5 => *dims(c, i).2 = ptrs[below(rng, 5) as usize].wrapping_add(2 * below(rng, 64)),
        // Out in place of q.
        6 => c.args.out = c.args.q,
        // One buffer length: short, empty, random, huge.
        7 => {
            let l = c.lens_mut();
            let len = len_mut(l, i);
            *len = match below(rng, 4) {
                0 => len.saturating_sub(1),
                1 => 0,
                2 => below(rng, (*len as u64).clamp(1, u64::MAX / 2) * 2) as usize,
                _ => usize::MAX,
            };
        }
        // forward_raw: no lengths.
        8 => c.lens = None,
        9 => {
            let scale = pick(
                rng,
                &[
                    f32::NAN,
                    f32::INFINITY,
                    f32::NEG_INFINITY,
                    f32::MAX,
                    -f32::MAX,
                    2.36e38,
                    2.35e38,
                    0.0,
                    -1.0,
                    1e-45,
                    1e30,
                ],
            );
            c.options = c.options.clone().softmax_scale(scale);
        }
        // An empty problem, consistently: batch, seqlen_q or heads 0.
        10 => {
            let which = below(rng, 3);
            let a = &mut c.args;
            match which {
                0 => {
                    for s in [
                        &mut a.q.layout.shape[0],
                        &mut a.k.layout.shape[0],
                        &mut a.v.layout.shape[0],
                        &mut a.out.layout.shape[0],
                        &mut a.lse.layout.shape[0],
                    ] {
                        *s = 0;
                    }
                }
                1 => {
                    for s in
                        [&mut a.q.layout.shape[1], &mut a.out.layout.shape[1], &mut a.lse.layout.shape[2]]
                    {
                        *s = 0;
                    }
                }
                _ => {
                    for s in
                        [&mut a.q.layout.shape[2], &mut a.out.layout.shape[2], &mut a.lse.layout.shape[1]]
                    {
                        *s = 0;
                    }
                    if chance(rng, 2) {
                        a.k.layout.shape[2] = 0;
                        a.v.layout.shape[2] = 0;
                    }
                }
            }
        }
        // No keys, consistently.
        11 => {
            c.args.k.layout.shape[1] = 0;
            c.args.v.layout.shape[1] = 0;
        }
        // A huge size, consistently, with broadcast (stride 0) inputs.
        12 => {
            let n = random_size(rng);
            let a = &mut c.args;
            match below(rng, 3) {
                0 => {
                    for l in [&mut a.q.layout, &mut a.k.layout, &mut a.v.layout, &mut a.out.layout] {
                        l.shape[0] = n;
                    }
                    a.lse.layout.shape[0] = n;
                    for l in [&mut a.q.layout, &mut a.k.layout, &mut a.v.layout] {
                        l.strides[0] = 0;
                    }
                }
                1 => {
                    a.k.layout.shape[1] = n;
                    a.v.layout.shape[1] = n;
                    a.k.layout.strides[1] = 0;
                    a.v.layout.strides[1] = 0;
                }
                _ => {
                    a.q.layout.shape[1] = n;
                    a.out.layout.shape[1] = n;
                    a.lse.layout.shape[2] = n;
                    a.q.layout.strides[1] = 0;
                }
            }
        }
        // The lse's strides permuted or one zeroed.
        13 => {
            let s = &mut c.args.lse.layout.strides;
            if chance(rng, 2) {
                s.swap(below(rng, 3) as usize, below(rng, 3) as usize);
            } else {
                s[below(rng, 3) as usize] = 0;
            }
        }
        // Two strides of an operand swapped (interleaving them, unless the sizes agree).
        14 => {
            let (_, strides, _) = dims(c, i);
            let n = strides.len() as u64;
            strides.swap(below(rng, n) as usize, below(rng, n) as usize);
        }
        // A grid at its limit: batch · heads_q · ⌈seqlen_q / block_m⌉ about 2^31 − 1, broadcast
        // inputs, raw (the outputs are large).
        15 => {
            let [_, sq, hq, _] = c.args.q.layout.shape;
            let m = sq.div_ceil(pick(rng, &[64, 128])).max(1);
            let b = (i32::MAX as usize / hq.max(1).saturating_mul(m)).saturating_add(below(rng, 2) as usize);
            let a = &mut c.args;
            for l in [&mut a.q.layout, &mut a.k.layout, &mut a.v.layout, &mut a.out.layout] {
                l.shape[0] = b;
            }
            a.lse.layout.shape[0] = b;
            for l in [&mut a.q.layout, &mut a.k.layout, &mut a.v.layout] {
                l.strides[0] = 0;
            }
            // The outputs' batches one after the other.
            let one = |shape: &[usize], strides: &[usize]| {
                let mut l = Layout { shape: [1; 4], strides: [0; 4] };
                l.shape[..shape.len() - 1].copy_from_slice(&shape[1..]);
                l.strides[..shape.len() - 1].copy_from_slice(&strides[1..]);
                l.required_len()
            };
            if let Some(n) = one(&a.out.layout.shape, &a.out.layout.strides) {
                a.out.layout.strides[0] = n;
            }
            if let Some(n) = one(&a.lse.layout.shape, &a.lse.layout.strides) {
                a.lse.layout.strides[0] = n;
            }
            c.lens = None;
        }
        // K and V heads, consistently: 0, a divisor of heads_q or not, huge.
        16 => {
            let h = pick(rng, &[0, 1, 2, 3, 4, 6, 9, 1 << 32, usize::MAX]);
            c.args.k.layout.shape[2] = h;
            c.args.v.layout.shape[2] = h;
        }
        // An output right after, or one element into the end of, another operand.
        17 => {
            let j = below(rng, 5) as usize;
            let (shape, strides, ptr) = dims(c, j);
            let layout = Layout {
                shape: [shape[0], shape[1], shape[2]],
                strides: [strides[0], strides[1], strides[2]],
            };
            let e = if j == 4 { 4 } else { 2 };
            let last = shape.len() - 1;
            let inner = if j == 4 { 0 } else { shape[last].saturating_sub(1) };
            let end = layout
                .max_offset()
                .and_then(|m| m.checked_add(inner)?.checked_add(1)?.checked_mul(e))
                .and_then(|b| (*ptr).checked_add(b as u64));
            if let Some(end) = end {
                let target = if chance(rng, 2) { end } else { end - 2 };
                if chance(rng, 2) {
                    c.args.out.ptr = target;
                } else {
                    let back = if chance(rng, 2) { 0 } else { 4 };
                    if let Some(p) = target.checked_next_multiple_of(4).and_then(|p| p.checked_sub(back)) {
                        c.args.lse.ptr = p;
                    }
                }
            }
        }
        // The head dim, everywhere: 0, or beyond 256.
        _ => {
            let d = pick(rng, &[0, 257, 512, usize::MAX]);
            for l in
                [&mut c.args.q.layout, &mut c.args.k.layout, &mut c.args.v.layout, &mut c.args.out.layout]
            {
                l.shape[3] = d;
            }
        }
    }
}

/// The kernel that `dispatch` chooses for this element type, head dim and tile (read off a
/// valid one-element call: dispatch is tested on its own).
fn config_for(bf16: bool, d: usize, tile: Option<ForwardTile>) -> Option<&'static ForwardConfig> {
    let mut c = contiguous_call(shape(1, 1, 1, 1, 1, d));
    c.bf16 = bf16;
    c.options.tile = tile;
    c.plan().ok().flatten().map(|p| p.config)
}

/// One operand as the independent rules see it.
struct Op {
    name: &'static str,
    ptr: u64,
    shape: Vec<usize>,
    strides: Vec<usize>,
    e: u128,
    len: Option<usize>,
    output: bool,
    /// The head dim: contiguous, stride 1 in the kernel.
    head_last: bool,
    /// Per dimension, the indices the kernel may form offsets for.
    reach: Vec<usize>,
}

impl Op {
    fn empty(&self) -> bool {
        self.shape.contains(&0)
    }
    fn stride(&self, i: usize) -> u128 {
        if self.head_last && i + 1 == self.shape.len() {
            1
        } else if self.shape[i] == 1 {
            0
        } else {
            self.strides[i] as u128
        }
    }
    /// `Σ (extent[i] − 1) · stride(i)`, saturating at u128::MAX.
    fn span(&self, extent: &[usize]) -> u128 {
        let mut sum = 0u128;
        for (i, &n) in extent.iter().enumerate() {
            sum = sum.saturating_add((n.saturating_sub(1) as u128).saturating_mul(self.stride(i)));
        }
        sum
    }
    /// The bytes `[lo, hi]` the view covers.
    fn bytes(&self) -> (u128, u128) {
        let lo = self.ptr as u128;
        (lo, lo.saturating_add(self.span(&self.shape).saturating_add(1).saturating_mul(self.e)) - 1)
    }
    /// The documented sufficient test for self-overlap, stated without sorting: over the
    /// dimensions of size at least 2, every stride is non-zero, no two are equal, and each exceeds
    /// the span of the dimensions with smaller strides.
    fn overlaps_itself(&self) -> bool {
        let dims: Vec<(u128, u128)> = (0..self.shape.len())
            .filter(|&i| self.shape[i] > 1)
            .map(|i| (self.stride(i), self.shape[i] as u128 - 1))
            .collect();
        dims.iter().enumerate().any(|(i, &(s, _))| {
            let smaller: u128 = dims
                .iter()
                .filter(|&&(t, _)| t < s)
                .map(|&(t, n)| t.saturating_mul(n))
                .fold(0, u128::saturating_add);
            s == 0 || dims.iter().enumerate().any(|(j, &(t, _))| j != i && t == s) || s <= smaller
        })
    }
}

/// The operands of `c` with the kernel's reach for `config` (exact shapes when `None`).
fn ops(c: &Call, config: Option<&ForwardConfig>) -> Vec<Op> {
    let a = &c.args;
    let [b, sq, hq, _] = a.q.layout.shape;
    let [_, sk, hkv, _] = a.k.layout.shape;
    let round = |n: usize, to: usize| n.div_ceil(to).saturating_mul(to);
    let (pq, pk, bucket) = match config {
        Some(f) => (round(sq, f.block_m), round(sk, f.block_n), f.head_dim),
        None => (sq, sk, a.q.layout.shape[3]),
    };
    let len = |i: usize| c.lens.map(|mut l| *len_mut(&mut l, i));
    let four = |i: usize, t: &RawTensor, output: bool, reach: [usize; 4]| Op {
        name: NAMES[i],
        ptr: t.ptr,
        shape: t.layout.shape.to_vec(),
        strides: t.layout.strides.to_vec(),
        e: 2,
        len: len(i),
        output,
        head_last: true,
        reach: reach.to_vec(),
    };
    vec![
        four(0, &a.q, false, [b, pq, hq, bucket]),
        four(1, &a.k, false, [b, pk, hkv, bucket]),
        four(2, &a.v, false, [b, pk, hkv, bucket]),
        four(3, &a.out, true, [b, pq, hq, bucket]),
        Op {
            name: "lse",
            ptr: a.lse.ptr,
            shape: a.lse.layout.shape.to_vec(),
            strides: a.lse.layout.strides.to_vec(),
            e: 4,
            len: len(4),
            output: true,
            head_last: false,
            reach: vec![b, hq, pq],
        },
    ]
}

/// Every argument the documented rules find at fault in `c` (empty: the call must be accepted).
fn faults(c: &Call) -> BTreeSet<&'static str> {
    let mut f = BTreeSet::new();
    let a = &c.args;
    let [b, sq, hq, d] = a.q.layout.shape;
    let [bk, sk, hkv, dk] = a.k.layout.shape;
    if d == 0 || d > 256 {
        f.insert("q");
    }
    if bk != b || dk != d {
        f.insert("k");
    }
    if if hkv == 0 { hq != 0 } else { hq % hkv != 0 } {
        f.insert("k");
    }
    if a.v.layout.shape != a.k.layout.shape {
        f.insert("v");
    }
    if a.out.layout.shape != a.q.layout.shape {
        f.insert("out");
    }
    if a.lse.layout.shape != [b, hq, sq] {
        f.insert("lse");
    }
    if c.options.softmax_scale.is_some_and(|s| !(s.is_finite() && (s * std::f32::consts::LOG2_E).is_finite()))
    {
        f.insert("options.softmax_scale");
    }
    if !f.is_empty() || b == 0 || sq == 0 || hq == 0 {
        return f;
    }
    let Some(config) = config_for(c.bf16, d, c.options.tile) else {
        f.insert("options.tile");
        return f;
    };
    // Sizes the kernel holds in 32 bits, and the grid.
    let u32_max = u32::MAX as u128;
    let m_blocks = (sq as u128).div_ceil(config.block_m as u128);
    if m_blocks * config.block_m as u128 > u32_max || hq as u128 > u32_max {
        f.insert("q");
    }
    if (sk as u128).div_ceil(config.block_n as u128) * config.block_n as u128 > u32_max {
        f.insert("k");
    }
    if (b as u128).saturating_mul(hq as u128).saturating_mul(m_blocks) > i32::MAX as u128 {
        f.insert("q");
    }
    if !f.is_empty() {
        return f;
    }
    let ops = ops(c, Some(config));
    for o in ops.iter().filter(|o| !o.empty()) {
        let last = o.shape.len() - 1;
        let formed = o.span(&o.reach).saturating_add(1).saturating_mul(o.e);
        let bad = (o.head_last && o.shape[last] > 1 && o.strides[last] != 1)
            || formed > 1 << 63
            || o.ptr as u128 + formed > 1 << 64
            || o.len.is_some_and(|len| o.span(&o.shape) >= len as u128)
            || o.ptr as u128 % o.e != 0
            || (o.output && o.overlaps_itself());
        if bad {
            f.insert(o.name);
        }
    }
    for (i, o) in ops.iter().enumerate().filter(|(_, o)| o.output && !o.empty()) {
        for (j, x) in ops.iter().enumerate().filter(|(_, x)| !x.empty()) {
            let ((a0, a1), (b0, b1)) = (o.bytes(), x.bytes());
            if i != j && a0 <= b1 && b0 <= a1 {
                f.insert(o.name);
                if x.output {
                    f.insert(x.name);
                }
            }
        }
    }
    f
}

/// Elements walked one by one per view at most; larger views are checked by their exact extent.
const WALK: u128 = 1 << 14;

/// What the kernel will address under `p`, from the launch parameters alone, against the caller's
/// buffers: every element inside, every offset (padded rows included) below 2^63, outputs
/// disjoint from everything else and from themselves, access widths dividing every address.
fn check_accepted(c: &Call, p: &ForwardPlan) -> Result<u128, String> {
    let a = &c.args;
    let k = &p.params;
    let [b, sq, hq, d] = a.q.layout.shape;
    let [_, sk, hkv, _] = a.k.layout.shape;
    let f = p.config;
    let per_batch = k.heads_q as u64 * k.num_m_blocks as u64;
    let sizes_ok = k.seqlen_q as usize == sq
        && k.seqlen_k as usize == sk
        && k.heads_q as usize == hq
        && k.group as usize * hkv == hq
        && k.head_dim as usize == d
        && f.head_dim >= d
        && (k.num_m_blocks as usize) * f.block_m >= sq
        && (k.num_m_blocks as usize - 1) * f.block_m < sq
        && p.blocks as u64 == b as u64 * per_batch
        && f.name.contains(if c.bf16 { "_bf16_" } else { "_f16_" });
    if !sizes_ok {
        return Err(format!("the plan's sizes disagree with the call: {p:?}"));
    }
    // The kernel's operands: its addresses, its strides, its sizes.
    let tensor4 = |ptr: u64, s: [u64; 3], shape: Vec<usize>| {
        (ptr, vec![s[0] as u128, s[1] as u128, s[2] as u128, 1], shape, 2)
    };
    let kernel: [(u64, Vec<u128>, Vec<usize>, u128); 5] = [
        tensor4(k.q, k.q_strides, vec![b, sq, hq, d]),
        tensor4(k.k, k.k_strides, vec![b, sk, hkv, d]),
        tensor4(k.v, k.v_strides, vec![b, sk, hkv, d]),
        tensor4(k.o, k.o_strides, vec![b, sq, hq, d]),
        (k.lse, k.lse_strides.iter().map(|&s| s as u128).collect(), vec![b, hq, sq], 4),
    ];
    let callers = ops(c, Some(f));
    let mut intervals: Vec<(u128, u128, usize)> = Vec::new();
    let mut walked = 0u128;
    for (i, ((ptr, strides, shape, e), caller)) in kernel.iter().zip(&callers).enumerate() {
        let name = NAMES[i];
        if shape.contains(&0) {
            continue;
        }
        if *ptr != caller.ptr {
            return Err(format!(
                "{name}: the kernel's address {ptr:#x} is not the caller's {:#x}",
                caller.ptr
            ));
        }
        if *ptr as u128 % e != 0 {
            return Err(format!("{name}: address {ptr:#x} misaligned"));
        }
        // Padded rows and head-dim columns included.
        let formed: u128 =
            caller.reach.iter().zip(strides).map(|(&n, &s)| (n as u128 - 1) * s).sum::<u128>() * e + e;
        if formed > 1 << 63 || *ptr as u128 + formed > 1 << 64 {
            return Err(format!("{name}: the kernel may form byte offset {formed} from {ptr:#x}"));
        }
        let end = caller.len.map(|l| *ptr as u128 + l as u128 * e);
        let numel: u128 = shape.iter().map(|&n| n as u128).product();
        if numel <= WALK {
            walked += numel;
            let mut idx = vec![0usize; shape.len()];
            for _ in 0..numel {
                let off: u128 = idx.iter().zip(strides).map(|(&i, &s)| i as u128 * s).sum();
                let theirs: u128 =
                    idx.iter().zip(&caller.strides).map(|(&i, &s)| i as u128 * s as u128).sum();
                let last = idx.len() - 1;
                // The caller's element (the head dim is contiguous whatever its stored stride).
                let theirs = if i < 4 {
                    theirs - idx[last] as u128 * caller.strides[last] as u128 + idx[last] as u128
                } else {
                    theirs
                };
                if off != theirs {
                    return Err(format!(
                        "{name}: the kernel addresses {idx:?} at offset {off}, the caller at {theirs}"
                    ));
                }
                let lo = *ptr as u128 + off * e;
                if end.is_some_and(|end| lo + e > end) {
                    return Err(format!(
                        "{name}: element {idx:?} at {lo:#x} is past the buffer's end {:#x}",
                        end.unwrap_or(0)
                    ));
                }
                intervals.push((lo, lo + e - 1, i));
                for j in (0..idx.len()).rev() {
                    idx[j] += 1;
                    if idx[j] < shape[j] {
                        break;
                    }
                    idx[j] = 0;
                }
            }
        } else {
            let hi = *ptr as u128
                + shape.iter().zip(strides).map(|(&n, &s)| (n as u128 - 1) * s).sum::<u128>() * e
                + e;
            if end.is_some_and(|end| hi > end) {
                return Err(format!("{name}: the view ends at {hi:#x}, past the buffer's end"));
            }
            if i >= 3 && caller.overlaps_itself() {
                return Err(format!("{name}: accepted though its strides interleave"));
            }
            // A stand-in interval for the whole view: outputs must miss it entirely.
            intervals.push((*ptr as u128, hi - 1, i));
        }
        if i < 4 {
            let width = if i < 3 { k.load_bytes } else { k.store_bytes } as u128;
            if *ptr as u128 % width != 0 || strides[..3].iter().any(|&s| s * 2 % width != 0) {
                return Err(format!("{name}: access width {width} does not divide its address or strides"));
            }
        }
    }
    // The access widths are the widest allowed.
    let divides = |w: u128, ops: &[usize]| {
        ops.iter()
            .filter(|&&i| !kernel[i].2.contains(&0))
            .all(|&i| kernel[i].0 as u128 % w == 0 && kernel[i].1[..3].iter().all(|&s| s * 2 % w == 0))
    };
    for (width, ops) in [(k.load_bytes, &[0, 1, 2][..]), (k.store_bytes, &[3][..])] {
        let w = width as u128;
        if ![2, 4, 8, 16].contains(&w) || !divides(w, ops) || (w < 16 && divides(2 * w, ops)) {
            return Err(format!("access width {w} for {ops:?} is not the widest allowed"));
        }
    }
    // Sweep: an interval of an output meets nothing before it, nor an input an earlier output.
    intervals.sort_unstable();
    // The highest byte seen so far, with its owner: of any interval, of an output's.
    let mut hi_all: Option<(u128, usize)> = None;
    let mut hi_out: Option<(u128, usize)> = None;
    for &(lo, hi, owner) in &intervals {
        let output = owner >= 3;
        let clash = if output { hi_all } else { hi_out };
        if let Some((_, other)) = clash.filter(|&(h, _)| lo <= h) {
            return Err(format!("{} at {lo:#x} shares bytes with {}", NAMES[owner], NAMES[other]));
        }
        if hi_all.is_none_or(|(h, _)| hi > h) {
            hi_all = Some((hi, owner));
        }
        if output && hi_out.is_none_or(|(h, _)| hi > h) {
            hi_out = Some((hi, owner));
        }
    }
    Ok(walked)
}

fn random_calls(ctx: &Context) -> TestResult {
    println!("    seed {:#x} (replay: RUSTFLASH_SEED={:#x})", ctx.seed, ctx.seed);
    let start = Instant::now();
    let mut rng = ctx.rng();
    let (mut launches, mut empty, mut walked) = (0usize, 0usize, 0u128);
    let mut rejected: BTreeMap<&'static str, usize> = BTreeMap::new();
    for n in 0..CALLS {
        let c = random_call(&mut rng);
        let f = faults(&c);
        let what = |why: String| fail(format!("call {n}: {why}\n    {c:?}\n    faults {f:?}"));
        match c.plan() {
            Ok(None) => {
                let [b, sq, hq, _] = c.args.q.layout.shape;
                if !f.is_empty() || (b != 0 && sq != 0 && hq != 0) {
                    return Err(what("accepted as empty".into()));
                }
                empty += 1;
            }
            Ok(Some(p)) => {
                if !f.is_empty() {
                    return Err(what(format!("accepted with faults: {p:?}")));
                }
                walked += check_accepted(&c, &p).map_err(what)?;
                launches += 1;
            }
            Err(Error::InvalidArgument { argument, expected, got }) => {
                if !f.contains(argument) {
                    return Err(what(format!("rejected naming `{argument}` ({expected}; got {got})")));
                }
                *rejected.entry(argument).or_default() += 1;
            }
            Err(other) => return Err(what(format!("unexpected error {other}"))),
        }
    }
    println!(
        "    {CALLS} calls in {:.2}s: {launches} launches ({walked} elements walked), {empty} empty, {} rejected {rejected:?}",
        start.elapsed().as_secs_f64(),
        rejected.values().sum::<usize>()
    );
    ensure(
        launches > CALLS / 5 && rejected.values().sum::<usize>() > CALLS / 5 && empty > CALLS / 100,
        || "the generator no longer covers accepted, rejected and empty calls".into(),
    )
}

// ---------------------------------------------------------------------------------------------
// The backward: `BackwardPlan::new`, the pure function behind `backward` and `backward_raw`.

/// Random backward calls in the property test.
const BACKWARD_CALLS: usize = 20_000;

/// The backward's operands, in the order of the views the rules name.
const B_NAMES: [&str; 10] = ["q", "k", "v", "out", "lse", "dout", "dq", "dk", "dv", "workspace"];

/// One call of the backward's pure function.
#[derive(Clone, Debug)]
struct BCall {
    bf16: bool,
    args: RawBackward,
    lens: Option<BackwardLens>,
    options: BackwardOptions,
    /// Built with dq, dk, dv interleaved in one packed gradient buffer (for coverage).
    packed: bool,
}

impl BCall {
    fn plan(&self) -> rustflash::Result<Option<BackwardPlan>> {
        if self.bf16 {
            BackwardPlan::new::<bf16>(
                &self.args,
                self.lens.as_ref(),
                &self.options,
                rustflash::KernelPath::Ampere,
                SHARED,
            )
        } else {
            BackwardPlan::new::<f16>(
                &self.args,
                self.lens.as_ref(),
                &self.options,
                rustflash::KernelPath::Ampere,
                SHARED,
            )
        }
    }
}

/// Shape, strides and address of backward operand `i`.
fn b_dims(a: &mut RawBackward, i: usize) -> (&mut [usize], &mut [usize], &mut u64) {
    fn four(t: &mut RawTensor) -> (&mut [usize], &mut [usize], &mut u64) {
        (&mut t.layout.shape[..], &mut t.layout.strides[..], &mut t.ptr)
    }
    match i {
        0 => four(&mut a.q),
        1 => four(&mut a.k),
        2 => four(&mut a.v),
        3 => four(&mut a.out),
        4 => (&mut a.lse.layout.shape[..], &mut a.lse.layout.strides[..], &mut a.lse.ptr),
        5 => four(&mut a.dout),
        6 => four(&mut a.dq),
        7 => four(&mut a.dk),
        8 => four(&mut a.dv),
        _ => (&mut a.workspace.layout.shape[..], &mut a.workspace.layout.strides[..], &mut a.workspace.ptr),
    }
}

fn b_len_mut(l: &mut BackwardLens, i: usize) -> &mut usize {
    match i {
        0 => &mut l.q,
        1 => &mut l.k,
        2 => &mut l.v,
        3 => &mut l.out,
        4 => &mut l.lse,
        5 => &mut l.dout,
        6 => &mut l.dq,
        7 => &mut l.dk,
        8 => &mut l.dv,
        _ => &mut l.workspace,
    }
}

/// The workspace length by the spec's formula, in 128 bits.
fn workspace_need(c: &BCall) -> u128 {
    let [b, sq, hq, d] = c.args.q.layout.shape;
    let rows = (b as u128).saturating_mul(hq as u128).saturating_mul((sq as u128).div_ceil(128) * 128);
    let bucket = (d as u128).div_ceil(32) * 32;
    rows.saturating_mul(2 + if dq_kernel(c) { 0 } else { bucket })
}

/// Whether the call computes dQ in the separate kernel (no accumulator): the deterministic mode,
/// and the default mode from bucket 96 on (buckets 32 and 64 keep the atomic schedule).
fn dq_kernel(c: &BCall) -> bool {
    c.options.deterministic || c.args.q.layout.shape[3] > 64
}

/// A valid call: each operand contiguous in its own region (or q, k, v and dq, dk, dv packed
/// `(batch, seqlen, 3, heads, headdim)`, interleaved; the gradients now and then transposed),
/// the workspace exactly as long as needed, buffers exactly as long as their views.
fn backward_call(rng: &mut Rng) -> BCall {
    let d = pick(rng, &[1, 3, 8, 31, 38, 64, 100, 128, 129, 200, 256]);
    let size = |rng: &mut Rng| {
        if chance(rng, 10) { 20 + below(rng, 80) as usize } else { 1 + below(rng, 6) as usize }
    };
    let (b, mut sq) = (size(rng).min(4), size(rng));
    let mut sk = if chance(rng, 4) { sq } else { size(rng) };
    if chance(rng, 12) {
        sq = 0;
    } else if chance(rng, 12) {
        sk = 0;
    }
    let hkv = 1 + below(rng, 3) as usize;
    let hq = if chance(rng, 2) { hkv } else { hkv * (1 + below(rng, 3) as usize) };
    let (qs, ks) = ([b, sq, hq, d], [b, sk, hkv, d]);
    let t = |i: usize, shape: [usize; 4]| RawTensor { ptr: region(i), layout: Layout::contiguous(shape) };
    let mut args = RawBackward {
        q: t(0, qs),
        k: t(1, ks),
        v: t(2, ks),
        out: t(3, qs),
        lse: RawTensor { ptr: region(4), layout: Layout::contiguous([b, hq, sq]) },
        dout: t(5, qs),
        dq: t(6, qs),
        dk: t(7, ks),
        dv: t(8, ks),
        workspace: RawTensor { ptr: region(9), layout: Layout::contiguous([0]) },
    };
    let mut packed = false;
    if sq == sk && hq == hkv {
        let strides = [sq * 3 * hq * d, 3 * hq * d, d, 1];
        let three =
            |base: u64| [0, 1, 2].map(|i| RawTensor::new(base + (i * hq * d * 2) as u64, qs, strides));
        if chance(rng, 2) {
            [args.q, args.k, args.v] = three(region(0));
        }
        if chance(rng, 2) {
            [args.dq, args.dk, args.dv] = three(region(6));
            packed = true;
        }
    }
    // Outputs transposed to (batch, heads, seqlen, headdim) now and then.
    if chance(rng, 4) && !packed {
        for t in [&mut args.dq, &mut args.dk, &mut args.dv] {
            let [_, s, h, d] = t.layout.shape;
            t.layout.strides = [h * s * d, d, s * d, 1];
        }
    }
    let mut c = BCall { bf16: chance(rng, 2), args, lens: None, options: BackwardOptions::default(), packed };
    c.options.deterministic = chance(rng, 2);
    c.options.causal = chance(rng, 2);
    c.options.tile = pick(rng, &[None, None, Some(BackwardTile::Large), Some(BackwardTile::Small)]);
    c.args.workspace.layout = Layout::contiguous([workspace_need(&c) as usize]);
    let mut lens =
        BackwardLens { q: 0, k: 0, v: 0, out: 0, lse: 0, dout: 0, dq: 0, dk: 0, dv: 0, workspace: 0 };
    for i in 0..10 {
        let (shape, strides, _) = b_dims(&mut c.args, i);
        let need = match shape.len() {
            4 => Layout::<4> { shape: shape.try_into().unwrap(), strides: strides.try_into().unwrap() }
                .required_len(),
            3 => Layout::<3> { shape: shape.try_into().unwrap(), strides: strides.try_into().unwrap() }
                .required_len(),
            _ => Layout::<1> { shape: shape.try_into().unwrap(), strides: strides.try_into().unwrap() }
                .required_len(),
        };
        *b_len_mut(&mut lens, i) = need.unwrap_or(usize::MAX);
    }
    c.lens = Some(lens);
    c
}

fn backward_mutate(rng: &mut Rng, c: &mut BCall) {
    let i = below(rng, 10) as usize;
    let ptrs: Vec<u64> = (0..10).map(|j| *b_dims(&mut c.args, j).2).collect();
    match below(rng, 16) {
        0 => {
            let (shape, _, _) = b_dims(&mut c.args, i);
            let j = below(rng, shape.len() as u64) as usize;
            shape[j] = random_size(rng);
        }
        1 | 2 => {
            let (_, strides, _) = b_dims(&mut c.args, i);
            let j = below(rng, strides.len() as u64) as usize;
            strides[j] = random_stride(rng, strides[j]);
        }
        3 => {
            let p = b_dims(&mut c.args, i).2;
            *p = p.wrapping_add(if i == 9 { 4 * (1 + below(rng, 3)) } else { 1 + below(rng, 3) });
        }
        4 => *b_dims(&mut c.args, i).2 = ptrs[below(rng, 10) as usize].wrapping_add(2 * below(rng, 64)),
        5 => {
            if let Some(l) = c.lens.as_mut() {
                let len = b_len_mut(l, i);
                *len = match below(rng, 4) {
                    0 => len.saturating_sub(1),
                    1 => 0,
                    2 => below(rng, (*len as u64).clamp(1, u64::MAX / 2) * 2) as usize,
                    _ => usize::MAX,
                };
            }
        }
        6 => c.lens = None,
        7 => {
            let scale = pick(rng, &[f32::NAN, f32::INFINITY, f32::MAX, 2.36e38, 2.35e38, 0.0, -1.0, 1e30]);
            c.options = c.options.clone().softmax_scale(scale);
        }
        // Empty, consistently: batch, heads, queries or keys 0.
        8 => {
            let a = &mut c.args;
            let (q4, k4) =
                ([&mut a.q, &mut a.out, &mut a.dout, &mut a.dq], [&mut a.k, &mut a.v, &mut a.dk, &mut a.dv]);
            match below(rng, 4) {
                0 => {
                    q4.into_iter().chain(k4).for_each(|t| t.layout.shape[0] = 0);
                    a.lse.layout.shape[0] = 0;
                }
                1 => {
                    q4.into_iter().for_each(|t| t.layout.shape[2] = 0);
                    a.lse.layout.shape[1] = 0;
                    if chance(rng, 2) {
                        k4.into_iter().for_each(|t| t.layout.shape[2] = 0);
                    }
                }
                2 => {
                    q4.into_iter().for_each(|t| t.layout.shape[1] = 0);
                    a.lse.layout.shape[2] = 0;
                }
                _ => k4.into_iter().for_each(|t| t.layout.shape[1] = 0),
            }
        }
        // The workspace: one short, longer, empty, strided; the other mode's length.
        9 => {
            let w = &mut c.args.workspace.layout;
            match below(rng, 4) {
                0 => w.shape[0] = w.shape[0].saturating_sub(1),
                1 => w.shape[0] = w.shape[0].saturating_add(1 + below(rng, 100) as usize),
                2 => w.shape[0] = 0,
                _ => w.strides[0] = 2,
            }
        }
        10 => c.options.deterministic = !c.options.deterministic,
        // A gradient shifted by one element, or onto another.
        11 => {
            let (j, k) = (6 + below(rng, 3) as usize, 6 + below(rng, 3) as usize);
            let p = b_dims(&mut c.args, j).2;
            *p = if chance(rng, 2) { p.wrapping_add(2).wrapping_sub(4 * below(rng, 2)) } else { ptrs[k] };
        }
        // Huge sizes with broadcast inputs (stride 0) and no lengths.
        12 => {
            let n = random_size(rng);
            let a = &mut c.args;
            if chance(rng, 2) {
                for t in [&mut a.k, &mut a.v, &mut a.dk, &mut a.dv] {
                    t.layout.shape[1] = n;
                    t.layout.strides[1] = 0;
                }
            } else {
                for t in [&mut a.q, &mut a.out, &mut a.dout, &mut a.dq] {
                    t.layout.shape[1] = n;
                    t.layout.strides[1] = 0;
                }
                a.lse.layout.shape[2] = n;
            }
            c.lens = None;
        }
        // K and V heads, consistently.
        13 => {
            let h = pick(rng, &[0, 1, 2, 3, 4, 6, 1 << 32]);
            for t in [&mut c.args.k, &mut c.args.v, &mut c.args.dk, &mut c.args.dv] {
                t.layout.shape[2] = h;
            }
        }
        // Two strides of an operand swapped.
        14 => {
            let (_, strides, _) = b_dims(&mut c.args, i);
            let n = strides.len() as u64;
            strides.swap(below(rng, n) as usize, below(rng, n) as usize);
        }
        // An output right at the end of an input's range.
        _ => {
            let ops = b_ops(c, None);
            let j = below(rng, 6) as usize;
            if !ops[j].empty() {
                let end = ops[j].bytes().1 + 1;
                if let Some(at) = u64::try_from(end).ok().and_then(|e| e.checked_next_multiple_of(16)) {
                    *b_dims(&mut c.args, 6 + below(rng, 4) as usize).2 = at;
                }
            }
        }
    }
}

/// The backward's operands as the independent rules see them, with the kernels' reach for
/// `bucket` (exact shapes when `None`): rows of q-shaped tensors and keys of k-shaped ones
/// padded to 128.
fn b_ops(c: &BCall, bucket: Option<usize>) -> Vec<Op> {
    let a = &c.args;
    let [b, sq, hq, d] = a.q.layout.shape;
    let [_, sk, hkv, _] = a.k.layout.shape;
    let round = |n: usize| n.div_ceil(128).saturating_mul(128);
    let (pq, pk, bucket) = match bucket {
        Some(bucket) => (round(sq), round(sk), bucket),
        None => (sq, sk, d),
    };
    let len = |i: usize| c.lens.map(|mut l| *b_len_mut(&mut l, i));
    let four = |i: usize, t: &RawTensor, reach: [usize; 4]| Op {
        name: B_NAMES[i],
        ptr: t.ptr,
        shape: t.layout.shape.to_vec(),
        strides: t.layout.strides.to_vec(),
        e: 2,
        len: len(i),
        output: i >= 6,
        head_last: true,
        reach: reach.to_vec(),
    };
    let (rq, rk) = ([b, pq, hq, bucket], [b, pk, hkv, bucket]);
    vec![
        four(0, &a.q, rq),
        four(1, &a.k, rk),
        four(2, &a.v, rk),
        four(3, &a.out, rq),
        Op {
            name: "lse",
            ptr: a.lse.ptr,
            shape: a.lse.layout.shape.to_vec(),
            strides: a.lse.layout.strides.to_vec(),
            e: 4,
            len: len(4),
            output: false,
            head_last: false,
            reach: vec![b, hq, pq],
        },
        four(5, &a.dout, rq),
        four(6, &a.dq, rq),
        four(7, &a.dk, rk),
        four(8, &a.dv, rk),
        Op {
            name: "workspace",
            ptr: a.workspace.ptr,
            shape: a.workspace.layout.shape.to_vec(),
            strides: a.workspace.layout.strides.to_vec(),
            e: 4,
            len: len(9),
            output: true,
            head_last: true,
            reach: a.workspace.layout.shape.to_vec(),
        },
    ]
}

/// The byte runs `[lo, hi]` of a view, sorted: one per index of its dimensions but the
/// contiguous last; `None` past 2^16 runs.
fn runs(o: &Op) -> Option<Vec<(u128, u128)>> {
    let n = o.shape.len();
    let inner = if o.head_last { n - 1 } else { n };
    let count: u128 = o.shape[..inner].iter().map(|&s| s as u128).product();
    if count > 1 << 16 {
        return None;
    }
    let run = if o.head_last { o.shape[n - 1] as u128 * o.e } else { o.e };
    let mut out = Vec::with_capacity(count as usize);
    let mut idx = vec![0usize; inner];
    for _ in 0..count {
        let off: u128 = idx.iter().enumerate().map(|(i, &x)| x as u128 * o.stride(i)).sum();
        let lo = o.ptr as u128 + off * o.e;
        out.push((lo, lo + run - 1));
        for j in (0..inner).rev() {
            idx[j] += 1;
            if idx[j] < o.shape[j] {
                break;
            }
            idx[j] = 0;
        }
    }
    out.sort_unstable();
    Some(out)
}

/// Whether two sorted run lists share a byte.
fn runs_meet(a: &[(u128, u128)], b: &[(u128, u128)]) -> bool {
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        if a[i].0 <= b[j].1 && b[j].0 <= a[i].1 {
            return true;
        }
        if a[i].1 < b[j].1 { i += 1 } else { j += 1 }
    }
    false
}

/// What the independent rules say of a backward call.
#[derive(Debug, Default)]
struct BFaults {
    /// Arguments certainly at fault: the call must be rejected, naming one of these or `maybe`.
    at_fault: BTreeSet<&'static str>,
    /// Arguments a rejection may name besides: outputs whose address ranges meet another
    /// operand's without a shared byte (the sufficient test may or may not prove them apart).
    maybe: BTreeSet<&'static str>,
    /// Pairs of operands whose ranges meet but whose bytes are too many to compare.
    unknown: Vec<(&'static str, &'static str)>,
    /// The row of the table the call should run, where it gets that far.
    config: Option<&'static BackwardConfig>,
}

/// The configuration row for this element type, head dim and tile, read off a one-element call.
fn backward_config_for(bf16: bool, d: usize, tile: Option<BackwardTile>) -> Option<&'static BackwardConfig> {
    let mut rng = Rng::new(0);
    let mut c = backward_call(&mut rng);
    let one = Layout::contiguous([1, 1, 1, d]);
    for i in [0, 1, 2, 3, 5, 6, 7, 8] {
        let (shape, strides, ptr) = b_dims(&mut c.args, i);
        shape.copy_from_slice(&one.shape);
        strides.copy_from_slice(&one.strides);
        *ptr = region(i);
    }
    c.args.lse = RawTensor { ptr: region(4), layout: Layout::contiguous([1, 1, 1]) };
    c.args.workspace = RawTensor { ptr: region(9), layout: Layout::contiguous([128 * 258]) };
    (c.bf16, c.lens, c.options) = (bf16, None, BackwardOptions::default());
    c.options.tile = tile;
    c.plan().ok().flatten().map(|p| p.config)
}

fn backward_faults(c: &BCall) -> BFaults {
    let mut f = BFaults::default();
    let a = &c.args;
    let [b, sq, hq, d] = a.q.layout.shape;
    let [bk, sk, hkv, dk] = a.k.layout.shape;
    let bad = &mut f.at_fault;
    if d == 0 || d > 256 {
        bad.insert("q");
    }
    if bk != b || dk != d || if hkv == 0 { hq != 0 } else { hq % hkv != 0 } {
        bad.insert("k");
    }
    for (name, shape, like) in [
        ("v", a.v.layout.shape, a.k.layout.shape),
        ("out", a.out.layout.shape, a.q.layout.shape),
        ("dout", a.dout.layout.shape, a.out.layout.shape),
        ("dq", a.dq.layout.shape, a.q.layout.shape),
        ("dk", a.dk.layout.shape, a.k.layout.shape),
        ("dv", a.dv.layout.shape, a.k.layout.shape),
    ] {
        if shape != like {
            bad.insert(name);
        }
    }
    if a.lse.layout.shape != [b, hq, sq] {
        bad.insert("lse");
    }
    if c.options.softmax_scale.is_some_and(|s| !(s.is_finite() && (s * std::f32::consts::LOG2_E).is_finite()))
    {
        bad.insert("options.softmax_scale");
    }
    if !bad.is_empty() || b == 0 || hq == 0 || (sq == 0 && sk == 0) {
        return f;
    }
    let Some(config) = backward_config_for(c.bf16, d, c.options.tile) else {
        bad.insert("options.tile");
        return f;
    };
    f.config = Some(config);
    let bad = &mut f.at_fault;
    let (u32_max, grid_max) = (u32::MAX as u128, i32::MAX as u128);
    let round = |n: usize| (n as u128).div_ceil(128) * 128;
    let blocks = |n: usize, m: usize| (n as u128).div_ceil(m as u128);
    if round(sq) > u32_max || hq as u128 > u32_max {
        bad.insert("q");
    }
    if round(sk) > u32_max {
        bad.insert("k");
    }
    if !bad.is_empty() {
        return f;
    }
    let product = |x: usize, y: usize, z: u128| (x as u128).saturating_mul(y as u128).saturating_mul(z);
    if product(b, hq, round(sq)) / 8 > grid_max
        || (dq_kernel(c) && product(b, hq, blocks(sq, config.dq_block_m)) > grid_max)
    {
        bad.insert("q");
    }
    if product(b, hkv, blocks(sk, config.block_n)) > grid_max {
        bad.insert("k");
    }
    if !bad.is_empty() {
        return f;
    }
    let need = workspace_need(c);
    if need > 0 && (a.workspace.layout.shape[0] as u128) < need || need > 0 && a.workspace.ptr % 16 != 0 {
        bad.insert("workspace");
        return f;
    }
    let ops = b_ops(c, Some(config.head_dim));
    for o in ops.iter().filter(|o| !o.empty()) {
        let last = o.shape.len() - 1;
        let formed = o.span(&o.reach).max(o.span(&o.shape)).saturating_add(1).saturating_mul(o.e);
        if (o.head_last && o.shape[last] > 1 && o.strides[last] != 1)
            || formed > 1 << 63
            || o.ptr as u128 + formed > 1 << 64
            || o.len.is_some_and(|len| o.span(&o.shape) >= len as u128)
            || o.ptr as u128 % o.e != 0
            || (o.output && o.overlaps_itself())
        {
            bad.insert(o.name);
        }
    }
    if !bad.is_empty() {
        return f;
    }
    for (i, o) in ops.iter().enumerate().filter(|(_, o)| o.output && !o.empty()) {
        for (_, x) in ops.iter().enumerate().filter(|(j, x)| *j != i && !x.empty()) {
            let ((a0, a1), (b0, b1)) = (o.bytes(), x.bytes());
            if !(a0 <= b1 && b0 <= a1) {
                continue;
            }
            let names = if x.output { vec![o.name, x.name] } else { vec![o.name] };
            match (runs(o), runs(x)) {
                (Some(ro), Some(rx)) if runs_meet(&ro, &rx) => f.at_fault.extend(names),
                (Some(_), Some(_)) => f.maybe.extend(names),
                _ => {
                    f.maybe.extend(names);
                    f.unknown.push((o.name, x.name));
                }
            }
        }
    }
    f
}

/// An accepted call's plan, against the spec's launch sequence and the caller's operands.
fn check_backward_plan(c: &BCall, p: &BackwardPlan, config: &BackwardConfig) -> Result<(), String> {
    let a = &c.args;
    let [b, sq, hq, d] = a.q.layout.shape;
    let [_, sk, hkv, _] = a.k.layout.shape;
    let det = dq_kernel(c);
    if p.config != config {
        return Err(format!("ran {} instead of {}", p.config.name, config.name));
    }
    let rows = b * hq * sq.div_ceil(128) * 128;
    let m = sq.div_ceil(config.block_m) as u32;
    let mut want = Vec::new();
    let row = |kernel, name| BackwardLaunch {
        kernel,
        name,
        blocks: (rows / 8) as u32,
        threads: 256,
        shared_bytes: 0,
        num_m_blocks: m,
    };
    if sq > 0 {
        want.push(row(BackwardKernel::Pre, config.pre_name));
    }
    if sk > 0 {
        want.push(BackwardLaunch {
            kernel: BackwardKernel::Main,
            name: config.name,
            blocks: (b * hkv * sk.div_ceil(config.block_n)) as u32,
            threads: config.threads() as u32,
            shared_bytes: config.shared_bytes() as u32,
            num_m_blocks: m,
        });
    }
    if sq > 0 && det {
        let dm = sq.div_ceil(config.dq_block_m);
        want.push(BackwardLaunch {
            kernel: BackwardKernel::Dq,
            name: config.dq_name,
            blocks: (b * hq * dm) as u32,
            threads: config.dq_threads() as u32,
            shared_bytes: config.dq_shared_bytes() as u32,
            num_m_blocks: dm as u32,
        });
    } else if sq > 0 {
        want.push(row(BackwardKernel::Convert, config.convert_name));
    }
    let got: Vec<BackwardLaunch> = p.launches().copied().collect();
    if got != want {
        return Err(format!("launches {got:?}, the spec's {want:?}"));
    }
    let k = &p.params;
    let f = &k.fwd;
    let ops = b_ops(c, None);
    let strides = |o: &Op| [0, 1, 2].map(|i| o.stride(i) as u64);
    let kernel = [
        (f.q, f.q_strides),
        (f.k, f.k_strides),
        (f.v, f.v_strides),
        (f.o, f.o_strides),
        (f.lse, f.lse_strides),
        (k.dout, k.dout_strides),
        (k.dq, k.dq_strides),
        (k.dk, k.dk_strides),
        (k.dv, k.dv_strides),
    ];
    for (o, (ptr, s)) in ops.iter().zip(kernel) {
        if !o.empty() && (ptr != o.ptr || s != strides(o)) {
            return Err(format!(
                "{}: the kernels get {ptr:#x} {s:?}, the caller's {:#x} {:?}",
                o.name,
                o.ptr,
                strides(o)
            ));
        }
    }
    let sizes = (f.seqlen_q, f.seqlen_k, f.heads_q, f.group, f.head_dim, f.causal);
    let want_sizes =
        (sq as u32, sk as u32, hq as u32, (hq / hkv.max(1)) as u32, d as u32, c.options.causal as u32);
    if sizes != want_sizes {
        return Err(format!("sizes {sizes:?}, expected {want_sizes:?}"));
    }
    let rounded = (sq.div_ceil(128) * 128) as u32;
    let fields = (k.seqlen_q_rounded, k.accum_cols as usize, k.num_n_blocks as usize);
    if fields != (rounded, config.head_dim, sk.div_ceil(config.block_n)) {
        return Err(format!("workspace rows, columns, key tiles {fields:?}"));
    }
    let ws = a.workspace.ptr;
    let want_ws = if sq == 0 {
        (0, 0, 0)
    } else {
        (ws, ws + 4 * rows as u64, if det { 0 } else { ws + 8 * rows as u64 })
    };
    if (k.lse_log2, k.delta, k.dq_accum) != want_ws {
        return Err(format!(
            "workspace addresses {:?}, expected {want_ws:?}",
            (k.lse_log2, k.delta, k.dq_accum)
        ));
    }
    // Access widths: the widest dividing every address and byte stride of the non-empty views.
    let widest = |set: &[usize]| {
        [16u128, 8, 4]
            .into_iter()
            .find(|&w| {
                set.iter()
                    .map(|&i| &ops[i])
                    .filter(|o| !o.empty())
                    .all(|o| o.ptr as u128 % w == 0 && (0..3).all(|i| o.stride(i) * 2 % w == 0))
            })
            .unwrap_or(2) as u32
    };
    let widths = (f.load_bytes, f.store_bytes, k.o_load_bytes);
    let want_widths = (widest(&[0, 1, 2, 5]), widest(&[6, 7, 8]), widest(&[3, 5]));
    if widths != want_widths {
        return Err(format!("access widths {widths:?}, expected {want_widths:?}"));
    }
    let scale = c.options.softmax_scale.unwrap_or(1.0 / (d as f32).sqrt());
    if k.scale.to_bits() != scale.to_bits()
        || f.scale_log2.to_bits() != (scale * std::f32::consts::LOG2_E).to_bits()
    {
        return Err(format!("scale {} / {}, expected {scale}", k.scale, f.scale_log2));
    }
    Ok(())
}

fn backward_random_calls(ctx: &Context) -> TestResult {
    println!("    seed {:#x} (replay: RUSTFLASH_SEED={:#x})", ctx.seed, ctx.seed);
    let start = Instant::now();
    let mut rng = ctx.rng();
    let (mut launches, mut packed, mut empty, mut interleaved) = (0usize, 0usize, 0usize, 0usize);
    let mut rejected: BTreeMap<&'static str, usize> = BTreeMap::new();
    for n in 0..BACKWARD_CALLS {
        let mut c = backward_call(&mut rng);
        for _ in 0..pick(&mut rng, &[0, 0, 1, 1, 1, 2, 2, 3]) {
            backward_mutate(&mut rng, &mut c);
        }
        let f = backward_faults(&c);
        let what = |why: String| fail(format!("backward call {n}: {why}\n    {c:?}\n    {f:?}"));
        match c.plan() {
            Ok(None) => {
                let [b, sq, hq, _] = c.args.q.layout.shape;
                let sk = c.args.k.layout.shape[1];
                if !f.at_fault.is_empty() || !(b == 0 || hq == 0 || (sq == 0 && sk == 0)) {
                    return Err(what("accepted as empty".into()));
                }
                empty += 1;
            }
            Ok(Some(p)) => {
                if !f.at_fault.is_empty() || !f.unknown.is_empty() {
                    return Err(what(format!("accepted: {p:?}")));
                }
                let config = f.config.ok_or_else(|| what("accepted without a configuration".into()))?;
                check_backward_plan(&c, &p, config).map_err(what)?;
                launches += 1;
                packed += c.packed as usize;
                interleaved += !f.maybe.is_empty() as usize;
            }
            Err(Error::InvalidArgument { argument, expected, got }) => {
                if !f.at_fault.contains(argument) && !f.maybe.contains(argument) {
                    return Err(what(format!("rejected naming `{argument}` ({expected}; got {got})")));
                }
                *rejected.entry(argument).or_default() += 1;
            }
            Err(other) => return Err(what(format!("unexpected error {other}"))),
        }
    }
    println!(
        "    {BACKWARD_CALLS} calls in {:.2}s: {launches} launches ({packed} with packed gradients, {interleaved} \
         with interleaved operands), {empty} empty, {} rejected {rejected:?}",
        start.elapsed().as_secs_f64(),
        rejected.values().sum::<usize>()
    );
    ensure(
        launches > BACKWARD_CALLS / 5
            && rejected.values().sum::<usize>() > BACKWARD_CALLS / 5
            && empty > BACKWARD_CALLS / 100
            && interleaved > BACKWARD_CALLS / 100,
        || "the generator no longer covers accepted, rejected, empty and interleaved calls".into(),
    )
}
