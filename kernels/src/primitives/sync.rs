//! Barriers.
//!
//! Every barrier must be reached by all threads it names, in code they all execute: an aligned
//! barrier in divergent code is undefined behaviour and is miscompiled (rust-lang/rust#137086).

use core::arch::asm;

/// `bar.sync 0`: waits for every thread of the block; orders their shared and global memory
/// accesses before it against those after it.
#[inline(always)]
pub fn block_barrier() {
    // SAFETY: no operands; the default asm options keep memory accesses on their side of it.
    unsafe { asm!("bar.sync 0;") }
}

/// `bar.sync id, threads`: waits for `threads` threads (a multiple of 32) of the block on
/// barrier `id` (1..16), so groups of warps can synchronise without the whole block.
#[inline(always)]
pub fn named_barrier(id: u32, threads: u32) {
    // SAFETY: as for `block_barrier`; the caller keeps `id` and `threads` consistent.
    unsafe { asm!("bar.sync {id}, {n};", id = in(reg32) id, n = in(reg32) threads) }
}

/// `bar.warp.sync`: reconverges the 32 lanes of the warp and orders their memory accesses.
#[inline(always)]
pub fn warp_barrier() {
    // SAFETY: no operands.
    unsafe { asm!("bar.warp.sync 0xffffffff;") }
}
