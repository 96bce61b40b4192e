//! Dynamic shared memory: its base address, and loads and stores by 32-bit shared address.
//!
//! The block's dynamic shared memory is one `.extern .shared` array whose size is set at launch
//! (above 48 KB only after the host raises the kernel's limit). Addresses here are offsets in
//! the shared window (`u32`), which is what `ld.shared`, `ldmatrix`, `cp.async` and `wmma` take.

use core::arch::{asm, global_asm};

// Aligned for the widest consumer: Hopper's TMA wants 128-byte swizzled tiles 1024-aligned.
global_asm!(".extern .shared .align 1024 .b8 DYNAMIC_SMEM[];");

/// The shared-window address of the first byte of dynamic shared memory.
#[inline(always)]
pub fn dynamic_smem_base() -> u32 {
    let base: u32;
    // SAFETY: reads a link-time constant.
    unsafe { asm!("mov.u32 {r}, DYNAMIC_SMEM;", r = out(reg32) base, options(pure, nomem, nostack)) };
    base
}

/// The launch's dynamic shared memory in bytes (`%dynamic_smem_size`).
#[inline(always)]
pub fn dynamic_smem_size() -> u32 {
    let size: u32;
    // SAFETY: reads a special register that is constant for the launch.
    unsafe { asm!("mov.u32 {r}, %dynamic_smem_size;", r = out(reg32) size, options(pure, nomem, nostack)) };
    size
}

/// # Safety
/// `addr` is 4-byte aligned and inside the launch's dynamic shared memory.
#[inline(always)]
pub unsafe fn st_shared_u32(addr: u32, value: u32) {
    // SAFETY: the caller guarantees an aligned address inside dynamic shared memory.
    unsafe { asm!("st.shared.u32 [{a}], {v};", a = in(reg32) addr, v = in(reg32) value, options(nostack)) }
}

/// # Safety
/// As for [`st_shared_u32`].
#[inline(always)]
pub unsafe fn ld_shared_u32(addr: u32) -> u32 {
    let v: u32;
    // SAFETY: the caller guarantees an aligned address inside dynamic shared memory.
    unsafe { asm!("ld.shared.u32 {v}, [{a}];", v = out(reg32) v, a = in(reg32) addr, options(nostack)) };
    v
}

/// Stores 2 bytes (the low half of `value`).
///
/// # Safety
/// `addr` is 2-byte aligned and inside the launch's dynamic shared memory.
#[inline(always)]
pub unsafe fn st_shared_u16(addr: u32, value: u16) {
    // SAFETY: the caller guarantees an aligned address inside dynamic shared memory.
    unsafe { asm!("st.shared.u16 [{a}], {v};", a = in(reg32) addr, v = in(reg16) value, options(nostack)) }
}

/// Stores 8 bytes.
///
/// # Safety
/// `addr` is 8-byte aligned and inside dynamic shared memory.
#[inline(always)]
pub unsafe fn st_shared_v2(addr: u32, v: [u32; 2]) {
    // SAFETY: the caller guarantees 8 aligned bytes inside dynamic shared memory.
    unsafe {
        asm!("st.shared.v2.u32 [{a}], {{{x}, {y}}};", a = in(reg32) addr, x = in(reg32) v[0], y = in(reg32) v[1], options(nostack))
    }
}

/// Loads 8 bytes.
///
/// # Safety
/// As for [`st_shared_v2`].
#[inline(always)]
pub unsafe fn ld_shared_v2(addr: u32) -> [u32; 2] {
    let (x, y): (u32, u32);
    // SAFETY: the caller guarantees 8 aligned bytes inside dynamic shared memory.
    unsafe {
        asm!("ld.shared.v2.u32 {{{x}, {y}}}, [{a}];", a = in(reg32) addr, x = out(reg32) x, y = out(reg32) y, options(nostack))
    };
    [x, y]
}

/// Stores 16 bytes.
///
/// # Safety
/// `addr` is 16-byte aligned and inside dynamic shared memory.
#[inline(always)]
pub unsafe fn st_shared_v4(addr: u32, v: [u32; 4]) {
    // SAFETY: the caller guarantees 16 aligned bytes inside dynamic shared memory.
    unsafe {
        asm!(
            "st.shared.v4.u32 [{a}], {{{x}, {y}, {z}, {w}}};",
            a = in(reg32) addr, x = in(reg32) v[0], y = in(reg32) v[1], z = in(reg32) v[2], w = in(reg32) v[3],
            options(nostack)
        )
    }
}

/// Loads 16 bytes.
///
/// # Safety
/// As for [`st_shared_v4`].
#[inline(always)]
pub unsafe fn ld_shared_v4(addr: u32) -> [u32; 4] {
    let (x, y, z, w): (u32, u32, u32, u32);
    // SAFETY: the caller guarantees 16 aligned bytes inside dynamic shared memory.
    unsafe {
        asm!(
            "ld.shared.v4.u32 {{{x}, {y}, {z}, {w}}}, [{a}];",
            a = in(reg32) addr, x = out(reg32) x, y = out(reg32) y, z = out(reg32) z, w = out(reg32) w,
            options(nostack)
        )
    };
    [x, y, z, w]
}
