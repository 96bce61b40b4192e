//! Shared pieces of rustflash's test binaries: the harness (GPU tests are *ignored*, never
//! passed, where no GPU is present), seeded random inputs, and GPU buffer helpers.

pub mod backward_case;
pub mod forward_case;
pub mod gpu;
pub mod harness;
pub mod rng;
