//! The one interface through which the loop calls into a transport.
//!
//! A transport registers its socket's reads (and, while it has bytes waiting, writes) as its own
//! *step* (`LoopCore::add_transport_io`), not as a Python callback: when the fd is ready,
//! `Handle::run` calls the step directly, without a bound method and a call through Python's
//! calling convention, on the hottest path of a server. The loop does not know the transport
//! types, so data still flows one way (loop → transports → protocol): the transports give their
//! step to the loop once, at module import (`install`), and the loop calls whatever it was given.

use std::sync::OnceLock;

use pyo3::exceptions::PyRuntimeError;
use pyo3::ffi;
use pyo3::prelude::*;

/// A transport's read step (`writer` false) or write step (true), given the transport the
/// registration was made for: a new reference to `None`, or NULL with the exception set, as a
/// call through the C API returns.
pub type Step = fn(&Bound<'_, PyAny>, bool) -> *mut ffi::PyObject;

static STEP: OnceLock<Step> = OnceLock::new();

/// Sets the step the loop runs for registrations made with `add_transport_io`.
pub fn install(step: Step) {
    // A second call (the module imported twice in one process) gives the same function.
    let _ = STEP.set(step);
}

/// Runs the installed step for `transport`.
#[inline(always)]
pub fn run(transport: &Bound<'_, PyAny>, writer: bool) -> *mut ffi::PyObject {
    match STEP.get() {
        Some(step) => step(transport, writer),
        None => {
            PyRuntimeError::new_err("no transport step is installed").restore(transport.py());
            std::ptr::null_mut()
        }
    }
}
