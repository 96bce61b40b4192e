//! The PTX embedded at build time: one complete module per kernel and architecture, so that the
//! driver JIT-compiles only the kernels a process launches.

/// One kernel's PTX module for one architecture.
#[derive(Clone, Copy, Debug)]
pub struct EmbeddedKernel {
    /// `"sm_70"`, `"sm_80"` or `"sm_90a"`.
    pub arch: &'static str,
    /// The `.entry` name.
    pub name: &'static str,
    /// A complete module (header, the declarations every kernel shares, this one `.entry`),
    /// ready for `cuModuleLoadData`.
    pub ptx: &'static str,
    /// `ptx[..entry_offset]` is the part shared by all kernels of `arch`; the rest is the entry.
    pub entry_offset: usize,
}

impl EmbeddedKernel {
    /// The kernel's `.entry` alone (not a loadable module).
    pub fn entry(&self) -> &'static str {
        &self.ptx[self.entry_offset..]
    }
}

include!(concat!(env!("OUT_DIR"), "/embedded_ptx.rs"));

/// The kernel `name` built for `arch`, if any.
pub fn kernel(arch: &str, name: &str) -> Option<&'static EmbeddedKernel> {
    KERNELS.iter().find(|k| k.arch == arch && k.name == name)
}

/// The kernels built for `arch`, in module order.
pub fn kernels(arch: &str) -> impl Iterator<Item = &'static EmbeddedKernel> + '_ {
    KERNELS.iter().filter(move |k| k.arch == arch)
}

/// The whole module of `arch` (every kernel in one text), reassembled from the kernels' modules;
/// `None` if nothing was built for `arch`.
pub fn module(arch: &str) -> Option<String> {
    let mut all = kernels(arch).peekable();
    let first = all.peek()?;
    let mut text = first.ptx[..first.entry_offset].to_string();
    for k in all {
        text.push_str(k.entry());
    }
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kernel_is_a_module_of_its_own() {
        assert!(!KERNELS.is_empty());
        for k in KERNELS {
            let header = &k.ptx[..k.entry_offset];
            assert!(header.contains(".version ") && header.contains(&format!(".target {}", k.arch)));
            assert!(!header.contains(".entry "), "{} {}: shared part has an entry", k.arch, k.name);
            assert_eq!(k.entry().matches(".entry ").count(), 1, "{} {}", k.arch, k.name);
            assert!(k.entry().contains(&format!(".entry {}(", k.name)));
            // Every shipped kernel declares its block size.
            if !test_only(k.name) {
                assert!(k.entry().contains(".maxntid "), "{} {} has no .maxntid", k.arch, k.name);
            }
        }
        for arch in ["sm_80", "sm_90a"] {
            let whole = module(arch).expect("the architecture has kernels");
            assert_eq!(whole.matches(".entry ").count(), kernels(arch).count());
        }
        assert!(module("sm_12").is_none());
    }

    fn test_only(name: &str) -> bool {
        ["selftest_", "smoke_", "naive_softmax_"].iter().any(|p| name.starts_with(p))
    }

    #[test]
    fn test_kernels_ship_only_with_the_testing_feature() {
        let test_kernels = KERNELS.iter().filter(|k| test_only(k.name)).count();
        if cfg!(feature = "testing") {
            assert!(kernel("sm_80", "smoke_axpy_f32").is_some());
            assert!(kernel("sm_70", "selftest_wmma_f16").is_some());
        } else {
            assert_eq!(test_kernels, 0, "test-only kernels in a build without the `testing` feature");
        }
    }
}
