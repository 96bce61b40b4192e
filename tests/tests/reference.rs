//! The float64 reference and the accuracy checker, on the CPU (these run in CI).

// Index loops here mirror the formulas they check.
#![allow(clippy::needless_range_loop)]

use approx::{abs_diff_eq, assert_abs_diff_eq, assert_relative_eq, relative_eq};
use half::{bf16, f16};
use rustflash::Element;
use rustflash::layout::{AttentionShape, HostView, Layout4};
use rustflash_reference::check::{Comparison, Tolerance, compare};
use rustflash_reference::{Attention, F64View, ForwardOutput, Rows};
use rustflash_tests::harness::{Context, TestResult, Trial, ensure, fail, run};
use rustflash_tests::rng::Rng;
use std::process::ExitCode;
use std::time::Instant;

fn main() -> ExitCode {
    run(vec![
        Trial::cpu("reference::hand_computed_cases", hand_computed),
        Trial::cpu("reference::gradients_match_central_differences", finite_differences),
        Trial::cpu("reference::tiled_online_softmax_agrees_to_1e-12", tiled_online_softmax),
        Trial::cpu("reference::causal_with_more_queries_than_keys_masks_rows", masked_rows),
        Trial::cpu("reference::gqa_equals_repeated_kv_heads", gqa_equals_repeat),
        Trial::cpu("reference::strided_packed_views_equal_contiguous", strided_views),
        Trial::cpu("reference::sampled_rows_equal_full_rows", sampled_rows),
        Trial::cpu("reference::bad_shapes_are_errors", bad_shapes),
        Trial::cpu("checker::accepts_flash_attention_arithmetic_f16", accepts_kernel_arithmetic::<f16>),
        Trial::cpu("checker::accepts_flash_attention_arithmetic_bf16", accepts_kernel_arithmetic::<bf16>),
        Trial::cpu("checker::rejects_lower_precision_intermediates_f16", rejects_lower_precision::<f16>),
        Trial::cpu("checker::rejects_lower_precision_intermediates_bf16", rejects_lower_precision::<bf16>),
        Trial::cpu("checker::bound_is_the_documented_one_f16", bound_is_the_documented_one::<f16>),
        Trial::cpu("checker::bound_is_the_documented_one_bf16", bound_is_the_documented_one::<bf16>),
        Trial::cpu("reference::plain_rounds_where_documented_f16", plain_rounds_every_step::<f16>),
        Trial::cpu("reference::plain_rounds_where_documented_bf16", plain_rounds_every_step::<bf16>),
        Trial::cpu("checker::rejects_nan", rejects_nan),
        Trial::cpu("checker::rejects_poison_left_in_place", rejects_poison),
        Trial::cpu("checker::rejects_a_shifted_row", rejects_shifted_row),
        Trial::cpu("checker::rejects_an_error_3x_over_the_bound", rejects_3x),
        Trial::cpu("reference::speed_1x1024x16x128", speed),
    ])
}

fn shape(batch: usize, sq: usize, sk: usize, hq: usize, hkv: usize, d: usize) -> AttentionShape {
    AttentionShape { batch, seqlen_q: sq, seqlen_k: sk, heads_q: hq, heads_kv: hkv, headdim: d }
}

fn attention(sh: AttentionShape, causal: bool) -> Attention {
    Attention { shape: sh, softmax_scale: 1.0 / (sh.headdim as f64).sqrt(), causal }
}

fn randn<T: Element>(rng: &mut Rng, n: usize) -> Vec<T> {
    (0..n).map(|_| T::from_f32(rng.normal() as f32)).collect()
}

fn view<T: Copy>(data: &[T], shape: [usize; 4]) -> HostView<'_, T> {
    HostView { data, layout: Layout4::contiguous(shape) }
}

fn view64(data: &[f64], shape: [usize; 4]) -> F64View<'_> {
    F64View(view(data, shape))
}

fn hand_computed(_: &Context) -> TestResult {
    // One query, two keys, scale 1: s = [0, ln 3], P = [1/4, 3/4]; V = [1, 5]: O = 4, LSE = ln 4.
    let sh = shape(1, 1, 2, 1, 1, 1);
    let att = Attention { shape: sh, softmax_scale: 1.0, causal: false };
    let (q, k, v) = ([1.0f64], [0.0f64, 3f64.ln()], [1.0f64, 5.0]);
    let out = att.forward(
        &view64(&q, [1, 1, 1, 1]),
        &view64(&k, [1, 2, 1, 1]),
        &view64(&v, [1, 2, 1, 1]),
        &Rows::All,
    )?;
    assert_relative_eq!(out.o[0], 4.0, max_relative = 1e-15);
    assert_relative_eq!(out.lse[0], 4f64.ln(), max_relative = 1e-15);

    // Causal, two queries, two keys: row 0 sees key 0 only (O = v0), row 1 both.
    let sh = shape(1, 2, 2, 1, 1, 1);
    let att = Attention { shape: sh, softmax_scale: 1.0, causal: true };
    let (q, k, v) = ([1.0f64, 1.0], [0.0f64, 3f64.ln()], [1.0f64, 5.0]);
    let out = att.forward(
        &view64(&q, [1, 2, 1, 1]),
        &view64(&k, [1, 2, 1, 1]),
        &view64(&v, [1, 2, 1, 1]),
        &Rows::All,
    )?;
    assert_relative_eq!(out.o[0], 1.0, max_relative = 1e-15);
    assert_relative_eq!(out.o[1], 4.0, max_relative = 1e-15);
    assert_abs_diff_eq!(out.lse[0], 0.0, epsilon = 1e-15);
    assert_relative_eq!(out.lse[1], 4f64.ln(), max_relative = 1e-15);
    Ok(())
}

