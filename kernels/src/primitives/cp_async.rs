//! `cp.async` (sm_80): global-to-shared copies that bypass registers and overlap with compute.
//!
//! Copies are issued, grouped with [`commit_group`], and awaited with [`wait_group`]`::<N>()`,
//! which leaves at most `N` newest groups in flight: a pipeline of N + 1 stages.

use core::arch::asm;

/// Copies `BYTES` (4, 8 or 16) bytes from global `src` to shared `dst`, reading only the first
/// `src_bytes` of them and zero-filling the rest: rows past the end of a tensor become zeros
/// without touching memory past its end.
///
/// # Safety
/// `dst` is `BYTES`-aligned shared memory; `src` is `BYTES`-aligned and `src_bytes <= BYTES` of it
/// are readable. `src` must be a valid global address even when `src_bytes == 0`: callers clamp it.
#[inline(always)]
pub unsafe fn cp_async<const BYTES: u32>(dst: u32, src: *const u8, src_bytes: u32) {
    const { assert!(BYTES == 4 || BYTES == 8 || BYTES == 16, "cp.async copies 4, 8 or 16 bytes") };
    // `.cg` (cache in L2 only) exists for 16-byte copies; smaller ones must use `.ca`.
    // SAFETY: the caller guarantees aligned shared `dst`, a valid global `src` and
    // `src_bytes <= BYTES` readable bytes there.
    unsafe {
        if BYTES == 16 {
            asm!("cp.async.cg.shared.global [{d}], [{s}], 16, {n};",
                d = in(reg32) dst, s = in(reg64) src, n = in(reg32) src_bytes, options(nostack));
        } else {
            asm!("cp.async.ca.shared.global [{d}], [{s}], {b}, {n};",
                d = in(reg32) dst, s = in(reg64) src, b = const BYTES, n = in(reg32) src_bytes, options(nostack));
        }
    }
}

/// Closes the group of copies issued since the last commit.
#[inline(always)]
pub fn commit_group() {
    // SAFETY: no operands.
    unsafe { asm!("cp.async.commit_group;", options(nostack)) }
}

/// Waits until at most `PENDING` committed groups are still in flight. The copies are then
/// visible to the issuing thread; a barrier makes them visible to the block.
#[inline(always)]
pub fn wait_group<const PENDING: u32>() {
    // SAFETY: no operands; the default options order later shared loads after the wait.
    unsafe { asm!("cp.async.wait_group {n};", n = const PENDING, options(nostack)) }
}
