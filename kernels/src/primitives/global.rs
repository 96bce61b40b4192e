//! 16-byte global memory accesses: one instruction per thread moves a whole vector.

use core::arch::asm;

/// `ld.global.v4.u32`.
///
/// # Safety
/// `ptr` is 16-byte aligned and points to 16 readable bytes.
#[inline(always)]
pub unsafe fn ld_global_v4(ptr: *const u8) -> [u32; 4] {
    let (x, y, z, w): (u32, u32, u32, u32);
    // SAFETY: the caller guarantees 16 aligned readable bytes at `ptr`; the asm only reads them.
    unsafe {
        asm!(
            "ld.global.v4.u32 {{{x}, {y}, {z}, {w}}}, [{p}];",
            p = in(reg64) ptr, x = out(reg32) x, y = out(reg32) y, z = out(reg32) z, w = out(reg32) w,
            options(nostack, readonly)
        )
    };
    [x, y, z, w]
}

/// `ld.global.nc.v4.u32`: through the read-only (non-coherent) cache, for data no thread of the
/// launch writes.
///
/// # Safety
/// As for [`ld_global_v4`], and nothing writes the bytes during the launch.
#[inline(always)]
pub unsafe fn ld_global_nc_v4(ptr: *const u8) -> [u32; 4] {
    let (x, y, z, w): (u32, u32, u32, u32);
    // SAFETY: the caller guarantees 16 aligned readable bytes at `ptr` that nothing writes during
    // the launch, as the non-coherent path needs; the asm only reads them.
    unsafe {
        asm!(
            "ld.global.nc.v4.u32 {{{x}, {y}, {z}, {w}}}, [{p}];",
            p = in(reg64) ptr, x = out(reg32) x, y = out(reg32) y, z = out(reg32) z, w = out(reg32) w,
            options(nostack, readonly)
        )
    };
    [x, y, z, w]
}

/// `st.global.v4.u32`.
///
/// # Safety
/// `ptr` is 16-byte aligned and points to 16 writable bytes.
#[inline(always)]
pub unsafe fn st_global_v4(ptr: *mut u8, v: [u32; 4]) {
    // SAFETY: the caller guarantees 16 aligned writable bytes at `ptr`.
    unsafe {
        asm!(
            "st.global.v4.u32 [{p}], {{{x}, {y}, {z}, {w}}};",
            p = in(reg64) ptr, x = in(reg32) v[0], y = in(reg32) v[1], z = in(reg32) v[2], w = in(reg32) v[3],
            options(nostack)
        )
    }
}

/// `red.global.add.f32`: adds `v` to the f32 at `ptr` atomically, returning nothing.
///
/// # Safety
/// `ptr` is 4-byte aligned and points to a writable f32 of global memory.
#[inline(always)]
pub unsafe fn red_add_f32(ptr: *mut f32, v: f32) {
    // SAFETY: the caller guarantees the address; the reduction is atomic per element.
    unsafe { asm!("red.global.add.f32 [{p}], {v};", p = in(reg64) ptr, v = in(reg32) v, options(nostack)) }
}