/// `L = Σ O ∘ dO`; its gradients against central differences with step 1e-5, every element.
fn finite_differences(ctx: &Context) -> TestResult {
    let mut rng = ctx.rng();
    for causal in [false, true] {
        let sh = shape(1, 3, 4, 2, 1, 3);
        let att = attention(sh, causal);
        let (qs, ks) = (sh.q_shape(), sh.kv_shape());
        let q: Vec<f64> = (0..18).map(|_| rng.normal()).collect();
        let k: Vec<f64> = (0..12).map(|_| rng.normal()).collect();
        let v: Vec<f64> = (0..12).map(|_| rng.normal()).collect();
        let dout: Vec<f64> = (0..18).map(|_| rng.normal()).collect();
        let loss = |q: &[f64], k: &[f64], v: &[f64]| -> Result<f64, rustflash_reference::Error> {
            let o = att.forward(&view64(q, qs), &view64(k, ks), &view64(v, ks), &Rows::All)?.o;
            Ok(o.iter().zip(&dout).map(|(a, b)| a * b).sum())
        };
        let g = att.backward(&view64(&q, qs), &view64(&k, ks), &view64(&v, ks), &view64(&dout, qs))?;
        let h = 1e-5;
        for (name, which, grad) in [("dq", 0, &g.dq), ("dk", 1, &g.dk), ("dv", 2, &g.dv)] {
            for i in 0..grad.len() {
                let mut inputs = [q.clone(), k.clone(), v.clone()];
                inputs[which][i] += h;
                let plus = loss(&inputs[0], &inputs[1], &inputs[2])?;
                inputs[which][i] -= 2.0 * h;
                let minus = loss(&inputs[0], &inputs[1], &inputs[2])?;
                let numeric = (plus - minus) / (2.0 * h);
                ensure(relative_eq!(grad[i], numeric, epsilon = 1e-7, max_relative = 1e-7), || {
                    format!("causal {causal}: {name}[{i}] = {}, central difference {numeric}", grad[i])
                })?;
            }
        }
    }
    Ok(())
}

/// FlashAttention's algorithm in float64: key tiles of 7, running max and sum, rescaled output.
fn tiled_online_softmax(ctx: &Context) -> TestResult {
    let mut rng = ctx.rng();
    for causal in [false, true] {
        let sh = shape(2, 37, 53, 4, 2, 24);
        let att = attention(sh, causal);
        let q: Vec<f64> = (0..sh.q_shape().iter().product()).map(|_| rng.normal()).collect();
        let k: Vec<f64> = (0..sh.kv_shape().iter().product()).map(|_| rng.normal()).collect();
        let v: Vec<f64> = (0..sh.kv_shape().iter().product()).map(|_| rng.normal()).collect();
        let (qv, kv, vv) = (view64(&q, sh.q_shape()), view64(&k, sh.kv_shape()), view64(&v, sh.kv_shape()));
        let reference = att.forward(&qv, &kv, &vv, &Rows::All)?;
        let d = sh.headdim;
        for b in 0..sh.batch {
            for h in 0..sh.heads_q {
                let hk = h / sh.group_size();
                for i in 0..sh.seqlen_q {
                    let visible = sh.visible_keys(i, causal);
                    let (mut m, mut l, mut acc) = (f64::NEG_INFINITY, 0.0, vec![0.0; d]);
                    for tile in (0..visible).step_by(7) {
                        let s: Vec<f64> = (tile..(tile + 7).min(visible))
                            .map(|j| {
                                att.softmax_scale
                                    * (0..d)
                                        .map(|x| qv.0.at([b, i, h, x]) * kv.0.at([b, j, hk, x]))
                                        .sum::<f64>()
                            })
                            .collect();
                        let m_new = s.iter().cloned().fold(m, f64::max);
                        let correction = (m - m_new).exp();
                        l *= correction;
                        acc.iter_mut().for_each(|a| *a *= correction);
                        for (t, &sj) in s.iter().enumerate() {
                            let p = (sj - m_new).exp();
                            l += p;
                            for x in 0..d {
                                acc[x] += p * vv.0.at([b, tile + t, hk, x]);
                            }
                        }
                        m = m_new;
                    }
                    let lse = if visible == 0 { f64::INFINITY } else { m + l.ln() };
                    let want = reference.lse[(b * sh.heads_q + h) * sh.seqlen_q + i];
                    // Within 1e-12, or equal (+inf for a fully masked row).
                    ensure(relative_eq!(lse, want, epsilon = 1e-12, max_relative = 0.0), || {
                        format!("LSE ({b},{h},{i}): tiled {lse}, reference {want}")
                    })?;
                    for x in 0..d {
                        let o = if visible == 0 { 0.0 } else { acc[x] / l };
                        let want = reference.o[((b * sh.seqlen_q + i) * sh.heads_q + h) * d + x];
                        ensure(abs_diff_eq!(o, want, epsilon = 1e-12), || {
                            format!("O ({b},{i},{h},{x}): tiled {o}, reference {want}")
                        })?;
                    }
                }
            }
        }
    }
    Ok(())
}

