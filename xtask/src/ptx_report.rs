//! `cargo xtask ptx`: build every kernel for every architecture and report what `ptxas` makes of
//! it: registers, spills, stack frame, static shared memory. Hot kernels (marked in the source
//! with `kernel_attrs!(.., .hot())`) must not spill or use a stack frame.

use crate::{cuda_tools, project_root};
use kernel_builder::{Arch, KernelBuilder, ptx_attrs};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

#[derive(Debug, Default, Clone)]
struct KernelResources {
    name: String,
    registers: u32,
    spill_stores: u32,
    spill_loads: u32,
    stack_frame: u32,
    static_smem: u32,
}

struct Options {
    clean: bool,
    archs: Vec<Arch>,
    sass: Option<String>,
}

fn parse_args(args: &[String]) -> Result<Options, String> {
    let mut o = Options { clean: false, archs: Vec::new(), sass: None };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--clean" => o.clean = true,
            "--arch" => {
                let name = it.next().ok_or("--arch needs a value")?;
                o.archs.push(
                    Arch::from_name(name)
                        .ok_or_else(|| format!("unknown arch `{name}` (sm_70, sm_80, sm_90a)"))?,
                );
            }
            "--sass" => o.sass = Some(it.next().ok_or("--sass needs a kernel name")?.clone()),
            other => return Err(format!("unknown option `{other}` for `ptx`")),
        }
    }
    Ok(o)
}

pub fn run(args: &[String]) -> Result<(), String> {
    let opts = parse_args(args)?;
    let root = project_root();
    let target_dir = root.join("target/nvptx-kernels");
    if opts.clean {
        let _ = std::fs::remove_dir_all(&target_dir);
    }
    let archs = match (&opts.sass, opts.archs.is_empty()) {
        (Some(_), true) => vec![Arch::Sm90a],
        (None, true) => Arch::ALL.to_vec(),
        _ => opts.archs.clone(),
    };

    let start = Instant::now();
    let modules = KernelBuilder::new(root.join("kernels"))
        .archs(&archs)
        .target_dir(&target_dir)
        .out_dir(root.join("target/ptx"))
        .build()
        .map_err(|e| e.to_string())?;
    let wall = start.elapsed().as_secs_f64();
    let per_arch: Vec<String> =
        modules.iter().map(|m| format!("{} {:.1} s", m.arch, m.build_time.as_secs_f64())).collect();
    println!(
        "kernel build: {} architectures in {wall:.1} s wall, in parallel ({}); {} cores",
        modules.len(),
        per_arch.join(", "),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    );

    let ptxas = cuda_tools::ptxas()?;
    if let Some(kernel) = &opts.sass {
        return print_sass(&ptxas, &modules, kernel);
    }

    println!();
    println!(
        "{:<7} {:<40} {:>5} {:>13} {:>7} {:>12} {:>4}",
        "arch", "kernel", "regs", "spill st/ld B", "stack B", "static smem", "hot"
    );
    let mut problems = Vec::new();
    for m in &modules {
        let ptx =
            std::fs::read_to_string(&m.ptx_path).map_err(|e| format!("{}: {e}", m.ptx_path.display()))?;
        let hot = ptx_attrs::hot_kernels(&ptx);
        let cubin = m.ptx_path.with_extension("cubin");
        let report = assemble(&ptxas, m.arch, &m.ptx_path, &cubin)?;
        for k in parse_ptxas_report(&report) {
            let is_hot = hot.contains(&k.name);
            println!(
                "{:<7} {:<40} {:>5} {:>13} {:>7} {:>12} {:>4}",
                m.arch.name(),
                k.name,
                k.registers,
                format!("{}/{}", k.spill_stores, k.spill_loads),
                k.stack_frame,
                k.static_smem,
                if is_hot { "yes" } else { "" }
            );
            if is_hot && (k.spill_stores > 0 || k.spill_loads > 0 || k.stack_frame > 0) {
                problems.push(format!(
                    "{} on {}: hot kernel spills ({} B stored, {} B loaded) or has a stack frame ({} B)",
                    k.name, m.arch, k.spill_stores, k.spill_loads, k.stack_frame
                ));
            }
        }
    }
    if problems.is_empty() { Ok(()) } else { Err(problems.join("\n")) }
}

/// `ptxas -v`; an error if the module does not assemble.
fn assemble(ptxas: &Path, arch: Arch, ptx: &Path, cubin: &Path) -> Result<String, String> {
    let out = Command::new(ptxas)
        .arg(format!("-arch={}", arch.name()))
        .arg("-v")
        .arg(ptx)
        .arg("-o")
        .arg(cubin)
        .output()
        .map_err(|e| format!("cannot run ptxas: {e}"))?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        return Err(format!("ptxas rejected {} for {}:\n{text}", ptx.display(), arch.name()));
    }
    Ok(text)
}

fn parse_ptxas_report(text: &str) -> Vec<KernelResources> {
    let mut kernels: Vec<KernelResources> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            let name = rest.split('\'').next().unwrap_or_default();
            kernels.push(KernelResources { name: name.to_string(), ..Default::default() });
            continue;
        }
        let Some(k) = kernels.last_mut() else { continue };
        if line.contains("bytes stack frame") {
            for part in line.split(',') {
                let n = leading_number(part);
                if part.contains("stack frame") {
                    k.stack_frame = n;
                } else if part.contains("spill stores") {
                    k.spill_stores = n;
                } else if part.contains("spill loads") {
                    k.spill_loads = n;
                }
            }
        } else if let Some(rest) = line.split("Used ").nth(1) {
            k.registers = leading_number(rest);
            for part in rest.split(',') {
                if part.trim_end().ends_with("bytes smem") {
                    k.static_smem = leading_number(part);
                }
            }
        }
    }
    kernels
}

fn leading_number(s: &str) -> u32 {
    s.trim().split(|c: char| !c.is_ascii_digit()).next().and_then(|n| n.parse().ok()).unwrap_or(0)
}

fn print_sass(ptxas: &Path, modules: &[kernel_builder::BuiltModule], kernel: &str) -> Result<(), String> {
    let cuobjdump = cuda_tools::cuobjdump()?;
    for m in modules {
        if m.arch == Arch::Sm70 {
            println!("// sm_70: no SASS; the CUDA 13 disassembler on PyPI no longer reads Volta code");
            continue;
        }
        let cubin = m.ptx_path.with_extension("cubin");
        assemble(ptxas, m.arch, &m.ptx_path, &cubin)?;
        let out = Command::new(&cuobjdump)
            .args(["-sass", "-fun", kernel])
            .arg(&cubin)
            .output()
            .map_err(|e| format!("cannot run cuobjdump: {e}"))?;
        let sass = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() || !sass.contains("Function") {
            return Err(format!(
                "no kernel `{kernel}` in the {} module{}",
                m.arch,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        println!("// {} {kernel}\n{sass}", m.arch);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ptxas_verbose_output() {
        let text = "\
ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function 'k' for 'sm_80'
ptxas info    : Function properties for k
    16 bytes stack frame, 8 bytes spill stores, 4 bytes spill loads
ptxas info    : Used 96 registers, used 1 barriers, 1024 bytes smem, 376 bytes cmem[0]
";
        let k = &parse_ptxas_report(text)[0];
        assert_eq!((k.name.as_str(), k.registers, k.static_smem), ("k", 96, 1024));
        assert_eq!((k.stack_frame, k.spill_stores, k.spill_loads), (16, 8, 4));
    }
}
