//! Builds a `no_std` kernel crate to PTX with rustc's `nvptx64-nvidia-cuda` target, once per GPU
//! architecture: the job Rust-CUDA's `cuda_builder` does for its NVVM backend, here for rustc's
//! own NVPTX backend and without `llvm-bitcode-linker`.
//!
//! ```no_run
//! // build.rs
//! use kernel_builder::{Arch, KernelBuilder};
//! fn main() {
//!     KernelBuilder::new("../kernels")
//!         .archs(&Arch::ALL)
//!         .cargo_directives(true)
//!         .build_or_exit();
//! }
//! ```
//!
//! Each architecture is a nested `cargo build --release -Zbuild-std=core` of the kernel crate run
//! by the pinned nightly (named in the nearest `rust-toolchain.toml`), in its own target dir so
//! the outer build's lock and flags do not interfere and the outer build may use stable Rust.
//! The link step is this crate's own ([`link`]): rustc calls the running program back as its
//! linker. The PTX lands in `OUT_DIR` as `<lib>.<arch>.ptx`, ready for `include_str!`, and split
//! into one complete module per kernel, `<lib>.<arch>/<kernel>.ptx` ([`ptx_module::split`]), so a
//! program can hand the driver only the kernels it launches.

mod arch;
pub mod link;
pub mod ptx_attrs;
pub mod ptx_module;
mod toolchain;

pub use arch::Arch;
pub use link::run_if_invoked_as_linker;

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Where and how to build a kernel crate.
#[derive(Clone, Debug)]
pub struct KernelBuilder {
    crate_path: PathBuf,
    archs: Vec<Arch>,
    out_dir: Option<PathBuf>,
    target_dir: Option<PathBuf>,
    toolchain: Option<String>,
    cargo_directives: bool,
    watched: Vec<PathBuf>,
    features: Vec<String>,
}

/// One architecture's PTX module.
#[derive(Clone, Debug)]
pub struct BuiltModule {
    pub arch: Arch,
    /// The whole module, every kernel of the architecture.
    pub ptx_path: PathBuf,
    /// The same kernels, one complete module each, in module order.
    pub kernels: Vec<BuiltKernel>,
    /// Wall time of this architecture's nested build (they run in parallel).
    pub build_time: Duration,
}

/// One kernel's own module (see [`ptx_module::split`]).
#[derive(Clone, Debug)]
pub struct BuiltKernel {
    /// The `.entry` name, as the driver looks it up.
    pub name: String,
    /// `<out_dir>/<lib>.<arch>/<name>.ptx`.
    pub ptx_path: PathBuf,
    /// The module's text before this offset is the part every kernel of the architecture shares;
    /// from it on, the kernel's `.entry`.
    pub entry_offset: usize,
}

#[derive(Debug)]
#[non_exhaustive]
pub enum BuildError {
    CratePathDoesntExist(PathBuf),
    /// Neither [`KernelBuilder::out_dir`] nor `OUT_DIR` says where the PTX goes.
    NoOutDir,
    /// The pinned toolchain or one of its components is missing.
    Toolchain {
        toolchain: String,
        message: String,
    },
    /// The kernel crate did not compile for `arch`; rustc's messages were written to stderr.
    KernelCompile {
        arch: Arch,
    },
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::CratePathDoesntExist(p) => write!(f, "kernel crate {} does not exist", p.display()),
            BuildError::NoOutDir => write!(f, "no output directory: set OUT_DIR or call out_dir()"),
            BuildError::Toolchain { toolchain, message } => write!(f, "toolchain {toolchain}: {message}"),
            BuildError::KernelCompile { arch } => {
                write!(f, "the kernel crate failed to compile for {arch} (rustc's messages above)")
            }
            BuildError::Io { path, error } => write!(f, "{}: {error}", path.display()),
        }
    }
}

impl std::error::Error for BuildError {}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> BuildError + '_ {
    move |error| BuildError::Io { path: path.to_path_buf(), error }
}

const TARGET: &str = "nvptx64-nvidia-cuda";

impl KernelBuilder {
    /// A builder for the kernel crate at `crate_path` (relative paths are taken from
    /// `CARGO_MANIFEST_DIR` when set, as in a build script).
    pub fn new(crate_path: impl AsRef<Path>) -> Self {
        let path = crate_path.as_ref();
        let crate_path = match std::env::var_os("CARGO_MANIFEST_DIR") {
            Some(dir) if path.is_relative() => PathBuf::from(dir).join(path),
            _ => path.to_path_buf(),
        };
        KernelBuilder {
            crate_path,
            archs: Arch::ALL.to_vec(),
            out_dir: None,
            target_dir: None,
            toolchain: None,
            cargo_directives: false,
            watched: Vec::new(),
            features: Vec::new(),
        }
    }

