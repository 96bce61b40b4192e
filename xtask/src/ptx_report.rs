//! `cargo xtask ptx`: build every kernel for every architecture and report what `ptxas` makes of
//! it: registers, spills, stack frame, static shared memory; and from the kernels' own
//! declarations (`kernel_attrs!`) their block size (`.maxntid`) and dynamic shared memory, hence
//! how many blocks fit on one multiprocessor of the architecture's reference GPU.
//!
//! It fails when a module does not assemble, when a kernel of the shipped modules does not
//! declare its block size, when a kernel's block cannot fit on a multiprocessor at all, and when a
//! hot kernel (`kernel_attrs!(.., .hot())`) spills or uses a stack frame.

use crate::{cuda_tools, project_root};
use kernel_builder::{Arch, KernelBuilder, ptx_attrs, ptx_module};
use std::collections::BTreeMap;
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
    let archs = match (&opts.sass, opts.archs.is_empty()) {
        (Some(_), true) => vec![Arch::Sm90a],
        (None, true) => Arch::ALL.to_vec(),
        _ => opts.archs.clone(),
    };
    if opts.clean {
        // Only the builds this report uses (the shipped kernels, no features): the `+testing`
        // builds of the test suite stay.
        for arch in &archs {
            let _ = std::fs::remove_dir_all(target_dir.join(arch.name()));
        }
    }

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
    for target in modules.iter().flat_map(|m| targets(m.arch)) {
        let l = SmLimits::of(target);
        println!(
            "{}: blocks/SM for the {} ({} registers, {} KB shared memory per SM, {} KB per block, \
             {} B reserved per block, {} threads, {} blocks per SM)",
            target,
            l.gpu,
            l.registers,
            l.shared_per_sm / 1024,
            l.shared_per_block / 1024,
            l.reserved_per_block,
            l.threads,
            l.blocks
        );
    }
    println!();
    println!(
        "{:<7} {:<40} {:>5} {:>13} {:>7} {:>11} {:>9} {:>7} {:>14} {:>4}",
        "arch",
        "kernel",
        "regs",
        "spill st/ld B",
        "stack B",
        "static smem",
        "dyn smem",
        "threads",
        "blocks/SM",
        "hot"
    );
    let mut problems = Vec::new();
    for m in &modules {
        let ptx =
            std::fs::read_to_string(&m.ptx_path).map_err(|e| format!("{}: {e}", m.ptx_path.display()))?;
        let hot = ptx_attrs::hot_kernels(&ptx);
        let dynamic = ptx_attrs::dynamic_shared_bytes(&ptx);
        let entries: BTreeMap<String, ptx_module::EntryInfo> = ptx_module::parse(&ptx)
            .map_err(|e| format!("{}: {e}", m.ptx_path.display()))?
            .entry_infos()
            .into_iter()
            .map(|e| (e.name.clone(), e))
            .collect();
        for &target in targets(m.arch) {
            let limits = SmLimits::of(target);
            let cubin = m.ptx_path.with_extension(if target == m.arch.name() {
                "cubin".to_string()
            } else {
                format!("{target}.cubin")
            });
            let report = assemble(&ptxas, target, &m.ptx_path, &cubin)?;
            let kernels = parse_ptxas_report(&report);
            for name in entries.keys() {
                if !kernels.iter().any(|k| &k.name == name) {
                    problems.push(format!("{name} on {target}: not in ptxas's report"));
                }
            }
            for k in kernels {
                let is_hot = hot.contains(&k.name);
                let dyn_smem = dynamic.get(&k.name).copied().unwrap_or(0);
                let threads = entries.get(&k.name).and_then(|e| e.block_threads());
                let occupancy =
                    threads.map(|t| limits.blocks_per_sm(k.registers, t, k.static_smem + dyn_smem));
                println!(
                    "{:<7} {:<40} {:>5} {:>13} {:>7} {:>11} {:>9} {:>7} {:>14} {:>4}",
                    target,
                    k.name,
                    k.registers,
                    format!("{}/{}", k.spill_stores, k.spill_loads),
                    k.stack_frame,
                    k.static_smem,
                    dyn_smem,
                    threads.map_or("-".to_string(), |t| t.to_string()),
                    occupancy.map_or("-".to_string(), |o| o.to_string()),
                    if is_hot { "yes" } else { "" }
                );
                // A smaller GPU of the module's family (the T4 for sm_70) never runs the tile
                // classes too big for its shared memory: the host picks another.
                let occupancy_checked = occupancy.filter(|o| target == m.arch.name() || o.limiter != "smem");
                problems.extend(check(target, &k, threads, occupancy_checked, is_hot));
            }
        }
    }
    if problems.is_empty() { Ok(()) } else { Err(problems.join("\n")) }
}

