//! `call_soon`, `call_soon_threadsafe`, `call_later` and `call_at` as raw vectorcall methods.
//!
//! These four are the loop's hottest entry points (every task step and every future callback
//! goes through `call_soon`). A `#[pymethods]` signature with `*args` makes PyO3 pack the extra
//! arguments into a fresh tuple on every call; taking the C calling convention directly
//! (`METH_FASTCALL | METH_KEYWORDS`) lets the handle keep zero or one argument without a tuple
//! (see `args.rs`) and skips the generic argument parser. The parameters are the stock ones:
//! `(callback, *args, context=None)`, with `delay`/`when` first for the timers; the leading ones
//! may be given by keyword, and errors use Python's own wording.
//!
//! The methods are installed on `LoopCore` by `install`, as method descriptors, at module import.
//!
//! `call_soon`, `call_later` and `call_at` (and `StreamTransport.write`) also skip PyO3's
//! trampoline, through `light_trampoline`. Besides catching panics, PyO3's counts the thread as
//! attached for PyO3 and drops references other threads deferred: two thread-local updates
//! (through `__tls_get_addr`, from a shared library) and an atomic load per call. These methods
//! run in loop callbacks, inside the loop's `run`, whose own trampoline already counts the thread
//! as attached. Called from anywhere else, a `Py` dropped during the call is released at PyO3's
//! next entry or when the loop next wakes from its poll, instead of at once, which PyO3 allows
//! for any thread it does not count. `call_soon_threadsafe`, made to be called from other
//! threads, keeps PyO3's trampoline.

use std::ffi::CStr;

use pyo3::exceptions::{PySystemError, PyTypeError};
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyString, PyTuple, PyType};

use super::args::CallArgs;
use super::state::LoopCore;
use crate::cpython::trampoline::{add_fastcall_method, get_trampoline_function, light_trampoline};

/// The arguments of one call, split as `(*leading, *rest, context=...)`.
struct Parsed<'a, 'py> {
    leading: [Option<Borrowed<'a, 'py, PyAny>>; 2],
    rest: &'a [Borrowed<'a, 'py, PyAny>],
    context: Option<Borrowed<'a, 'py, PyAny>>,
}

/// `a`, `a and b`, `a, b, and c`, as Python words a list of missing arguments.
fn join_names(names: &[&str]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("'{n}'")).collect();
    match quoted.as_slice() {
        [one] => one.clone(),
        [a, b] => format!("{a} and {b}"),
        [init @ .., last] => format!("{}, and {last}", init.join(", ")),
        [] => String::new(),
    }
}

/// The first non-interned str seen naming the `context` keyword, kept alive so that its address
/// stays its own. Python code passes the interned "context"; CPython 3.11's C Task and Future
/// pass a static string of their own that is not the interned one.
static OTHER_CONTEXT_NAME: PyOnceLock<Py<PyString>> = PyOnceLock::new();

/// Whether a keyword name is "context": usually a pointer comparison.
fn is_context_name(name: &Borrowed<'_, '_, PyAny>) -> bool {
    let py = name.py();
    if name.as_ptr() == intern!(py, "context").as_ptr() {
        return true;
    }
    if OTHER_CONTEXT_NAME
        .get(py)
        .is_some_and(|known| known.as_ptr() == name.as_ptr())
    {
        return true;
    }
    let Ok(text) = name.cast::<PyString>() else {
        return false;
    };
    if text.to_str().is_ok_and(|t| t == "context") {
        let _ = OTHER_CONTEXT_NAME.set(py, text.to_owned().unbind());
        return true;
    }
    false
}

