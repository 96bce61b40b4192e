//! Memory safety of the forward on the GPU (issue 14): the five regression cases with tensors
//! that end exactly at their allocation's end, empty problems, no keys, a stream of another
//! context, and a fuzz trial over random valid layouts checked against the float64 reference.
//! The regression and fuzz trials are marked for compute-sanitizer (`bundle/run.sh --sanitize`):
//! memcheck must report no access outside an allocation; each trial also checks that nothing
//! outside the output views was written.

use half::{bf16, f16};
use rustflash::cudarc::driver::sys::CUresult;
use rustflash::cudarc::driver::{CudaContext, CudaSlice, CudaStream, DevicePtr, DevicePtrMut, sys};
use rustflash::layout::{AttentionShape, Layout, Layout4};
use rustflash::{
    DeviceTensor, DeviceTensorMut, Error, FlashAttention, ForwardOptions, ForwardTile, KernelPath,
    RawForward, RawTensor,
};
use rustflash_tests::forward_case::{ForwardCase, Operand, Placed, Placement, random_placed};
use rustflash_tests::gpu::{download, open, upload};
use rustflash_tests::harness::{Context, Failure, TestResult, Trial, ensure, fail, run};
use std::process::ExitCode;
use std::sync::Arc;

/// Random valid layouts per fuzz trial.
const FUZZ_CASES: usize = 48;

fn main() -> ExitCode {
    run(vec![
        Trial::gpu("forward_safety::issue14::size_products_that_wrap_are_rejected", size_products_wrap)
            .sanitize(),
        Trial::gpu("forward_safety::issue14::strides_that_wrap_are_rejected", strides_wrap).sanitize(),
        Trial::gpu("forward_safety::issue14::odd_head_dims_in_wider_pitches", odd_head_dims).sanitize(),
        Trial::gpu("forward_safety::issue14::raw_lse_must_be_aligned", raw_lse_alignment).sanitize(),
        Trial::gpu("forward_safety::issue14::scale_and_size_errors", scale_and_sizes).sanitize(),
        Trial::gpu("forward_safety::empty_problems_launch_nothing", empty_problems).sanitize(),
        Trial::gpu("forward_safety::no_keys_give_zero_and_infinite_lse", no_keys).sanitize(),
        Trial::gpu("forward_safety::a_stream_of_another_context_is_rejected", other_context),
        Trial::gpu("forward_safety::fuzz::random_valid_layouts", fuzz).full_only().sanitize(),
    ])
}

