//! Shared pieces of rustflash's test binaries: the harness (GPU tests are *ignored*, never
//! passed, where no GPU is present), seeded random inputs, and GPU buffer helpers.

pub mod backward_case;
pub mod forward_case;
pub mod gpu;
pub mod harness;
pub mod rng;

/// A case's element type as its name spells it: `f32_tf32`, `f32_accurate`, `bf16` or `f16`.
pub fn dtype_name(f32: Option<rustflash::F32Precision>, bf16: bool) -> String {
    match (f32, bf16) {
        (Some(p), _) => format!("f32_{p:?}"),
        (None, true) => "bf16".into(),
        (None, false) => "f16".into(),
    }
}

/// Calls `function::<T>(args)` with the case's element type `T`: f32 when it has an f32
/// precision, else bf16 or f16.
#[macro_export]
macro_rules! by_dtype {
    ($case:expr, $function:ident($($arg:expr),*)) => {
        match ($case.f32, $case.bf16) {
            (Some(_), _) => $function::<f32>($($arg),*),
            (None, true) => $function::<half::bf16>($($arg),*),
            (None, false) => $function::<half::f16>($($arg),*),
        }
    };
}

/// The matrix-multiply family that runs a case of element type `T` (`f32`: its precision) on
/// `path`: what its plain reference and its tolerance follow.
pub fn family<T: rustflash::Element>(
    path: rustflash::KernelPath,
    f32: Option<rustflash::F32Precision>,
) -> rustflash::Result<rustflash::MmaFamily> {
    path.family(T::DTYPE, f32.unwrap_or_default())
}

/// A comparison's tolerance for a case run by `family`: the float32 families of f32 accuracy
/// (3xTF32, the CUDA cores) have a slack of at least 32 ulp of `magnitude` (the tensor's largest
/// `|ref|`, or the largest of the three gradients'; see `Tolerance::f32_accurate`).
pub fn tolerance(
    family: rustflash::MmaFamily,
    t: rustflash_reference::check::Tolerance,
    magnitude: f64,
) -> rustflash_reference::check::Tolerance {
    match family {
        rustflash::MmaFamily::Tf32x3 | rustflash::MmaFamily::Simt => t.f32_accurate(magnitude),
        _ => t,
    }
}