fn parse<'a, 'py>(
    method: &str,
    params: &[&str],
    positional: &'a [Borrowed<'a, 'py, PyAny>],
    keywords: Option<(Borrowed<'a, 'py, PyTuple>, &'a [Borrowed<'a, 'py, PyAny>])>,
) -> PyResult<Parsed<'a, 'py>> {
    if positional.len() >= params.len() {
        // The common calls: everything positional, or that and `context=` alone (as the C Task
        // and Future pass it).
        let context = match keywords {
            None => Some(None),
            Some((names, [value])) => names
                .get_borrowed_item(0)
                .ok()
                .filter(|name| is_context_name(name))
                .map(|_| Some(*value)),
            Some(_) => None,
        };
        if let Some(context) = context {
            let n = params.len();
            let leading = [
                positional.first().copied().filter(|_| n > 0),
                positional.get(1).copied().filter(|_| n > 1),
            ];
            return Ok(Parsed {
                leading,
                rest: &positional[params.len()..],
                context,
            });
        }
    }
    let mut leading = [None, None];
    let split = positional.len().min(params.len());
    for (slot, value) in leading.iter_mut().zip(&positional[..split]) {
        *slot = Some(*value);
    }
    let mut context = None;
    let (names, values) = match keywords {
        Some((names, values)) => (Some(names), values),
        None => (None, &[][..]),
    };
    for (name, value) in names.iter().flat_map(|n| n.iter()).zip(values) {
        let name = name.cast_into::<PyString>()?;
        let name = name.to_str()?;
        if name == "context" {
            context = Some(*value);
            continue;
        }
        match params.iter().position(|p| *p == name) {
            Some(i) if leading[i].is_some() => {
                return Err(PyTypeError::new_err(format!(
                    "Loop.{method}() got multiple values for argument '{name}'"
                )))
            }
            Some(i) => leading[i] = Some(*value),
            None => {
                return Err(PyTypeError::new_err(format!(
                    "Loop.{method}() got an unexpected keyword argument '{name}'"
                )))
            }
        }
    }
    let missing: Vec<&str> = params
        .iter()
        .zip(&leading)
        .filter(|(_, v)| v.is_none())
        .map(|(p, _)| *p)
        .collect();
    if !missing.is_empty() {
        let plural = if missing.len() == 1 { "" } else { "s" };
        return Err(PyTypeError::new_err(format!(
            "Loop.{method}() missing {} required positional argument{plural}: {}",
            missing.len(),
            join_names(&missing)
        )));
    }
    Ok(Parsed {
        leading,
        rest: &positional[split..],
        context,
    })
}

/// One call as CPython passes it to a `METH_FASTCALL | METH_KEYWORDS` method.
struct RawCall {
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
}

/// The common part of the four entry points: the split of the vectorcall arguments and the
/// conversion of the result to a new reference. PyO3's own trampoline (the one `#[pyfunction]`
/// uses) wraps each of them: it marks the thread as attached for PyO3, so that references
/// dropped here are released at once, and turns a panic into `PanicException`.
///
/// # Safety
/// Called by CPython as a `METH_FASTCALL | METH_KEYWORDS` method of `LoopCore`: `slf` is an
/// instance of `LoopCore` (the method descriptor checks it), `args` points to `nargs` positional
/// arguments followed by one value per name in `kwnames` (a tuple of str, or NULL).
unsafe fn entry<'py>(
    py: Python<'py>,
    call: RawCall,
    method: &str,
    params: &[&str],
    body: impl for<'a> FnOnce(&Bound<'py, LoopCore>, Parsed<'a, 'py>) -> PyResult<Py<PyAny>>,
) -> PyResult<*mut ffi::PyObject> {
    let RawCall {
        slf,
        args,
        nargs,
        kwnames,
    } = call;
    // SAFETY: `slf` is a live `LoopCore` (see the function's contract).
    let slf = unsafe { Borrowed::from_ptr(py, slf).cast_unchecked::<LoopCore>() };
    let nkw = if kwnames.is_null() {
        0
    } else {
        // SAFETY: a non-NULL `kwnames` is a tuple.
        unsafe { ffi::PyTuple_GET_SIZE(kwnames) }
    };
    let total = usize::try_from(nargs + nkw).map_err(|_| PySystemError::new_err("bad nargs"))?;
    let all: &[Borrowed<'_, 'py, PyAny>] = if total == 0 {
        &[]
    } else {
        // SAFETY: CPython passes `nargs + len(kwnames)` live borrowed references contiguously;
        // `Borrowed<PyAny>` is a transparent wrapper around a non-null object pointer.
        unsafe { std::slice::from_raw_parts(args.cast(), total) }
    };
    let npos = nargs as usize;
    let keywords = if nkw == 0 {
        None
    } else {
        // SAFETY: a non-NULL `kwnames` is a live tuple of str.
        let names = unsafe { Borrowed::from_ptr(py, kwnames).cast_unchecked::<PyTuple>() };
        Some((names, &all[npos..]))
    };
    let parsed = parse(method, params, &all[..npos], keywords)?;
    Ok(body(&slf, parsed)?.into_ptr())
}

fn context<'py>(parsed: &Parsed<'_, 'py>) -> Option<Bound<'py, PyAny>> {
    parsed.context.map(|c| c.to_owned())
}

