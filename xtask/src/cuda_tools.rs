//! NVIDIA's command-line tools from PyPI, installed on demand into `.tools/` (gitignored).
//!
//! `ptxas` assembles PTX to machine code on a machine without a GPU or CUDA install; it comes
//! from `nvidia-cuda-nvcc-cu12` 12.9, the last release that still assembles `sm_70`.
//! `cuobjdump` and `nvdisasm` show that machine code; PyPI has them from CUDA 13 only, which
//! disassembles `sm_80` and `sm_90a` but no longer `sm_70`.

use crate::project_root;
use std::path::PathBuf;
use std::process::Command;

struct Tool {
    /// Folder under `.tools/`.
    folder: &'static str,
    /// Path of the executable inside the folder.
    exe: &'static str,
    packages: &'static [&'static str],
}

const PTXAS: Tool = Tool {
    folder: "ptxas-12.9",
    exe: "nvidia/cuda_nvcc/bin/ptxas",
    packages: &["nvidia-cuda-nvcc-cu12==12.9.86"],
};

const CUOBJDUMP: Tool = Tool {
    folder: "sass-13.2",
    exe: "nvidia/cu13/bin/cuobjdump",
    packages: &["nvidia-cuda-cuobjdump==13.2.51", "nvidia-cuda-nvdisasm==13.2.51"],
};

pub fn ptxas() -> Result<PathBuf, String> {
    ensure(&PTXAS)
}

/// `cuobjdump`; `nvdisasm`, which it calls, lies beside it.
pub fn cuobjdump() -> Result<PathBuf, String> {
    ensure(&CUOBJDUMP)
}

fn ensure(tool: &Tool) -> Result<PathBuf, String> {
    let dir = project_root().join(".tools").join(tool.folder);
    let exe = dir.join(tool.exe);
    if exe.is_file() {
        return Ok(exe);
    }
    eprintln!("installing {} into {}", tool.packages.join(" "), dir.display());
    let status = Command::new("python3")
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--root-user-action=ignore",
            "--no-deps",
            "--target",
        ])
        .arg(&dir)
        .args(tool.packages)
        .status()
        .map_err(|e| format!("cannot run `python3 -m pip` to install {}: {e}", tool.packages.join(" ")))?;
    if !status.success() || !exe.is_file() {
        return Err(format!("installing {} with pip failed ({status})", tool.packages.join(" ")));
    }
    Ok(exe)
}
