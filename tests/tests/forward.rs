//! Forward attention on the GPU against the float64 reference (O and LSE), on every shape
//! FlashAttention-2 accepts: the brief's criterion, outputs poisoned with NaN before each launch.

use rustflash::layout::AttentionShape;
use rustflash::{
    DeviceTensor, DeviceTensorMut, Error, F32Precision, FlashAttention, ForwardOptions, ForwardTile,
    KernelPath,
};
use rustflash_tests::forward_case::{ForwardCase, Placement};
use rustflash_tests::harness::{Context, TestResult, Trial, ensure, fail, run};
use std::process::ExitCode;

const HEAD_DIMS: [usize; 12] = [32, 40, 59, 64, 80, 96, 111, 128, 160, 192, 224, 256];
const SEQLENS: [(usize, usize); 9] = [
    (1, 1),
    (1, 239),
    (113, 203),
    (128, 217),
    (256, 512),
    (799, 3),
    (1024, 1024),
    (1023, 1024),
    (2048, 2048),
];
const GQA: [usize; 3] = [1, 2, 8];
const TILES: [Option<ForwardTile>; 3] = [None, Some(ForwardTile::Large), Some(ForwardTile::Small)];

fn case(
    bf16: bool,
    d: usize,
    (sq, sk): (usize, usize),
    causal: bool,
    gqa: usize,
    packed: bool,
    tile: Option<ForwardTile>,
) -> ForwardCase {
    let heads_q = 8;
    let batch = if sq * sk > 300_000 { 1 } else { 2 };
    let shape =
        AttentionShape { batch, seqlen_q: sq, seqlen_k: sk, heads_q, heads_kv: heads_q / gqa, headdim: d };
    // Packing needs one sequence length and one head count; otherwise padded strides stand in
    // for "strided views", also exercising the narrow load paths.
    let placement = match (packed, sq == sk && gqa == 1) {
        (false, _) => Placement::Contiguous,
        (true, true) => Placement::Packed,
        (true, false) => Placement::Padded,
    };
    let sample_rows = (sq * sk > 1_100_000).then_some(300);
    ForwardCase { bf16, f32: None, shape, causal, placement, tile, sample_rows, path: KernelPath::Ampere }
}

fn trial(c: ForwardCase) -> Trial {
    Trial::gpu(format!("forward::{}", c.name()), move |ctx| c.run(ctx))
}

