//! Which rows a block owns: its (batch, head) pair, its query rows (the forward and the
//! backward's dQ kernel) or its keys (the backward's main kernel), and where its slices of the
//! Q-shaped tensors (Q, O, dO, dQ, the LSE and the backward's workspace rows) and of its head's
//! K-shaped ones (K, V, dK, dV) start. The only part that knows how batches are laid out:
//! variable-length batches (cumulative sequence offsets) change this file alone.

use super::kv_source::KvSource;
use super::tile_load::GlobalTile;
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
        Self::at_tile(p, bh / p.heads_q, bh % p.heads_q, m_block, block_m)
    }

    /// Query tile `m_block` of query head `head` of batch `batch`.
    #[inline(always)]
    pub fn at_tile(p: &ForwardParams, batch: u32, head: u32, m_block: u32, block_m: u32) -> Self {
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

    /// The block's first query row of a Q-shaped tensor of `T` at `base` (Q, O, dO, dQ).
    #[inline(always)]
    pub fn query_rows<T: Element>(&self, base: u64, strides: &[u64; 3]) -> *mut u8 {
        Self::at::<T>(base, strides, self.batch, self.m0, self.head) as *mut u8
    }

    /// The block's rows of a Q-shaped tensor of `T` at `base` (Q, dO), `cols` elements each, as
    /// the tile loads take them.
    #[inline(always)]
    pub fn query_tile<T: Element>(&self, base: u64, strides: &[u64; 3], cols: u32) -> GlobalTile {
        GlobalTile {
            src: self.query_rows::<T>(base, strides),
            row_stride: T::BYTES as u64 * strides[1],
            rows_valid: self.rows,
            cols_valid: cols,
        }
    }

    /// Index of the block's first query row in the backward workspace's row arrays
    /// (`(batch, heads_q, seqlen_q_rounded)`, row-major).
    #[inline(always)]
    pub fn workspace_row(&self, p: &ForwardParams, seqlen_q_rounded: u32) -> u64 {
        (self.batch as u64 * p.heads_q as u64 + self.head as u64) * seqlen_q_rounded as u64 + self.m0 as u64
    }

    /// Byte address of element `(batch, seq, head, 0)` of a tensor of `T`.
    #[inline(always)]
    fn at<T: Element>(base: u64, strides: &[u64; 3], batch: u32, seq: u32, head: u32) -> u64 {
        base + T::BYTES as u64
            * (batch as u64 * strides[0] + seq as u64 * strides[1] + head as u64 * strides[2])
    }

    /// The block's first query row of O.
    #[inline(always)]
    pub fn o_rows<T: Element>(&self, p: &ForwardParams) -> *mut u8 {
        self.query_rows::<T>(p.o, &p.o_strides)
    }

    /// Where the block's K/V head's keys live.
    #[inline(always)]
    pub fn kv_source<T: Element>(&self, p: &ForwardParams) -> KvSource {
        kv_source::<T>(p, self.batch, self.kv_head)
    }

    /// The LSE of the block's first query row (f32).
    #[inline(always)]
    pub fn lse_rows(&self, p: &ForwardParams) -> *mut f32 {
        let s = &p.lse_strides;
        let off = self.batch as u64 * s[0] + self.head as u64 * s[1] + self.m0 as u64 * s[2];
        (p.lse + 4 * off) as *mut f32
    }
}

/// One block of keys of the backward's main kernel: `block_n` keys of one (batch, K/V head),
/// which walks the query tiles of every query head of its group.
#[derive(Clone, Copy)]
pub struct KeyBlock {
    pub batch: u32,
    pub kv_head: u32,
    /// First key of the block.
    pub n0: u32,
    /// Keys of the block that exist (`<= block_n`).
    pub keys: u32,
}

impl KeyBlock {
    /// The block `block` of a grid of `num_n_blocks · heads_kv · batch` blocks. Within a (batch,
    /// head), the first key tiles come first: with causal masking they see the most queries.
    #[inline(always)]
    pub fn new(p: &ForwardParams, block: u32, num_n_blocks: u32, block_n: u32) -> Self {
        let n_block = block % num_n_blocks;
        let bh = block / num_n_blocks;
        let heads_kv = p.heads_q / p.group;
        let n0 = n_block * block_n;
        KeyBlock { batch: bh / heads_kv, kv_head: bh % heads_kv, n0, keys: (p.seqlen_k - n0).min(block_n) }
    }

    /// Where the block's keys live (key 0 of its head: tiles are numbered from the sequence's
    /// start).
    #[inline(always)]
    pub fn kv_source<T: Element>(&self, p: &ForwardParams) -> KvSource {
        kv_source::<T>(p, self.batch, self.kv_head)
    }

    /// The block's first key of a K-shaped tensor of `T` at `base` (dK, dV).
    #[inline(always)]
    pub fn key_rows<T: Element>(&self, base: u64, strides: &[u64; 3]) -> *mut u8 {
        BlockInfo::at::<T>(base, strides, self.batch, self.n0, self.kv_head) as *mut u8
    }

    /// Query tile `m_block` of the group's `g`-th query head.
    #[inline(always)]
    pub fn query_tile(&self, p: &ForwardParams, g: u32, m_block: u32, block_m: u32) -> BlockInfo {
        BlockInfo::at_tile(p, self.batch, self.kv_head * p.group + g, m_block, block_m)
    }
}

/// K and V of head `kv_head` of batch `batch`.
#[inline(always)]
fn kv_source<T: Element>(p: &ForwardParams, batch: u32, kv_head: u32) -> KvSource {
    KvSource {
        k: BlockInfo::at::<T>(p.k, &p.k_strides, batch, 0, kv_head) as *const u8,
        v: BlockInfo::at::<T>(p.v, &p.v_strides, batch, 0, kv_head) as *const u8,
        k_stride: T::BYTES as u64 * p.k_strides[1],
        v_stride: T::BYTES as u64 * p.v_strides[1],
        seqlen_k: p.seqlen_k,
    }
}
