//! `cp.async` (sm_80): global-to-shared copies that bypass registers and overlap with compute.
//!
//! Copies are issued, grouped with [`commit_group`], and awaited with [`wait_group`]`::<N>()`,
//! which leaves at most `N` newest groups in flight: a pipeline of N + 1 stages.
//!
//! Volta and Turing have no `cp.async`: the `sm_70` build copies through registers at once
//! (a load, then a shared store), and the group operations are no-ops, so code written for the
//! asynchronous copies (issue, commit, wait, barrier) is correct on both, only not overlapped on
//! the older GPUs.

#[cfg(target_feature = "sm_80")]
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
    #[cfg(not(target_feature = "sm_80"))]
    // SAFETY: forwarded: the same contract.
    unsafe {
        copy_now::<BYTES>(dst, src, src_bytes)
    }
    // `.cg` (cache in L2 only) exists for 16-byte copies; smaller ones must use `.ca`.
    // SAFETY: the caller guarantees aligned shared `dst`, a valid global `src` and
    // `src_bytes <= BYTES` readable bytes there.
    #[cfg(target_feature = "sm_80")]
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

/// [`cp_async`] without `cp.async`: the copy completes before this returns. A whole copy is one
/// vector load and one shared store; a partial one goes by bytes (zeros after `src_bytes`).
///
/// # Safety
/// As for [`cp_async`].
#[cfg(not(target_feature = "sm_80"))]
#[inline(always)]
unsafe fn copy_now<const BYTES: u32>(dst: u32, src: *const u8, src_bytes: u32) {
    use crate::primitives::shared;
    if src_bytes == BYTES {
        // SAFETY: `BYTES` aligned, readable bytes at `src`; `BYTES`-aligned shared `dst`.
        unsafe {
            match BYTES {
                16 => shared::st_shared_v4(dst, crate::primitives::global::ld_global_v4(src)),
                8 => {
                    let [a, b] = (src as *const [u32; 2]).read();
                    shared::st_shared_u32(dst, a);
                    shared::st_shared_u32(dst + 4, b);
                }
                _ => shared::st_shared_u32(dst, (src as *const u32).read()),
            }
        }
        return;
    }
    let mut words = [0u32; 4];
    for i in 0..src_bytes.min(BYTES) {
        // SAFETY: byte `i < src_bytes` of `src` is readable.
        let b = unsafe { src.add(i as usize).read() } as u32;
        words[i as usize / 4] |= b << (8 * (i % 4));
    }
    for (i, w) in words.iter().enumerate().take(BYTES as usize / 4) {
        // SAFETY: inside the `BYTES`-aligned shared destination.
        unsafe { shared::st_shared_u32(dst + 4 * i as u32, *w) };
    }
}

/// Closes the group of copies issued since the last commit (nothing to close on `sm_70`).
#[inline(always)]
pub fn commit_group() {
    // SAFETY: no operands.
    #[cfg(target_feature = "sm_80")]
    unsafe {
        asm!("cp.async.commit_group;", options(nostack))
    }
}

/// Waits until at most `PENDING` committed groups are still in flight. The copies are then
/// visible to the issuing thread; a barrier makes them visible to the block.
#[inline(always)]
pub fn wait_group<const PENDING: u32>() {
    // SAFETY: no operands; the default options order later shared loads after the wait.
    #[cfg(target_feature = "sm_80")]
    unsafe {
        asm!("cp.async.wait_group {n};", n = const PENDING, options(nostack))
    }
}