fn main() -> ExitCode {
    let mut trials = Vec::new();

    // The matrix: dtype x head dim x lengths x causal; GQA, placement and tile rotate through it.
    let mut i = 0;
    for bf16 in [false, true] {
        for d in HEAD_DIMS {
            for lens in SEQLENS {
                for causal in [false, true] {
                    let c = case(bf16, d, lens, causal, GQA[i % 3], (i / 3) % 2 == 1, TILES[(i / 6) % 3]);
                    // The quick tier: every dtype, both masks, 4 head dims, the boundary lengths.
                    let quick = [32, 59, 128, 256].contains(&d)
                        && [(1, 239), (113, 203), (799, 3), (1023, 1024)].contains(&lens);
                    trials.push(if quick { trial(c) } else { trial(c).full_only() });
                    i += 1;
                }
            }
        }
    }

    // Every tile forced on every bucket, both dtypes, at a boundary shape.
    for bf16 in [false, true] {
        for d in [32, 64, 96, 128, 160, 192, 224, 256] {
            for tile in ForwardTile::ALL {
                trials.push(trial(case(bf16, d, (77, 301), true, 2, true, Some(tile))));
            }
        }
    }

    // Every head dim from 1 to 256 at one small shape.
    for d in 1..=256 {
        let c = ForwardCase {
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
            sample_rows: None,
            path: KernelPath::Ampere,
        };
        let t = trial(c);
        trials.push(if d % 37 == 1 || d == 256 { t } else { t.full_only() });
    }

    // The Hopper module's copy of the same kernels, as an H100 runs by default.
    for (d, lens) in [(64, (113, 203)), (128, (1023, 1024)), (256, (799, 3))] {
        let mut c = case(true, d, lens, true, 2, true, None);
        c.path = KernelPath::Hopper;
        trials.push(trial(c));
    }

    // The Volta path (WMMA: the sm_70 module, forced on this GPU) in float16: the matrix again,
    // GQA, placement and tile rotating through it as above.
    let mut i = 0;
    for d in HEAD_DIMS {
        for lens in SEQLENS {
            for causal in [false, true] {
                let mut c = case(false, d, lens, causal, GQA[i % 3], (i / 3) % 2 == 1, TILES[(i / 6) % 3]);
                c.path = KernelPath::Volta;
                let quick =
                    [32, 59, 128, 256].contains(&d) && [(1, 239), (113, 203), (799, 3)].contains(&lens);
                trials.push(if quick { trial(c) } else { trial(c).full_only() });
                i += 1;
            }
        }
    }
    // Each of its tile classes (a V100 selects Large, a T4 Small above head dim 224) forced on
    // every bucket, and every head dim from 1 to 256.
    for d in [32, 64, 96, 128, 160, 192, 224, 256] {
        for tile in ForwardTile::ALL {
            let mut c = case(false, d, (77, 301), true, 2, true, Some(tile));
            c.path = KernelPath::Volta;
            trials.push(trial(c));
        }
    }
    for d in 1..=256 {
        let mut c = case(false, d, (37, 91), d % 3 == 0, 2, d % 4 == 1, None);
        c.shape.heads_q = 2;
        c.shape.heads_kv = 1;
        c.path = KernelPath::Volta;
        let t = trial(c);
        trials.push(if d % 37 == 1 || d == 256 { t } else { t.full_only() });
    }

    // float32 (issue 13): TF32 and the accurate 3xTF32 mode, each against plain attention that
    // rounds the operands of every product as the mode does. The matrix at reduced size, the
    // modes alternating through it (GQA, placement, tile and the Ampere/Hopper module rotating),
    // every tile class forced on every bucket in both modes, and every head dim.
    let mut i = 0;
    for d in [32, 59, 64, 96, 111, 128, 160, 192, 224, 256] {
        for lens in [(1, 1), (1, 239), (113, 203), (799, 3), (1023, 1024)] {
            for causal in [false, true] {
                let mut c = case(false, d, lens, causal, GQA[i % 3], (i / 3) % 2 == 1, TILES[(i / 6) % 3]);
                c.f32 =
                    Some(if (i / 2 + i / 10) % 2 == 0 { F32Precision::Tf32 } else { F32Precision::Accurate });
                if i % 5 == 4 {
                    c.path = KernelPath::Hopper;
                }
                let quick = [32, 111, 256].contains(&d) && [(1, 239), (113, 203), (799, 3)].contains(&lens);
                trials.push(if quick { trial(c) } else { trial(c).full_only() });
                i += 1;
            }
        }
    }
    for precision in [F32Precision::Tf32, F32Precision::Accurate] {
        for d in [32, 64, 96, 128, 160, 192, 224, 256] {
            for tile in ForwardTile::ALL {
                let mut c = case(false, d, (77, 301), true, 2, true, Some(tile));
                c.f32 = Some(precision);
                trials.push(trial(c));
            }
        }
    }
    for d in 1..=256 {
        let mut c = case(false, d, (37, 91), d % 3 == 0, 2, d % 4 == 1, None);
        c.shape.heads_q = 2;
        c.shape.heads_kv = 1;
        c.f32 = Some(if d % 2 == 0 { F32Precision::Tf32 } else { F32Precision::Accurate });
        let t = trial(c);
        trials.push(if d % 37 == 1 || d == 256 { t } else { t.full_only() });
    }

    // float32 on the Volta path (the CUDA cores: plain float32 products and sums, against plain
    // attention in f32; the sm_70 module forced on this GPU): the matrix at reduced size, each
    // tile class forced on every bucket, every head dim. The precision option, which that path
    // ignores, alternates.
    let volta_f32 = |mut c: ForwardCase, i: usize| {
        c.path = KernelPath::Volta;
        c.f32 = Some(if i % 2 == 0 { F32Precision::Tf32 } else { F32Precision::Accurate });
        c
    };
    let mut i = 0;
    for d in [32, 59, 64, 96, 111, 128, 160, 192, 224, 256] {
        for lens in [(1, 1), (1, 239), (113, 203), (799, 3), (1023, 1024)] {
            for causal in [false, true] {
                let c = case(false, d, lens, causal, GQA[i % 3], (i / 3) % 2 == 1, TILES[(i / 6) % 3]);
                let quick = [32, 111, 256].contains(&d) && [(1, 239), (113, 203), (799, 3)].contains(&lens);
                let t = trial(volta_f32(c, i / 2));
                trials.push(if quick { t } else { t.full_only() });
                i += 1;
            }
        }
    }
    for d in [32, 64, 96, 128, 160, 192, 224, 256] {
        for (n, tile) in ForwardTile::ALL.into_iter().enumerate() {
            trials.push(trial(volta_f32(case(false, d, (77, 301), true, 2, true, Some(tile)), d / 32 + n)));
        }
    }
    for d in 1..=256 {
        let mut c = case(false, d, (37, 91), d % 3 == 0, 2, d % 4 == 1, None);
        c.shape.heads_q = 2;
        c.shape.heads_kv = 1;
        let t = trial(volta_f32(c, d));
        trials.push(if d % 37 == 1 || d == 256 { t } else { t.full_only() });
    }

    // A 128k causal sequence, checked on sampled rows.
    let long = ForwardCase {
        bf16: false,
        f32: None,
        shape: AttentionShape {
            batch: 1,
            seqlen_q: 131_072,
            seqlen_k: 131_072,
            heads_q: 2,
            heads_kv: 1,
            headdim: 128,
        },
        causal: true,
        placement: Placement::Contiguous,
        tile: None,
        sample_rows: Some(48),
        path: KernelPath::Ampere,
    };
    trials.push(trial(long).full_only());

    // Boundary cases under compute-sanitizer (small, so memcheck stays fast).
    for (k, (d, lens, causal, gqa, packed, tile)) in [
        (32, (1, 1), false, 1, false, Some(ForwardTile::Large)),
        (59, (1, 239), true, 2, true, Some(ForwardTile::Small)),
        (111, (113, 203), true, 8, true, None),
        (256, (799, 3), true, 1, false, Some(ForwardTile::Large)),
        (256, (65, 65), false, 1, true, Some(ForwardTile::Small)),
        (40, (130, 70), true, 2, false, Some(ForwardTile::Small)),
        (1, (17, 33), false, 1, true, None),
        (160, (129, 129), true, 1, true, Some(ForwardTile::Large)),
    ]
    .into_iter()
    .enumerate()
    {
        let mut c = case(k % 2 == 1, d, lens, causal, gqa, packed, tile);
        c.shape.heads_q = 8;
        trials.push(Trial::gpu(format!("forward::sanitize::{}", c.name()), move |ctx| c.run(ctx)).sanitize());
        // The same boundaries on the Volta path (float16).
        let mut v = c;
        v.bf16 = false;
        v.path = KernelPath::Volta;
        trials.push(Trial::gpu(format!("forward::sanitize::{}", v.name()), move |ctx| v.run(ctx)).sanitize());
        // And in float32, the modes alternating, on the Ampere and the Volta paths.
        let mut f = c;
        f.f32 = Some(if k % 2 == 0 { F32Precision::Tf32 } else { F32Precision::Accurate });
        trials.push(Trial::gpu(format!("forward::sanitize::{}", f.name()), move |ctx| f.run(ctx)).sanitize());
        let mut vf = f;
        vf.path = KernelPath::Volta;
        trials
            .push(Trial::gpu(format!("forward::sanitize::{}", vf.name()), move |ctx| vf.run(ctx)).sanitize());
    }

    // Two million (batch, head) pairs: one block each, all in grid.x (grid.y would cap at 65535).
    let many = ForwardCase {
        bf16: true,
        f32: None,
        shape: AttentionShape {
            batch: 262_144,
            seqlen_q: 3,
            seqlen_k: 5,
            heads_q: 8,
            heads_kv: 4,
            headdim: 8,
        },
        causal: true,
        placement: Placement::Contiguous,
        tile: None,
        sample_rows: None,
        path: KernelPath::Ampere,
    };
    trials.push(trial(many).full_only());
    trials.push(Trial::gpu("forward::offsets_beyond_2_pow_31_elements", offsets_beyond_2_pow_31).full_only());

    trials.push(Trial::gpu("forward::bad_inputs_are_errors_before_launch", bad_inputs));
    run(trials)
}