fn masked_rows(ctx: &Context) -> TestResult {
    let mut rng = ctx.rng();
    let sh = shape(1, 5, 2, 1, 1, 8);
    let q: Vec<f16> = randn(&mut rng, 40);
    let k: Vec<f16> = randn(&mut rng, 16);
    let v: Vec<f16> = randn(&mut rng, 16);
    let att = attention(sh, true);
    let args = (view(&q, sh.q_shape()), view(&k, sh.kv_shape()), view(&v, sh.kv_shape()));
    for out in [
        att.forward(&args.0, &args.1, &args.2, &Rows::All)?,
        att.forward_plain::<f16>(&args.0, &args.1, &args.2, &Rows::All)?,
    ] {
        // Query i sees keys j <= i + 2 - 5: rows 0, 1, 2 see none.
        for i in 0..5 {
            let row = &out.o[8 * i..8 * i + 8];
            let masked = i < 3;
            ensure(masked == (out.lse[i] == f64::INFINITY), || format!("row {i}: LSE {}", out.lse[i]))?;
            ensure(!masked || row.iter().all(|&x| x == 0.0), || {
                format!("row {i}: O {row:?}, expected zeros")
            })?;
            ensure(masked || row.iter().any(|&x| x != 0.0), || format!("row {i}: unexpected zero row"))?;
        }
    }
    let g = att.backward(&args.0, &args.1, &args.2, &view(&q, sh.q_shape()))?;
    ensure(g.dq[..24].iter().all(|&x| x == 0.0), || "masked rows have a nonzero dQ".into())
}

fn gqa_equals_repeat(ctx: &Context) -> TestResult {
    let mut rng = ctx.rng();
    let sh = shape(2, 19, 23, 8, 2, 16);
    let q: Vec<bf16> = randn(&mut rng, sh.q_shape().iter().product());
    let k: Vec<bf16> = randn(&mut rng, sh.kv_shape().iter().product());
    let v: Vec<bf16> = randn(&mut rng, sh.kv_shape().iter().product());
    let dout: Vec<bf16> = randn(&mut rng, sh.q_shape().iter().product());
    // The same K and V repeated to 8 heads: kv head g serves query heads 4g..4g+4.
    let full = AttentionShape { heads_kv: 8, ..sh };
    let repeat = |t: &[bf16]| -> Vec<bf16> {
        let mut out = Vec::new();
        for bs in 0..sh.batch * sh.seqlen_k {
            for h in 0..8 {
                let src = (bs * 2 + h / 4) * 16;
                out.extend_from_slice(&t[src..src + 16]);
            }
        }
        out
    };
    let (kr, vr) = (repeat(&k), repeat(&v));
    for causal in [false, true] {
        let (a, b) = (attention(sh, causal), attention(full, causal));
        let qv = view(&q, sh.q_shape());
        let oa = a.forward(&qv, &view(&k, sh.kv_shape()), &view(&v, sh.kv_shape()), &Rows::All)?;
        let ob = b.forward(&qv, &view(&kr, full.kv_shape()), &view(&vr, full.kv_shape()), &Rows::All)?;
        ensure(oa.o == ob.o && oa.lse == ob.lse, || {
            format!("causal {causal}: GQA forward differs from repeated heads")
        })?;
        let ga =
            a.backward(&qv, &view(&k, sh.kv_shape()), &view(&v, sh.kv_shape()), &view(&dout, sh.q_shape()))?;
        let gb = b.backward(
            &qv,
            &view(&kr, full.kv_shape()),
            &view(&vr, full.kv_shape()),
            &view(&dout, sh.q_shape()),
        )?;
        ensure(ga.dq == gb.dq, || "dQ differs".into())?;
        // dK of a shared head is the sum over the heads that repeat it.
        for (name, shared, repeated) in [("dk", &ga.dk, &gb.dk), ("dv", &ga.dv, &gb.dv)] {
            for bs in 0..sh.batch * sh.seqlen_k {
                for g in 0..2 {
                    for x in 0..16 {
                        let sum: f64 = (0..4).map(|r| repeated[(bs * 8 + 4 * g + r) * 16 + x]).sum();
                        let got = shared[(bs * 2 + g) * 16 + x];
                        ensure(relative_eq!(got, sum, epsilon = 1e-12, max_relative = 1e-12), || {
                            format!("{name}: {got} vs sum {sum}")
                        })?;
                    }
                }
            }
        }
    }
    Ok(())
}

/// q, k, v as slices of one packed (batch, seqlen, 3, heads, dim) buffer.
fn strided_views(ctx: &Context) -> TestResult {
    let mut rng = ctx.rng();
    let (b, s, h, d) = (2, 17, 3, 8);
    let packed: Vec<f16> = randn(&mut rng, b * s * 3 * h * d);
    let strides = [s * 3 * h * d, 3 * h * d, d, 1];
    let part =
        |i: usize| HostView { data: &packed[i * h * d..], layout: Layout4 { shape: [b, s, h, d], strides } };
    let gather = |i: usize| -> Vec<f16> {
        let v = part(i);
        let mut out = Vec::new();
        for bb in 0..b {
            for ss in 0..s {
                for hh in 0..h {
                    for dd in 0..d {
                        out.push(v.at([bb, ss, hh, dd]));
                    }
                }
            }
        }
        out
    };
    let (q, k, v) = (gather(0), gather(1), gather(2));
    let att = attention(shape(b, s, s, h, h, d), true);
    let strided = att.forward(&part(0), &part(1), &part(2), &Rows::All)?;
    let contiguous =
        att.forward(&view(&q, [b, s, h, d]), &view(&k, [b, s, h, d]), &view(&v, [b, s, h, d]), &Rows::All)?;
    ensure(strided.o == contiguous.o && strided.lse == contiguous.lse, || {
        "strided views differ from contiguous copies".into()
    })
}

