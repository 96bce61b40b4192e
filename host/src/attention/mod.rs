//! The attention entry points.

mod dispatch;
mod forward;
mod validate;

pub use forward::{FlashAttention, ForwardOptions, RawForward};
pub use rustflash_abi::{ForwardConfig, ForwardParams, ForwardTile};
pub use validate::{ForwardLens, ForwardPlan};
