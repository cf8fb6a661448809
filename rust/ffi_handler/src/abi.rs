//! The C entry points. The contract is in the crate documentation.

use std::any::Any;
use std::ffi::{CStr, CString, c_char};
use std::panic::{self, AssertUnwindSafe};
use std::ptr;

use serde_json::Value;

use crate::error::{ErrorKind, HandlerError};
use crate::json;

/// A handler: parsed input in, JSON text out.
type Handler = fn(&Value) -> Result<String, HandlerError>;

/// Runs the handler `name` on the JSON at `input`: `{"dummy": true}`, or a JSON error object.
///
/// # Safety
/// `json` is null or points to a NUL-terminated string that stays valid during the call.
/// The returned string must be released with [`free_string`], exactly once.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn handle(json: *const c_char) -> *mut c_char {
    // SAFETY: the caller upholds the contract of `json`.
    unsafe { call(crate::dummy::FUNCTION, json, json::handle) }
}

/// Computes the totals of the order at `input` (see [`crate::orders`]), or a JSON error object.
///
/// # Safety
/// As for [`handle`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn order_totals(json: *const c_char) -> *mut c_char {
    // SAFETY: the caller upholds the contract of `json`.
    unsafe { call(crate::orders::FUNCTION, json, json::order_totals) }
}

/// Releases a string returned by this library. A null pointer is a no-op.
///
/// # Safety
/// `s` is null, or a pointer returned by this library that has not been freed yet.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn free_string(s: *mut c_char) {
    if !s.is_null() {
        // SAFETY: `s` came from `CString::into_raw` in `into_c_string` and is freed once.
        drop(unsafe { CString::from_raw(s) });
    }
}

/// The boundary: reads the input, runs `handler` and catches its panics; never unwinds.
///
/// # Safety
/// As for [`handle`].
unsafe fn call(function: &str, input: *const c_char, handler: Handler) -> *mut c_char {
    let answered = panic::catch_unwind(AssertUnwindSafe(|| {
        let answer = panic::catch_unwind(AssertUnwindSafe(|| {
            // SAFETY: the caller upholds the contract of `input`.
            let text = unsafe { read(function, input) }?;
            let inputs: Value = serde_json::from_str(text).map_err(|e| {
                HandlerError::new(
                    ErrorKind::InvalidJson,
                    format!("{function}: input is not valid JSON: {e}"),
                )
            })?;
            handler(&inputs)
        }));
        let text = match answer {
            Ok(Ok(text)) => text,
            Ok(Err(error)) => error.to_json().to_string(),
            Err(payload) => panic_error(function, payload.as_ref())
                .to_json()
                .to_string(),
        };
        into_c_string(text)
    }));
    // Only reachable if building the answer itself panicked, which no code path does; the
    // payload is leaked rather than dropped, since its destructor could panic again.
    answered.unwrap_or_else(|payload| {
        std::mem::forget(payload);
        ptr::null_mut()
    })
}

/// The input as UTF-8 text.
///
/// # Safety
/// As for [`handle`].
unsafe fn read<'a>(function: &str, input: *const c_char) -> Result<&'a str, HandlerError> {
    if input.is_null() {
        return Err(HandlerError::new(
            ErrorKind::NullPointer,
            format!("{function}: input is a null pointer"),
        ));
    }
    // SAFETY: not null, and the caller promises a NUL-terminated string.
    let bytes = unsafe { CStr::from_ptr(input) };
    bytes.to_str().map_err(|e| {
        HandlerError::new(
            ErrorKind::InvalidUtf8,
            format!(
                "{function}: input is not valid UTF-8 (invalid byte at offset {})",
                e.valid_up_to()
            ),
        )
    })
}

fn panic_error(function: &str, payload: &(dyn Any + Send)) -> HandlerError {
    let message = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a panic with a non-string payload");
    HandlerError::new(ErrorKind::Panic, format!("{function} panicked: {message}"))
}