fn leading<'py>(parsed: &Parsed<'_, 'py>, i: usize) -> PyResult<Bound<'py, PyAny>> {
    parsed.leading[i]
        .map(|v| v.to_owned())
        .ok_or_else(|| PySystemError::new_err("argument not parsed"))
}

/// Declares one entry point: `$name(py, slf, args, nargs, kwnames)` parsing `$params` and then
/// running `$body` with the loop, the parsed arguments and the callback's arguments.
macro_rules! entry_point {
    ($name:ident, $params:expr, |$lp:ident, $p:ident, $cargs:ident| $body:expr) => {
        unsafe fn $name(
            py: Python<'_>,
            slf: *mut ffi::PyObject,
            args: *const *mut ffi::PyObject,
            nargs: ffi::Py_ssize_t,
            kwnames: *mut ffi::PyObject,
        ) -> PyResult<*mut ffi::PyObject> {
            // SAFETY: called by CPython through the trampoline, which meets `entry`'s contract.
            unsafe {
                entry(
                    py,
                    RawCall {
                        slf,
                        args,
                        nargs,
                        kwnames,
                    },
                    stringify!($name),
                    $params,
                    |$lp, $p| {
                        let $cargs = CallArgs::from_slice(py, $p.rest)?;
                        let handle = $body?;
                        Ok(handle.into_any().unbind())
                    },
                )
            }
        }
    };
}

entry_point!(call_soon, &["callback"], |lp, p, cargs| lp.get().soon(
    lp.py(),
    "call_soon",
    true,
    leading(&p, 0)?,
    cargs,
    context(&p)
));

entry_point!(call_soon_threadsafe, &["callback"], |lp, p, cargs| lp
    .get()
    .soon_threadsafe(lp.py(), leading(&p, 0)?, cargs, context(&p)));

entry_point!(call_later, &["delay", "callback"], |lp, p, cargs| lp
    .get()
    .later(
        lp.py(),
        &leading(&p, 0)?,
        leading(&p, 1)?,
        cargs,
        context(&p)
    ));

entry_point!(call_at, &["when", "callback"], |lp, p, cargs| lp.get().at(
    lp.py(),
    &leading(&p, 0)?,
    leading(&p, 1)?,
    cargs,
    context(&p)
));

/// Declares `$light`, the C entry that runs `$inner` through `light_trampoline`.
macro_rules! light_entry {
    ($light:ident => $inner:ident) => {
        /// # Safety
        /// As the entry point it wraps, called by CPython with the GIL held.
        unsafe extern "C" fn $light(
            slf: *mut ffi::PyObject,
            args: *const *mut ffi::PyObject,
            nargs: ffi::Py_ssize_t,
            kwnames: *mut ffi::PyObject,
        ) -> *mut ffi::PyObject {
            // SAFETY: CPython's call, passed on unchanged, meets both contracts.
            unsafe { light_trampoline(|py| $inner(py, slf, args, nargs, kwnames)) }
        }
    };
}

light_entry!(call_soon_entry => call_soon);
light_entry!(call_later_entry => call_later);
light_entry!(call_at_entry => call_at);

const METHODS: [(&CStr, ffi::PyCFunctionFastWithKeywords, &CStr); 4] = [
    (
        c"call_soon",
        call_soon_entry,
        c"call_soon(callback, *args, context=None)\n--\n\nArrange for callback(*args) to be called soon; returns a Handle.",
    ),
    (
        c"call_soon_threadsafe",
        get_trampoline_function!(fastcall_cfunction_with_keywords, call_soon_threadsafe),
        c"call_soon_threadsafe(callback, *args, context=None)\n--\n\nLike call_soon(), from any thread; wakes the loop.",
    ),
    (
        c"call_later",
        call_later_entry,
        c"call_later(delay, callback, *args, context=None)\n--\n\nArrange for callback(*args) to be called after delay seconds; returns a TimerHandle.",
    ),
    (
        c"call_at",
        call_at_entry,
        c"call_at(when, callback, *args, context=None)\n--\n\nArrange for callback(*args) to be called at loop time when; returns a TimerHandle.",
    ),
];

/// Adds the four methods to `LoopCore`. Called once, when the module is imported.
pub fn install(ty: &Bound<'_, PyType>) -> PyResult<()> {
    for (name, meth, doc) in METHODS {
        add_fastcall_method(ty, name, meth, doc)?;
    }
    Ok(())
}