/// Each invalid call returns its own error naming the argument, and nothing runs.
fn bad_inputs(_: &Context) -> TestResult {
    let device = rustflash::Device::with_path(0, KernelPath::Ampere)?;
    let stream = device.new_stream()?;
    let fa = FlashAttention::new(device);
    let buf = stream.clone_htod(&vec![half::f16::ZERO; 1 << 16])?;
    let mut obuf = stream.clone_htod(&vec![half::f16::ZERO; 1 << 16])?;
    let mut lse = stream.clone_htod(&vec![0f32; 4096])?;
    let t = |shape: [usize; 4]| DeviceTensor::contiguous(buf.slice(0..), shape);
    let opts = ForwardOptions::default();

    let mut expect = |what: &str,
                      argument: &str,
                      q: DeviceTensor<'_, half::f16>,
                      k: DeviceTensor<'_, half::f16>,
                      out_shape: [usize; 4],
                      lse_len: usize|
     -> TestResult {
        let v = DeviceTensor { data: k.data.slice(0..), layout: k.layout };
        let mut out = DeviceTensorMut::contiguous(obuf.slice_mut(0..), out_shape);
        let [b, sq, hq, _] = q.layout.shape;
        let mut lse = DeviceTensorMut::new(lse.slice_mut(0..lse_len), [b, hq, sq], [hq * sq, sq, 1]);
        let r = fa.forward(&stream, &q, &k, &v, &mut out, &mut lse, &opts);
        match r {
            Err(Error::InvalidArgument { argument: a, .. }) if a == argument => {
                println!("    {what}: {}", r.unwrap_err());
                Ok(())
            }
            other => Err(fail(format!("{what}: expected an invalid `{argument}`, got {other:?}"))),
        }
    };
    expect("k's batch differs", "k", t([2, 8, 4, 64]), t([1, 8, 4, 64]), [2, 8, 4, 64], 64)?;
    expect("head dim 0", "q", t([1, 8, 4, 0]), t([1, 8, 4, 0]), [1, 8, 4, 0], 64)?;
    expect("head dim 257", "q", t([1, 8, 4, 257]), t([1, 8, 4, 257]), [1, 8, 4, 257], 64)?;
    expect("heads_q not a multiple of heads_kv", "k", t([1, 8, 6, 64]), t([1, 8, 4, 64]), [1, 8, 6, 64], 64)?;
    expect("out shaped unlike q", "out", t([1, 8, 4, 64]), t([1, 8, 4, 64]), [1, 8, 4, 32], 64)?;
    expect("lse too short", "lse", t([1, 8, 4, 64]), t([1, 8, 4, 64]), [1, 8, 4, 64], 31)?;
    expect("q larger than its buffer", "q", t([1, 4096, 8, 64]), t([1, 8, 8, 64]), [1, 4096, 8, 64], 4096)?;
    let strided = DeviceTensor::new(buf.slice(0..), [1, 8, 4, 64], [2048, 256, 64, 2]);
    expect("last dim not contiguous", "q", strided, t([1, 8, 4, 64]), [1, 8, 4, 64], 64)?;

    // The Volta path has no bfloat16 kernels: bfloat16 is an error naming q.
    let volta = FlashAttention::new(rustflash::Device::with_path(0, KernelPath::Volta)?);
    let bbuf = stream.clone_htod(&vec![half::bf16::ZERO; 1 << 12])?;
    let mut bout = stream.clone_htod(&vec![half::bf16::ZERO; 1 << 12])?;
    let bt = DeviceTensor::contiguous(bbuf.slice(0..), [1, 8, 4, 64]);
    let mut out = DeviceTensorMut::contiguous(bout.slice_mut(0..), [1, 8, 4, 64]);
    let mut lse = DeviceTensorMut::contiguous(lse.slice_mut(0..), [1, 4, 8]);
    let r = volta.forward(&stream, &bt, &bt, &bt, &mut out, &mut lse, &opts);
    println!("    bf16 on the Volta path: {r:?}");
    ensure(matches!(&r, Err(Error::InvalidArgument { argument, .. }) if *argument == "q"), || {
        format!("bf16 on the Volta path: expected an invalid `q`, got {r:?}")
    })
}

