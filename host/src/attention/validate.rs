//! Validation of an attention call: one pure function (no GPU) from the operands — device
//! address, shape and strides of each view — the options and, where known, the buffers' lengths
//! to what is launched. `forward` and `forward_raw` share it, and the backward will: the
//! per-view checks ([`View`], [`check_views`]) know nothing of attention.
//!
//! All arithmetic on caller input is checked (`checked_*` in 64 bits, or 128 bits where a product
//! of two 64-bit values is formed); nothing wraps.
//!
//! The rules are documented on [`ForwardPlan::new`]; [`View::check`] and [`check_views`] state
//! them for any operand.

use super::dispatch;
use super::forward::{ForwardOptions, RawForward};
use crate::Element;
use crate::error::{Error, Result};
use crate::layout::Layout;
use crate::tensor::RawTensor;
use rustflash_abi::{ForwardConfig, ForwardParams};

/// The most dimensions a view has (Q, K, V, O have 4, the LSE 3).
const MAX_RANK: usize = 4;

/// Byte offsets from a view's address stay below this, so they fit an `i64`.
pub(crate) const OFFSET_LIMIT: u128 = 1 << 63;

/// One operand as the checks see it.
pub(crate) struct View<'a> {
    pub name: &'static str,
    pub ptr: u64,
    pub shape: &'a [usize],
    pub strides: &'a [usize],
    pub elem_bytes: u64,
    /// The buffer's length in elements from `ptr`, where known.
    pub len: Option<usize>,
    pub output: bool,
    /// The last dimension's stride is 1 in the kernel, whatever is stored.
    pub contiguous_last: bool,
    /// Per dimension, the indices the kernel may form offsets for: at least `shape` (rows padded
    /// to a tile, the head dim to its bucket).
    pub reach: &'a [usize],
}

/// The bytes a non-empty view spans, `lo..=hi`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Span {
    pub lo: u64,
    pub hi: u64,
}

impl Span {
    fn overlaps(&self, other: &Span) -> bool {
        self.lo <= other.hi && other.lo <= self.hi
    }
}

impl<'a> View<'a> {
    /// A `(batch, seqlen, heads, headdim)` operand: the head dim contiguous.
    pub(crate) fn tensor4(
        name: &'static str,
        t: &'a RawTensor,
        elem_bytes: u64,
        len: Option<usize>,
        output: bool,
        reach: &'a [usize; 4],
    ) -> Self {
        View {
            name,
            ptr: t.ptr,
            shape: &t.layout.shape,
            strides: &t.layout.strides,
            elem_bytes,
            len,
            output,
            contiguous_last: true,
            reach,
        }
    }

    /// The `(batch, heads_q, seqlen_q)` f32 log-sum-exp: any strides.
    pub(crate) fn lse(t: &'a RawTensor<3>, len: Option<usize>, output: bool, reach: &'a [usize; 3]) -> Self {
        View {
            name: "lse",
            ptr: t.ptr,
            shape: &t.layout.shape,
            strides: &t.layout.strides,
            elem_bytes: 4,
            len,
            output,
            contiguous_last: false,
            reach,
        }
    }

    fn is_empty(&self) -> bool {
        self.shape.contains(&0)
    }

    /// The stride the kernel uses for dimension `i`: 0 for a dimension of size 1, 1 for a
    /// contiguous last dimension.
    pub(crate) fn effective_stride(&self, i: usize) -> u64 {
        if self.contiguous_last && i + 1 == self.shape.len() {
            1
        } else if self.shape[i] <= 1 {
            0
        } else {
            self.strides[i] as u64
        }
    }

    /// The effective strides of the first three dimensions (the kernels' `[u64; 3]`).
    pub(crate) fn strides3(&self) -> [u64; 3] {
        [0, 1, 2].map(|i| self.effective_stride(i))
    }

    /// `Σ (extent[i] − 1) · effective_stride(i)` in 128 bits; `None` past 2^128.
    fn max_offset(&self, extent: &[usize]) -> Option<u128> {
        extent.iter().enumerate().filter(|(_, n)| **n > 0).try_fold(0u128, |acc, (i, &n)| {
            acc.checked_add(((n - 1) as u128).checked_mul(self.effective_stride(i) as u128)?)
        })
    }

    fn describe(&self) -> String {
        format!("shape {:?} with strides {:?}", self.shape, self.strides)
    }

