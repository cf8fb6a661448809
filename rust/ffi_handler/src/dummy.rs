//! `handle`: the seed's dummy step handler.
//!
//! It returns `{"dummy": true}` for any object, and panics when the object has
//! `"panic": true` at its top level, so that the panic path can be tried end to end.

/// The function name every message starts with.
pub const FUNCTION: &str = "handle";

/// The panic message of a requested panic.
pub const PANIC_MESSAGE: &str = "handle: panic requested by the inputs (\"panic\": true)";

/// Does the dummy handler's work.
///
/// # Panics
/// On purpose, when `panic_requested` (the inputs had `"panic": true`).
pub fn run(panic_requested: bool) {
    assert!(!panic_requested, "{PANIC_MESSAGE}");
}
