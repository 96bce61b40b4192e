//! The attention entry points.

mod dispatch;
mod forward;

pub use forward::{FlashAttention, ForwardOptions, RawForward};
pub use rustflash_abi::ForwardTile;