    /// The architectures to build (default: all of [`Arch::ALL`]).
    pub fn archs(mut self, archs: &[Arch]) -> Self {
        self.archs = archs.to_vec();
        self
    }

    /// Where the PTX files go (default: `OUT_DIR`).
    pub fn out_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.out_dir = Some(dir.into());
        self
    }

    /// The nested builds' target dir, one subfolder per architecture (default: `nvptx-kernels`
    /// beside the outer build's profile folders, shared by debug, release and `xtask` builds).
    pub fn target_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.target_dir = Some(dir.into());
        self
    }

    /// The toolchain to compile with (default: the nearest `rust-toolchain.toml`'s channel).
    pub fn toolchain(mut self, name: impl Into<String>) -> Self {
        self.toolchain = Some(name.into());
        self
    }

    /// Another folder the kernels depend on (a path dependency): a change there rebuilds them too.
    /// Relative paths are taken from `CARGO_MANIFEST_DIR`, as in [`KernelBuilder::new`].
    pub fn watch(mut self, path: impl AsRef<Path>) -> Self {
        let path = path.as_ref();
        self.watched.push(match std::env::var_os("CARGO_MANIFEST_DIR") {
            Some(dir) if path.is_relative() => PathBuf::from(dir).join(path),
            _ => path.to_path_buf(),
        });
        self
    }

    /// Cargo features of the kernel crate to turn on (`--features`). Each set of features builds
    /// in its own target dirs (`<arch>+<feature>+..`), so switching between sets rebuilds
    /// nothing that is already built.
    pub fn features(mut self, features: &[&str]) -> Self {
        let mut f: Vec<String> = features.iter().map(|s| s.to_string()).collect();
        f.sort();
        f.dedup();
        self.features = f;
        self
    }

    /// Print `cargo:rerun-if-changed` for the kernel sources and `cargo:warning` for their
    /// warnings (for build scripts).
    pub fn cargo_directives(mut self, on: bool) -> Self {
        self.cargo_directives = on;
        self
    }

    /// Like [`KernelBuilder::build`], but prints the error and exits with status 1.
    pub fn build_or_exit(self) -> Vec<BuiltModule> {
        self.build().unwrap_or_else(|e| {
            eprintln!("error: {e}");
            std::process::exit(1)
        })
    }

    /// Compiles every architecture (in parallel) and returns the PTX modules.
    pub fn build(self) -> Result<Vec<BuiltModule>, BuildError> {
        run_if_invoked_as_linker();

        let manifest = self.crate_path.join("Cargo.toml");
        if !manifest.is_file() {
            return Err(BuildError::CratePathDoesntExist(self.crate_path));
        }
        let lib_name = lib_name(&manifest)?;
        let out_dir = match self.out_dir.clone().or_else(|| std::env::var_os("OUT_DIR").map(PathBuf::from)) {
            Some(d) => d,
            None => return Err(BuildError::NoOutDir),
        };
        let channel = match self.toolchain.clone().or_else(|| toolchain::pinned_channel(&self.crate_path)) {
            Some(c) => c,
            None => {
                return Err(BuildError::Toolchain {
                    toolchain: "?".into(),
                    message: "no toolchain given and no rust-toolchain.toml above the kernel crate".into(),
                });
            }
        };
        let toolchain = toolchain::Toolchain::locate(&channel)?;
        let target_dir = self.target_dir.clone().unwrap_or_else(|| default_target_dir(&out_dir));
        std::fs::create_dir_all(&target_dir).map_err(io_err(&target_dir))?;
        std::fs::create_dir_all(&out_dir).map_err(io_err(&out_dir))?;
        let linker = install_linker(&target_dir)?;

        if self.cargo_directives {
            for p in ["src", "Cargo.toml", "Cargo.lock"] {
                println!("cargo:rerun-if-changed={}", self.crate_path.join(p).display());
            }
            for p in &self.watched {
                println!("cargo:rerun-if-changed={}", p.display());
            }
            if let Some(t) =
                self.crate_path.ancestors().map(|d| d.join("rust-toolchain.toml")).find(|p| p.is_file())
            {
                println!("cargo:rerun-if-changed={}", t.display());
            }
        }

        for &arch in &self.archs {
            invalidate_if_link_step_changed(&target_dir.join(self.arch_dir(arch)), &lib_name)?;
        }
        let children: Vec<_> = self
            .archs
            .iter()
            .map(|&arch| {
                let mut cmd = self.nested_cargo(&toolchain, &target_dir, &linker, arch);
                let start = Instant::now();
                let child = cmd.spawn();
                (arch, start, child)
            })
            .collect();

        let mut modules = Vec::new();
        let mut failure = None;
        let mut warnings = Vec::new();
        for (arch, start, child) in children {
            let output = child.and_then(|c| c.wait_with_output()).map_err(|e| BuildError::Toolchain {
                toolchain: channel.clone(),
                message: format!("cannot run cargo: {e}"),
            })?;
            let build_time = start.elapsed();
            let stderr = String::from_utf8_lossy(&output.stderr);
            if !output.status.success() {
                // Every architecture usually fails the same way: show rustc's messages once.
                if failure.is_none() {
                    eprintln!("{stderr}");
                    failure = Some(BuildError::KernelCompile { arch });
                }
                continue;
            }
            for w in warning_summaries(&stderr) {
                if !warnings.contains(&w) {
                    warnings.push(w);
                }
            }
            let arch_dir = target_dir.join(self.arch_dir(arch));
            let built = arch_dir.join(TARGET).join("release").join(format!("{lib_name}.ptx"));
            let ptx_path = out_dir.join(format!("{lib_name}.{}.ptx", arch.name()));
            std::fs::copy(&built, &ptx_path).map_err(io_err(&built))?;
            let kernels =
                write_kernel_modules(&ptx_path, &out_dir.join(format!("{lib_name}.{}", arch.name())))?;
            modules.push(BuiltModule { arch, ptx_path, kernels, build_time });
            let stamp = link_step_stamp_path(&arch_dir);
            std::fs::write(&stamp, link_step_fingerprint()).map_err(io_err(&stamp))?;
        }
        if let Some(e) = failure {
            return Err(e);
        }
        if self.cargo_directives {
            for w in warnings {
                println!("cargo:warning=kernels: {w} (details: `cargo clippy` in kernels/)");
            }
        }
        Ok(modules)
    }

    fn nested_cargo(
        &self,
        tc: &toolchain::Toolchain,
        target_dir: &Path,
        linker: &Path,
        arch: Arch,
    ) -> Command {
        let (major, minor) = arch.ptx_isa();
        let rustflags = [format!("-Ctarget-cpu={}", arch.name()), format!("-Clinker={}", linker.display())];
        let mut cmd = tc.command("cargo");
        cmd.args(["build", "--release", "-Zbuild-std=core", "--target", TARGET])
            .arg("--manifest-path")
            .arg(self.crate_path.join("Cargo.toml"))
            .arg("--target-dir")
            .arg(target_dir.join(self.arch_dir(arch)))
            .env("CARGO_ENCODED_RUSTFLAGS", rustflags.join("\x1f"))
            .env(link::LINK_ENV, &tc.llvm_bin)
            .env(link::PTX_ISA_ENV, format!("{major}{minor}"))
            .env("CARGO_TERM_COLOR", "never")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if !self.features.is_empty() {
            cmd.arg("--features").arg(self.features.join(","));
        }
        cmd
    }

    /// The architecture's folder in the target dir: `sm_80`, or `sm_80+testing` with features.
    fn arch_dir(&self, arch: Arch) -> String {
        let mut dir = arch.name().to_string();
        for f in &self.features {
            dir.push('+');
            dir.push_str(f);
        }
        dir
    }
}

