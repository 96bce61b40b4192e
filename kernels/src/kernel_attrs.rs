//! Launch attributes a kernel declares next to its source.
//!
//! Rust has no `__launch_bounds__`. A kernel states its bounds with [`kernel_attrs!`], which
//! exports a small static named `__kernel_attrs__<kernel>`; the project's link step reads it from
//! the PTX, removes it, and writes `.maxntid`, `.minnctapersm` and `.maxnreg` on the kernel's
//! `.entry`. A kernel marked `hot` must assemble with no spills and no stack frame, which
//! `cargo xtask ptx` enforces. The dynamic shared memory a block is launched with is not a PTX
//! directive: the link step lists it in the module's header, where `cargo xtask ptx` reads it to
//! compute how many blocks fit on a multiprocessor.

/// The signature of a kernel without parameters. It also keeps the `abi_ptx` feature in use in
/// builds that define no kernel (`sm_70` without the `testing` feature, or `cargo clippy` at
/// the target's default architecture, where the attention kernels are gated off), where the
/// compiler would otherwise reject the crate's `#![feature(abi_ptx)]` as unused.
pub type KernelFn = unsafe extern "ptx-kernel" fn();

/// The record the link step decodes. Its layout is shared with `kernel-builder`
/// (`builder/src/ptx_attrs.rs`): five little-endian `u32`s. Records of four words (from before
/// `dynamic_shared_bytes`) still decode, with no dynamic shared memory.
#[repr(C)]
pub struct KernelAttrs {
    max_threads: u32,
    min_blocks_per_sm: u32,
    max_registers: u32,
    flags: u32,
    dynamic_shared_bytes: u32,
}

const HOT: u32 = 1;

impl Default for KernelAttrs {
    fn default() -> Self {
        Self::new()
    }
}

impl KernelAttrs {
    pub const fn new() -> Self {
        Self { max_threads: 0, min_blocks_per_sm: 0, max_registers: 0, flags: 0, dynamic_shared_bytes: 0 }
    }
    /// `.maxntid`: the most threads per block the kernel is ever launched with.
    pub const fn max_threads(mut self, n: u32) -> Self {
        self.max_threads = n;
        self
    }
    /// `.minnctapersm`: blocks that must fit on one multiprocessor (caps registers per thread).
    pub const fn min_blocks_per_sm(mut self, n: u32) -> Self {
        self.min_blocks_per_sm = n;
        self
    }
    /// `.maxnreg`: a hard register cap per thread.
    pub const fn max_registers(mut self, n: u32) -> Self {
        self.max_registers = n;
        self
    }
    /// The dynamic shared memory one block is launched with, in bytes (the most, if it varies).
    /// Not a PTX directive: `cargo xtask ptx` uses it for the blocks that fit on a multiprocessor.
    pub const fn dynamic_shared_bytes(mut self, n: u32) -> Self {
        self.dynamic_shared_bytes = n;
        self
    }
    /// A performance-critical kernel: spills or a stack frame fail `cargo xtask ptx`.
    pub const fn hot(mut self) -> Self {
        self.flags |= HOT;
        self
    }
}

/// Declares a kernel's launch attributes; the record is exported as
/// `concat!("__kernel_attrs__", <kernel name>)`.
///
/// ```ignore
/// // The kernel `smoke_axpy_f32`, named by its identifier:
/// kernel_attrs!(smoke_axpy_f32, KernelAttrs::new().max_threads(1024).hot());
/// // A kernel whose export name is built by a string expression (a literal or `concat!`):
/// kernel_attrs!(
///     name = concat!("flash_fwd_", "f16_d64"),
///     KernelAttrs::new().max_threads(128).min_blocks_per_sm(2).dynamic_shared_bytes(49152).hot()
/// );
/// ```
// Builds without kernels (`sm_70` without the `testing` feature) do not use it.
#[allow(unused_macros)]
macro_rules! kernel_attrs {
    ($kernel:ident, $attrs:expr $(,)?) => {
        kernel_attrs!(name = stringify!($kernel), $attrs);
    };
    (name = $name:expr, $attrs:expr $(,)?) => {
        const _: () = {
            #[used]
            #[unsafe(export_name = concat!("__kernel_attrs__", $name))]
            static ATTRS: $crate::kernel_attrs::KernelAttrs = $attrs;
        };
    };
}
