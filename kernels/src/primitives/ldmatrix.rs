//! `ldmatrix` (sm_75+, built for sm_80): a warp loads 8x8 tiles of 16-bit elements from shared
//! memory straight into the `mma.sync` fragment layout.
//!
//! For `.xN`, lanes `8i..8i+8` give the addresses of the 8 rows of tile `i`. Lane `l` receives,
//! in register `i`, elements `(l / 4, 2 (l % 4))` and `(l / 4, 2 (l % 4) + 1)` of tile `i`; with
//! `TRANS`, of the transposed tile. Row addresses must be 16-byte aligned.

use core::arch::asm;

/// One 8x8 tile.
///
/// # Safety
/// All 32 lanes call it together; lanes 0..8 give valid, 16-byte aligned shared row addresses.
#[inline(always)]
pub unsafe fn ldmatrix_x1<const TRANS: bool>(row_addr: u32) -> u32 {
    let r: u32;
    // SAFETY: the caller guarantees the row addresses and that all lanes of the warp execute this
    // `.sync.aligned` load together.
    unsafe {
        if TRANS {
            asm!("ldmatrix.sync.aligned.m8n8.x1.trans.shared.b16 {{{r}}}, [{a}];", r = out(reg32) r, a = in(reg32) row_addr, options(nostack, readonly));
        } else {
            asm!("ldmatrix.sync.aligned.m8n8.x1.shared.b16 {{{r}}}, [{a}];", r = out(reg32) r, a = in(reg32) row_addr, options(nostack, readonly));
        }
    }
    r
}

/// Two 8x8 tiles.
///
/// # Safety
/// All 32 lanes call it together; lanes 0..16 give valid, 16-byte aligned shared row addresses.
#[inline(always)]
pub unsafe fn ldmatrix_x2<const TRANS: bool>(row_addr: u32) -> [u32; 2] {
    let (r0, r1): (u32, u32);
    // SAFETY: the caller guarantees the row addresses and that all lanes of the warp execute this
    // `.sync.aligned` load together.
    unsafe {
        if TRANS {
            asm!("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {{{r0}, {r1}}}, [{a}];",
                r0 = out(reg32) r0, r1 = out(reg32) r1, a = in(reg32) row_addr, options(nostack, readonly));
        } else {
            asm!("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {{{r0}, {r1}}}, [{a}];",
                r0 = out(reg32) r0, r1 = out(reg32) r1, a = in(reg32) row_addr, options(nostack, readonly));
        }
    }
    [r0, r1]
}

/// Four 8x8 tiles.
///
/// # Safety
/// All 32 lanes call it together and give valid, 16-byte aligned shared row addresses.
#[inline(always)]
pub unsafe fn ldmatrix_x4<const TRANS: bool>(row_addr: u32) -> [u32; 4] {
    let (r0, r1, r2, r3): (u32, u32, u32, u32);
    // SAFETY: the caller guarantees the row addresses and that all lanes of the warp execute this
    // `.sync.aligned` load together.
    unsafe {
        if TRANS {
            asm!("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {{{r0}, {r1}, {r2}, {r3}}}, [{a}];",
                r0 = out(reg32) r0, r1 = out(reg32) r1, r2 = out(reg32) r2, r3 = out(reg32) r3,
                a = in(reg32) row_addr, options(nostack, readonly));
        } else {
            asm!("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {{{r0}, {r1}, {r2}, {r3}}}, [{a}];",
                r0 = out(reg32) r0, r1 = out(reg32) r1, r2 = out(reg32) r2, r3 = out(reg32) r3,
                a = in(reg32) row_addr, options(nostack, readonly));
        }
    }
    [r0, r1, r2, r3]
}
