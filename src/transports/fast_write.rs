//! `StreamTransport.write` as a raw vectorcall method.
//!
//! Every response a `Protocol` server sends goes through `transport.write(data)`, one positional
//! argument. Through `#[pymethods]`, PyO3's generic argument parser runs on each call (callgrind,
//! HTTP keep-alive server: about 60 of the 275 instructions a `write` costs). The raw
//! `METH_FASTCALL | METH_KEYWORDS` method here takes that one argument straight from the vector
//! and hands every other shape of call (`write(data=...)`, no argument, too many) to the
//! `#[pymethods]` descriptor it replaces, so binding and error messages stay PyO3's, which are
//! Python's wording. Installed on the class by `install` when the module is imported.
//!
//! The one-argument call also skips PyO3's trampoline, as `call_soon` does (`light_trampoline`
//! in `event_loop/fastcall.rs` says what that leaves out and why it is sound here): callgrind per
//! request, HTTP keep-alive server 4,944 -> 4,866 instructions, Protocol echo 1 KiB 1,578 ->
//! 1,495.

use std::ffi::CStr;

use pyo3::exceptions::PySystemError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;
use pyo3::PyTypeInfo;

use super::stream::StreamTransport;
use crate::cpython::trampoline::{add_fastcall_method, get_trampoline_function, light_trampoline};

/// The `#[pymethods]` `write` descriptor, kept for the calls the fast path does not take.
static GENERIC_WRITE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// CPython's entry to `write`: the one-argument call runs here with panics caught, any other
/// through PyO3's trampoline into `write_generic` (module doc).
///
/// # Safety
/// Called by CPython as a `METH_FASTCALL | METH_KEYWORDS` method of `StreamTransport`: `slf` is
/// an instance of it (the method descriptor checks that), `args` points to `nargs` positional
/// arguments followed by one value per name in `kwnames` (a tuple of str, or NULL), and the
/// thread holds the GIL.
unsafe extern "C" fn write_entry(
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    if nargs != 1 || !kwnames.is_null() {
        let generic = get_trampoline_function!(fastcall_cfunction_with_keywords, write_generic);
        // SAFETY: the same call, under the same contract.
        return unsafe { generic(slf, args, nargs, kwnames) };
    }
    let body = |py: Python<'_>| {
        // SAFETY: per the contract, `slf` is a live StreamTransport and `args[0]` a live
        // borrowed reference.
        let (transport, data) = unsafe {
            (
                Borrowed::from_ptr(py, slf).cast_unchecked::<StreamTransport>(),
                Borrowed::from_ptr(py, *args),
            )
        };
        StreamTransport::write(&transport, &data)?;
        Ok(py.None().into_ptr())
    };
    // SAFETY: CPython calls a method with the GIL held.
    unsafe { light_trampoline(body) }
}

/// Every call of `write` but the one-argument one, passed on to the `#[pymethods]` descriptor.
///
/// # Safety
/// As `write_entry`.
unsafe fn write_generic(
    py: Python<'_>,
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> PyResult<*mut ffi::PyObject> {
    let generic = GENERIC_WRITE
        .get(py)
        .ok_or_else(|| PySystemError::new_err("StreamTransport.write is not installed"))?;
    let nkw = if kwnames.is_null() {
        0
    } else {
        // SAFETY: a non-NULL `kwnames` is a tuple.
        unsafe { ffi::PyTuple_GET_SIZE(kwnames) }
    };
    let mut full = Vec::with_capacity(1 + (nargs + nkw) as usize);
    full.push(slf);
    for i in 0..(nargs + nkw) {
        // SAFETY: CPython passes `nargs + len(kwnames)` arguments contiguously.
        full.push(unsafe { *args.offset(i) });
    }
    // SAFETY: a method descriptor called with its instance first, then the same arguments and
    // keyword names; every pointer in `full` is a live borrowed reference for this call. The
    // result is a new reference or NULL with an exception set.
    unsafe {
        let result = ffi::PyObject_Vectorcall(
            generic.as_ptr(),
            full.as_ptr(),
            (nargs + 1) as usize,
            kwnames,
        );
        Bound::from_owned_ptr_or_err(py, result).map(Bound::into_ptr)
    }
}

const DOC: &CStr = c"write($self, /, data)\n--\n\nWrite bytes-like data: sent at once if nothing is waiting, the rest buffered.";

/// Puts the fast `write` on the class, keeping PyO3's for the other shapes of call.
pub fn install(py: Python<'_>) -> PyResult<()> {
    let ty: Bound<'_, PyType> = StreamTransport::type_object(py);
    let generic = ty.getattr("write")?;
    if GENERIC_WRITE.set(py, generic.unbind()).is_err() {
        return Ok(());
    }
    add_fastcall_method(&ty, c"write", write_entry, DOC)
}
