//! The link step: rustc's NVPTX bitcode to one PTX module.
//!
//! rustc links `nvptx64-nvidia-cuda` crates by calling `rust-ptx-linker`'s successor,
//! llvm-bitcode-linker, which cannot be installed here. [`crate::KernelBuilder`] passes
//! `-Clinker=<this program>` instead and marks the nested build with [`LINK_ENV`]; rustc then runs
//! this same executable with llvm-bitcode-linker's command line, and [`run_if_invoked_as_linker`]
//! does the job with the toolchain's own `llvm-link`, `opt` and `llc`:
//!
//! 1. `llvm-link` the crate's bitcode objects (with fat LTO, `core` is already inside), then pull
//!    from the objects of each `.rlib` (compiler_builtins) only the symbols still undefined;
//! 2. `opt`: internalize everything but the exported kernels, then `-O3` with a high unroll
//!    threshold (register tiles must be fully unrolled);
//! 3. `llc` to PTX for the architecture, at the PTX ISA version the builder asked for;
//! 4. apply the kernels' launch attributes ([`crate::ptx_attrs`]).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Set (to the LLVM tools' directory) in the environment of the nested cargo.
pub const LINK_ENV: &str = "KERNEL_BUILDER_LLVM_BIN";
/// The PTX ISA version for `llc`, e.g. `80`.
pub const PTX_ISA_ENV: &str = "KERNEL_BUILDER_PTX_ISA";

/// When this process was started by rustc as the NVPTX linker, links and exits; otherwise
/// returns at once. [`crate::KernelBuilder::build`] calls it first, so a build script needs no
/// more; any other program that calls `build` must call this at the top of `main`, before it
/// reads its own arguments.
pub fn run_if_invoked_as_linker() {
    let Some(llvm_bin) = std::env::var_os(LINK_ENV) else { return };
    let isa = std::env::var(PTX_ISA_ENV).unwrap_or_else(|_| "70".into());
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    match link(Path::new(&llvm_bin), &isa, &args) {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("kernel-builder link step: {e}");
            std::process::exit(1);
        }
    }
}

#[derive(Default, Debug)]
struct LinkArgs {
    exports: Vec<String>,
    objects: Vec<PathBuf>,
    archives: Vec<PathBuf>,
    target_cpu: Option<String>,
    output: Option<PathBuf>,
}

/// Parses llvm-bitcode-linker's command line as rustc writes it; flags that do not change the
/// result here (`-L`, `--target`, `-O3`, `--debug`, `--target-feature`) are accepted and ignored.
fn parse(args: &[OsString]) -> Result<LinkArgs, String> {
    let mut parsed = LinkArgs::default();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let s = arg.to_string_lossy();
        let mut value = || it.next().cloned().ok_or_else(|| format!("`{s}` without a value"));
        match s.as_ref() {
            "--export-symbol" => parsed.exports.push(value()?.to_string_lossy().into_owned()),
            "-o" => parsed.output = Some(value()?.into()),
            "--target-cpu" => parsed.target_cpu = Some(value()?.to_string_lossy().into_owned()),
            "-L" | "--target" | "--target-feature" => {
                value()?;
            }
            _ if s.starts_with("-O") || s == "--debug" || s.starts_with("--target-feature=") => {}
            _ if s.starts_with('-') => return Err(format!("unknown linker flag `{s}`")),
            _ if s.ends_with(".rlib") => parsed.archives.push(arg.into()),
            _ => parsed.objects.push(arg.into()),
        }
    }
    Ok(parsed)
}

fn link(llvm_bin: &Path, ptx_isa: &str, args: &[OsString]) -> Result<(), String> {
    let a = parse(args)?;
    let output = a.output.ok_or("no `-o` output given")?;
    let cpu = a.target_cpu.ok_or("no `--target-cpu` given")?;
    if a.objects.is_empty() {
        return Err("no bitcode objects to link".into());
    }
    let work = output.with_extension("link");
    std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    let linked = work.join("linked.bc");
    let optimized = work.join("optimized.bc");
    let raw_ptx = work.join("llc.ptx");

    let tool = |name: &str| Command::new(llvm_bin.join(name));
    run(tool("llvm-link").args(&a.objects).arg("-o").arg(&linked))?;
    for (i, archive) in a.archives.iter().enumerate() {
        // llvm-link cannot read an rlib whole (its `lib.rmeta` member is not bitcode): unpack
        // the archive and take from its objects only what the crate still needs.
        let dir = work.join(format!("rlib{i}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        run(tool("llvm-ar").arg("x").arg("--output").arg(&dir).arg(archive))?;
        let mut members: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "o"))
            .collect();
        members.sort();
        if !members.is_empty() {
            run(tool("llvm-link").arg(&linked).arg("--only-needed").args(&members).arg("-o").arg(&linked))?;
        }
    }
    run(tool("opt")
        .arg("-passes=internalize,default<O3>")
        // Kernels keep tiles in register arrays indexed by loop counters; only fully unrolled
        // loops let SROA turn them into registers. LLVM's default threshold (300) leaves the
        // larger head-dim buckets rolled, with the arrays in local memory.
        .arg("-unroll-threshold=4000")
        .arg(format!("-internalize-public-api-list={}", a.exports.join(",")))
        .arg(&linked)
        .arg("-o")
        .arg(&optimized))?;
    run(tool("llc")
        .arg("-O3")
        .arg(format!("-mcpu={cpu}"))
        .arg(format!("-mattr=+ptx{ptx_isa}"))
        .arg(&optimized)
        .arg("-o")
        .arg(&raw_ptx))?;

    let ptx = std::fs::read_to_string(&raw_ptx).map_err(|e| format!("{}: {e}", raw_ptx.display()))?;
    let ptx = crate::ptx_attrs::apply(&ptx)?;
    std::fs::write(&output, ptx).map_err(|e| format!("{}: {e}", output.display()))
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("cannot run {:?}: {e}", cmd.get_program()))?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!("{:?} failed ({}):\n{}", cmd.get_program(), out.status, String::from_utf8_lossy(&out.stderr)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rustc_command_line() {
        let line = "--export-symbol k --export-symbol __kernel_attrs__k /t/deps/k.cgu.0.rcgu.o \
                    /t/deps/libcompiler_builtins-1.rlib -L /t/raw --target nvptx64-nvidia-cuda \
                    --target-cpu sm_90a -L /s -o /t/deps/k.ptx -O3 --debug";
        let args: Vec<OsString> = line.split_whitespace().map(OsString::from).collect();
        let a = parse(&args).unwrap();
        assert_eq!(a.exports, ["k", "__kernel_attrs__k"]);
        assert_eq!(a.objects, [PathBuf::from("/t/deps/k.cgu.0.rcgu.o")]);
        assert_eq!(a.archives.len(), 1);
        assert_eq!(a.target_cpu.as_deref(), Some("sm_90a"));
        assert_eq!(a.output, Some(PathBuf::from("/t/deps/k.ptx")));
    }

    #[test]
    fn rejects_unknown_flags() {
        let args = [OsString::from("--frobnicate")];
        assert!(parse(&args).is_err());
    }
}
