//! Exact attention (FlashAttention-2): a block owns a tile of query rows of one (batch, head)
//! and streams the key/value tiles through shared memory, keeping the softmax online, so memory
//! never grows with seqlen_q x seqlen_k.
//!
//! The parts are separate so other instruction families can reuse them: [`smem_tile`] (swizzled
//! shared-memory tiles), [`tile_load`] (the global-to-shared pipeline), [`masking`],
//! [`online_softmax`] (works on rows of values, not on a fragment layout), and one matrix-multiply
//! module per instruction family ([`mma_sm80`] for `mma.sync`; WMMA and `wgmma` slot in beside it).

pub mod masking;
#[cfg(target_feature = "sm_80")]
pub mod mma_sm80;
pub mod online_softmax;
pub mod smem_tile;
pub mod tile_load;

#[cfg(target_feature = "sm_80")]
mod forward_entries;
#[cfg(target_feature = "sm_80")]
mod forward_sm80;
