//! The attention entry points.

mod backward;
pub(crate) mod dispatch;
mod forward;
mod validate;
mod validate_backward;

pub use backward::{BackwardOptions, RawBackward, SavedForward};
pub use forward::{FlashAttention, ForwardOptions, RawForward};
pub use rustflash_abi::{
    BackwardConfig, BackwardParams, BackwardTile, BackwardWorkspace, Dtype, ForwardConfig, ForwardParams,
    ForwardTile, MmaFamily,
};
pub use validate::{ForwardLens, ForwardPlan};
pub use validate_backward::{
    BACKWARD_WORKSPACE_ALIGN, BackwardKernel, BackwardLaunch, BackwardLens, BackwardPlan,
};
