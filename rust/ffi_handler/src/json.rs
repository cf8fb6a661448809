//! The handlers on `serde_json` values: input validation, and the result as JSON text.

use std::fmt::Write as _;

use serde_json::{Map, Value};

use crate::dummy;
use crate::error::{ErrorKind, HandlerError};
use crate::orders::{self, AMOUNT_EXPECTED, LineItem, item_path, missing, wrong_type};

/// Describes a JSON value in a message: its type, or the number itself.
#[must_use]
pub fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(_) => "boolean".into(),
        Value::Number(n) => n.to_string(),
        Value::String(_) => "string".into(),
        Value::Array(_) => "array".into(),
        Value::Object(_) => "object".into(),
    }
}

fn object<'v>(function: &str, inputs: &'v Value) -> Result<&'v Map<String, Value>, HandlerError> {
    inputs.as_object().ok_or_else(|| {
        HandlerError::new(
            ErrorKind::InvalidInput,
            format!(
                "{function}: inputs must be an object; got {}",
                describe(inputs)
            ),
        )
    })
}

/// `handle`: the JSON text `{"dummy":true}`.
///
/// # Errors
/// `invalid_input` when `inputs` is not an object.
///
/// # Panics
/// When `inputs` has `"panic": true` (on purpose).
pub fn handle(inputs: &Value) -> Result<String, HandlerError> {
    let inputs = object(dummy::FUNCTION, inputs)?;
    dummy::run(inputs.get("panic") == Some(&Value::Bool(true)));
    Ok(r#"{"dummy":true}"#.to_owned())
}

fn amount(
    map: &Map<String, Value>,
    key: &str,
    path: impl Fn() -> String,
) -> Result<i64, HandlerError> {
    let value = map.get(key).ok_or_else(|| missing(&path()))?;
    match value.as_i64() {
        Some(n) => orders::amount(path, n),
        None => Err(wrong_type(&path(), AMOUNT_EXPECTED, &describe(value))),
    }
}

fn line_item(index: usize, value: &Value) -> Result<LineItem, HandlerError> {
    let map = value.as_object().ok_or_else(|| {
        wrong_type(
            &format!("line_items[{index}]"),
            "an object",
            &describe(value),
        )
    })?;
    match map.get("sku") {
        None => return Err(missing(&item_path(index, "sku"))),
        Some(Value::String(_)) => {}
        Some(other) => {
            return Err(wrong_type(
                &item_path(index, "sku"),
                "a string",
                &describe(other),
            ));
        }
    }
    Ok(LineItem {
        unit_price_cents: amount(map, "unit_price_cents", || {
            item_path(index, "unit_price_cents")
        })?,
        quantity: amount(map, "quantity", || item_path(index, "quantity"))?,
    })
}

/// `order_totals` (see [`crate::orders`] for the rules), as JSON text.
///
/// The result is written straight into one string (no `Value` is built): this is the hot
/// path of every call.
///
/// # Errors
/// `invalid_input` naming the first bad field, or `overflow` naming the first total that does
/// not fit `i64`.
pub fn order_totals(inputs: &Value) -> Result<String, HandlerError> {
    let map = object(orders::FUNCTION, inputs)?;
    let items = match map.get("line_items") {
        None => return Err(missing("line_items")),
        Some(Value::Array(items)) => items,
        Some(other) => return Err(wrong_type("line_items", "an array", &describe(other))),
    };
    let items = items
        .iter()
        .enumerate()
        .map(|(index, item)| line_item(index, item))
        .collect::<Result<Vec<_>, _>>()?;
    let tax_rate_bps = amount(map, "tax_rate_bps", || "tax_rate_bps".into())?;
    let totals = orders::compute(&items, tax_rate_bps)?;
    // Room for the keys and four 19-digit numbers, plus the NUL the C string adds.
    let mut text = String::with_capacity(160);
    let _ = write!(
        text,
        r#"{{"subtotal_cents":{},"tax_cents":{},"total_cents":{},"item_count":{}}}"#,
        totals.subtotal_cents, totals.tax_cents, totals.total_cents, totals.item_count
    );
    Ok(text)
}
