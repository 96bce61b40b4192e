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

/// A comparison's tolerance for a case of `f32` precision (`None`: f16 or bf16): the accurate
/// mode's slack has a floor for exact zeros (see `Tolerance::f32_accurate`).
pub fn tolerance(
    f32: Option<rustflash::F32Precision>,
    t: rustflash_reference::check::Tolerance,
    reference: &[f64],
) -> rustflash_reference::check::Tolerance {
    match f32 {
        Some(rustflash::F32Precision::Accurate) => t.f32_accurate(reference),
        _ => t,
    }
}
