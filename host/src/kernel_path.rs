//! Which PTX module runs on which GPU.

use std::fmt;

/// A family of kernels, one PTX module each, named for the instructions it is built on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum KernelPath {
    /// `sm_70` PTX: WMMA tensor cores. Volta and Turing (7.x); runs on any GPU >= 7.0.
    Volta,
    /// `sm_80` PTX: `mma.sync`, `ldmatrix`, `cp.async`. Ampere and newer; runs on any GPU >= 8.0.
    Ampere,
    /// `sm_90a` PTX: `wgmma` and TMA. Runs on compute capability 9.0 only.
    Hopper,
}

impl KernelPath {
    /// Every path, oldest architecture first.
    pub const ALL: [KernelPath; 3] = [KernelPath::Volta, KernelPath::Ampere, KernelPath::Hopper];

    /// The architecture the module is compiled for, as `build.rs` names it.
    pub const fn arch(self) -> &'static str {
        match self {
            KernelPath::Volta => "sm_70",
            KernelPath::Ampere => "sm_80",
            KernelPath::Hopper => "sm_90a",
        }
    }

    /// The path chosen by default for a GPU of compute capability `(major, minor)`: `sm_90a` only
    /// on 9.0 (its PTX runs nowhere else), `sm_80` on every other 8.0 or newer (10.x and 12.x
    /// included: the driver compiles the PTX for them), `sm_70` on 7.x; `None` below 7.0.
    pub const fn native(major: u32, minor: u32) -> Option<KernelPath> {
        match (major, minor) {
            (9, 0) => Some(KernelPath::Hopper),
            (8.., _) => Some(KernelPath::Ampere),
            (7, _) => Some(KernelPath::Volta),
            _ => None,
        }
    }

    /// Whether a GPU of compute capability `(major, minor)` can run this path when forced.
    pub const fn runs_on(self, major: u32, minor: u32) -> bool {
        match self {
            KernelPath::Volta => major >= 7,
            KernelPath::Ampere => major >= 8,
            KernelPath::Hopper => major == 9 && minor == 0,
        }
    }
}

impl KernelPath {
    /// The matrix-multiply family that runs `dtype` on this path, `precision` choosing between
    /// the TF32 families for f32 on the Ampere and Hopper paths: what the kernels' names and a
    /// plain reference follow.
    ///
    /// # Errors
    /// [`crate::Error::InvalidArgument`] naming `q` for bfloat16 on the Volta path.
    pub fn family(
        self,
        dtype: crate::Dtype,
        precision: crate::F32Precision,
    ) -> crate::Result<crate::MmaFamily> {
        crate::attention::dispatch::family(self, dtype, precision)
    }
}

impl fmt::Display for KernelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} ({})", self, self.arch())
    }
}

#[cfg(test)]
mod tests {
    use super::KernelPath::*;
    use super::*;

    #[test]
    fn native_paths_follow_the_dispatch_rules() {
        let cases = [
            ((7, 0), Some(Volta)),
            ((7, 5), Some(Volta)),
            ((8, 0), Some(Ampere)),
            ((8, 6), Some(Ampere)),
            ((8, 9), Some(Ampere)),
            ((9, 0), Some(Hopper)),
            ((10, 0), Some(Ampere)),
            ((12, 0), Some(Ampere)),
            ((6, 1), None),
        ];
        for ((major, minor), want) in cases {
            assert_eq!(KernelPath::native(major, minor), want, "cc {major}.{minor}");
        }
    }

    #[test]
    fn older_paths_can_be_forced_on_newer_gpus() {
        assert!(Volta.runs_on(9, 0) && Ampere.runs_on(9, 0) && Hopper.runs_on(9, 0));
        assert!(Volta.runs_on(7, 5) && !Ampere.runs_on(7, 5));
        assert!(!Hopper.runs_on(10, 0) && !Hopper.runs_on(8, 0));
    }
}
