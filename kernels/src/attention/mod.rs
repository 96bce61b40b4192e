//! Exact attention (FlashAttention-2): a block owns a tile of query rows of one (batch, head)
//! and streams the key/value tiles through shared memory, keeping the softmax online, so memory
//! never grows with seqlen_q x seqlen_k.
//!
//! The kernels are composed from parts, each in its own file, so that a later feature
//! changes one part:
//!
//! | part | file | changes for |
//! | --- | --- | --- |
//! | block info: batch, head, query rows, tensor bases | [`block_info`] | variable-length batches |
//! | K/V source: where key tile `j` lives | [`kv_source`] | a paged KV cache |
//! | global → shared copies | [`tile_load`] | TMA on Hopper |
//! | shared-memory tile layout | [`smem_tile`] | |
//! | warp matrix multiply | [`warp_mma`] (trait), `mma_sm80` (`mma.sync` f16/bf16), `mma_tf32` (`mma.sync` TF32, 1x and 3x), [`mma_wmma`] (WMMA), [`mma_simt`] (CUDA-core f32) | `wgmma` (Hopper) |
//! | mask | [`mask`] | sliding windows |
//! | online softmax | [`online_softmax`] | softcapping |
//! | mainloop over key tiles | [`mainloop`] | pipelining, Hopper producer/consumer |
//! | epilogue: O and LSE | [`epilogue`] | |
//! | the forward kernel body | [`forward`] | |
//! | the backward's main body (dK, dV, atomic dQ) | [`backward`] | |
//! | the backward's deterministic dQ body | [`backward_dq`] | |
//! | the backward's pre-pass and dQ conversion | [`backward_rows`] | |
//! | entry points, one per configuration row | `entries` | |

pub mod block_info;
pub mod kv_source;
pub mod mask;
pub mod mma_simt;
pub mod mma_wmma;
pub mod online_softmax;
pub mod smem_tile;
pub mod warp_mma;

pub mod backward;
pub mod backward_dq;
pub mod backward_rows;
pub mod epilogue;
pub mod forward;
pub mod mainloop;
#[cfg(target_feature = "sm_80")]
pub mod mma_sm80;
#[cfg(target_feature = "sm_80")]
pub mod mma_tf32;
pub mod tile_load;

mod entries;