    /// Rules 1 to 5 for this view; its span, `None` when it is empty.
    fn check(&self) -> Result<Option<Span>> {
        if self.is_empty() {
            return Ok(None);
        }
        let last = self.shape.len() - 1;
        if self.contiguous_last && self.shape[last] > 1 && self.strides[last] != 1 {
            return Err(Error::invalid(
                self.name,
                "a contiguous last dimension (stride 1)",
                format!("strides {:?}", self.strides),
            ));
        }
        let e = self.elem_bytes as u128;
        // The highest offset of the padded box bounds every other; taking the larger of it and
        // the view's own highest offset keeps that true even for a caller whose reach is
        // smaller than the shape, so the u64 arithmetic below cannot truncate.
        let formed = self
            .max_offset(self.reach)
            .zip(self.max_offset(self.shape))
            .map(|(padded, exact)| padded.max(exact))
            .and_then(|m| m.checked_add(1)?.checked_mul(e));
        let Some(formed) = formed.filter(|&b| b <= OFFSET_LIMIT) else {
            let exact = match self.max_offset(self.shape).and_then(|m| m.checked_mul(e)) {
                Some(b) => format!("its highest element at byte offset {b}"),
                None => "its highest element beyond byte offset 2^128".into(),
            };
            return Err(Error::invalid(
                self.name,
                "byte offsets below 2^63, for its elements and the padded rows and head-dim columns \
                 the kernel tiles",
                format!("{} ({exact}, padded to {:?})", self.describe(), self.reach),
            ));
        };
        if (self.ptr as u128) + formed > 1u128 << 64 {
            return Err(Error::invalid(
                self.name,
                "an address range that ends below 2^64",
                format!("address {:#x} and {} bytes, {}", self.ptr, formed, self.describe()),
            ));
        }
        // Now every offset fits in 63 bits: u64 arithmetic below cannot overflow.
        let max = self.max_offset(self.shape).unwrap_or(0) as u64;
        if let Some(len) = self.len.filter(|&len| max >= len as u64) {
            return Err(Error::invalid(
                self.name,
                format!("a buffer of at least {} elements for its {}", max + 1, self.describe()),
                format!("{len} elements"),
            ));
        }
        if self.ptr % self.elem_bytes != 0 {
            return Err(Error::invalid(
                self.name,
                format!("an address aligned to its {}-byte element", self.elem_bytes),
                format!("{:#x}", self.ptr),
            ));
        }
        if self.output && !self.nested() {
            return Err(Error::invalid(
                self.name,
                "strides under which no two elements share an address (over the dimensions of size \
                 2 or more, sorted by stride, each stride larger than the offsets spanned by the \
                 smaller ones)",
                self.describe(),
            ));
        }
        // ptr + (max + 1) · e <= 2^64: the last byte's address fits.
        let hi = self.ptr + ((max + 1) * self.elem_bytes - 1);
        Ok(Some(Span { lo: self.ptr, hi }))
    }

    /// Rule 5: no two elements at one offset (sufficient test; see the module documentation).
    /// Only called once every offset is known to fit in 63 bits.
    fn nested(&self) -> bool {
        // On the stack: a launch allocates nothing. Views have at most `MAX_RANK` dimensions;
        // a longer one (none exists) is refused as if it overlapped.
        let mut dims = [(0u64, 0u64); MAX_RANK];
        let mut n = 0;
        for i in (0..self.shape.len()).filter(|&i| self.shape[i] > 1) {
            let Some(slot) = dims.get_mut(n) else { return false };
            *slot = (self.effective_stride(i), self.shape[i] as u64 - 1);
            n += 1;
        }
        let dims = &mut dims[..n];
        dims.sort_unstable();
        let mut span = 0u64;
        for &(stride, extent) in dims.iter() {
            if stride <= span {
                return false;
            }
            span += extent * stride;
        }
        true
    }
}

