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

/// `bar.sync id, threads`: waits for `threads` threads (a multiple of 32) of the block on
/// barrier `id` (1..16), so groups of warps can synchronise without the whole block.
///
/// # Safety
/// `id` is below 16 and `threads` a nonzero multiple of 32, no more than the block has; exactly
/// `threads` threads (whole warps, every lane of each) reach this call with the same `id` and
/// `threads`, and barrier `id` is not used with another count at the same time.
#[inline(always)]
pub unsafe fn named_barrier(id: u32, threads: u32) {
    // SAFETY: as for `block_barrier`; the caller keeps `id` and `threads` consistent and brings
    // exactly `threads` threads.
    unsafe { asm!("bar.sync {id}, {n};", id = in(reg32) id, n = in(reg32) threads) }
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
