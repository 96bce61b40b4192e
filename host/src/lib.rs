//! rustflash: exact attention (FlashAttention), forward and backward, with GPU kernels written
//! in Rust and compiled to PTX by rustc.
//!
//! The kernels live in the `kernels/` crate; `build.rs` compiles them for `sm_70` (Volta,
//! Turing), `sm_80` (Ampere and newer) and `sm_90a` (Hopper) and embeds the PTX here. A
//! [`Device`] picks the module for its GPU ([`KernelPath::native`]) or one forced by the caller.

#![warn(missing_docs)]

mod attention;
mod device;
mod element;
mod error;
mod kernel_path;
pub mod layout;
pub mod ptx;
mod tensor;

pub use attention::{
    BACKWARD_WORKSPACE_ALIGN, BackwardConfig, BackwardKernel, BackwardLaunch, BackwardLens, BackwardOptions,
    BackwardParams, BackwardPlan, BackwardTile, BackwardWorkspace, Dtype, FlashAttention, ForwardConfig,
    ForwardLens, ForwardOptions, ForwardParams, ForwardPlan, ForwardTile, MmaFamily, RawBackward, RawForward,
    SavedForward,
};
pub use device::{Device, DeviceInfo, device_count, driver_available};
pub use element::{Element, F32Precision};
pub use error::{Error, Result};
pub use kernel_path::KernelPath;
pub use tensor::{DeviceTensor, DeviceTensorMut, RawTensor};

/// `cudarc`, re-exported so callers use the same version for buffers and streams.
pub use cudarc;