/// Hands JSON text over as a C string the caller frees with [`free_string`].
///
/// JSON text escapes every control character, NUL included (`serde_json` does, and the
/// handlers' own texts hold only numbers and fixed keys), so it never has an interior NUL;
/// the fallback keeps that a checked fact rather than an assumption.
fn into_c_string(text: String) -> *mut c_char {
    let c_string = CString::new(text).unwrap_or_else(|_| {
        CString::from(
            c"{\"error\":{\"kind\":\"internal\",\"message\":\"the result had an interior NUL\"}}",
        )
    });
    c_string.into_raw()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Calls `f` with `input` and returns the parsed answer, freeing the returned string.
    fn answer(
        f: unsafe extern "C" fn(*const c_char) -> *mut c_char,
        input: *const c_char,
    ) -> Value {
        // SAFETY: `input` is null or a valid C string owned by the test.
        let out = unsafe { f(input) };
        assert!(!out.is_null());
        // SAFETY: `out` is a NUL-terminated string from this library.
        let text = unsafe { CStr::from_ptr(out) }.to_str().unwrap().to_owned();
        // SAFETY: `out` came from this library and is freed once.
        unsafe { free_string(out) };
        serde_json::from_str(&text).unwrap()
    }

    fn call_str(f: unsafe extern "C" fn(*const c_char) -> *mut c_char, input: &str) -> Value {
        let input = CString::new(input).unwrap();
        answer(f, input.as_ptr())
    }

    fn error_kind(value: &Value) -> &str {
        value["error"]["kind"]
            .as_str()
            .unwrap_or_else(|| panic!("not an error: {value}"))
    }

    #[test]
    fn handle_returns_dummy() {
        assert_eq!(
            call_str(handle, r#"{"a": 1}"#),
            serde_json::json!({"dummy": true})
        );
        assert_eq!(
            call_str(handle, r#"{"panic": false}"#),
            serde_json::json!({"dummy": true})
        );
    }

    #[test]
    fn handle_panic_becomes_json_error() {
        let value = call_str(handle, r#"{"panic": true}"#);
        assert_eq!(error_kind(&value), "panic");
        let message = value["error"]["message"].as_str().unwrap();
        assert!(message.starts_with("handle panicked: "), "{message}");
        assert!(message.contains("panic requested"), "{message}");
    }

    #[test]
    fn null_pointer_is_an_error() {
        assert_eq!(error_kind(&answer(handle, ptr::null())), "null_pointer");
        assert_eq!(
            error_kind(&answer(order_totals, ptr::null())),
            "null_pointer"
        );
    }

    #[test]
    fn invalid_utf8_is_an_error() {
        let bytes = CString::new(vec![b'{', 0xff, 0xfe, b'}']).unwrap();
        let value = answer(order_totals, bytes.as_ptr());
        assert_eq!(error_kind(&value), "invalid_utf8");
        assert!(
            value["error"]["message"]
                .as_str()
                .unwrap()
                .contains("offset 1")
        );
    }

    #[test]
    fn invalid_json_is_an_error() {
        for input in ["", "{", "nope", r#"{"a": 1,}"#, &"[".repeat(10_000)] {
            assert_eq!(
                error_kind(&call_str(order_totals, input)),
                "invalid_json",
                "{input:.20}"
            );
            assert_eq!(
                error_kind(&call_str(handle, input)),
                "invalid_json",
                "{input:.20}"
            );
        }
    }

    #[test]
    fn wrong_shapes_are_invalid_input() {
        let item = r#"{"sku": "a", "unit_price_cents": 1, "quantity": 1}"#;
        let cases = [
            ("[]".to_owned(), "inputs must be an object; got array"),
            ("{}".to_owned(), "line_items is required"),
            (
                r#"{"line_items": {}}"#.to_owned(),
                "line_items must be an array; got object",
            ),
            (
                r#"{"line_items": [1]}"#.to_owned(),
                "line_items[0] must be an object; got 1",
            ),
            (
                r#"{"line_items": [{}]}"#.to_owned(),
                "line_items[0].sku is required",
            ),
            (
                r#"{"line_items": [{"sku": 7}]}"#.to_owned(),
                "line_items[0].sku must be a string; got 7",
            ),
            (
                r#"{"line_items": [{"sku": "a", "quantity": 1}]}"#.to_owned(),
                "line_items[0].unit_price_cents is required",
            ),
            (
                r#"{"line_items": [{"sku": "a", "unit_price_cents": "1", "quantity": 1}]}"#
                    .to_owned(),
                "line_items[0].unit_price_cents must be an integer from 0 to 9223372036854775807; got string",
            ),
            (
                format!(
                    r#"{{"line_items": [{item}, {{"sku": "b", "unit_price_cents": 1, "quantity": -2}}], "tax_rate_bps": 0}}"#
                ),
                "line_items[1].quantity must be an integer from 0 to 9223372036854775807; got -2",
            ),
            (
                format!(r#"{{"line_items": [{item}], "tax_rate_bps": 1.0}}"#),
                "tax_rate_bps must be an integer from 0 to 9223372036854775807; got 1.0",
            ),
            (
                format!(r#"{{"line_items": [{item}], "tax_rate_bps": true}}"#),
                "tax_rate_bps must be an integer from 0 to 9223372036854775807; got boolean",
            ),
            (
                format!(r#"{{"line_items": [{item}], "tax_rate_bps": 9223372036854775808}}"#),
                "tax_rate_bps must be an integer from 0 to 9223372036854775807; got 9223372036854775808",
            ),
            (
                format!(r#"{{"line_items": [{item}]}}"#),
                "tax_rate_bps is required",
            ),
        ];
        for (input, message) in cases {
            let value = call_str(order_totals, &input);
            assert_eq!(error_kind(&value), "invalid_input", "{input}");
            assert_eq!(
                value["error"]["message"],
                format!("order_totals: {message}"),
                "{input}"
            );
        }
        assert_eq!(error_kind(&call_str(handle, "[]")), "invalid_input");
        assert_eq!(error_kind(&call_str(handle, "null")), "invalid_input");
    }

    #[test]
    fn overflow_is_an_error() {
        let input = r#"{"line_items": [{"sku": "a", "unit_price_cents": 9223372036854775807, "quantity": 2}], "tax_rate_bps": 0}"#;
        let value = call_str(order_totals, input);
        assert_eq!(error_kind(&value), "overflow");
    }

    #[test]
    fn order_totals_computes() {
        let input = r#"{"line_items": [
            {"sku": "a", "unit_price_cents": 1999, "quantity": 2, "extra": null},
            {"sku": "b", "unit_price_cents": 500, "quantity": 1}
        ], "tax_rate_bps": 825, "note": "ignored"}"#;
        assert_eq!(
            call_str(order_totals, input),
            serde_json::json!({
                "subtotal_cents": 4498, "tax_cents": 371, "total_cents": 4869, "item_count": 3
            })
        );
    }

    #[test]
    fn huge_input_is_handled() {
        let item =
            r#"{"sku": "sku-with-a-longish-name", "unit_price_cents": 12345, "quantity": 3}"#;
        let items = vec![item; 200_000].join(",");
        let value = call_str(
            order_totals,
            &format!(r#"{{"line_items": [{items}], "tax_rate_bps": 1000}}"#),
        );
        assert_eq!(value["item_count"], 600_000);
        assert_eq!(value["subtotal_cents"], 12_345_i64 * 600_000);
    }

    #[test]
    fn free_string_accepts_null() {
        // SAFETY: null is documented as a no-op.
        unsafe { free_string(ptr::null_mut()) };
    }

    #[test]
    fn returned_strings_have_no_interior_nul() {
        let value = serde_json::json!({"error": {"kind": "x", "message": "a\u{0}b"}});
        let out = into_c_string(value.to_string());
        // SAFETY: `out` is a NUL-terminated string from `into_c_string`.
        let text = unsafe { CStr::from_ptr(out) }.to_str().unwrap().to_owned();
        // SAFETY: `out` came from `into_c_string` and is freed once.
        unsafe { free_string(out) };
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), value);
        assert!(text.contains("\\u0000"));
        // A text with a raw NUL (which no handler produces) becomes an error, not a cut string.
        let out = into_c_string("{\"a\":\"\0\"}".to_owned());
        // SAFETY: as above.
        let text = unsafe { CStr::from_ptr(out) }.to_str().unwrap().to_owned();
        // SAFETY: as above.
        unsafe { free_string(out) };
        let value: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["error"]["kind"], "internal");
    }
}
