//! rustflash: exact attention (FlashAttention), forward and backward, with GPU kernels written
//! in Rust and compiled to PTX by rustc.
//!
//! The kernels live in the `kernels/` crate; `build.rs` compiles them for `sm_70` (Volta,
//! Turing), `sm_80` (Ampere and newer) and `sm_90a` (Hopper) and embeds the PTX here.

pub mod ptx;
