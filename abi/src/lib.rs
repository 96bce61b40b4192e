//! What the kernels and the host library must agree on, compiled into both (nvptx64 and the
//! host): the launch parameters (`#[repr(C)]`, passed by value to `cuLaunchKernel`) and the
//! tables of kernel configurations. One definition keeps the two sides of the ABI from drifting
//! apart: the kernels' entry points and the host's dispatch are both generated from
//! [`forward_configs!`] and [`backward_configs!`].
#![no_std]
#![warn(missing_docs)]

mod backward;
mod config;
mod params;

pub use backward::{
    BACKWARD_CONFIGS, BackwardConfig, BackwardParams, BackwardTile, BackwardWorkspace, ROW_KERNEL_THREADS,
    default_atomic_dq,
};
pub use config::{Dtype, FORWARD_CONFIGS, ForwardConfig, ForwardTile, MmaFamily};
pub use params::ForwardParams;
