//! The GPU architectures a kernel crate is compiled for.

use std::fmt;

/// A PTX target. Each one is compiled separately (`-Ctarget-cpu`), so kernel code can gate an
/// instruction on `cfg(target_feature = "sm_80")`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Arch {
    /// Volta and Turing (compute capability 7.x): WMMA tensor cores.
    Sm70,
    /// Ampere and newer, Hopper included (8.x, 9.x, 10.x, 12.x): `mma.sync`, `ldmatrix`, `cp.async`.
    Sm80,
    /// Hopper only (exactly 9.0): `wgmma`, TMA, `setmaxnreg`. PTX for `sm_90a` runs on no other GPU.
    Sm90a,
}

impl Arch {
    pub const ALL: [Arch; 3] = [Arch::Sm70, Arch::Sm80, Arch::Sm90a];

    /// The name rustc, llc and ptxas use (`-Ctarget-cpu`, `-mcpu`, `-arch`).
    pub const fn name(self) -> &'static str {
        match self {
            Arch::Sm70 => "sm_70",
            Arch::Sm80 => "sm_80",
            Arch::Sm90a => "sm_90a",
        }
    }

    /// The lowest PTX ISA version the architecture needs, as (major, minor).
    ///
    /// An older driver refuses PTX newer than itself, so each module asks for no more than its
    /// instructions need. 7.0 is also the lowest version rustc's NVPTX target emits; it is
    /// enough for WMMA (6.0), `ldmatrix` (6.5), `mma.sync` m16n8k16 and `cp.async` (7.0).
    /// `sm_90a` (`wgmma`, `setmaxnreg`) needs 8.0.
    pub const fn ptx_isa(self) -> (u32, u32) {
        match self {
            Arch::Sm70 | Arch::Sm80 => (7, 0),
            Arch::Sm90a => (8, 0),
        }
    }

    pub fn from_name(name: &str) -> Option<Arch> {
        Arch::ALL.into_iter().find(|a| a.name() == name)
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
