//! The error type shared by every native entry point, and its JSON form.

use std::fmt;

use serde_json::{Value, json};

/// What went wrong, as the stable `kind` string of the JSON error object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The C caller passed a null pointer.
    NullPointer,
    /// The input bytes are not UTF-8.
    InvalidUtf8,
    /// The input is not JSON.
    InvalidJson,
    /// The input is JSON but not the shape the function expects.
    InvalidInput,
    /// An amount does not fit a signed 64-bit integer.
    Overflow,
    /// The handler panicked; the panic was caught at the boundary.
    Panic,
}

impl ErrorKind {
    /// The `kind` string of the JSON error object.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NullPointer => "null_pointer",
            Self::InvalidUtf8 => "invalid_utf8",
            Self::InvalidJson => "invalid_json",
            Self::InvalidInput => "invalid_input",
            Self::Overflow => "overflow",
            Self::Panic => "panic",
        }
    }
}

/// An error a handler reports instead of a result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerError {
    /// The class of the error.
    pub kind: ErrorKind,
    /// A readable message; names the function and, for bad input, the offending field.
    pub message: String,
}

impl HandlerError {
    /// An error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// `{"error": {"kind": ..., "message": ...}}`, the shape the C ABI returns.
    #[must_use]
    pub fn to_json(&self) -> Value {
        json!({"error": {"kind": self.kind.as_str(), "message": self.message}})
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for HandlerError {}
