//! Which rows a block owns: its (batch, head) pair, its query rows, and where its slices of
//! Q, O and the LSE and its head's K and V start. The only part that knows how batches are laid
//! out: variable-length batches (cumulative sequence offsets) change this file alone.

use crate::element::Element;
use rustflash_abi::ForwardParams;

/// One block's place in the problem.
#[derive(Clone, Copy)]
pub struct BlockInfo {
    pub batch: u32,
    pub head: u32,
    pub kv_head: u32,
    /// First query row of the block.
    pub m0: u32,
    /// Query rows of the block that exist (`<= block_m`; fewer in the last block).
    pub rows: u32,
    pub seqlen_q: u32,
    pub seqlen_k: u32,
}

impl BlockInfo {
    /// The block `block` of a grid of `num_m_blocks · heads_q · batch` blocks, `block_m` query
    /// rows each. Within a (batch, head), the last query tiles come first: with causal masking
    /// they see the most keys, and starting the longest blocks first balances the tail.
    #[inline(always)]
    pub fn new(p: &ForwardParams, block: u32, block_m: u32) -> Self {
        let m_block = p.num_m_blocks - 1 - block % p.num_m_blocks;
        let bh = block / p.num_m_blocks;
        let (head, batch) = (bh % p.heads_q, bh / p.heads_q);
        let m0 = m_block * block_m;
        BlockInfo {
            batch,
            head,
            kv_head: head / p.group,
            m0,
            rows: (p.seqlen_q - m0).min(block_m),
            seqlen_q: p.seqlen_q,
            seqlen_k: p.seqlen_k,
        }
    }

    /// Byte address of element `(batch, seq, head, 0)` of a tensor of `T`.
    #[inline(always)]
    fn at<T: Element>(base: u64, strides: &[u64; 3], batch: u32, seq: u32, head: u32) -> u64 {
        base + T::BYTES as u64
            * (batch as u64 * strides[0] + seq as u64 * strides[1] + head as u64 * strides[2])
    }

    /// The block's first query row of Q.
    #[inline(always)]
    pub fn q_rows<T: Element>(&self, p: &ForwardParams) -> *const u8 {
        Self::at::<T>(p.q, &p.q_strides, self.batch, self.m0, self.head) as *const u8
    }

    /// The block's first query row of O.
    #[inline(always)]
    pub fn o_rows<T: Element>(&self, p: &ForwardParams) -> *mut u8 {
        Self::at::<T>(p.o, &p.o_strides, self.batch, self.m0, self.head) as *mut u8
    }

    /// Key 0 of the block's K/V head, in K and in V.
    #[inline(always)]
    pub fn kv_start<T: Element>(&self, p: &ForwardParams) -> (*const u8, *const u8) {
        (
            Self::at::<T>(p.k, &p.k_strides, self.batch, 0, self.kv_head) as *const u8,
            Self::at::<T>(p.v, &p.v_strides, self.batch, 0, self.kv_head) as *const u8,
        )
    }

    /// The LSE of the block's first query row (f32).
    #[inline(always)]
    pub fn lse_rows(&self, p: &ForwardParams) -> *mut f32 {
        let s = &p.lse_strides;
        let off = self.batch as u64 * s[0] + self.head as u64 * s[1] + self.m0 as u64 * s[2];
        (p.lse + 4 * off) as *mut f32
    }
}