/// Rules 1 to 6 for every view; their spans (`None` for empty views), in order. With
/// `interleaved`, two operands whose address ranges meet still pass rule 6 when
/// [`interleaved_disjoint`] proves that they share no byte (the backward's packed gradients).
pub(crate) fn check_views<const N: usize>(
    views: &[View<'_>; N],
    interleaved: bool,
) -> Result<[Option<Span>; N]> {
    // An array, not a vector: validation allocates nothing unless it fails.
    let mut spans = [None; N];
    for (span, view) in spans.iter_mut().zip(views) {
        *span = view.check()?;
    }
    for (i, (a, sa)) in views.iter().zip(&spans).enumerate() {
        let Some(sa) = sa else { continue };
        if !a.output {
            continue;
        }
        for (j, (b, sb)) in views.iter().zip(&spans).enumerate() {
            let Some(sb) = sb else { continue };
            // Each pair of outputs once, every output against every input.
            if i == j || (b.output && j > i) {
                continue;
            }
            if sa.overlaps(sb) && !(interleaved && interleaved_disjoint(a, b)) {
                return Err(Error::invalid(
                    a.name,
                    format!("no byte in common with `{}` (an output may not overlap any operand)", b.name),
                    format!("bytes {:#x}..={:#x}, `{}` at {:#x}..={:#x}", sa.lo, sa.hi, b.name, sb.lo, sb.hi),
                ));
            }
        }
    }
    Ok(spans)
}

/// Whether two checked, non-empty views provably share no byte although their address ranges
/// meet: views interleaved in one buffer, as the gradients dQ, dK, dV of a packed
/// `(batch, seqlen, 3, heads, headdim)` tensor are. Sufficient, not exact.
///
/// For a threshold `t` (bytes), call a dimension of size 2 or more *outer* when its stride in
/// bytes is at least `t`, *inner* otherwise. A view's bytes then lie in blocks
/// `[ptr + m·g, ptr + m·g + w)`, `g` the gcd of the outer strides (in bytes) of both views and
/// `w` the bytes its inner dimensions span (its highest inner offset plus one element). With
/// `r = (ptr_b − ptr_a) mod g`, the two are disjoint when `w_a <= r` and `r + w_b <= g`: every
/// byte of `a` is at a residue in `[0, w_a)` from `ptr_a`, every byte of `b` in `[r, r + w_b)`.
/// Each stride of either view is tried as `t`.
pub(crate) fn interleaved_disjoint(a: &View<'_>, b: &View<'_>) -> bool {
    // (stride in bytes, extent − 1) of the dimensions of size 2 or more; on the stack.
    fn dims(v: &View<'_>) -> ([(u128, u128); MAX_RANK], usize) {
        let mut out = [(0u128, 0u128); MAX_RANK];
        let mut n = 0;
        for i in (0..v.shape.len()).filter(|&i| v.shape[i] > 1) {
            let Some(slot) = out.get_mut(n) else { break };
            *slot = (v.effective_stride(i) as u128 * v.elem_bytes as u128, v.shape[i] as u128 - 1);
            n += 1;
        }
        (out, n)
    }
    fn gcd(mut x: u128, mut y: u128) -> u128 {
        while y != 0 {
            (x, y) = (y, x % y);
        }
        x
    }
    if a.shape.len() > MAX_RANK || b.shape.len() > MAX_RANK {
        return false;
    }
    let ((da, na), (db, nb)) = (dims(a), dims(b));
    let (da, db) = (&da[..na], &db[..nb]);
    // Inner bytes spanned below `t`, and the gcd of the strides at or above it.
    let split = |d: &[(u128, u128)], t: u128, g: u128, e: u64| {
        let inner: u128 = d.iter().filter(|&&(s, _)| s < t).map(|&(s, n)| s * n).sum();
        let g = d.iter().filter(|&&(s, _)| s >= t).fold(g, |g, &(s, _)| gcd(g, s));
        (inner + e as u128, g)
    };
    da.iter().chain(db).map(|&(t, _)| t).filter(|&t| t > 0).any(|t| {
        let (wa, g) = split(da, t, 0, a.elem_bytes);
        let (wb, g) = split(db, t, g, b.elem_bytes);
        if g == 0 {
            return false;
        }
        let r = ((b.ptr as i128 - a.ptr as i128).rem_euclid(g as i128)) as u128;
        wa <= r && r + wb <= g
    })
}

/// `len` rounded up to a multiple of `tile`, which the kernel holds in 32 bits; else an error
/// naming `argument` (whose shape is `shape`).
fn padded_to_tile(
    argument: &'static str,
    what: &str,
    len: usize,
    tile: usize,
    unit: &str,
    shape: &[usize],
) -> Result<usize> {
    let u32_max = u32::MAX as usize;
    len.div_ceil(tile).checked_mul(tile).filter(|&p| p <= u32_max).ok_or_else(|| {
        Error::invalid(
            argument,
            format!(
                "{what} at most {} (held in 32 bits once rounded up to the {tile}-{unit} tile)",
                u32_max / tile * tile
            ),
            format!("shape {shape:?}"),
        )
    })
}

/// The widest access (16, 8, 4 or 2 bytes) that every address and every stride (in bytes) of
/// the non-empty views allows.
pub(crate) fn access_width(views: &[&View<'_>]) -> u32 {
    [16u128, 8, 4]
        .into_iter()
        .find(|&w| {
            views.iter().filter(|v| !v.is_empty()).all(|v| {
                let n = v.shape.len();
                v.ptr as u128 % w == 0
                    && (0..n - 1).all(|i| (v.effective_stride(i) as u128 * v.elem_bytes as u128) % w == 0)
            })
        })
        .unwrap_or(2) as u32
}

/// The sizes of an attention problem, read off the forward's five operands (the backward's
/// first five) and checked against each other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Problem {
    pub b: usize,
    pub sq: usize,
    pub sk: usize,
    pub hq: usize,
    pub hkv: usize,
    /// The head dim, 1..=256.
    pub d: usize,
    /// Its bucket ([`dispatch::bucket`]).
    pub bucket: usize,
}

impl Problem {
    /// The shape rules shared by the forward and the backward: `q` is `(batch, seqlen_q,
    /// heads_q, headdim)` with headdim 1..=256 (even in an empty problem); `k` is `(batch,
    /// seqlen_k, heads_kv, headdim)` with `heads_kv` dividing `heads_q` (0 only if `heads_q` is);
    /// `v` the shape of `k`, `out` that of `q`, `lse` `(batch, heads_q, seqlen_q)`. Each failure
    /// names its argument.
    pub(crate) fn new(
        q: &Layout<4>,
        k: &Layout<4>,
        v: &Layout<4>,
        out: &Layout<4>,
        lse: &Layout<3>,
    ) -> Result<Problem> {
        let [b, sq, hq, d] = q.shape;
        let [bk, sk, hkv, dk] = k.shape;
        let Some(bucket) = dispatch::bucket(d) else {
            return Err(Error::invalid("q", "head dim 1..=256", format!("shape {:?}", q.shape)));
        };
        if bk != b || dk != d {
            return Err(Error::invalid(
                "k",
                format!("shape ({b}, seqlen_k, heads_kv, {d}), batch and head dim as q's"),
                format!("shape {:?}", k.shape),
            ));
        }
        if (hkv == 0 && hq != 0) || (hkv != 0 && hq % hkv != 0) {
            return Err(Error::invalid(
                "k",
                format!("heads_kv dividing heads_q = {hq}"),
                format!("shape {:?}", k.shape),
            ));
        }
        same_shape("v", &v.shape, "k", &k.shape)?;
        same_shape("out", &out.shape, "q", &q.shape)?;
        if lse.shape != [b, hq, sq] {
            return Err(Error::invalid(
                "lse",
                format!("shape (batch, heads_q, seqlen_q) = {:?}", [b, hq, sq]),
                format!("shape {:?}", lse.shape),
            ));
        }
        Ok(Problem { b, sq, sk, hq, hkv, d, bucket })
    }

    /// `seqlen_q` and `seqlen_k` rounded up to `tile_q` and `tile_k` rows, each held in 32 bits
    /// by the kernels (else `q`, `k`), and `heads_q` below 2^32 (else `q`).
    pub(crate) fn padded_lengths(
        &self,
        tile_q: usize,
        tile_k: usize,
        q: &[usize; 4],
        k: &[usize; 4],
    ) -> Result<(usize, usize)> {
        let padded_q = padded_to_tile("q", "seqlen_q", self.sq, tile_q, "row", q)?;
        let padded_k = padded_to_tile("k", "seqlen_k", self.sk, tile_k, "key", k)?;
        if self.hq > u32::MAX as usize {
            return Err(Error::invalid("q", "heads_q below 2^32", format!("shape {q:?}")));
        }
        Ok((padded_q, padded_k))
    }
}

/// `argument`'s shape equals `other`'s (named `other_name`).
pub(crate) fn same_shape(
    argument: &'static str,
    shape: &[usize; 4],
    other_name: &str,
    other: &[usize; 4],
) -> Result<()> {
    if shape == other {
        return Ok(());
    }
    Err(Error::invalid(argument, format!("the shape of {other_name}, {other:?}"), format!("shape {shape:?}")))
}

/// The softmax scale (`1 / sqrt(head_dim)` by default) and its product with log2(e), both
/// finite; else an error naming `options.softmax_scale`.
pub(crate) fn softmax_scale(scale: Option<f32>, head_dim: usize) -> Result<(f32, f32)> {
    let scale = scale.unwrap_or(1.0 / (head_dim as f32).sqrt());
    let scale_log2 = scale * std::f32::consts::LOG2_E;
    if !scale.is_finite() || !scale_log2.is_finite() {
        return Err(Error::invalid(
            "options.softmax_scale",
            "a finite scale whose product with log2(e) is finite (|scale| < 2.36e38)",
            format!("{scale:?}"),
        ));
    }
    Ok((scale, scale_log2))
}

/// The product of `factors`, a grid of at most 2^31 − 1 blocks; else an error naming
/// `argument` (of shape `shape`), whose rule `what` states the product.
pub(crate) fn grid(
    argument: &'static str,
    factors: [usize; 3],
    shape: &[usize],
    what: impl FnOnce() -> String,
) -> Result<u32> {
    let [a, b, c] = factors;
    match a.checked_mul(b).and_then(|x| x.checked_mul(c)).filter(|&x| x <= i32::MAX as usize) {
        Some(blocks) => Ok(blocks as u32),
        None => Err(Error::invalid(
            argument,
            format!("{} at most 2^31 − 1 blocks", what()),
            format!("shape {shape:?}"),
        )),
    }
}

/// The forward operands' part of the kernels' argument: addresses and effective strides of
/// q, k, v, out and lse (checked views, in that order), the sizes, mask and scale. The launch
/// fields (`num_m_blocks`, `load_bytes`, `store_bytes`) are 0 for the caller to fill.
pub(crate) fn forward_params(
    p: &Problem,
    views: [&View<'_>; 5],
    causal: bool,
    scale_log2: f32,
) -> ForwardParams {
    let [q, k, v, o, lse] = views;
    let strides = View::strides3;
    // The caller bounded every size to 32 bits: the casts are exact.
    ForwardParams {
        q: q.ptr,
        k: k.ptr,
        v: v.ptr,
        o: o.ptr,
        lse: lse.ptr,
        q_strides: strides(q),
        k_strides: strides(k),
        v_strides: strides(v),
        o_strides: strides(o),
        lse_strides: strides(lse),
        seqlen_q: p.sq as u32,
        seqlen_k: p.sk as u32,
        heads_q: p.hq as u32,
        // heads_kv >= 1 when heads_q >= 1 (the shape rule).
        group: p.hq.checked_div(p.hkv).unwrap_or(0) as u32,
        head_dim: p.d as u32,
        num_m_blocks: 0,
        causal: causal as u32,
        load_bytes: 0,
        store_bytes: 0,
        scale_log2,
    }
}

/// Lengths, in elements, of the buffers behind a forward call's operands: each view must lie in
/// the first `len` elements from its address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ForwardLens {
    /// Elements of `q`'s buffer from its address.
    pub q: usize,
    /// Elements of `k`'s buffer from its address.
    pub k: usize,
    /// Elements of `v`'s buffer from its address.
    pub v: usize,
    /// Elements of `out`'s buffer from its address.
    pub out: usize,
    /// f32 elements of `lse`'s buffer from its address.
    pub lse: usize,
}

/// What a forward call launches, computed without a GPU by [`ForwardPlan::new`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ForwardPlan {
    /// The kernel's argument.
    pub params: ForwardParams,
    /// The kernel: its name, tile, threads and shared memory.
    pub config: &'static ForwardConfig,
    /// Blocks along `grid.x`: `batch · heads_q · ⌈seqlen_q / block_m⌉`, at most 2^31 − 1.
    pub blocks: u32,
}

