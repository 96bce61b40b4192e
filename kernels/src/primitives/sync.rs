//! Barriers.
//!
//! Every barrier must be reached by all threads it names, in code they all execute: an aligned
//! barrier in divergent code is undefined behaviour and is miscompiled (rust-lang/rust#137086).
//! That is why these are `unsafe fn`: the compiler cannot check it, every call site states why
//! it holds.

use core::arch::asm;

/// `bar.sync 0`: waits for every thread of the block; orders their shared and global memory
/// accesses before it against those after it.
///
/// # Safety
/// Every thread of the block reaches this call, the same number of times, in code they all
/// execute (no thread has returned or is in a branch that others skip).
#[inline(always)]
pub unsafe fn block_barrier() {
    // SAFETY: no operands; the default asm options keep memory accesses on their side of it.
    // The caller guarantees the whole block arrives.
    unsafe { asm!("bar.sync 0;") }
}

/// `bar.warp.sync`: reconverges the 32 lanes of the warp and orders their memory accesses.
///
/// # Safety
/// All 32 lanes of the warp reach this call (the member mask names every lane): none has
/// returned or is in a branch the others skip.
#[inline(always)]
pub unsafe fn warp_barrier() {
    // SAFETY: no operands; the caller guarantees every lane of the warp arrives.
    unsafe { asm!("bar.warp.sync 0xffffffff;") }
}
