//! The attention entry points.

mod forward;
mod tiles;

pub use forward::{FlashAttention, ForwardOptions, RawForward};
pub use tiles::ForwardTile;
