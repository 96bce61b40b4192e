//! The library's error type. Every fallible entry point returns [`Error`]; none panics.

use crate::KernelPath;
use cudarc::driver::DriverError;
use std::fmt;

/// Why a rustflash call failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The NVIDIA driver library (`libcuda.so` / `nvcuda.dll`) could not be loaded.
    NoDriver,
    /// The driver reports no GPU with this ordinal.
    NoDevice {
        /// The ordinal asked for.
        ordinal: usize,
        /// The number of GPUs the driver reports (valid ordinals are `0..count`).
        count: usize,
    },
    /// The GPU is older than compute capability 7.0 (Volta).
    UnsupportedDevice {
        /// The GPU's ordinal.
        ordinal: usize,
        /// The GPU's name, as the driver reports it.
        name: String,
        /// The GPU's compute capability `(major, minor)`.
        compute_capability: (u32, u32),
    },
    /// A forced kernel path that this GPU cannot run (e.g. Hopper's on a GPU other than 9.0).
    PathUnavailable {
        /// The path that was forced.
        path: KernelPath,
        /// The GPU's compute capability `(major, minor)`.
        compute_capability: (u32, u32),
    },
    /// The PTX module of `path` has no kernel of that name (not built for that architecture).
    MissingKernel {
        /// The kernel's `.entry` name.
        kernel: String,
        /// The path whose module was searched.
        path: KernelPath,
    },
    /// A launch asks for more dynamic shared memory than the GPU gives one block.
    SharedMemoryLimit {
        /// The kernel's `.entry` name.
        kernel: String,
        /// The dynamic shared memory the launch needs, in bytes per block.
        requested: usize,
        /// The GPU's per-block limit, in bytes ([`crate::DeviceInfo::shared_memory_per_block`]).
        limit: usize,
    },
    /// The operation has no kernels on this path yet.
    Unsupported {
        /// The operation asked for, e.g. `"forward attention"`.
        operation: &'static str,
        /// The device's kernel path.
        path: KernelPath,
    },
    /// An argument is not what the call expects. `argument` names the one at fault, as the
    /// call's parameter (`q`, `k`, `v`, `out`, `lse`, `stream`) or option
    /// (`options.softmax_scale`, `options.tile`) is named; `expected` states the rule and `got`
    /// what was given (shapes and strides as given, never a value computed from them that could
    /// have wrapped).
    InvalidArgument {
        /// The parameter or option at fault, e.g. `q` or `options.softmax_scale`.
        argument: &'static str,
        /// The rule the argument breaks, as a phrase.
        expected: String,
        /// What was given.
        got: String,
    },
    /// A CUDA driver call failed.
    Driver {
        /// What the library was doing, e.g. `"creating a stream"`.
        during: &'static str,
        /// The driver's error code.
        error: DriverError,
    },
}

/// The library's result type: [`Error`] unless another error type is named.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// `argument` is not what the call expects.
    pub(crate) fn invalid(
        argument: &'static str,
        expected: impl Into<String>,
        got: impl fmt::Display,
    ) -> Error {
        Error::InvalidArgument { argument, expected: expected.into(), got: got.to_string() }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NoDriver => write!(
                f,
                "no NVIDIA driver: libcuda could not be loaded (install the driver, or add its folder to LD_LIBRARY_PATH)"
            ),
            Error::NoDevice { ordinal, count } => {
                write!(f, "no CUDA device {ordinal}: the driver reports {count} device(s)")
            }
            Error::UnsupportedDevice { ordinal, name, compute_capability: (ma, mi) } => write!(
                f,
                "device {ordinal} ({name}) has compute capability {ma}.{mi}; rustflash needs 7.0 (Volta) or newer"
            ),
            Error::PathUnavailable { path, compute_capability: (ma, mi) } => {
                write!(f, "the {path} kernels cannot run on a GPU of compute capability {ma}.{mi}")
            }
            Error::MissingKernel { kernel, path } => {
                write!(f, "kernel `{kernel}` is not in the {path} module")
            }
            Error::SharedMemoryLimit { kernel, requested, limit } => write!(
                f,
                "kernel `{kernel}` asks for {requested} bytes of shared memory per block; this GPU allows {limit}"
            ),
            Error::Unsupported { operation, path } => {
                write!(
                    f,
                    "{operation} has no kernels on the {path} path yet; use a GPU of compute capability 8.0 or newer"
                )
            }
            Error::InvalidArgument { argument, expected, got } => {
                write!(f, "invalid argument `{argument}`: expected {expected}, got {got}")
            }
            Error::Driver { during, error } => write!(f, "CUDA driver error while {during}: {error}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Driver { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// Attaches what was being done to a driver error: `.during("loading the PTX module")`.
pub(crate) trait DriverContext<T> {
    fn during(self, what: &'static str) -> Result<T>;
}

impl<T> DriverContext<T> for std::result::Result<T, DriverError> {
    fn during(self, during: &'static str) -> Result<T> {
        self.map_err(|error| Error::Driver { during, error })
    }
}
