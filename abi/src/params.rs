//! The forward kernel's launch parameters.

/// Everything the attention forward kernel reads. Addresses are device addresses in bytes;
/// strides are in elements, 64-bit, so tensors of more than 2^31 elements work. Shapes:
/// Q, O `(batch, seqlen_q, heads_q, d)`; K, V `(batch, seqlen_k, heads_kv, d)`; LSE
/// `(batch, heads_q, seqlen_q)` f32.
///
/// What the host guarantees (`host/src/attention/validate.rs`): every element these name lies
/// inside its buffer; every byte offset of the padded box the kernel tiles (rows rounded up to
/// the block, the head dim to its bucket) is below 2^63; the padded sequence lengths fit in
/// `u32`; the stride of a dimension of size 1 is 0; `group >= 1`; when `seqlen_k` is 0, `k` and
/// `v` are not checked at all (not even aligned), so the kernel must not touch them.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ForwardParams {
    /// Device address, in bytes, of Q's element `(0, 0, 0, 0)`.
    pub q: u64,
    /// Device address, in bytes, of K's element `(0, 0, 0, 0)`.
    pub k: u64,
    /// Device address, in bytes, of V's element `(0, 0, 0, 0)`.
    pub v: u64,
    /// Device address, in bytes, of O's element `(0, 0, 0, 0)`.
    pub o: u64,
    /// Device address, in bytes, of the LSE's element `(0, 0, 0)`.
    pub lse: u64,
    /// Strides of (batch, seq, head); the head dimension is contiguous.
    pub q_strides: [u64; 3],
    /// Strides of K's (batch, seq, head), in elements; the head dimension is contiguous.
    pub k_strides: [u64; 3],
    /// Strides of V's (batch, seq, head), in elements; the head dimension is contiguous.
    pub v_strides: [u64; 3],
    /// Strides of O's (batch, seq, head), in elements; the head dimension is contiguous.
    pub o_strides: [u64; 3],
    /// Strides of (batch, head, seq) of the LSE, in f32 elements.
    pub lse_strides: [u64; 3],
    /// Query rows per (batch, head): the sequence length of Q, O and the LSE.
    pub seqlen_q: u32,
    /// Keys per (batch, K/V head); when 0 the kernel writes O = 0 and LSE = +inf.
    pub seqlen_k: u32,
    /// Query heads (also O's and the LSE's); the grid is `batch · heads_q · num_m_blocks` blocks.
    pub heads_q: u32,
    /// Query heads per K/V head (`heads_q / heads_kv`, GQA/MQA).
    pub group: u32,
    /// The real head dimension (1..=256); the kernel pads it to its bucket.
    pub head_dim: u32,
    /// Blocks along the query sequence: `ceil(seqlen_q / block_m)`.
    pub num_m_blocks: u32,
    /// 1 for causal masking aligned to the bottom right.
    pub causal: u32,
    /// Width in bytes of Q/K/V global loads: 16, 8, 4 (cp.async) or 2, the largest that every
    /// address and row stride of Q, K and V is aligned to.
    pub load_bytes: u32,
    /// Width in bytes of O's global stores (16, 8, 4 or 2), likewise for O.
    pub store_bytes: u32,
    /// `softmax_scale · log2(e)`: scores go to base 2 for `ex2`. Finite.
    pub scale_log2: f32,
}