/// Splits the module at `ptx_path` into one module per kernel, written as `<dir>/<kernel>.ptx`
/// (the folder is emptied of older `.ptx` files first).
fn write_kernel_modules(ptx_path: &Path, dir: &Path) -> Result<Vec<BuiltKernel>, BuildError> {
    let text = std::fs::read_to_string(ptx_path).map_err(io_err(ptx_path))?;
    let pieces = ptx_module::split(&text).map_err(|e| BuildError::Io {
        path: ptx_path.to_path_buf(),
        error: std::io::Error::other(format!("cannot split the module into kernels: {e}")),
    })?;
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    for old in std::fs::read_dir(dir).map_err(io_err(dir))?.flatten() {
        if old.path().extension().is_some_and(|x| x == "ptx") {
            std::fs::remove_file(old.path()).map_err(io_err(&old.path()))?;
        }
    }
    let mut kernels = Vec::with_capacity(pieces.len());
    for p in pieces {
        let path = dir.join(format!("{}.ptx", p.name));
        std::fs::write(&path, &p.ptx).map_err(io_err(&path))?;
        kernels.push(BuiltKernel { name: p.name, ptx_path: path, entry_offset: p.entry_offset });
    }
    Ok(kernels)
}

/// One line per rustc warning: its message and, when rustc gives one, where it is
/// (`warning: unused variable: `x` (src/lib.rs:3:9)`).
fn warning_summaries(stderr: &str) -> Vec<String> {
    let lines: Vec<&str> = stderr.lines().collect();
    let mut out = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        if !l.starts_with("warning") || l.contains("generated") {
            continue;
        }
        let at = lines[i + 1..]
            .iter()
            .take(3)
            .find_map(|n| n.trim_start().strip_prefix("--> "))
            .map(|loc| format!(" ({})", loc.trim()));
        out.push(format!("{l}{}", at.unwrap_or_default()));
    }
    out
}

