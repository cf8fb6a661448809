//! `tasker_dummy_handler`: tasker's native step handlers as a `PyO3` extension module.
//!
//! ```python
//! import tasker_dummy_handler
//! tasker_dummy_handler.handle({"a": 1})            # {"dummy": True}
//! tasker_dummy_handler.handle({"panic": True})     # raises pyo3_runtime.PanicException
//! tasker_dummy_handler.order_totals({"line_items": [...], "tax_rate_bps": 825})
//! ```
//!
//! Inputs are read straight from the Python objects (no JSON round trip), validated with
//! the GIL held, and the work then runs with the GIL released (`py.detach`). The rules and
//! messages are those of `tasker_ffi_handler::orders`; bad input raises `ValueError` naming
//! the field, a total that does not fit a signed 64-bit integer raises `OverflowError`.
//! `tasker.handlers.PyO3Handler` turns all of these, and panics, into `NativeHandlerError`.

use pyo3::exceptions::{PyOverflowError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use pyo3::{PyErr, intern};
use tasker_ffi_handler::dummy;
use tasker_ffi_handler::error::{ErrorKind, HandlerError};
use tasker_ffi_handler::orders::{self, AMOUNT_EXPECTED, LineItem, item_path, missing, wrong_type};

fn to_py_err(error: HandlerError) -> PyErr {
    match error.kind {
        ErrorKind::Overflow => PyOverflowError::new_err(error.message),
        _ => PyValueError::new_err(error.message),
    }
}

/// Describes a value in a message the way the JSON implementations do.
fn describe(value: &Bound<'_, PyAny>) -> String {
    let name = if value.is_none() {
        "null"
    } else if value.is_instance_of::<PyBool>() {
        "boolean"
    } else if value.is_instance_of::<PyInt>() || value.is_instance_of::<PyFloat>() {
        return value
            .repr()
            .map_or_else(|_| "number".into(), |r| r.to_string());
    } else if value.is_instance_of::<PyString>() {
        "string"
    } else if value.is_instance_of::<PyList>() || value.is_instance_of::<PyTuple>() {
        "array"
    } else if value.is_instance_of::<PyDict>() {
        "object"
    } else {
        return value
            .get_type()
            .name()
            .map_or_else(|_| "object".into(), |n| n.to_string());
    };
    name.into()
}

fn inputs_dict<'a, 'py>(
    function: &str,
    inputs: &'a Bound<'py, PyAny>,
) -> PyResult<&'a Bound<'py, PyDict>> {
    inputs.cast::<PyDict>().map_err(|_| {
        PyValueError::new_err(format!(
            "{function}: inputs must be an object; got {}",
            describe(inputs)
        ))
    })
}

fn amount(value: &Bound<'_, PyAny>, path: impl Fn() -> String) -> PyResult<i64> {
    let error = || to_py_err(wrong_type(&path(), AMOUNT_EXPECTED, &describe(value)));
    if !value.is_instance_of::<PyInt>() || value.is_instance_of::<PyBool>() {
        return Err(error());
    }
    // An int beyond i64 fails to extract: out of range, like any negative amount.
    let n: i64 = value.extract().map_err(|_| error())?;
    orders::amount(&path, n).map_err(to_py_err)
}

fn field<'py>(
    dict: &Bound<'py, PyDict>,
    key: &Bound<'py, PyString>,
    path: impl FnOnce() -> String,
) -> PyResult<Bound<'py, PyAny>> {
    dict.get_item(key)?
        .ok_or_else(|| to_py_err(missing(&path())))
}

fn amount_field<'py>(
    dict: &Bound<'py, PyDict>,
    key: &Bound<'py, PyString>,
    path: impl Fn() -> String,
) -> PyResult<i64> {
    let value = field(dict, key, &path)?;
    amount(&value, path)
}

fn line_item(py: Python<'_>, index: usize, value: &Bound<'_, PyAny>) -> PyResult<LineItem> {
    let item = value.cast::<PyDict>().map_err(|_| {
        to_py_err(wrong_type(
            &format!("line_items[{index}]"),
            "an object",
            &describe(value),
        ))
    })?;
    let sku = field(item, intern!(py, "sku"), || item_path(index, "sku"))?;
    if !sku.is_instance_of::<PyString>() {
        return Err(to_py_err(wrong_type(
            &item_path(index, "sku"),
            "a string",
            &describe(&sku),
        )));
    }
    Ok(LineItem {
        unit_price_cents: amount_field(item, intern!(py, "unit_price_cents"), || {
            item_path(index, "unit_price_cents")
        })?,
        quantity: amount_field(item, intern!(py, "quantity"), || {
            item_path(index, "quantity")
        })?,
    })
}

fn line_items(py: Python<'_>, value: &Bound<'_, PyAny>) -> PyResult<Vec<LineItem>> {
    let collect = |items: &mut dyn ExactSizeIterator<Item = Bound<'_, PyAny>>| {
        let mut out = Vec::with_capacity(items.len());
        for (index, item) in items.enumerate() {
            out.push(line_item(py, index, &item)?);
        }
        Ok(out)
    };
    if let Ok(list) = value.cast::<PyList>() {
        collect(&mut list.iter())
    } else if let Ok(tuple) = value.cast::<PyTuple>() {
        collect(&mut tuple.iter())
    } else {
        Err(to_py_err(wrong_type(
            "line_items",
            "an array",
            &describe(value),
        )))
    }
}

/// `order_totals(inputs: dict) -> dict`: the totals of an order.
///
/// Raises `ValueError` naming the first bad field, `OverflowError` when a total does not fit
/// a signed 64-bit integer.
#[pyfunction]
fn order_totals<'py>(py: Python<'py>, inputs: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyDict>> {
    let dict = inputs_dict(orders::FUNCTION, inputs)?;
    let items = field(dict, intern!(py, "line_items"), || "line_items".into())?;
    let items = line_items(py, &items)?;
    let tax_rate_bps = amount_field(dict, intern!(py, "tax_rate_bps"), || "tax_rate_bps".into())?;
    let totals = py
        .detach(|| orders::compute(&items, tax_rate_bps))
        .map_err(to_py_err)?;
    let out = PyDict::new(py);
    out.set_item(intern!(py, "subtotal_cents"), totals.subtotal_cents)?;
    out.set_item(intern!(py, "tax_cents"), totals.tax_cents)?;
    out.set_item(intern!(py, "total_cents"), totals.total_cents)?;
    out.set_item(intern!(py, "item_count"), totals.item_count)?;
    Ok(out)
}

/// `handle(inputs: dict) -> dict`: the seed's dummy handler, `{"dummy": True}`.
///
/// Panics (raising `pyo3_runtime.PanicException`) when `inputs["panic"] is True`; raises
/// `ValueError` when `inputs` is not a dict.
#[pyfunction]
fn handle<'py>(py: Python<'py>, inputs: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyDict>> {
    let dict = inputs_dict(dummy::FUNCTION, inputs)?;
    let panic_requested = dict
        .get_item(intern!(py, "panic"))?
        .is_some_and(|v| v.is(PyBool::new(py, true)));
    py.detach(|| dummy::run(panic_requested));
    let out = PyDict::new(py);
    out.set_item(intern!(py, "dummy"), true)?;
    Ok(out)
}

/// The extension module.
#[pymodule]
mod tasker_dummy_handler {
    #[pymodule_export]
    use super::{handle, order_totals};
}
