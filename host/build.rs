//! Compiles `kernels/` to PTX for every architecture and embeds the modules in the library.

use kernel_builder::{Arch, KernelBuilder};
use std::fmt::Write;

fn main() {
    let modules = KernelBuilder::new("../kernels")
        .archs(&Arch::ALL)
        .watch("../abi")
        .cargo_directives(true)
        .build_or_exit();

    let mut table = String::from("/// The kernel modules, one per architecture, as built by `build.rs`.\n");
    table.push_str("pub static MODULES: &[EmbeddedPtx] = &[\n");
    for m in &modules {
        writeln!(
            table,
            "    EmbeddedPtx {{ arch: {:?}, ptx: include_str!({:?}) }},",
            m.arch.name(),
            m.ptx_path.display().to_string()
        )
        .unwrap();
    }
    table.push_str("];\n");
    let out = std::path::PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::write(out.join("embedded_ptx.rs"), table).expect("write embedded_ptx.rs");
}
