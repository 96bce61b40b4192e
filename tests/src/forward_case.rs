//! One forward-attention test case: random inputs, a launch on the GPU with poisoned outputs,
//! and the check against the float64 reference and plain attention.

use crate::gpu::{download, upload};
use crate::harness::{Context, TestResult, fail};
use crate::rng::Rng;
use half::{bf16, f16};
use rustflash::layout::{AttentionShape, HostView, Layout4};
use rustflash::{
    DeviceTensor, DeviceTensorMut, Element, FlashAttention, ForwardOptions, ForwardTile, KernelPath,
};
use rustflash_reference::check::{Comparison, Tolerance, compare};
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
            if self.bf16 { "bf16" } else { "f16" },
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
        if self.bf16 { run::<bf16>(self, ctx) } else { run::<f16>(self, ctx) }
    }
}

/// Element offsets and layouts of q, k, v inside their buffer(s), and the buffers' lengths.
struct Placed {
    q: (usize, Layout4),
    k: (usize, Layout4),
    v: (usize, Layout4),
    /// One shared buffer (Packed) or three.
    lens: [usize; 3],
    shared: bool,
}

fn place(c: &ForwardCase) -> Placed {
    let s = c.shape;
    let (qs, ks) = (s.q_shape(), s.kv_shape());
    match c.placement {
        Placement::Contiguous => {
            let (q, k) = (Layout4::contiguous(qs), Layout4::contiguous(ks));
            Placed { q: (0, q), k: (0, k), v: (0, k), lens: [q.numel(), k.numel(), k.numel()], shared: false }
        }
        Placement::Packed => {
            let (h, d) = (s.heads_q, s.headdim);
            let strides = [s.seqlen_q * 3 * h * d, 3 * h * d, d, 1];
            let l = Layout4 { shape: qs, strides };
            let len = s.batch * s.seqlen_q * 3 * h * d;
            Placed { q: (0, l), k: (h * d, l), v: (2 * h * d, l), lens: [len, 0, 0], shared: true }
        }
        Placement::Padded => {
            let padded = |sh: [usize; 4]| {
                let head = sh[3] + 3;
                let row = sh[2] * head + 1;
                Layout4 { shape: sh, strides: [sh[1] * row + 5, row, head, 1] }
            };
            let (q, k) = (padded(qs), padded(ks));
            Placed {
                q: (0, q),
                k: (0, k),
                v: (0, k),
                lens: [q.required_len(), k.required_len(), k.required_len()],
                shared: false,
            }
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

fn run<T: Element + rustflash::cudarc::driver::DeviceRepr>(c: &ForwardCase, ctx: &Context) -> TestResult {
    let (device, stream) = crate::gpu::open(c.path)?;
    let fa = FlashAttention::new(device);
    let s = c.shape;
    let mut rng = ctx.rng();
    let p = place(c);

    // Inputs: whole buffers of random values (padding included), so reads past a row show.
    let bufs: Vec<Vec<T>> = p.lens.iter().map(|&n| randn(&mut rng, n)).collect();
    let (qbuf, kbuf, vbuf) =
        if p.shared { (&bufs[0], &bufs[0], &bufs[0]) } else { (&bufs[0], &bufs[1], &bufs[2]) };
    let dq = upload(&stream, qbuf)?;
    let dk = if p.shared { None } else { Some(upload(&stream, kbuf)?) };
    let dv = if p.shared { None } else { Some(upload(&stream, vbuf)?) };
    let out_layout = p.q.1;
    let nan = T::from_f32(f32::NAN);
    let mut dout = upload(&stream, &vec![nan; out_layout.required_len()])?;
    let lse_len = s.batch * s.heads_q * s.seqlen_q;
    let mut dlse = upload(&stream, &vec![f32::NAN; lse_len])?;

    let q = device_view(&dq, p.q);
    let k = device_view(dk.as_ref().unwrap_or(&dq), p.k);
    let v = device_view(dv.as_ref().unwrap_or(&dq), p.v);
    let mut out = DeviceTensorMut { data: dout.slice_mut(0..), layout: out_layout };
    let mut options = ForwardOptions::default().causal(c.causal);
    if let Some(t) = c.tile {
        options = options.tile(t);
    }
    fa.forward(&stream, &q, &k, &v, &mut out, &mut dlse.slice_mut(0..), &options)?;
    let got_o = download(&stream, &dout)?;
    let got_lse = download(&stream, &dlse)?;

    let rows: Vec<usize> = match c.sample_rows {
        Some(n) => sample_rows(s.seqlen_q, n, &mut rng),
        None => (0..s.seqlen_q).collect(),
    };
    let ours: Vec<f64> = gather(&got_o, out_layout, &rows).into_iter().map(|x| x.to_f64()).collect();
    let ours_lse: Vec<f64> = (0..s.batch * s.heads_q)
        .flat_map(|bh| rows.iter().map(move |&r| bh * s.seqlen_q + r))
        .map(|i| got_lse[i] as f64)
        .collect();

    let att = Attention { shape: s, softmax_scale: 1.0 / (s.headdim as f64).sqrt(), causal: c.causal };
    let (hq, hk, hvv) = (host_view(qbuf, p.q), host_view(kbuf, p.k), host_view(vbuf, p.v));
    let sel = if c.sample_rows.is_some() { Rows::Sample(rows.clone()) } else { Rows::All };
    let reference = att.forward(&hq, &hk, &hvv, &sel)?;
    let plain = att.forward_plain::<T>(&hq, &hk, &hvv, &sel)?;

    let o_shape = [s.batch, rows.len(), s.heads_q, s.headdim];
    let o = compare("O", &o_shape, &ours, &plain.o, &reference.o, Tolerance::output::<T>(&reference.o));
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

fn device_view<T>(
    buf: &rustflash::cudarc::driver::CudaSlice<T>,
    (off, layout): (usize, Layout4),
) -> DeviceTensor<'_, T> {
    DeviceTensor { data: buf.slice(off..), layout }
}

fn host_view<T>(buf: &[T], (off, layout): (usize, Layout4)) -> HostView<'_, T> {
    HostView { data: &buf[off..], layout }
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