fn setup() -> Result<(FlashAttention, Arc<CudaStream>), Failure> {
    let (device, stream) = open(KernelPath::Ampere)?;
    Ok((FlashAttention::new(device), stream))
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

/// An element type whose NaN poison can be seen.
trait Poison: rustflash::cudarc::driver::DeviceRepr + Clone + Default {
    fn is_nan(&self) -> bool;
}
impl Poison for f32 {
    fn is_nan(&self) -> bool {
        f32::is_nan(*self)
    }
}
impl Poison for f16 {
    fn is_nan(&self) -> bool {
        f16::is_nan(*self)
    }
}

/// Every element of the buffer is still NaN: nothing was written.
fn untouched<T: Poison>(what: &str, stream: &Arc<CudaStream>, buf: &CudaSlice<T>) -> TestResult {
    let host = download(stream, buf)?;
    match host.iter().position(|x| !x.is_nan()) {
        Some(i) => Err(fail(format!("{what}: element {i} was written"))),
        None => Ok(()),
    }
}

/// Issue 14, case 1: shapes whose products wrap, over 64-element buffers and a 256-element lse.
/// Rejected (naming q: the grid) with nothing written.
fn size_products_wrap(_: &Context) -> TestResult {
    let (fa, stream) = setup()?;
    let (b, sq, hq) = (2174825477usize, 2539115648usize, 1493470474usize);
    let input = upload(&stream, &[f16::ONE; 64])?;
    let mut out = upload(&stream, &[f16::NAN; 64])?;
    let mut lse = upload(&stream, &vec![f32::NAN; 256])?;
    let zero = [0, 0, 0, 1];
    let q = DeviceTensor::new(input.slice(0..), [b, sq, hq, 64], zero);
    let kv = DeviceTensor::new(input.slice(0..), [b, 1, 1, 64], zero);
    let r = fa.forward(
        &stream,
        &q,
        &kv,
        &kv,
        &mut DeviceTensorMut::new(out.slice_mut(0..), [b, sq, hq, 64], zero),
        &mut DeviceTensorMut::new(lse.slice_mut(0..), [b, hq, sq], [0, 0, 0]),
        &ForwardOptions::default(),
    );
    expect_invalid("wrapping products", r, "q")?;
    untouched("out", &stream, &out)?;
    untouched("lse", &stream, &lse)
}

/// Issue 14, case 2 and issue 9's 2^62 stride: strides that wrap (acting as negative strides), a
/// head stride of 2^63 with 3 heads, a sequence stride of 2^62 — on out and on k. Rejected, with
/// nothing written (before the fix, out's wrapped stride wrote the 64 elements before its view:
/// here the view starts at element 64 of a 256-element buffer, so that would show).
fn strides_wrap(_: &Context) -> TestResult {
    let (fa, stream) = setup()?;
    let input = upload(&stream, &vec![f16::ONE; 1024])?;
    let mut out = upload(&stream, &vec![f16::NAN; 256])?;
    let mut lse = upload(&stream, &[f32::NAN; 16])?;
    let minus_64 = (u64::MAX - 63) as usize;
    let cases: [(&str, &str, [usize; 4], [usize; 4]); 5] = [
        ("out, head stride 2^64 − 64", "out", [1, 1, 2, 64], [128, 128, minus_64, 1]),
        ("k, head stride 2^64 − 64", "k", [1, 1, 2, 64], [128, 128, minus_64, 1]),
        ("out, 3 heads 2^63 apart", "out", [1, 1, 3, 64], [0, 0, 1 << 63, 1]),
        ("k, 3 heads 2^63 apart", "k", [1, 1, 3, 64], [0, 0, 1 << 63, 1]),
        ("k, sequence stride 2^62", "k", [1, 5, 2, 64], [0, 1 << 62, 64, 1]),
    ];
    for (what, argument, shape, strides) in cases {
        let [_, s, h, d] = shape;
        let plain = |data| DeviceTensor::contiguous(data, [1, s, h, d]);
        let bad = DeviceTensor::new(input.slice(0..256), shape, strides);
        let (q, k) = if argument == "k" {
            (plain(input.slice(0..)), bad)
        } else {
            (plain(input.slice(0..)), plain(input.slice(0..)))
        };
        let v = plain(input.slice(0..));
        let out_layout =
            if argument == "out" { Layout { shape, strides } } else { Layout4::contiguous(shape) };
        let r = fa.forward(
            &stream,
            &q,
            &k,
            &v,
            &mut DeviceTensorMut { data: out.slice_mut(64..), layout: out_layout },
            &mut DeviceTensorMut::contiguous(lse.slice_mut(0..h * s), [1, h, s]),
            &ForwardOptions::default(),
        );
        expect_invalid(what, r, argument)?;
    }
    untouched("out", &stream, &out)?;
    untouched("lse", &stream, &lse)
}

/// Issue 14, case 3: odd head dims in wider, even pitches, every tensor ending exactly at its
/// allocation's end: (1, 2, 1, 37) in pitch 38 (a 75-element buffer), 38 in 44, 37 in 40, and a
/// longer causal GQA problem. Right results; under memcheck, no read past an allocation.
fn odd_head_dims(ctx: &Context) -> TestResult {
    let cases = [
        (37usize, 38usize, 2usize, 2usize, 1usize, 1usize),
        (38, 44, 2, 2, 1, 1),
        (37, 40, 2, 2, 1, 1),
        (59, 61, 130, 70, 4, 2),
        (255, 256, 65, 129, 2, 1),
    ];
    for (i, (d, pitch, sq, sk, hq, hkv)) in cases.into_iter().enumerate() {
        let shape =
            AttentionShape { batch: 1, seqlen_q: sq, seqlen_k: sk, heads_q: hq, heads_kv: hkv, headdim: d };
        let pitched =
            |s: [usize; 4]| Layout { shape: s, strides: [s[1] * s[2] * pitch, s[2] * pitch, pitch, 1] };
        let op = |s| Operand::at(0, pitched(s));
        let lse = Operand::at(0, Layout::contiguous(shape.lse_shape()));
        let p = Placed::separate(
            op(shape.q_shape()),
            op(shape.kv_shape()),
            op(shape.kv_shape()),
            op(shape.q_shape()),
            lse,
        );
        println!("    head dim {d} in pitch {pitch}: buffers of {:?} elements", p.input_lens);
        let c = ForwardCase {
            bf16: i % 2 == 0,
            f32: None,
            shape,
            causal: i >= 3,
            placement: Placement::Contiguous,
            tile: None,
            sample_rows: None,
            path: KernelPath::Ampere,
        };
        c.run_on(&p, ctx)?;
    }
    Ok(())
}

/// Issue 14, case 4: `forward_raw` with lse 1 or 2 bytes off its alignment faulted; now an error
/// naming lse. 4 bytes off (still aligned, inside the allocation) runs.
fn raw_lse_alignment(_: &Context) -> TestResult {
    let (fa, stream) = setup()?;
    let (b, s, h, d) = (1usize, 16usize, 2usize, 32usize);
    let n = b * s * h * d;
    let input = upload(&stream, &vec![bf16::ONE; n])?;
    let mut out = upload(&stream, &vec![bf16::NAN; n])?;
    let mut lse = upload(&stream, &vec![f32::NAN; b * h * s + 1])?;
    let (ip, _gi) = input.device_ptr(&stream);
    let (op, _go) = out.device_ptr_mut(&stream);
    let (lp, _gl) = lse.device_ptr_mut(&stream);
    let t = |ptr| RawTensor { ptr, layout: Layout4::contiguous([b, s, h, d]) };
    let args = |lse_ptr| RawForward {
        q: t(ip),
        k: t(ip),
        v: t(ip),
        out: t(op),
        lse: RawTensor { ptr: lse_ptr, layout: Layout::contiguous([b, h, s]) },
    };
    let opts = ForwardOptions::default();
    for delta in [1, 2, 3] {
        // SAFETY: the addresses are live allocations of this context holding every view.
        let r = unsafe { fa.forward_raw::<bf16>(stream.cu_stream(), &args(lp + delta), &opts) };
        expect_invalid(&format!("lse + {delta} bytes"), r, "lse")?;
    }
    // SAFETY: as above; lse + 4 bytes still holds b·h·s f32 (the buffer has one more).
    unsafe { fa.forward_raw::<bf16>(stream.cu_stream(), &args(lp + 4), &opts) }?;
    drop((_gi, _go, _gl));
    let got = download(&stream, &lse)?;
    // Equal inputs everywhere: every row's LSE is ln(s) + the score, finite; the first is untouched.
    ensure(got[0].is_nan() && got[1..].iter().all(|x| x.is_finite()), || {
        format!("lse after the launch: {got:?}")
    })?;
    let o = download(&stream, &out)?;
    ensure(o.iter().all(|x| x.to_f32() == 1.0), || "O of equal values is not 1".into())
}

/// Issue 14, case 5 and issue 9: a finite scale near f32::MAX (scale · log2 e overflowed to NaN
/// outputs) and a NaN scale are errors naming `options.softmax_scale`; a seqlen_k of 2^32 + 1
/// names k (it named q, printing q's shape).
fn scale_and_sizes(_: &Context) -> TestResult {
    let (fa, stream) = setup()?;
    let (s, h, d) = (8usize, 2usize, 64usize);
    let input = upload(&stream, &vec![f16::ONE; s * h * d])?;
    let mut out = upload(&stream, &vec![f16::NAN; s * h * d])?;
    let mut lse = upload(&stream, &vec![f32::NAN; h * s])?;
    let t = || DeviceTensor::contiguous(input.slice(0..), [1, s, h, d]);
    for scale in [f32::MAX, 2.4e38, f32::NAN, f32::INFINITY] {
        let r = fa.forward(
            &stream,
            &t(),
            &t(),
            &t(),
            &mut DeviceTensorMut::contiguous(out.slice_mut(0..), [1, s, h, d]),
            &mut DeviceTensorMut::contiguous(lse.slice_mut(0..), [1, h, s]),
            &ForwardOptions::default().softmax_scale(scale),
        );
        expect_invalid(&format!("scale {scale:?}"), r, "options.softmax_scale")?;
    }
    let long = DeviceTensor::new(input.slice(0..), [1, (1 << 32) + 1, h, d], [0, 0, d, 1]);
    let r = fa.forward(
        &stream,
        &t(),
        &long,
        &DeviceTensor::new(input.slice(0..), [1, (1 << 32) + 1, h, d], [0, 0, d, 1]),
        &mut DeviceTensorMut::contiguous(out.slice_mut(0..), [1, s, h, d]),
        &mut DeviceTensorMut::contiguous(lse.slice_mut(0..), [1, h, s]),
        &ForwardOptions::default(),
    );
    expect_invalid("seqlen_k 2^32 + 1", r, "k")?;
    untouched("out", &stream, &out)?;
    untouched("lse", &stream, &lse)
}

/// Batch, seqlen_q or heads 0: `Ok`, nothing written — even with empty buffers and layouts that
/// would be invalid were anything addressed.
fn empty_problems(_: &Context) -> TestResult {
    let (fa, stream) = setup()?;
    let input = upload(&stream, &[f16::ONE; 64])?;
    let mut out = upload(&stream, &[f16::NAN; 64])?;
    let mut lse = upload(&stream, &[f32::NAN; 64])?;
    for (b, sq, sk, hq, hkv) in
        [(0, 5, 3, 2, 1), (2, 0, 3, 2, 1), (2, 5, 3, 0, 1), (2, 5, 3, 0, 0), (0, 0, 0, 0, 0)]
    {
        let (qs, ks) = ([b, sq, hq, 32], [b, sk, hkv, 32]);
        let r = fa.forward(
            &stream,
            &DeviceTensor::new(input.slice(0..0), qs, [7; 4]),
            &DeviceTensor::contiguous(input.slice(0..), ks),
            &DeviceTensor::contiguous(input.slice(0..), ks),
            &mut DeviceTensorMut::new(out.slice_mut(64..), qs, [0; 4]),
            &mut DeviceTensorMut::new(lse.slice_mut(64..), [b, hq, sq], [0; 3]),
            &ForwardOptions::default().causal(true),
        );
        ensure(r.is_ok(), || format!("({b}, {sq}, {sk}, {hq}, {hkv}): {r:?}"))?;
    }
    stream.synchronize()?;
    untouched("out", &stream, &out)?;
    untouched("lse", &stream, &lse)
}

/// seqlen_k = 0 and seqlen_q > 0: every row has no key, O = 0 and LSE = +inf (as rows causal
/// masking leaves without keys), causal or not, in random layouts; K and V are not read.
fn no_keys(ctx: &Context) -> TestResult {
    let mut rng = ctx.rng();
    for (i, causal) in [false, true, false, true].into_iter().enumerate() {
        let shape = AttentionShape {
            batch: 2,
            seqlen_q: 37 + 50 * i,
            seqlen_k: 0,
            heads_q: 4,
            heads_kv: 2,
            headdim: 59 + i,
        };
        let c = ForwardCase {
            bf16: i % 2 == 1,
            f32: None,
            shape,
            causal,
            placement: Placement::Contiguous,
            tile: [None, Some(ForwardTile::Small)][i / 2],
            sample_rows: None,
            path: KernelPath::Ampere,
        };
        c.run_on(&random_placed(&mut rng, shape), ctx)?;
    }
    Ok(())
}

/// A stream of another context on the same GPU: an error naming `stream`; a buffer of that
/// context with our stream: an error naming the buffer. A second `Device` handle of the same GPU
/// shares its primary context: accepted.
fn other_context(_: &Context) -> TestResult {
    let (fa, stream) = setup()?;
    let (s, h, d) = (8usize, 2usize, 64usize);
    let input = upload(&stream, &vec![f16::ONE; s * h * d])?;
    let mut out = upload(&stream, &vec![f16::NAN; s * h * d])?;
    let mut lse = upload(&stream, &vec![f32::NAN; h * s])?;
    let ours = fa.device().context();
    let mut raw: sys::CUcontext = std::ptr::null_mut();
    // SAFETY: creates a context on our GPU, owned below by `other`.
    let created: CUresult = unsafe { sys::cuCtxCreate_v2(&mut raw, 0, ours.cu_device()) };
    created.result()?;
    // SAFETY: `raw` is a live context of device `ours.ordinal()`, handed over.
    let other = unsafe { CudaContext::from_raw_context(ours.ordinal(), ours.cu_device(), raw) }?;
    let foreign = other.new_stream()?;
    let alien = upload(&foreign, &vec![f16::ONE; s * h * d])?;
    let t = || DeviceTensor::contiguous(input.slice(0..), [1, s, h, d]);
    let a = || DeviceTensor::contiguous(alien.slice(0..), [1, s, h, d]);
    let mut call = |stream: &CudaStream, k_elsewhere: bool| {
        fa.forward(
            stream,
            &t(),
            &if k_elsewhere { a() } else { t() },
            &t(),
            &mut DeviceTensorMut::contiguous(out.slice_mut(0..), [1, s, h, d]),
            &mut DeviceTensorMut::contiguous(lse.slice_mut(0..), [1, h, s]),
            &ForwardOptions::default(),
        )
    };
    expect_invalid("a stream of another context", call(&foreign, false), "stream")?;
    // A buffer of the other context with our stream: an error naming that buffer.
    expect_invalid("k in another context", call(&stream, true), "k")?;
    let again = rustflash::Device::with_path(0, KernelPath::Ampere)?.new_stream()?;
    call(&again, false)?;
    again.synchronize()?;
    drop(alien);
    drop(foreign);
    drop(other);
    Ok(())
}

/// Random valid layouts: odd head dims in wider pitches, transposed and padded views, K and V
/// interleaved, Q, K and V packed, random element offsets, every tensor ending exactly at its
/// allocation's end; GQA, causal, both dtypes and tiles. Checked against the float64 reference,
/// and nothing outside the output views written.
fn fuzz(ctx: &Context) -> TestResult {
    let mut rng = ctx.rng();
    let dims = [
        1usize, 2, 3, 8, 31, 33, 37, 38, 59, 63, 64, 65, 96, 111, 127, 128, 129, 160, 191, 200, 224, 255, 256,
    ];
    for n in 0..FUZZ_CASES {
        let d = if n % 3 == 0 {
            1 + (rng.next_u64() % 256) as usize
        } else {
            dims[(rng.next_u64() % dims.len() as u64) as usize]
        };
        let len = |rng: &mut rustflash_tests::rng::Rng| {
            if rng.next_u64() % 4 == 0 {
                1 + (rng.next_u64() % 8) as usize
            } else {
                1 + (rng.next_u64() % 300) as usize
            }
        };
        let heads_kv = 1 + (rng.next_u64() % 3) as usize;
        let shape = AttentionShape {
            batch: 1 + (rng.next_u64() % 2) as usize,
            seqlen_q: len(&mut rng),
            seqlen_k: len(&mut rng),
            heads_q: heads_kv * [1, 1, 2, 4][(rng.next_u64() % 4) as usize],
            heads_kv,
            headdim: d,
        };
        let c = ForwardCase {
            bf16: rng.next_u64() % 2 == 0,
            f32: None,
            shape,
            causal: rng.next_u64() % 2 == 0,
            placement: Placement::Contiguous,
            tile: [None, Some(ForwardTile::Large), Some(ForwardTile::Small)][(rng.next_u64() % 3) as usize],
            sample_rows: None,
            path: KernelPath::Ampere,
        };
        let p = random_placed(&mut rng, shape);
        let case_seed = rng.next_u64();
        c.run_on(&p, &Context { seed: case_seed }).map_err(|e| match e {
            Failure::Fail(m) => fail(format!("case {n} ({}), {p:?}: {m}", c.name())),
            skip => skip,
        })?;
    }
    println!("    {FUZZ_CASES} random layouts");
    Ok(())
}