fn sampled_rows(ctx: &Context) -> TestResult {
    let mut rng = ctx.rng();
    let sh = shape(1, 64, 80, 2, 2, 8);
    let q: Vec<f16> = randn(&mut rng, sh.q_shape().iter().product());
    let k: Vec<f16> = randn(&mut rng, sh.kv_shape().iter().product());
    let v: Vec<f16> = randn(&mut rng, sh.kv_shape().iter().product());
    let att = attention(sh, true);
    let (qv, kv, vv) = (view(&q, sh.q_shape()), view(&k, sh.kv_shape()), view(&v, sh.kv_shape()));
    let all = att.forward(&qv, &kv, &vv, &Rows::All)?;
    let rows = vec![0, 17, 63];
    let some = att.forward(&qv, &kv, &vv, &Rows::Sample(rows.clone()))?;
    for (ri, &i) in rows.iter().enumerate() {
        for h in 0..2 {
            let a = &all.o[(i * 2 + h) * 8..(i * 2 + h) * 8 + 8];
            let s = &some.o[(ri * 2 + h) * 8..(ri * 2 + h) * 8 + 8];
            ensure(a == s && all.lse[h * 64 + i] == some.lse[h * 3 + ri], || {
                format!("row {i} head {h} differs")
            })?;
        }
    }
    Ok(())
}

fn bad_shapes(_: &Context) -> TestResult {
    // Each bad call must be an error naming the argument at fault.
    let names = |r: Result<ForwardOutput, rustflash_reference::Error>, argument: &str| match r {
        Ok(_) => Err(fail(format!("accepted; expected an error naming `{argument}`"))),
        Err(e) if e.argument == argument => Ok(()),
        Err(e) => Err(fail(format!("expected an error naming `{argument}`, got: {e}"))),
    };
    let data = vec![0.0f64; 64];
    let att = attention(shape(1, 4, 4, 3, 2, 4), false);
    let t = view64(&data, [1, 4, 2, 4]);
    names(att.forward(&view64(&data, [1, 4, 3, 4]), &t, &t, &Rows::All), "heads_q")?;
    let att = attention(shape(1, 4, 4, 2, 2, 4), false);
    names(att.forward(&t, &view64(&data, [1, 4, 2, 2]), &t, &Rows::All), "k")?;
    names(att.forward(&t, &t, &t, &Rows::Sample(vec![4])), "rows")?;
    ensure(
        att.backward(&t, &t, &t, &view64(&data, [1, 4, 2, 3])).is_err_and(|e| e.argument == "dout"),
        || "a wrong dO shape not reported as `dout`".into(),
    )
}

