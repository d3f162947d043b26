//! Python helpers the Rust loop calls on its cold paths (debug checks, repr, error reports), kept
//! in `ferroloop/_hooks.py` so their text matches the stock loop's exactly. Looked up once.

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

static HOOKS: PyOnceLock<Py<PyModule>> = PyOnceLock::new();

fn hooks(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
    HOOKS
        .get_or_try_init(py, || Ok(py.import("ferroloop._hooks")?.unbind()))
        .map(|m| m.bind(py))
}

/// Calls `ferroloop._hooks.<name>(*args)`.
pub fn call<'py>(
    py: Python<'py>,
    name: &str,
    args: impl pyo3::call::PyCallArgs<'py>,
) -> PyResult<Bound<'py, PyAny>> {
    hooks(py)?.getattr(name)?.call1(args)
}
