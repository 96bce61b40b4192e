//! The reference's error: an argument it cannot evaluate, named.

use std::fmt;

/// An argument of a reference evaluation is not what the problem expects (a tensor of the wrong
/// shape, head counts that do not divide, a sampled row past the sequence).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Error {
    /// The argument at fault: `"q"`, `"k"`, `"v"`, `"dout"`, `"heads_q"` or `"rows"`.
    pub argument: &'static str,
    /// What the problem expects of it.
    pub expected: String,
    /// What it was.
    pub got: String,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn invalid(
        argument: &'static str,
        expected: impl Into<String>,
        got: impl fmt::Display,
    ) -> Self {
        Error { argument, expected: expected.into(), got: got.to_string() }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid argument `{}`: expected {}, got {}", self.argument, self.expected, self.got)
    }
}

impl std::error::Error for Error {}
