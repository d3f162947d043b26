//! Raw C entry points for the hottest methods, and the one place the crate uses PyO3's
//! internal trampoline API (`pyo3::impl_`, with no semver promise: PyO3 is pinned exactly for
//! it).
//!
//! `light_trampoline` is PyO3's trampoline minus its attach count: it catches panics (as
//! `PanicException`) and restores an error as the pending exception, for methods called inside
//! the loop's run, whose own trampoline already counts the thread as attached
//! (`event_loop/fastcall.rs` explains the saving). `add_fastcall_method` installs such an entry
//! on a class as a `METH_FASTCALL | METH_KEYWORDS` method descriptor, public C API unchanged from
//! 3.7 to 3.15.

use std::any::Any;
use std::ffi::{c_char, CStr};
use std::panic::{self, AssertUnwindSafe};

use pyo3::exceptions::PySystemError;
use pyo3::ffi;
use pyo3::panic::PanicException;
use pyo3::prelude::*;
use pyo3::types::PyType;

pub use pyo3::impl_::trampoline::get_trampoline_function;

/// Runs a raw method's `body` with panics caught and turned into `PanicException`, its error
/// restored as the pending exception: PyO3's trampoline without the attach count (module doc).
///
/// # Safety
/// Called from a C method CPython called, so with the GIL held.
#[inline(always)]
pub unsafe fn light_trampoline(
    body: impl FnOnce(Python<'_>) -> PyResult<*mut ffi::PyObject>,
) -> *mut ffi::PyObject {
    // SAFETY: per the contract, the thread holds the GIL.
    let py = unsafe { Python::assume_attached() };
    let err = match panic::catch_unwind(AssertUnwindSafe(|| body(py))) {
        Ok(Ok(result)) => return result,
        Ok(Err(err)) => err,
        Err(payload) => panic_error(payload),
    };
    err.restore(py);
    std::ptr::null_mut()
}

/// A caught panic as the `PanicException` PyO3 raises for one, with the panic's message.
#[cold]
fn panic_error(payload: Box<dyn Any + Send>) -> PyErr {
    let message = match payload.downcast::<String>() {
        Ok(text) => *text,
        Err(payload) => match payload.downcast::<&'static str>() {
            Ok(text) => (*text).to_owned(),
            Err(_) => "panic from Rust code".to_owned(),
        },
    };
    PanicException::new_err(message)
}

/// Sets `ty.<name>` to a method descriptor for the raw `METH_FASTCALL | METH_KEYWORDS` function
/// `meth` (a trampoline around a Rust entry point), replacing any method of that name.
pub fn add_fastcall_method(
    ty: &Bound<'_, PyType>,
    name: &'static CStr,
    meth: ffi::PyCFunctionFastWithKeywords,
    doc: &'static CStr,
) -> PyResult<()> {
    let py = ty.py();
    // The definition must outlive the type, which lives as long as the interpreter.
    let def: &'static mut ffi::PyMethodDef = Box::leak(Box::new(ffi::PyMethodDef {
        ml_name: name.as_ptr(),
        ml_meth: ffi::PyMethodDefPointer {
            PyCFunctionFastWithKeywords: meth,
        },
        ml_flags: ffi::METH_FASTCALL | ffi::METH_KEYWORDS,
        ml_doc: doc.as_ptr() as *const c_char,
    }));
    // SAFETY: the GIL is held; `ty` is a live type object and `def` a valid, leaked method
    // definition; the result is a new reference or NULL with an exception set.
    let descr =
        unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyDescr_NewMethod(ty.as_type_ptr(), def))? };
    let name = name
        .to_str()
        .map_err(|e| PySystemError::new_err(e.to_string()))?;
    ty.setattr(name, descr)
}
