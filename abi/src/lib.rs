//! Kernel launch parameters, `#[repr(C)]`, compiled into both the kernels (nvptx64) and the host
//! library (which passes them by value to `cuLaunchKernel`). One definition keeps the two sides
//! of the ABI from drifting apart.
#![no_std]

/// Everything the attention forward kernel reads. Strides and offsets are in elements, 64-bit,
/// so tensors of more than 2^31 elements work. Shapes: Q, O `(batch, seqlen_q, heads_q, d)`;
/// K, V `(batch, seqlen_k, heads_kv, d)`; LSE `(batch, heads_q, seqlen_q)`, contiguous f32.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ForwardParams {
    pub q: u64,
    pub k: u64,
    pub v: u64,
    pub o: u64,
    pub lse: u64,
    /// Strides of (batch, seq, head); the head dimension is contiguous.
    pub q_strides: [u64; 3],
    pub k_strides: [u64; 3],
    pub v_strides: [u64; 3],
    pub o_strides: [u64; 3],
    pub batch: u32,
    pub seqlen_q: u32,
    pub seqlen_k: u32,
    pub heads_q: u32,
    pub heads_kv: u32,
    /// The real head dimension (1..=256); the kernel pads it to its bucket.
    pub head_dim: u32,
    /// Blocks along the query sequence: `ceil(seqlen_q / BLOCK_M)`.
    pub num_m_blocks: u32,
    /// 1 for causal masking aligned to the bottom right.
    pub causal: u32,
    /// Width in bytes of Q/K/V global loads: 16, 8, 4 (cp.async) or 2 (plain loads), the largest
    /// that every address and stride is aligned to.
    pub load_bytes: u32,
    /// `softmax_scale · log2(e)`: scores go to base 2 for `ex2`.
    pub scale_log2: f32,
}
