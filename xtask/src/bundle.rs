//! `cargo xtask bundle`: stripped release test binaries and the PTX in one folder, with a
//! script that runs them on a GPU host that has no Rust toolchain.

use crate::project_root;
use kernel_builder::{Arch, KernelBuilder};
use std::path::{Path, PathBuf};

const RUN_SH: &str = include_str!("bundle_run.sh");

pub fn run(args: &[String]) -> Result<(), String> {
    let root = project_root();
    let out = match args {
        [] => root.join("bundle"),
        [flag, dir] if flag == "--out" => PathBuf::from(dir),
        _ => return Err("usage: cargo xtask bundle [--out DIR]".into()),
    };
    let _ = std::fs::remove_dir_all(&out);
    let bin = out.join("bin");
    let ptx = out.join("ptx");
    for d in [&bin, &ptx] {
        std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }

    for exe in build_test_binaries()? {
        let name = test_name(&exe);
        let dest = bin.join(&name);
        std::fs::copy(&exe, &dest).map_err(|e| format!("{}: {e}", exe.display()))?;
        println!("bundled test binary {name}");
    }
    for (built, name) in build_bench(&root)? {
        std::fs::copy(&built, out.join(name)).map_err(|e| format!("{}: {e}", built.display()))?;
        make_executable(&out.join(name))?;
        println!("bundled {name}");
    }
    KernelBuilder::new(root.join("kernels"))
        .archs(&Arch::ALL)
        .target_dir(root.join("target/nvptx-kernels"))
        .out_dir(&ptx)
        .build()
        .map_err(|e| e.to_string())?;

    bundle_python(&root, &out.join("python"))?;

    let script = out.join("run.sh");
    std::fs::write(&script, RUN_SH).map_err(|e| format!("{}: {e}", script.display()))?;
    make_executable(&script)?;
    let size: u64 = walk(&out).iter().filter_map(|p| p.metadata().ok()).map(|m| m.len()).sum();
    println!(
        "bundle: {} ({:.1} MB); run it on a GPU host with `{}/run.sh quick`",
        out.display(),
        size as f64 / 1e6,
        out.display()
    );
    Ok(())
}

/// The Python package's wheel (built by maturin, stripped) and its tests, for `run.sh python`
/// on a host that has PyTorch but no Rust; skipped, with a note, where maturin is missing.
fn bundle_python(root: &Path, dest: &Path) -> Result<(), String> {
    let maturin = |args: &[&str]| {
        std::process::Command::new("python3")
            .args(["-m", "maturin"])
            .args(args)
            .current_dir(root.join("python"))
            .env("CARGO_PROFILE_RELEASE_STRIP", "symbols")
            .status()
    };
    if !maturin(&["--version"]).is_ok_and(|s| s.success()) {
        println!("no maturin (python3 -m pip install maturin): the Python package is not bundled");
        return Ok(());
    }
    let wheels = dest.join("wheels");
    std::fs::create_dir_all(&wheels).map_err(|e| format!("{}: {e}", wheels.display()))?;
    let wheels_arg = wheels.to_string_lossy().into_owned();
    if !maturin(&["build", "--release", "-o", &wheels_arg]).is_ok_and(|s| s.success()) {
        return Err("building the Python wheel failed".into());
    }
    // The tests and the timing script, as the Python files of their folders.
    for folder in ["tests", "bench"] {
        let (src, to_dir) = (root.join("python").join(folder), dest.join(folder));
        std::fs::create_dir_all(&to_dir).map_err(|e| format!("{}: {e}", to_dir.display()))?;
        for entry in std::fs::read_dir(&src).map_err(|e| format!("{}: {e}", src.display()))? {
            let path = entry.map_err(|e| e.to_string())?.path();
            if path.extension().is_some_and(|x| x == "py") {
                let to = to_dir.join(path.file_name().unwrap_or_default());
                std::fs::copy(&path, &to).map_err(|e| format!("{}: {e}", path.display()))?;
            }
        }
    }
    println!("bundled the Python wheel and its tests");
    Ok(())
}

/// `cargo test --release --no-run` for the GPU test crate, stripped; the executables' paths.
fn build_test_binaries() -> Result<Vec<PathBuf>, String> {
    let output = crate::cargo()
        // Integration tests only: the library's own unit tests need no GPU and run in CI.
        .args([
            "test",
            "--release",
            "--no-run",
            "-p",
            "rustflash-tests",
            "--test",
            "*",
            "--message-format=json",
        ])
        .env("CARGO_PROFILE_RELEASE_STRIP", "symbols")
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !output.status.success() {
        return Err("building the test binaries failed".into());
    }
    let mut exes = Vec::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        // Artifact messages of test targets carry `"test":true` and an executable path.
        if line.contains("\"reason\":\"compiler-artifact\"") && line.contains("\"test\":true") {
            if let Some(path) = json_field(line, "executable") {
                exes.push(PathBuf::from(path));
            }
        }
    }
    if exes.is_empty() {
        return Err("cargo reported no test executables".into());
    }
    Ok(exes)
}

/// The benchmark and start-up binaries, release, stripped: (built path, name in the bundle).
fn build_bench(root: &Path) -> Result<[(PathBuf, &'static str); 2], String> {
    let status = crate::cargo()
        .args(["build", "--release", "-p", "rustflash-bench", "--bin", "rustflash-bench", "--bin", "startup"])
        .env("CARGO_PROFILE_RELEASE_STRIP", "symbols")
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err("building rustflash-bench failed".into());
    }
    let release = root.join("target/release");
    Ok([(release.join("rustflash-bench"), "rustflash-bench"), (release.join("startup"), "rustflash-startup")])
}

/// `primitives-0123abcd` -> `primitives`.
fn test_name(exe: &Path) -> String {
    let stem = exe.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    match stem.rsplit_once('-') {
        Some((name, hash)) if hash.chars().all(|c| c.is_ascii_hexdigit()) => name.to_string(),
        _ => stem,
    }
}

fn json_field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let start = line.find(&format!("\"{key}\":\""))? + key.len() + 4;
    let end = line[start..].find('"')?;
    Some(&line[start..start + end])
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                files.extend(walk(&p));
            } else {
                files.push(p);
            }
        }
    }
    files
}

#[cfg(unix)]
fn make_executable(p: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).map_err(|e| e.to_string())
}

#[cfg(not(unix))]
fn make_executable(_: &Path) -> Result<(), String> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_paths_come_out_of_cargo_messages() {
        assert_eq!(test_name(Path::new("/t/release/deps/primitives-0a1b2c3d4e5f6789")), "primitives");
        let line = r#"{"reason":"compiler-artifact","profile":{"test":true},"executable":"/t/deps/x-12ab"}"#;
        assert_eq!(json_field(line, "executable"), Some("/t/deps/x-12ab"));
    }
}
