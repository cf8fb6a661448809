//! tasker's native step handlers behind a C ABI, for cffi in ABI mode (`ffi.dlopen`).
//!
//! Built as `target/release/libtasker_ffi_handler.so` (`.dylib` on macOS,
//! `tasker_ffi_handler.dll` on Windows) by `cargo build --release -p tasker_ffi_handler`.
//!
//! # The contract
//!
//! ```c
//! char *handle(const char *json);        // {"dummy": true}; panics on {"panic": true}
//! char *order_totals(const char *json);  // {"subtotal_cents", "tax_cents", "total_cents", "item_count"}
//! void free_string(char *s);
//! ```
//!
//! * **Input**: a NUL-terminated UTF-8 JSON text, borrowed for the duration of the call.
//! * **Output**: every entry point returns a new NUL-terminated UTF-8 JSON text allocated by
//!   Rust (`CString::into_raw`). The caller owns it and must release it **exactly once** with
//!   `free_string` (never with C `free`); `free_string(NULL)` is a no-op. The text never
//!   contains an interior NUL (JSON escapes it as `\u0000`).
//! * **Errors**: nothing unwinds across the boundary and nothing aborts. Bad input and
//!   failures come back as a JSON error object instead of a result:
//!
//!   ```json
//!   {"error": {"kind": "invalid_input", "message": "order_totals: line_items[0].quantity is required"}}
//!   ```
//!
//!   A result is an error exactly when its top-level object has the key `"error"` (no result
//!   has one). `kind` is one of `null_pointer` (the argument was NULL), `invalid_utf8`,
//!   `invalid_json`, `invalid_input` (JSON of the wrong shape: not an object, a missing field,
//!   a wrong type, a negative or out-of-range amount), `overflow` (a total does not fit a
//!   signed 64-bit integer), `panic` (the handler panicked; the panic was caught with
//!   `catch_unwind`) and `internal` (a result could not be handed over; no code path does).
//!   `message` is readable, starts with the function name and, for bad input, names the
//!   field (`line_items[3].quantity`).
//! * The one exception: if the process runs out of memory Rust aborts, as it does everywhere.
//!   NULL is returned only if building the answer itself panicked, which no code path does.
//! * All entry points are thread-safe and keep no state between calls.
//!
//! The modules [`orders`], [`dummy`] and [`error`] hold the handlers' logic without any FFI;
//! the `PyO3` module `tasker_dummy_handler` links them too, so both bindings agree by
//! construction. (Its extension module therefore also carries the three C symbols; Python
//! loads extension modules with `RTLD_LOCAL`, so they are inert there. Gating them behind a
//! cargo feature would make `cargo build -p tasker_ffi_handler` and maturin rebuild each
//! other's artifacts on every run, since a cdylib's fingerprint is shared across features.)

mod abi;
pub mod dummy;
pub mod error;
pub mod json;
pub mod orders;

pub use abi::{free_string, handle, order_totals};
