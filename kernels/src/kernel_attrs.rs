//! Launch attributes a kernel declares next to its source.
//!
//! Rust has no `__launch_bounds__`. A kernel states its bounds with [`kernel_attrs!`], which
//! exports a small static named `__kernel_attrs__<kernel>`; the project's link step reads it from
//! the PTX, removes it, and writes `.maxntid`, `.minnctapersm` and `.maxnreg` on the kernel's
//! `.entry`. A kernel marked `hot` must assemble with no spills and no stack frame, which
//! `cargo xtask ptx` enforces.

/// The record the link step decodes. Its layout is shared with `kernel-builder`: four `u32`s.
#[repr(C)]
pub struct KernelAttrs {
    max_threads: u32,
    min_blocks_per_sm: u32,
    max_registers: u32,
    flags: u32,
}

const HOT: u32 = 1;

impl Default for KernelAttrs {
    fn default() -> Self {
        Self::new()
    }
}

impl KernelAttrs {
    pub const fn new() -> Self {
        Self { max_threads: 0, min_blocks_per_sm: 0, max_registers: 0, flags: 0 }
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
    /// Dynamic shared memory per block (temporary stand-in until the record carries it).
    pub const fn dynamic_shared_bytes(self, _n: u32) -> Self {
        self
    }
    /// A performance-critical kernel: spills or a stack frame fail `cargo xtask ptx`.
    pub const fn hot(mut self) -> Self {
        self.flags |= HOT;
        self
    }
}

/// `kernel_attrs!(kernel_name, KernelAttrs::new().max_threads(128).hot());`
macro_rules! kernel_attrs {
    (name = $name:expr, $attrs:expr) => {
        const _: () = {
            #[used]
            #[unsafe(export_name = concat!("__kernel_attrs__", $name))]
            static ATTRS: $crate::kernel_attrs::KernelAttrs = $attrs;
        };
    };
    ($kernel:ident, $attrs:expr) => {
        const _: () = {
            #[used]
            #[unsafe(export_name = concat!("__kernel_attrs__", stringify!($kernel)))]
            static ATTRS: $crate::kernel_attrs::KernelAttrs = $attrs;
        };
    };
}
