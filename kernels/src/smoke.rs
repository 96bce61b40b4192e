//! The smallest kernel: proves the build, the load and the launch path end to end.

use crate::kernel_attrs::KernelAttrs;
use core::arch::nvptx::{_block_dim_x, _block_idx_x, _thread_idx_x};

kernel_attrs!(smoke_axpy_f32, KernelAttrs::new().max_threads(1024).hot());

/// `y[i] = a * x[i] + y[i]` for `i < n`; one thread per element, any 1-D grid that covers `n`.
///
/// # Safety
/// `x` and `y` point to at least `n` `f32`s in device memory; `y` does not overlap `x`.
#[unsafe(no_mangle)]
pub unsafe extern "ptx-kernel" fn smoke_axpy_f32(n: u32, a: f32, x: *const f32, y: *mut f32) {
    // SAFETY: reading the special index registers has no preconditions.
    let i = unsafe { _block_idx_x() as u32 * _block_dim_x() as u32 + _thread_idx_x() as u32 };
    if i < n {
        let i = i as usize;
        // SAFETY: `i < n` and the caller guarantees `n` elements behind both pointers.
        unsafe { *y.add(i) = a * *x.add(i) + *y.add(i) };
    }
}