/// What is wrong with one kernel: no declared block size, a block that fits on no
/// multiprocessor, spills or a stack frame in a hot kernel.
fn check(
    arch: &str,
    k: &KernelResources,
    threads: Option<u32>,
    occupancy: Option<Occupancy>,
    hot: bool,
) -> Vec<String> {
    let mut problems = Vec::new();
    if threads.is_none() {
        problems.push(format!(
            "{} on {arch}: no .maxntid; declare the block size with kernel_attrs!(.., \
             KernelAttrs::new().max_threads(N))",
            k.name
        ));
    }
    if let Some(o) = occupancy.filter(|o| o.blocks == 0) {
        problems.push(format!("{} on {arch}: no block fits on a multiprocessor ({o})", k.name));
    }
    if hot && (k.spill_stores > 0 || k.spill_loads > 0 || k.stack_frame > 0) {
        problems.push(format!(
            "{} on {arch}: hot kernel spills ({} B stored, {} B loaded) or has a stack frame ({} B)",
            k.name, k.spill_stores, k.spill_loads, k.stack_frame
        ));
    }
    problems
}

/// One multiprocessor's limits on the reference GPU of an architecture (CUDA C++ Programming
/// Guide, "Technical Specifications per Compute Capability"; the occupancy calculator's
/// allocation granularities).
#[derive(Clone, Copy, Debug)]
struct SmLimits {
    gpu: &'static str,
    registers: u32,
    /// The whole shared memory of an SM (at the largest carveout).
    shared_per_sm: u32,
    /// The most one block may use (after opting in above 48 KB).
    shared_per_block: u32,
    /// Shared memory the driver reserves for each resident block (sm_80 and newer).
    reserved_per_block: u32,
    /// Shared memory is allocated in units of this many bytes.
    shared_unit: u32,
    threads: u32,
    blocks: u32,
    max_threads_per_block: u32,
}

/// Registers are allocated per warp in units of 256, from one of the SM's four sub-partitions
/// (a warp's registers never straddle two).
const REGISTER_UNIT: u32 = 256;
const SUB_PARTITIONS: u32 = 4;
const WARP: u32 = 32;

/// The GPUs a module is assembled for: the `sm_70` module runs on Volta and Turing (its own
/// module would be no different), the others on their own architecture.
fn targets(arch: Arch) -> &'static [&'static str] {
    match arch {
        Arch::Sm70 => &["sm_70", "sm_75"],
        Arch::Sm80 => &["sm_80"],
        Arch::Sm90a => &["sm_90a"],
    }
}

impl SmLimits {
    /// The limits of a `ptxas` target (`sm_70`, `sm_75`, `sm_80`, `sm_90a`).
    fn of(target: &str) -> SmLimits {
        const KB: u32 = 1024;
        let common = SmLimits {
            gpu: "",
            registers: 65536,
            shared_per_sm: 0,
            shared_per_block: 0,
            reserved_per_block: KB,
            shared_unit: 128,
            threads: 2048,
            blocks: 32,
            max_threads_per_block: 1024,
        };
        match target {
            "sm_90a" => {
                SmLimits { gpu: "H100", shared_per_sm: 228 * KB, shared_per_block: 227 * KB, ..common }
            }
            "sm_80" => {
                SmLimits { gpu: "A100", shared_per_sm: 164 * KB, shared_per_block: 163 * KB, ..common }
            }
            "sm_75" => SmLimits {
                gpu: "T4",
                shared_per_sm: 64 * KB,
                shared_per_block: 64 * KB,
                reserved_per_block: 0,
                shared_unit: 256,
                threads: 1024,
                blocks: 16,
                ..common
            },
            _ => SmLimits {
                gpu: "V100",
                shared_per_sm: 96 * KB,
                shared_per_block: 96 * KB,
                reserved_per_block: 0,
                shared_unit: 256,
                ..common
            },
        }
    }

    /// How many blocks of `threads` threads using `registers` registers per thread and
    /// `shared` bytes of shared memory (static and dynamic) are resident on one SM at once.
    fn blocks_per_sm(&self, registers: u32, threads: u32, shared: u32) -> Occupancy {
        let warps = threads.div_ceil(WARP).max(1);
        if threads > self.max_threads_per_block || shared > self.shared_per_block {
            return Occupancy {
                blocks: 0,
                limiter: if shared > self.shared_per_block { "smem" } else { "threads" },
            };
        }
        let by_threads = self.threads / (warps * WARP);
        let by_registers = if registers == 0 {
            u32::MAX
        } else {
            let per_warp = (registers * WARP).next_multiple_of(REGISTER_UNIT);
            let warps_per_sm = (self.registers / SUB_PARTITIONS / per_warp) * SUB_PARTITIONS;
            warps_per_sm / warps
        };
        let per_block = shared.next_multiple_of(self.shared_unit) + self.reserved_per_block;
        let by_shared = self.shared_per_sm.checked_div(per_block).unwrap_or(u32::MAX);
        let limits =
            [(by_registers, "regs"), (by_shared, "smem"), (by_threads, "threads"), (self.blocks, "blocks")];
        let (blocks, limiter) = limits.into_iter().min_by_key(|&(n, _)| n).unwrap_or((0, "?"));
        Occupancy { blocks, limiter }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Occupancy {
    blocks: u32,
    /// What stops one more block: `regs`, `smem`, `threads` or `blocks`.
    limiter: &'static str,
}

impl std::fmt::Display for Occupancy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.blocks, self.limiter)
    }
}