/// Cargo relinks only when the kernel crate changes, not when the link step does (a new unroll
/// threshold, say). The link step's own source is fingerprinted; when the fingerprint differs
/// from the last build's, the linked PTX is deleted, and cargo, missing its output, relinks.
fn invalidate_if_link_step_changed(arch_dir: &Path, lib_name: &str) -> Result<(), BuildError> {
    let stamp = link_step_stamp_path(arch_dir);
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == link_step_fingerprint()) {
        return Ok(());
    }
    let release = arch_dir.join(TARGET).join("release");
    for p in [release.join(format!("{lib_name}.ptx")), release.join("deps").join(format!("{lib_name}.ptx"))] {
        if p.exists() {
            std::fs::remove_file(&p).map_err(io_err(&p))?;
        }
    }
    Ok(())
}

fn link_step_stamp_path(arch_dir: &Path) -> PathBuf {
    arch_dir.join("link-step.fingerprint")
}

/// FNV-1a of the link step's sources, as hex.
fn link_step_fingerprint() -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let sources = [include_str!("link.rs"), include_str!("ptx_attrs.rs"), include_str!("ptx_module.rs")];
    for b in sources.iter().flat_map(|s| s.bytes()) {
        h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
    }
    format!("{h:016x}")
}

/// `nvptx-kernels` beside the profile folders: `OUT_DIR` is `<target>/<profile>/build/<pkg>/out`.
fn default_target_dir(out_dir: &Path) -> PathBuf {
    let mut up = out_dir.ancestors();
    match (up.nth(2), up.nth(1)) {
        (Some(build), Some(target)) if build.file_name().is_some_and(|n| n == "build") => {
            target.join("nvptx-kernels")
        }
        _ => out_dir.join("nvptx-kernels"),
    }
}

/// rustc is given the link step as `-Clinker=<path>`; that path is part of the nested build's
/// flags, so it must not change between callers (a build script, `xtask`) or cargo would rebuild
/// `core` each time. The running program is copied to one fixed place in the target dir.
fn install_linker(target_dir: &Path) -> Result<PathBuf, BuildError> {
    let me = std::env::current_exe().map_err(io_err(Path::new("current executable")))?;
    let dest = target_dir.join(format!("ptx-link{}", std::env::consts::EXE_SUFFIX));
    let same = match (std::fs::read(&me), std::fs::read(&dest)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if !same {
        // Copy then rename: another build may be running the old copy right now.
        let tmp = target_dir.join(format!("ptx-link.{}.tmp", std::process::id()));
        std::fs::copy(&me, &tmp).map_err(io_err(&tmp))?;
        std::fs::rename(&tmp, &dest).map_err(io_err(&dest))?;
    }
    Ok(dest)
}

/// The library name cargo gives the crate's artifact: `[lib] name`, else the package name with
/// `-` turned into `_`.
fn lib_name(manifest: &Path) -> Result<String, BuildError> {
    let text = std::fs::read_to_string(manifest).map_err(io_err(manifest))?;
    let mut section = "";
    let (mut package, mut lib) = (None, None);
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line;
            continue;
        }
        if let Some((key, value)) = line.split_once('=') {
            if key.trim() == "name" {
                let value = value.trim().trim_matches('"').to_string();
                match section {
                    "[package]" => package = Some(value),
                    "[lib]" => lib = Some(value),
                    _ => {}
                }
            }
        }
    }
    lib.or(package).map(|n| n.replace('-', "_")).ok_or_else(|| BuildError::Io {
        path: manifest.to_path_buf(),
        error: std::io::Error::other("no [package] name"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_keep_their_location() {
        let stderr = "   Compiling k v0.1.0\nwarning: unnecessary `unsafe` block\n  --> src/a.rs:66:5\n   |\n\
                      warning: `k` (lib) generated 1 warning\nwarning: unused import\n";
        assert_eq!(
            warning_summaries(stderr),
            ["warning: unnecessary `unsafe` block (src/a.rs:66:5)", "warning: unused import"]
        );
    }

    #[test]
    fn target_dir_sits_beside_the_profiles() {
        let out = Path::new("/p/target/debug/build/host-0123/out");
        assert_eq!(default_target_dir(out), Path::new("/p/target/nvptx-kernels"));
        assert_eq!(default_target_dir(Path::new("/x/out")), Path::new("/x/out/nvptx-kernels"));
    }
}