type GradientCase = (&'static str, [usize; 4], Vec<f64>, Vec<f64>);

/// A small problem: its inputs, and its reference and plain outputs.
struct Case<T> {
    att: Attention,
    q: Vec<T>,
    k: Vec<T>,
    v: Vec<T>,
    dout: Vec<T>,
    /// The shape of Q and O.
    shape: [usize; 4],
    reference: Vec<f64>,
    plain: Vec<f64>,
    lse_ref: Vec<f64>,
    lse_plain: Vec<f64>,
    /// (name, shape, reference, plain) per gradient.
    grads: Vec<GradientCase>,
}

fn case<T: Element>(rng: &mut Rng) -> Result<Case<T>, rustflash_reference::Error> {
    case_of(rng, shape(2, 33, 47, 4, 2, 32), true)
}

fn case_of<T: Element>(
    rng: &mut Rng,
    sh: AttentionShape,
    causal: bool,
) -> Result<Case<T>, rustflash_reference::Error> {
    let q: Vec<T> = randn(rng, sh.q_shape().iter().product());
    let k: Vec<T> = randn(rng, sh.kv_shape().iter().product());
    let v: Vec<T> = randn(rng, sh.kv_shape().iter().product());
    let dout: Vec<T> = randn(rng, sh.q_shape().iter().product());
    let att = attention(sh, causal);
    let (qv, kv, vv, dv) =
        (view(&q, sh.q_shape()), view(&k, sh.kv_shape()), view(&v, sh.kv_shape()), view(&dout, sh.q_shape()));
    let r = att.forward(&qv, &kv, &vv, &Rows::All)?;
    let p = att.forward_plain::<T>(&qv, &kv, &vv, &Rows::All)?;
    let gr = att.backward(&qv, &kv, &vv, &dv)?;
    let gp = att.backward_plain::<T>(&qv, &kv, &vv, &dv)?;
    Ok(Case {
        att,
        q,
        k,
        v,
        dout,
        shape: sh.q_shape(),
        reference: r.o,
        plain: p.o,
        lse_ref: r.lse,
        lse_plain: p.lse,
        grads: vec![
            ("dq", sh.q_shape(), gr.dq, gp.dq),
            ("dk", sh.kv_shape(), gr.dk, gp.dk),
            ("dv", sh.kv_shape(), gr.dv, gp.dv),
        ],
    })
}

impl<T: Element> Case<T> {
    fn check_o(&self, ours: &[f64]) -> Comparison {
        compare("O", &self.shape, ours, &self.plain, &self.reference, Tolerance::output::<T>(&self.reference))
    }

    fn check_lse(&self, ours: &[f64]) -> Comparison {
        let sh = self.att.shape;
        let shape = [sh.batch, sh.heads_q, sh.seqlen_q];
        compare("LSE", &shape, ours, &self.lse_plain, &self.lse_ref, Tolerance::lse(&self.lse_ref))
    }

    /// Row `s` of head `h` of batch `b` of `t` (laid out like Q, or like K when `kv`), in f32.
    fn row(&self, t: &[T], kv: bool, b: usize, s: usize, h: usize) -> Vec<f32> {
        let sh = self.att.shape;
        let layout = Layout4::contiguous(if kv { sh.kv_shape() } else { sh.q_shape() });
        let at = layout.offset([b, s, h, 0]);
        t[at..at + sh.headdim].iter().map(|x| x.to_f32()).collect()
    }
}

/// `Σ a_i b_i` in f32, in index order; with `round`, every partial sum rounded to `T` (a
/// lower-precision accumulator than any kernel may use).
fn dot32<T: Element>(a: &[f32], b: &[f32], round: bool) -> f32 {
    a.iter().zip(b).fold(0.0, |acc, (&x, &y)| if round { T::round_f32(acc + x * y) } else { acc + x * y })
}

/// Where a FlashAttention-style forward pass keeps lower precision than a kernel may.
#[derive(Clone, Copy, Default)]
struct Shortcuts {
    /// Q·K accumulated in `T` instead of f32.
    scores_in_t: bool,
    /// The output accumulator kept in `T` (rounded after every key) instead of f32.
    output_in_t: bool,
    /// The softmax's running sum kept in `T`.
    sum_in_t: bool,
}

/// A forward pass computed as the kernels compute it (FlashAttention 2), written independently of
/// the reference: key tiles of 16, S in f32, running max and sum in f32, P rounded to `T` for
/// the P·V product, f32 accumulation, O rounded to `T` once at the end, LSE in f32. Returns O
/// and LSE in the layouts of the reference's.
fn flash_forward<T: Element>(c: &Case<T>, cut: Shortcuts) -> (Vec<f64>, Vec<f64>) {
    let sh = c.att.shape;
    let (d, sq, hq) = (sh.headdim, sh.seqlen_q, sh.heads_q);
    let scale = c.att.softmax_scale as f32;
    let (mut o, mut lse) = (vec![0.0; sh.batch * sq * hq * d], vec![0.0; sh.batch * hq * sq]);
    for b in 0..sh.batch {
        for h in 0..hq {
            let hk = h / sh.group_size();
            let keys: Vec<Vec<f32>> = (0..sh.seqlen_k).map(|j| c.row(&c.k, true, b, j, hk)).collect();
            let values: Vec<Vec<f32>> = (0..sh.seqlen_k).map(|j| c.row(&c.v, true, b, j, hk)).collect();
            for i in 0..sq {
                let q = c.row(&c.q, false, b, i, h);
                let visible = sh.visible_keys(i, c.att.causal);
                let (mut m, mut l, mut acc) = (f32::NEG_INFINITY, 0.0f32, vec![0.0f32; d]);
                for tile in (0..visible).step_by(16) {
                    let tile = tile..(tile + 16).min(visible);
                    let s: Vec<f32> =
                        tile.clone().map(|j| scale * dot32::<T>(&q, &keys[j], cut.scores_in_t)).collect();
                    let m_new = s.iter().fold(m, |a, &x| a.max(x));
                    let rescale = (m - m_new).exp();
                    l *= rescale;
                    for a in acc.iter_mut() {
                        *a *= rescale;
                    }
                    for (&sj, j) in s.iter().zip(tile) {
                        let p = (sj - m_new).exp();
                        l += p;
                        if cut.sum_in_t {
                            l = T::round_f32(l);
                        }
                        let p = T::round_f32(p);
                        for (a, &x) in acc.iter_mut().zip(&values[j]) {
                            *a += p * x;
                            if cut.output_in_t {
                                *a = T::round_f32(*a);
                            }
                        }
                    }
                    m = m_new;
                }
                let at = ((b * sq + i) * hq + h) * d;
                for (x, a) in acc.iter().enumerate() {
                    o[at + x] = if visible == 0 { 0.0 } else { T::round_f32(a / l) as f64 };
                }
                lse[(b * hq + h) * sq + i] = if visible == 0 { f64::INFINITY } else { (m + l.ln()) as f64 };
            }
        }
    }
    (o, lse)
}

/// The backward pass as the kernels compute it (FlashAttention 2), from `o` and `lse` of
/// [`flash_forward`]: P recomputed in f32 from the LSE, dP = dO·V in f32, D = dO·O,
/// dS = P (dP − D) in f32; P and dS rounded to `T` for the products, f32 accumulation,
/// gradients rounded to `T` at the end. Returns dQ, dK, dV.
fn flash_backward<T: Element>(c: &Case<T>, o: &[f64], lse: &[f64]) -> [Vec<f64>; 3] {
    let sh = c.att.shape;
    let (d, sq, sk, hq, hkv) = (sh.headdim, sh.seqlen_q, sh.seqlen_k, sh.heads_q, sh.heads_kv);
    let scale = c.att.softmax_scale as f32;
    let (mut dq, mut dk, mut dv) = (
        vec![0.0; sh.batch * sq * hq * d],
        vec![0.0; sh.batch * sk * hkv * d],
        vec![0.0; sh.batch * sk * hkv * d],
    );
    let axpy = |acc: &mut [f32], a: f32, x: &[f32]| acc.iter_mut().zip(x).for_each(|(y, &x)| *y += a * x);
    for b in 0..sh.batch {
        for hk in 0..hkv {
            let keys: Vec<Vec<f32>> = (0..sk).map(|j| c.row(&c.k, true, b, j, hk)).collect();
            let values: Vec<Vec<f32>> = (0..sk).map(|j| c.row(&c.v, true, b, j, hk)).collect();
            let (mut dk_acc, mut dv_acc) = (vec![vec![0.0f32; d]; sk], vec![vec![0.0f32; d]; sk]);
            for h in hk * sh.group_size()..(hk + 1) * sh.group_size() {
                for i in 0..sq {
                    let q = c.row(&c.q, false, b, i, h);
                    let dout = c.row(&c.dout, false, b, i, h);
                    let at = ((b * sq + i) * hq + h) * d;
                    let o_i: Vec<f32> = o[at..at + d].iter().map(|&x| x as f32).collect();
                    let lse_i = lse[(b * hq + h) * sq + i] as f32;
                    let big_d = dot32::<T>(&dout, &o_i, false);
                    let mut dq_acc = vec![0.0f32; d];
                    for j in 0..sh.visible_keys(i, c.att.causal) {
                        let p = (scale * dot32::<T>(&q, &keys[j], false) - lse_i).exp();
                        axpy(&mut dv_acc[j], T::round_f32(p), &dout);
                        let ds = T::round_f32(p * (dot32::<T>(&dout, &values[j], false) - big_d));
                        axpy(&mut dq_acc, ds, &keys[j]);
                        axpy(&mut dk_acc[j], ds, &q);
                    }
                    for (x, a) in dq_acc.iter().enumerate() {
                        dq[at + x] = T::round_f32(scale * a) as f64;
                    }
                }
            }
            for j in 0..sk {
                let at = ((b * sk + j) * hkv + hk) * d;
                for x in 0..d {
                    dk[at + x] = T::round_f32(scale * dk_acc[j][x]) as f64;
                    dv[at + x] = T::round_f32(dv_acc[j][x]) as f64;
                }
            }
        }
    }
    [dq, dk, dv]
}

/// The kernels' own arithmetic passes the checker with room to spare, forward and backward:
/// the bound (twice plain attention's error) is not too tight for a correct kernel.
fn accepts_kernel_arithmetic<T: Element>(ctx: &Context) -> TestResult {
    let c = case::<T>(&mut ctx.rng())?;
    let (o, lse) = flash_forward(&c, Shortcuts::default());
    let mut checks = vec![c.check_o(&o), c.check_lse(&lse)];
    let grads = flash_backward(&c, &o, &lse);
    for ((name, shape, r, p), ours) in c.grads.iter().zip(&grads) {
        checks.push(compare(name, shape, ours, p, r, Tolerance::gradient::<T>(r)));
    }
    for check in &checks {
        println!("    {} FlashAttention arithmetic vs reference: {check}", T::NAME);
        ensure(check.passed(), || check.to_string())?;
        ensure(check.error > 0.0 && check.plain_error > 0.0, || {
            format!("no rounding error at all, a rounding step is missing: {check}")
        })?;
    }
    Ok(())
}

/// A forward pass that keeps the softmax's running sum, or the output accumulator, in the input
/// type instead of f32 is rejected: the bound is not so loose that such a kernel would pass.
/// These errors grow with the sequence, so the case has 2048 keys (over 41 seeds the smallest
/// ratio was 2.5). Q·K accumulated in the input type is not among them: plain attention rounds
/// S to the input type anyway, and that kernel's error stays within about 1-3x of plain's.
fn rejects_lower_precision<T: Element>(ctx: &Context) -> TestResult {
    let c = case_of::<T>(&mut ctx.rng(), shape(1, 16, 2048, 2, 2, 128), false)?;
    for (cut, what) in [
        (Shortcuts { sum_in_t: true, ..Shortcuts::default() }, "the softmax sum kept in the input type"),
        (Shortcuts { output_in_t: true, ..Shortcuts::default() }, "O accumulated in the input type"),
    ] {
        let (o, _) = flash_forward(&c, cut);
        expect_rejected(c.check_o(&o), &format!("{} {what}", T::NAME))?;
    }
    Ok(())
}

/// Which of plain attention's rounding steps (to the input type) the transcriptions below apply.
#[derive(Clone, Copy)]
struct Rounding {
    s: bool,
    p: bool,
    /// O, in the forward pass and where the backward pass recomputes it for `D = dO · O`.
    o: bool,
    dp: bool,
    ds: bool,
    /// dQ, dK and dV at the end.
    grads: bool,
}

impl Rounding {
    const ALL: Rounding = Rounding { s: true, p: true, o: true, dp: true, ds: true, grads: true };
}

/// `x` rounded to `T` when `on`.
fn round_if<T: Element>(on: bool, x: f32) -> f32 {
    if on { T::round_f32(x) } else { x }
}

/// Row `i` of query head `h` of plain attention, transcribed from its definition (the
/// reference's documentation) independently of its code: `S = scale · round(q · k)` (f32 sums in
/// index order), softmax in f32, `P = round(e / Σe)`, `O = round(Σ P v)` in f32. Returns P, one
/// per visible key, and O.
fn plain_row<T: Element>(c: &Case<T>, r: Rounding, b: usize, i: usize, h: usize) -> (Vec<f32>, Vec<f32>) {
    let sh = c.att.shape;
    let hk = h / sh.group_size();
    let scale = c.att.softmax_scale as f32;
    let q = c.row(&c.q, false, b, i, h);
    let keys = 0..sh.visible_keys(i, c.att.causal);
    let s: Vec<f32> = keys
        .clone()
        .map(|j| scale * round_if::<T>(r.s, dot32::<T>(&q, &c.row(&c.k, true, b, j, hk), false)))
        .collect();
    let max = s.iter().fold(f32::NEG_INFINITY, |m, &x| if x > m { x } else { m });
    let e: Vec<f32> = s.iter().map(|&x| (x - max).exp()).collect();
    let sum = e.iter().fold(0.0f32, |a, &x| a + x);
    let p: Vec<f32> = e.iter().map(|&e| round_if::<T>(r.p, e / sum)).collect();
    let mut o = vec![0.0f32; sh.headdim];
    for (j, &pj) in keys.zip(&p) {
        for (a, v) in o.iter_mut().zip(c.row(&c.v, true, b, j, hk)) {
            *a += pj * v;
        }
    }
    (p, o.into_iter().map(|x| round_if::<T>(r.o, x)).collect())
}

/// Plain attention's forward O, from [`plain_row`], laid out like the reference's.
fn plain_forward_by_definition<T: Element>(c: &Case<T>, r: Rounding) -> Vec<f64> {
    let sh = c.att.shape;
    let mut o = Vec::new();
    for b in 0..sh.batch {
        for i in 0..sh.seqlen_q {
            for h in 0..sh.heads_q {
                o.extend(plain_row(c, r, b, i, h).1.into_iter().map(f64::from));
            }
        }
    }
    o
}

/// Plain attention's gradients transcribed from their definition: P and O recomputed by
/// [`plain_row`], `D = dO · O`, `dP = round(dO · v)`, `dS = round(P (dP − D))`, f32 accumulation
/// of `dQ += dS k`, `dK += dS q`, `dV += P dO` (query heads, then rows, in order), then
/// `dQ = round(scale dQ)`, `dK = round(scale dK)`, `dV = round(dV)`.
fn plain_backward_by_definition<T: Element>(c: &Case<T>, r: Rounding) -> [Vec<f64>; 3] {
    let sh = c.att.shape;
    let (d, sq, sk, hq, hkv) = (sh.headdim, sh.seqlen_q, sh.seqlen_k, sh.heads_q, sh.heads_kv);
    let scale = c.att.softmax_scale as f32;
    let mut dq = vec![0.0; sh.batch * sq * hq * d];
    let (mut dk, mut dv) = (vec![0.0; sh.batch * sk * hkv * d], vec![0.0; sh.batch * sk * hkv * d]);
    for b in 0..sh.batch {
        for hk in 0..hkv {
            let (mut dk_acc, mut dv_acc) = (vec![vec![0.0f32; d]; sk], vec![vec![0.0f32; d]; sk]);
            for h in hk * sh.group_size()..(hk + 1) * sh.group_size() {
                for i in 0..sq {
                    let (p, o) = plain_row(c, r, b, i, h);
                    let (q, dout) = (c.row(&c.q, false, b, i, h), c.row(&c.dout, false, b, i, h));
                    let big_d = dot32::<T>(&dout, &o, false);
                    let mut dq_acc = vec![0.0f32; d];
                    for (j, &pj) in p.iter().enumerate() {
                        let (k, v) = (c.row(&c.k, true, b, j, hk), c.row(&c.v, true, b, j, hk));
                        let dp = round_if::<T>(r.dp, dot32::<T>(&dout, &v, false));
                        let ds = round_if::<T>(r.ds, pj * (dp - big_d));
                        for x in 0..d {
                            dq_acc[x] += ds * k[x];
                            dk_acc[j][x] += ds * q[x];
                            dv_acc[j][x] += pj * dout[x];
                        }
                    }
                    let at = ((b * sq + i) * hq + h) * d;
                    for (x, a) in dq_acc.into_iter().enumerate() {
                        dq[at + x] = round_if::<T>(r.grads, scale * a) as f64;
                    }
                }
            }
            for j in 0..sk {
                let at = ((b * sk + j) * hkv + hk) * d;
                for x in 0..d {
                    dk[at + x] = round_if::<T>(r.grads, scale * dk_acc[j][x]) as f64;
                    dv[at + x] = round_if::<T>(r.grads, dv_acc[j][x]) as f64;
                }
            }
        }
    }
    [dq, dk, dv]
}

/// Plain attention (the checker's yardstick) rounds S, P, O, dP, dS and the gradients to the
/// input type: it equals its transcription bit for bit, and leaving any one rounding step out of
/// the transcription changes its results on these inputs, so a plain attention that skipped a
/// step (or rounded one it should not) would fail here.
fn plain_rounds_every_step<T: Element>(ctx: &Context) -> TestResult {
    let c = case::<T>(&mut ctx.rng())?;
    let plain: Vec<&Vec<f64>> = std::iter::once(&c.plain).chain(c.grads.iter().map(|g| &g.3)).collect();
    // Per output (O, dQ, dK, dV): the first element whose bits differ from plain attention's.
    let differences = |r: Rounding| -> Vec<Option<usize>> {
        let [dq, dk, dv] = plain_backward_by_definition(&c, r);
        [plain_forward_by_definition(&c, r), dq, dk, dv]
            .iter()
            .zip(&plain)
            .map(|(ours, p)| {
                (ours.len() != p.len())
                    .then_some(0)
                    .or_else(|| ours.iter().zip(p.iter()).position(|(x, y)| x.to_bits() != y.to_bits()))
            })
            .collect()
    };
    let full = differences(Rounding::ALL);
    ensure(full.iter().all(Option::is_none), || {
        format!("plain attention differs from its definition (first index per O, dQ, dK, dV): {full:?}")
    })?;
    let all = Rounding::ALL;
    for (skipped, step) in [
        (Rounding { s: false, ..all }, "S"),
        (Rounding { p: false, ..all }, "P"),
        (Rounding { o: false, ..all }, "O"),
        (Rounding { dp: false, ..all }, "dP"),
        (Rounding { ds: false, ..all }, "dS"),
        (Rounding { grads: false, ..all }, "the gradients"),
    ] {
        ensure(differences(skipped).iter().any(Option::is_some), || {
            format!("leaving out the rounding of {step} changes nothing on these inputs")
        })?;
    }
    Ok(())
}

/// The bound is `2 max|plain − ref| + 2 ulp(max|ref|)` (factor 3 for gradients): an output
/// inside it passes, one a few ulp of the input type beyond it fails, either side.
fn bound_is_the_documented_one<T: Element>(ctx: &Context) -> TestResult {
    let c = case::<T>(&mut ctx.rng())?;
    let (name, kv_shape, dk_ref, dk_plain) = &c.grads[1];
    for (name, shape, reference, plain, factor, tol) in [
        ("O", &c.shape, &c.reference, &c.plain, 2.0, Tolerance::output::<T>(&c.reference)),
        (*name, kv_shape, dk_ref, dk_plain, 3.0, Tolerance::gradient::<T>(dk_ref)),
    ] {
        let plain_error = plain.iter().zip(reference).map(|(p, r)| (p - r).abs()).fold(0.0, f64::max);
        let max_ref = reference.iter().fold(0.0f64, |m, r| m.max(r.abs()));
        let bound = factor * plain_error + 2.0 * T::ulp(max_ref);
        let at_plain = compare(name, shape, plain, plain, reference, tol);
        assert_relative_eq!(at_plain.plain_error, plain_error);
        assert_relative_eq!(at_plain.bound, bound, max_relative = 1e-12);
        // One element moved off the reference, everything else as plain attention has it.
        let i = reference.len() / 3;
        for sign in [1.0, -1.0] {
            let mut ours = plain.clone();
            ours[i] = reference[i] + sign * 0.999 * bound;
            let inside = compare(name, shape, &ours, plain, reference, tol);
            ensure(inside.passed(), || format!("{} inside the bound rejected: {inside}", T::NAME))?;
            let beyond = bound + 3.0 * T::ulp(reference[i]);
            ours[i] = reference[i] + sign * beyond;
            let outside = compare(name, shape, &ours, plain, reference, tol);
            assert_relative_eq!(outside.ratio, beyond / bound, max_relative = 1e-9);
            expect_rejected(outside, &format!("{} {name} 3 ulp beyond the bound", T::NAME))?;
        }
    }
    Ok(())
}

fn expect_rejected(c: Comparison, what: &str) -> TestResult {
    if c.passed() {
        return Err(fail(format!("the checker accepted {what}: {c}")));
    }
    println!("    rejected {what}: {c}");
    Ok(())
}

fn rejects_nan(ctx: &Context) -> TestResult {
    let c = case::<f16>(&mut ctx.rng())?;
    let mut ours = c.plain.clone();
    ours[1234] = f64::NAN;
    expect_rejected(c.check_o(&ours), "one NaN")
}

fn rejects_poison(ctx: &Context) -> TestResult {
    let c = case::<f16>(&mut ctx.rng())?;
    let mut ours = c.plain.clone();
    // The last query row of every head never written: still the NaN poison.
    let (row, d) = (c.shape[2] * c.shape[3], c.shape[3]);
    let last = ours.len() - row;
    ours[last..last + d].fill(f64::NAN);
    expect_rejected(c.check_o(&ours), "a row of poison left in place")
}

fn rejects_shifted_row(ctx: &Context) -> TestResult {
    let c = case::<f16>(&mut ctx.rng())?;
    let mut ours = c.plain.clone();
    let row = c.shape[2] * c.shape[3];
    // Query row 10 of batch 0 holds row 11's values.
    let (a, b) = (10 * row, 11 * row);
    let next = ours[b..b + row].to_vec();
    ours[a..a + row].copy_from_slice(&next);
    expect_rejected(c.check_o(&ours), "a shifted row")
}

fn rejects_3x(ctx: &Context) -> TestResult {
    let c = case::<bf16>(&mut ctx.rng())?;
    let tol = Tolerance::output::<bf16>(&c.reference);
    let bound = c.check_o(&c.plain).bound;
    let mut ours = c.reference.clone();
    ours[777] += 3.0 * bound;
    expect_rejected(
        compare("O", &c.shape, &ours, &c.plain, &c.reference, tol),
        "an error 3x over the bound",
    )?;
    let (name, shape, r, p) = &c.grads[1];
    let gbound = compare(name, shape, p, p, r, Tolerance::gradient::<bf16>(r)).bound;
    let mut g = r.clone();
    g[5] -= 3.0 * gbound;
    expect_rejected(
        compare(name, shape, &g, p, r, Tolerance::gradient::<bf16>(r)),
        "a gradient error 3x over the bound",
    )
}

fn speed(ctx: &Context) -> TestResult {
    let mut rng = ctx.rng();
    let sh = shape(1, 1024, 1024, 16, 16, 128);
    let q: Vec<f16> = randn(&mut rng, sh.q_shape().iter().product());
    let k: Vec<f16> = randn(&mut rng, sh.kv_shape().iter().product());
    let v: Vec<f16> = randn(&mut rng, sh.kv_shape().iter().product());
    let att = attention(sh, false);
    let (qv, kv, vv) = (view(&q, sh.q_shape()), view(&k, sh.kv_shape()), view(&v, sh.kv_shape()));
    let t = Instant::now();
    let out = att.forward(&qv, &kv, &vv, &Rows::All)?;
    let fwd = t.elapsed().as_secs_f64();
    let t = Instant::now();
    att.backward(&qv, &kv, &vv, &qv)?;
    let bwd = t.elapsed().as_secs_f64();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    println!(
        "    float64 reference (1, 1024, 16, 128) on {cores} cores: forward {fwd:.2} s, backward {bwd:.2} s"
    );
    ensure(out.o.iter().all(|x| x.is_finite()), || "non-finite output".into())
}