/// `ptxas -v`; an error if the module does not assemble.
fn assemble(ptxas: &Path, target: &str, ptx: &Path, cubin: &Path) -> Result<String, String> {
    let out = Command::new(ptxas)
        .arg(format!("-arch={target}"))
        .arg("-v")
        .arg(ptx)
        .arg("-o")
        .arg(cubin)
        .output()
        .map_err(|e| format!("cannot run ptxas: {e}"))?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        return Err(format!("ptxas rejected {} for {target}:\n{text}", ptx.display()));
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
        assemble(ptxas, m.arch.name(), &m.ptx_path, &cubin)?;
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
    fn blocks_per_sm_follow_the_occupancy_rules() {
        let h100 = SmLimits::of("sm_90a");
        let a100 = SmLimits::of("sm_80");
        let v100 = SmLimits::of("sm_70");
        // The T4: 64 KB per SM and per block, 1024 threads: one 64 KB block, or eight 128-thread
        // blocks of 32 registers.
        let t4 = SmLimits::of("sm_75");
        assert_eq!(t4.blocks_per_sm(128, 128, 64 << 10), Occupancy { blocks: 1, limiter: "smem" });
        assert_eq!(t4.blocks_per_sm(32, 128, 0), Occupancy { blocks: 8, limiter: "threads" });
        // 255 registers: 8192 per warp, two warps per sub-partition, 8 warps: one 256-thread block.
        assert_eq!(h100.blocks_per_sm(255, 256, 0), Occupancy { blocks: 1, limiter: "regs" });
        // 128 registers, 128 threads: 4096 per warp, 16 warps, 4 blocks.
        assert_eq!(h100.blocks_per_sm(128, 128, 0), Occupancy { blocks: 4, limiter: "regs" });
        // 200 registers: 6400 per warp, two per sub-partition (not 65536 / 6400 = 10): 8 warps.
        assert_eq!(h100.blocks_per_sm(200, 64, 0), Occupancy { blocks: 4, limiter: "regs" });
        // Register counts round up to the 256-register unit per warp: 33 -> 1280 per warp.
        assert_eq!(a100.blocks_per_sm(33, 256, 0).blocks, 6);
        // Shared memory: 48 KB + the 1 KB reserve per block; 228 KB / 49 KB = 4 on the H100,
        // 164 / 49 = 3 on the A100, 96 / 48 = 2 on the V100 (no reserve).
        assert_eq!(h100.blocks_per_sm(32, 128, 48 * 1024), Occupancy { blocks: 4, limiter: "smem" });
        assert_eq!(a100.blocks_per_sm(32, 128, 48 * 1024).blocks, 3);
        assert_eq!(v100.blocks_per_sm(32, 128, 48 * 1024).blocks, 2);
        // The most one block may have fits once; one byte more does not fit at all.
        assert_eq!(h100.blocks_per_sm(32, 128, 227 * 1024).blocks, 1);
        assert_eq!(h100.blocks_per_sm(32, 128, 227 * 1024 + 1), Occupancy { blocks: 0, limiter: "smem" });
        // Threads and the block count.
        assert_eq!(h100.blocks_per_sm(16, 1024, 0), Occupancy { blocks: 2, limiter: "threads" });
        assert_eq!(h100.blocks_per_sm(16, 32, 0), Occupancy { blocks: 32, limiter: "blocks" });
        assert_eq!(h100.blocks_per_sm(16, 2048, 0).blocks, 0);
    }

    #[test]
    fn kernels_without_a_block_size_fail_the_report() {
        let k = KernelResources { name: "k".into(), registers: 64, ..Default::default() };
        let h100 = SmLimits::of("sm_90a");
        assert!(check("sm_90a", &k, Some(128), Some(h100.blocks_per_sm(64, 128, 0)), true).is_empty());
        let missing = check("sm_90a", &k, None, None, false);
        assert!(missing.len() == 1 && missing[0].contains("no .maxntid"));
        let too_big = check("sm_90a", &k, Some(128), Some(h100.blocks_per_sm(64, 128, 300 << 10)), false);
        assert!(too_big[0].contains("no block fits"));
        let spills = KernelResources { spill_stores: 8, ..k };
        assert_eq!(check("sm_80", &spills, Some(128), None, true).len(), 1);
        assert!(check("sm_80", &spills, Some(128), None, false).is_empty());
    }

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