/// Batch 1 of q, k, v and out lies more than 2^31 elements into its buffer (8.6 GB in all): every
/// offset must be computed in 64 bits. Only the two batches' regions are written from the host.
fn offsets_beyond_2_pow_31(ctx: &Context) -> TestResult {
    use half::f16;
    use rustflash::layout::{HostView, Layout4};
    use rustflash_reference::check::{Tolerance, compare};
    use rustflash_reference::{Attention, Rows};
    let (b, s, h, d) = (2usize, 200usize, 2usize, 64usize);
    let batch_stride = (1usize << 31) + 4096;
    let row = 3 * h * d; // q, k, v packed per position
    let layout =
        |part: usize| (part * h * d, Layout4 { shape: [b, s, h, d], strides: [batch_stride, row, d, 1] });
    let len = batch_stride + s * row;
    let device = rustflash::Device::with_path(0, KernelPath::Ampere)?;
    let stream = device.new_stream()?;
    let fa = FlashAttention::new(device);
    let mut rng = ctx.rng();
    let mut qkv = stream.alloc_zeros::<f16>(len)?;
    let mut out = stream.alloc_zeros::<f16>(len)?;
    let mut host = Vec::new();
    for batch in 0..b {
        let data: Vec<f16> = (0..s * row).map(|_| f16::from_f32(rng.normal() as f32)).collect();
        stream
            .memcpy_htod(&data, &mut qkv.slice_mut(batch * batch_stride..batch * batch_stride + s * row))?;
        stream.memcpy_htod(
            &vec![f16::NAN; s * row],
            &mut out.slice_mut(batch * batch_stride..batch * batch_stride + s * row),
        )?;
        host.push(data);
    }
    let mut lse = stream.clone_htod(&vec![f32::NAN; b * h * s])?;
    let view = |part: usize| {
        let (off, l) = layout(part);
        DeviceTensor { data: qkv.slice(off..), layout: l }
    };
    let (q, k, v) = (view(0), view(1), view(2));
    let mut o = DeviceTensorMut { data: out.slice_mut(0..), layout: layout(0).1 };
    let mut lse = DeviceTensorMut::contiguous(lse.slice_mut(0..), [b, h, s]);
    fa.forward(&stream, &q, &k, &v, &mut o, &mut lse, &ForwardOptions::default().causal(true))?;
    let got = stream.clone_dtoh(&out.slice(batch_stride..batch_stride + s * row))?;
    // Batch 1 alone, as a one-batch problem on the host copy.
    let one = |part: usize| HostView {
        data: &host[1][part * h * d..],
        layout: Layout4 { shape: [1, s, h, d], strides: [s * row, row, d, 1] },
    };
    let shape = AttentionShape { batch: 1, seqlen_q: s, seqlen_k: s, heads_q: h, heads_kv: h, headdim: d };
    let att = Attention { shape, softmax_scale: 1.0 / (d as f64).sqrt(), causal: true };
    let reference = att.forward(&one(0), &one(1), &one(2), &Rows::All)?;
    let plain = att.forward_plain::<f16>(&one(0), &one(1), &one(2), &Rows::All)?;
    let ours: Vec<f64> = (0..s)
        .flat_map(|i| (0..h * d).map(move |x| (i, x)))
        .map(|(i, x)| got[i * row + x].to_f64())
        .collect();
    rustflash_tests::forward_case::report(&[compare(
        "O",
        &[1, s, h, d],
        &ours,
        &plain.o,
        &reference.o,
        Tolerance::output::<f16>(&reference.o),
    )])
}
