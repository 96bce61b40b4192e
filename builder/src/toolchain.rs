//! Finding the pinned nightly toolchain and its LLVM tools, whatever toolchain runs the caller.

use crate::BuildError;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The pinned toolchain, reached through rustup by name.
pub struct Toolchain {
    pub name: String,
    rustup: PathBuf,
    /// `llvm-link`, `opt`, `llc` (component `llvm-tools`).
    pub llvm_bin: PathBuf,
}

impl Toolchain {
    pub fn locate(name: &str) -> Result<Self, BuildError> {
        let rustup = find_rustup().ok_or_else(|| BuildError::Toolchain {
            toolchain: name.into(),
            message: "rustup was not found on PATH, in $CARGO_HOME/bin or in ~/.cargo/bin".into(),
        })?;
        let partial = Toolchain { name: name.into(), rustup, llvm_bin: PathBuf::new() };
        let missing = |what: &str| BuildError::Toolchain {
            toolchain: name.into(),
            message: format!(
                "{what}; install it with `rustup toolchain install {name} --component rust-src,llvm-tools`"
            ),
        };
        let sysroot = partial
            .capture("rustc", &["--print", "sysroot"])
            .map_err(|e| missing(&format!("the toolchain is not usable ({e})")))?;
        let host = partial
            .capture("rustc", &["-vV"])
            .ok()
            .and_then(|v| v.lines().find_map(|l| l.strip_prefix("host: ").map(str::to_string)))
            .ok_or_else(|| missing("`rustc -vV` names no host"))?;
        let sysroot = PathBuf::from(sysroot.trim());
        if !sysroot.join("lib/rustlib/src/rust/library/core").is_dir() {
            return Err(missing("its component `rust-src` is missing (needed by -Zbuild-std=core)"));
        }
        let llvm_bin = sysroot.join("lib/rustlib").join(host).join("bin");
        if !llvm_bin.join(exe("llc")).is_file() {
            return Err(missing("its component `llvm-tools` is missing (llvm-link, opt, llc)"));
        }
        Ok(Toolchain { llvm_bin, ..partial })
    }

    /// `rustup run <toolchain> <program>`, with an environment free of the outer build's settings.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(&self.rustup);
        cmd.args(["run", &self.name, program]);
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            if is_outer_build_variable(&key) {
                cmd.env_remove(key.as_ref());
            }
        }
        cmd
    }

    fn capture(&self, program: &str, args: &[&str]) -> Result<String, String> {
        let out = self.command(program).args(args).output().map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// Variables cargo and rustup set for the outer build (or its build script) that would change
/// or break the nested one: its toolchain, flags, wrappers, target dir, jobserver.
fn is_outer_build_variable(key: &str) -> bool {
    (key.starts_with("CARGO_") && key != "CARGO_HOME" && key != "CARGO_NET_OFFLINE")
        || key.starts_with("RUSTC")
        || key.starts_with("DEP_")
        || matches!(
            key,
            "CARGO"
                | "RUSTFLAGS"
                | "RUSTDOCFLAGS"
                | "RUSTUP_TOOLCHAIN"
                | "TARGET"
                | "HOST"
                | "OUT_DIR"
                | "OPT_LEVEL"
                | "PROFILE"
                | "DEBUG"
                | "NUM_JOBS"
                | "MAKEFLAGS"
                | "MFLAGS"
        )
}

/// The `channel` of the nearest `rust-toolchain.toml` at or above `dir`.
pub fn pinned_channel(dir: &Path) -> Option<String> {
    dir.ancestors().find_map(|d| {
        let text = std::fs::read_to_string(d.join("rust-toolchain.toml")).ok()?;
        text.lines().find_map(|l| {
            let (key, value) = l.split_once('=')?;
            (key.trim() == "channel").then(|| value.trim().trim_matches('"').to_string())
        })
    })
}

fn find_rustup() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(exe("rustup")));
    let cargo_home = std::env::var_os("CARGO_HOME").map(|h| PathBuf::from(h).join("bin").join(exe("rustup")));
    let home = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo/bin").join(exe("rustup")));
    on_path.chain(cargo_home).chain(home).find(|p| p.is_file())
}

fn exe(name: &str) -> String {
    format!("{name}{}", std::env::consts::EXE_SUFFIX)
}