impl ForwardPlan {
    /// Validates a forward call of element type `T` and plans its launch; `Ok(None)` when the
    /// problem is empty (batch, seqlen_q or heads_q is 0) and nothing is launched.
    ///
    /// `lens`: the buffers' lengths in elements, when known (`forward` knows them, `forward_raw`
    /// does not: its caller guarantees them). `shared_memory_per_block`: the most dynamic shared
    /// memory a block may use on the GPU (it chooses the tile).
    ///
    /// The rules, each failing as [`Error::InvalidArgument`] naming the argument at fault:
    /// - `q`: `(batch, seqlen_q, heads_q, headdim)`, head dim 1..=256 (FlashAttention's range: a
    ///   head dim of 0 is an error, even in an empty problem). `k`: `(batch, seqlen_k, heads_kv,
    ///   headdim)` with `heads_q` a multiple of `heads_kv` (`heads_kv` is 0 only if `heads_q` is);
    ///   `v`: the shape of `k`; `out`: the shape of `q`; `lse`: `(batch, heads_q, seqlen_q)`.
    /// - `options.softmax_scale`: finite, and finite times log2(e) (|scale| below about
    ///   2.36 · 10^38). Zero and negative scales are allowed.
    /// - Then, unless the problem is empty: the sizes the kernel holds in 32 bits — seqlen_q and
    ///   seqlen_k, each rounded up to its tile (`q`, `k`), heads_q (`q`) — and the grid,
    ///   `batch · heads_q · ⌈seqlen_q / block_m⌉` blocks, at most 2^31 − 1 (`q`).
    /// - Every view: the rules for one view below (extent, offsets below 2^63, buffer length,
    ///   alignment — 2 bytes for `T`, 4 for the f32 `lse` — and, for `out` and `lse`, no overlap
    ///   with themselves, each other or any input). With seqlen_k = 0, `k` and `v` are empty and
    ///   not read: the launch writes O = 0 and LSE = +inf.
    ///
    /// A forced tile that does not fit `shared_memory_per_block` (or none that does) is
    /// [`Error::SharedMemoryLimit`]. All arithmetic on the arguments is checked (64-bit
    /// `checked_*`, or 128 bits where two 64-bit values are multiplied): nothing wraps.
    ///
    /// # The rules for one view
    /// A view of shape `n` and strides `s` (in elements) at address `ptr` addresses the elements
    /// `ptr + e · Σ idx[i] · s[i]` for `idx < n`, `e` the element size. Strides are unsigned, so the
    /// lowest addressed element is `idx = 0`, at `ptr`, and the highest is at
    /// `ptr + e · Σ (n[i] − 1) · s[i]`. A dimension of size 1 contributes nothing whatever its
    /// stride, and the kernel is given stride 0 for it. An empty view (a size 0) addresses nothing:
    /// none of the following applies to it and the kernel reads or writes nothing through it.
    /// 1. A contiguous last dimension where the kernel assumes one (Q, K, V, O: stride 1 unless the
    ///    head dim is 1).
    /// 2. Every byte offset the kernel may form below 2^63 (so it fits an `i64`): the highest
    ///    element's, and that of the highest element of the padded box the kernel tiles — rows
    ///    rounded up to its tile, the head dim up to its bucket. `ptr` plus that offset stays below
    ///    2^64.
    /// 3. With a known buffer length `len` (elements from `ptr`): the highest element's offset is
    ///    below `len`.
    /// 4. `ptr` is a multiple of the element size.
    /// 5. An output addresses each of its elements at a different place. The test is sufficient, as
    ///    PyTorch's: over the dimensions of size at least 2, sorted by stride, each stride exceeds the
    ///    highest offset spanned by the dimensions before it (every row-major, column-major or
    ///    permuted layout, padded or not, passes; a stride 0 on a dimension of size 2 or more, or
    ///    strides that interleave, fail — some interleavings that happen to be injective too).
    /// 6. An output shares no byte with any other non-empty operand, input or output: their
    ///    address ranges `[lowest, highest]` (bytes) are disjoint. Inputs may overlap each other
    ///    (q, k and v packed in one buffer).
    ///
    /// The kernel is of `path`'s family for `T` ([`crate::KernelPath::family`]): on the Volta
    /// path bfloat16 is an error naming `q`. A forced tile class that does not fit
    /// `shared_memory_per_block` (or none that does) is [`Error::SharedMemoryLimit`].
    pub fn new<T: Element>(
        args: &RawForward,
        lens: Option<&ForwardLens>,
        options: &ForwardOptions,
        path: crate::KernelPath,
        shared_memory_per_block: usize,
    ) -> Result<Option<ForwardPlan>> {
        let p =
            Problem::new(&args.q.layout, &args.k.layout, &args.v.layout, &args.out.layout, &args.lse.layout)?;
        let scale_log2 = softmax_scale(options.softmax_scale, p.d)?.1;
        let Problem { b, sq, hq, hkv, bucket, .. } = p;
        if b == 0 || sq == 0 || hq == 0 {
            return Ok(None);
        }

        let config = dispatch::select(
            path,
            T::DTYPE,
            options.f32_precision,
            p.d,
            options.tile,
            shared_memory_per_block,
        )?;
        let (bm, bn) = (config.block_m, config.block_n);
        let m_blocks = sq.div_ceil(bm);
        let (padded_q, padded_k) = p.padded_lengths(bm, bn, &args.q.layout.shape, &args.k.layout.shape)?;
        let blocks = grid("q", [b, hq, m_blocks], &args.q.layout.shape, || {
            format!("batch · heads_q · ⌈seqlen_q / {bm}⌉")
        })?;

        let e = T::DTYPE.bytes() as u64;
        let len = |f: fn(&ForwardLens) -> usize| lens.map(f);
        let q_reach = [b, padded_q, hq, bucket];
        let kv_reach = [b, padded_k, hkv, bucket];
        let lse_reach = [b, hq, padded_q];
        let views = [
            View::tensor4("q", &args.q, e, len(|l| l.q), false, &q_reach),
            View::tensor4("k", &args.k, e, len(|l| l.k), false, &kv_reach),
            View::tensor4("v", &args.v, e, len(|l| l.v), false, &kv_reach),
            View::tensor4("out", &args.out, e, len(|l| l.out), true, &q_reach),
            View::lse(&args.lse, len(|l| l.lse), true, &lse_reach),
        ];
        check_views(&views, false)?;
        let [vq, vk, vv, vo, vl] = &views;
        let mut params = forward_params(&p, [vq, vk, vv, vo, vl], options.causal, scale_log2);
        params.num_m_blocks = m_blocks as u32;
        params.load_bytes = access_width(&[vq, vk, vv]);
        params.store_bytes = access_width(&[vo]);
        Ok(Some(ForwardPlan { params, config, blocks }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::Layout;
    use half::f16;
    use rustflash_abi::ForwardTile;

    const H100: usize = 227 * 1024;

    fn contiguous<const N: usize>(ptr: u64, shape: [usize; N]) -> RawTensor<N> {
        RawTensor { ptr, layout: Layout::contiguous(shape) }
    }

    /// A valid call of shape (b, s, h, d) on separate contiguous buffers.
    fn call(b: usize, sq: usize, sk: usize, h: usize, d: usize) -> RawForward {
        let gb = 1u64 << 30;
        RawForward {
            q: contiguous(gb, [b, sq, h, d]),
            k: contiguous(2 * gb, [b, sk, h, d]),
            v: contiguous(3 * gb, [b, sk, h, d]),
            out: contiguous(4 * gb, [b, sq, h, d]),
            lse: contiguous(5 * gb, [b, h, sq]),
        }
    }

    fn plan(a: &RawForward) -> Result<Option<ForwardPlan>> {
        ForwardPlan::new::<f16>(a, None, &ForwardOptions::default(), crate::KernelPath::Hopper, H100)
    }

    fn argument(r: Result<Option<ForwardPlan>>) -> &'static str {
        match r {
            Err(Error::InvalidArgument { argument, .. }) => argument,
            other => panic!("expected an invalid argument, got {other:?}"),
        }
    }

    #[test]
    fn access_width_follows_alignment() {
        let width = |ptr: u64, strides: [usize; 4]| {
            let t = RawTensor { ptr, layout: Layout { shape: [2, 4, 2, 8], strides } };
            access_width(&[&View::tensor4("q", &t, 2, None, false, &[2, 4, 2, 8])])
        };
        let c = [64, 16, 8, 1];
        assert_eq!(width(0x1000, c), 16);
        assert_eq!(width(0x1008, c), 8);
        // An odd head dim packed: seq stride 3·59, head stride 59 elements.
        assert_eq!(width(0x1000, [1000, 177, 59, 1]), 2);
        assert_eq!(width(0x1000, [1000, 178, 60, 1]), 4);
        assert_eq!(width(0x1000, [1000, 180, 60, 1]), 8);
        // A dimension of size 1 does not count.
        let t = RawTensor { ptr: 0x1000, layout: Layout { shape: [1, 4, 2, 8], strides: [3, 16, 8, 1] } };
        assert_eq!(access_width(&[&View::tensor4("q", &t, 2, None, false, &[1, 4, 2, 8])]), 16);
    }

    #[test]
    fn a_view_may_end_at_the_top_of_the_address_space() {
        let mut a = call(1, 1, 1, 1, 1);
        a.q.ptr = u64::MAX - 63; // 64 bytes: the padded head dim (bucket 32) of one row.
        assert!(plan(&a).unwrap().is_some());
        a.q.ptr += 2;
        assert_eq!(argument(plan(&a)), "q");
    }

    #[test]
    fn a_plain_call_plans_its_launch() {
        let p = plan(&call(2, 300, 200, 4, 64)).unwrap().unwrap();
        assert_eq!(p.blocks, 2 * 4 * 3);
        assert_eq!(p.params.q_strides, [300 * 256, 256, 64]);
        assert_eq!(p.params.lse_strides, [4 * 300, 300, 1]);
        assert_eq!((p.params.load_bytes, p.params.store_bytes), (16, 16));
        assert_eq!(p.params.group, 1);
        assert!(p.config.name.contains("_f16_d64_"));
    }

    #[test]
    fn empty_problems_launch_nothing() {
        for (b, sq, h) in [(0, 5, 2), (2, 0, 2), (2, 5, 0)] {
            let mut a = call(b, sq, 7, h, 64);
            // Nothing is addressed: no address is checked.
            a.q.ptr = 1;
            a.out.layout.strides = [0; 4];
            assert_eq!(plan(&a).unwrap(), None);
        }
        // ... but shapes are.
        assert_eq!(argument(plan(&call(0, 5, 7, 2, 0))), "q");
        let mut a = call(0, 5, 7, 2, 64);
        a.lse.layout.shape = [0, 2, 6];
        assert_eq!(argument(plan(&a)), "lse");
    }

    #[test]
    fn no_keys_is_a_launch_that_reads_no_key() {
        let mut a = call(1, 5, 0, 2, 64);
        a.k.ptr = 3;
        let p = plan(&a).unwrap().unwrap();
        assert_eq!(p.params.seqlen_k, 0);
        assert_eq!(p.params.load_bytes, 16);
    }

    #[test]
    fn size_one_dimensions_ignore_their_strides() {
        let mut a = call(1, 1, 1, 1, 8);
        for t in [&mut a.q, &mut a.k, &mut a.v, &mut a.out] {
            t.layout.strides = [u64::MAX as usize, 1 << 62, 3, 1];
        }
        a.lse.layout.strides = [usize::MAX; 3];
        let p = plan(&a).unwrap().unwrap();
        assert_eq!(p.params.q_strides, [0, 0, 0]);
        assert_eq!(p.params.lse_strides, [0, 0, 0]);
    }

    #[test]
    fn self_overlap_is_found() {
        let nested = |shape: &[usize], strides: &[usize]| {
            View {
                name: "x",
                ptr: 0,
                shape,
                strides,
                elem_bytes: 2,
                len: None,
                output: true,
                contiguous_last: false,
                reach: shape,
            }
            .nested()
        };
        assert!(nested(&[2, 3, 4], &[12, 4, 1]));
        assert!(nested(&[2, 3, 4], &[1, 2, 6]));
        assert!(nested(&[2, 1, 4], &[4, 0, 1]));
        assert!(!nested(&[2, 3], &[0, 1]));
        assert!(!nested(&[2, 3], &[2, 1]));
        assert!(!nested(&[3, 3], &[1, 1]));
        // Injective but interleaved: rejected by the sufficient test.
        assert!(!nested(&[3, 3], &[3, 4]));
    }

    #[test]
    fn forced_tiles_pad_to_their_own_rows() {
        let a = call(1, 65, 33, 1, 32);
        let small = ForwardPlan::new::<f16>(
            &a,
            None,
            &ForwardOptions::default().tile(ForwardTile::Small),
            crate::KernelPath::Hopper,
            H100,
        )
        .unwrap()
        .unwrap();
        assert_eq!(small.params.num_m_blocks, 2);
        assert_eq!(small.config.tile, ForwardTile::Small);
    }
}
