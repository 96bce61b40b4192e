//! Compiles `kernels/` to PTX for every architecture and embeds the kernels in the library, one
//! complete PTX module per kernel, so that a process hands the driver only what it launches.

use kernel_builder::{Arch, KernelBuilder};
use std::fmt::Write;

fn main() {
    // `testing` adds the self-test, smoke and naive-softmax kernels the tests and the benchmark
    // launch; the library ships without them.
    let testing = std::env::var_os("CARGO_FEATURE_TESTING").is_some();
    let features: &[&str] = if testing { &["testing"] } else { &[] };
    let modules = KernelBuilder::new("../kernels")
        .archs(&Arch::ALL)
        .features(features)
        .watch("../abi")
        .cargo_directives(true)
        .build_or_exit();

    let mut table = String::from("/// Every kernel of every architecture, as built by `build.rs`.\n");
    table.push_str("pub static KERNELS: &[EmbeddedKernel] = &[\n");
    for m in &modules {
        for k in &m.kernels {
            writeln!(
                table,
                "    EmbeddedKernel {{ arch: {:?}, name: {:?}, ptx: include_str!({:?}), entry_offset: {} }},",
                m.arch.name(),
                k.name,
                k.ptx_path.display().to_string(),
                k.entry_offset
            )
            .unwrap();
        }
    }
    table.push_str("];\n");
    let out = std::path::PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::write(out.join("embedded_ptx.rs"), table).expect("write embedded_ptx.rs");
}
