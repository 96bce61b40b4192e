//! The PTX modules embedded at build time.

/// One architecture's PTX module.
#[derive(Clone, Copy, Debug)]
pub struct EmbeddedPtx {
    /// `"sm_70"`, `"sm_80"` or `"sm_90a"`.
    pub arch: &'static str,
    /// The module's text, ready for `cuModuleLoadData`.
    pub ptx: &'static str,
}

include!(concat!(env!("OUT_DIR"), "/embedded_ptx.rs"));

/// The module built for `arch`, if any.
pub fn module(arch: &str) -> Option<&'static EmbeddedPtx> {
    MODULES.iter().find(|m| m.arch == arch)
}
