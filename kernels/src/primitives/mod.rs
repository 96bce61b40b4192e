//! Device primitives: thin, named wrappers over the PTX instructions the kernels are built from.
//!
//! Each wrapper is `#[inline(always)]` and compiles to the instruction it names. Instructions an
//! architecture lacks are only compiled into the modules that have them: `ldmatrix` and
//! `mma.sync` m16n8k16 need `sm_80` (the build has no `sm_75` module); [`cp_async`] copies
//! through registers on `sm_70`.

pub mod convert;
pub mod cp_async;
pub mod global;
pub mod index;
#[cfg(target_feature = "sm_80")]
pub mod ldmatrix;
pub mod math;
#[cfg(target_feature = "sm_80")]
pub mod mma;
pub mod shared;
pub mod sync;
pub mod warp;
pub mod wmma;
