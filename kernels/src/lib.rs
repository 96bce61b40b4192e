//! rustflash's GPU kernels.
//!
//! This crate is compiled only for `nvptx64-nvidia-cuda`, once per target architecture
//! (`-Ctarget-cpu=sm_70`, `sm_80`, `sm_90a`), by `kernel-builder` from the host crate's build
//! script. Code that needs an instruction an architecture lacks is gated with
//! `#[cfg(target_feature = "sm_80")]` (the features are cumulative: `sm_90a` implies `sm_80`).
#![no_std]
#![feature(abi_ptx, asm_experimental_arch, stdarch_nvptx)]
#![warn(clippy::undocumented_unsafe_blocks)]

#[macro_use]
pub mod kernel_attrs;

pub mod attention;
pub mod element;
// Kernels only the tests and the benchmark launch: built with the `testing` feature, never shipped.
#[cfg(feature = "testing")]
pub mod naive_softmax;
pub mod primitives;
#[cfg(feature = "testing")]
pub mod selftest;
#[cfg(feature = "testing")]
pub mod smoke;

/// Kernels cannot unwind or print: a panic (an out-of-range index, say) stops the kernel with a
/// trap, which the host sees as a launch error on its stream.
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    // SAFETY: `trap` takes no arguments and only ends the kernel.
    unsafe { core::arch::nvptx::trap() }
}
