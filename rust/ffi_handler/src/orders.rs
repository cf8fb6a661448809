//! `order_totals`: the arithmetic, and the validation messages every implementation shares.
//!
//! Input `{"line_items": [{"sku", "unit_price_cents", "quantity"}], "tax_rate_bps"}`,
//! output `{"subtotal_cents", "tax_cents", "total_cents", "item_count"}`.
//!
//! Rules (identical in the C ABI, the `PyO3` module and the pure-Python reference):
//!
//! * Validation comes first, in this order: `inputs` is an object; `line_items` is present and
//!   an array; each item, in order, is an object with `sku` (a string), `unit_price_cents` and
//!   `quantity`; then `tax_rate_bps`. Unknown keys are ignored. An empty `line_items` is fine.
//! * Every amount is an integer from 0 to `i64::MAX`: booleans, floats (even `2.0`), negative
//!   numbers and larger integers are `invalid_input`.
//! * Then the arithmetic, item by item in checked `i64`: `unit_price_cents * quantity`, the
//!   running `subtotal_cents`, the running `item_count`; then
//!   `tax_cents = (subtotal_cents * tax_rate_bps + 5000) // 10000` in `i128`, which must fit
//!   `i64`, and `total_cents = subtotal_cents + tax_cents`. The first result that does not fit
//!   `i64` is an `overflow` error naming it.

use crate::error::{ErrorKind, HandlerError};

/// The function name every message starts with.
pub const FUNCTION: &str = "order_totals";

/// What an amount field must be, as the messages say it.
pub const AMOUNT_EXPECTED: &str = "an integer from 0 to 9223372036854775807";

/// One validated line item (the `sku` is checked but not needed for the totals).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineItem {
    /// Price of one unit, in cents; at least 0.
    pub unit_price_cents: i64,
    /// Number of units; at least 0.
    pub quantity: i64,
}

/// The result of `order_totals`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    /// Sum of `unit_price_cents * quantity`.
    pub subtotal_cents: i64,
    /// `(subtotal_cents * tax_rate_bps + 5000) // 10000`.
    pub tax_cents: i64,
    /// `subtotal_cents + tax_cents`.
    pub total_cents: i64,
    /// Sum of the quantities.
    pub item_count: i64,
}

/// `invalid_input`: the field at `path` is absent.
#[must_use]
pub fn missing(path: &str) -> HandlerError {
    HandlerError::new(
        ErrorKind::InvalidInput,
        format!("{FUNCTION}: {path} is required"),
    )
}

/// `invalid_input`: the value at `path` is not `expected`; `got` describes what it is.
#[must_use]
pub fn wrong_type(path: &str, expected: &str, got: &str) -> HandlerError {
    HandlerError::new(
        ErrorKind::InvalidInput,
        format!("{FUNCTION}: {path} must be {expected}; got {got}"),
    )
}

/// The path of `field` in line item `index`, as messages name it: `line_items[3].quantity`.
#[must_use]
pub fn item_path(index: usize, field: &str) -> String {
    format!("line_items[{index}].{field}")
}

/// Checks that an integer amount is not negative.
///
/// # Errors
/// `invalid_input` naming `path` when `value` is negative.
pub fn amount(path: impl FnOnce() -> String, value: i64) -> Result<i64, HandlerError> {
    if value < 0 {
        return Err(wrong_type(&path(), AMOUNT_EXPECTED, &value.to_string()));
    }
    Ok(value)
}

fn overflow(what: &str) -> HandlerError {
    HandlerError::new(
        ErrorKind::Overflow,
        format!("{FUNCTION}: {what} overflows a signed 64-bit integer"),
    )
}

/// Computes the totals of validated line items (every amount at least 0).
///
/// # Errors
/// `overflow` naming the first product or sum that does not fit `i64`.
pub fn compute(items: &[LineItem], tax_rate_bps: i64) -> Result<Totals, HandlerError> {
    let mut subtotal_cents: i64 = 0;
    let mut item_count: i64 = 0;
    for (index, item) in items.iter().enumerate() {
        let line = item
            .unit_price_cents
            .checked_mul(item.quantity)
            .ok_or_else(|| overflow(&format!("line_items[{index}] unit_price_cents * quantity")))?;
        subtotal_cents = subtotal_cents
            .checked_add(line)
            .ok_or_else(|| overflow("subtotal_cents"))?;
        item_count = item_count
            .checked_add(item.quantity)
            .ok_or_else(|| overflow("item_count"))?;
    }
    // Both factors are below 2^63, so the product (below 2^126) cannot overflow i128.
    let tax = (i128::from(subtotal_cents) * i128::from(tax_rate_bps) + 5000).div_euclid(10_000);
    let tax_cents = i64::try_from(tax).map_err(|_| overflow("tax_cents"))?;
    let total_cents = subtotal_cents
        .checked_add(tax_cents)
        .ok_or_else(|| overflow("total_cents"))?;
    Ok(Totals {
        subtotal_cents,
        tax_cents,
        total_cents,
        item_count,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(unit_price_cents: i64, quantity: i64) -> LineItem {
        LineItem {
            unit_price_cents,
            quantity,
        }
    }

    #[test]
    fn totals_round_half_up() {
        let totals = compute(&[item(1999, 2), item(500, 1)], 825).unwrap();
        assert_eq!(
            totals,
            Totals {
                subtotal_cents: 4498,
                tax_cents: 371, // 4498 * 825 = 3_710_850 -> 371.085 -> 371
                total_cents: 4869,
                item_count: 3,
            }
        );
        // 100 * 50 bps = 0.5 cents, rounds half up to 1.
        assert_eq!(compute(&[item(100, 1)], 50).unwrap().tax_cents, 1);
        assert_eq!(compute(&[item(100, 1)], 49).unwrap().tax_cents, 0);
    }

    #[test]
    fn empty_order_is_zero() {
        let totals = compute(&[], 10_000).unwrap();
        assert_eq!(totals.total_cents, 0);
        assert_eq!(totals.item_count, 0);
    }

    #[test]
    fn overflow_names_the_first_result_that_does_not_fit() {
        let cases = [
            (
                vec![item(i64::MAX, 2)],
                0,
                "line_items[0] unit_price_cents * quantity",
            ),
            (vec![item(i64::MAX, 1), item(1, 1)], 0, "subtotal_cents"),
            (vec![item(0, i64::MAX), item(0, 1)], 0, "item_count"),
            (vec![item(i64::MAX / 2, 1)], 30_000, "tax_cents"),
            (vec![item(i64::MAX / 2 + 1, 1)], 10_000, "total_cents"),
        ];
        for (items, bps, what) in cases {
            let err = compute(&items, bps).unwrap_err();
            assert_eq!(err.kind, ErrorKind::Overflow);
            assert!(err.message.contains(what), "{err} should name {what}");
        }
    }

    #[test]
    fn largest_values_that_fit_are_fine() {
        let totals = compute(&[item(i64::MAX, 1)], 0).unwrap();
        assert_eq!(totals.total_cents, i64::MAX);
        // Tax on the largest subtotal with the largest rate still computes in i128 first.
        let err = compute(&[item(i64::MAX, 1)], i64::MAX).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Overflow);
    }

    #[test]
    fn negative_amounts_are_invalid_input() {
        let err = amount(|| item_path(2, "quantity"), -1).unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidInput);
        assert_eq!(
            err.message,
            "order_totals: line_items[2].quantity must be an integer from 0 to \
             9223372036854775807; got -1"
        );
        assert_eq!(amount(|| unreachable!(), 0).unwrap(), 0);
    }
}
