//! A callback's positional arguments, as a handle keeps them.
//!
//! Most callbacks take no argument (`call_soon(f)`) or one (a future's done callbacks and task
//! wake-ups are `call_soon(cb, fut)`). Those two shapes are kept without a tuple and called with
//! `PyObject_Vectorcall`, so scheduling one allocates no tuple: a tuple is a garbage-collected
//! object, and every allocation of one counts towards the collector's next young collection,
//! which in a loop turning over thousands of tasks is a measurable share of the time. Two or
//! more arguments keep a tuple. `_args` and error reports build the tuple on demand.
//!
//! While in use the arguments are `Bound`: dropping a `Bound` is a plain decref, where dropping
//! a `Py` first asks PyO3 (a thread-local lookup) whether the thread is attached.

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyTuple;

pub enum CallArgs<'py> {
    Zero,
    One(Bound<'py, PyAny>),
    Many(Bound<'py, PyTuple>),
}

impl<'py> CallArgs<'py> {
    /// From the positional arguments of a vectorcall.
    pub fn from_slice(py: Python<'py>, args: &[Borrowed<'_, 'py, PyAny>]) -> PyResult<Self> {
        Ok(match args {
            [] => CallArgs::Zero,
            [one] => CallArgs::One((*one).to_owned()),
            many => CallArgs::Many(PyTuple::new(py, many.iter())?),
        })
    }

    /// From an `*args` tuple.
    pub fn from_tuple(args: Bound<'py, PyTuple>) -> Self {
        match args.len() {
            0 => CallArgs::Zero,
            1 => match args.get_item(0) {
                Ok(one) => CallArgs::One(one),
                Err(_) => CallArgs::Many(args),
            },
            _ => CallArgs::Many(args),
        }
    }

    /// For storage in a handle: the object kept (the one argument, or the tuple of several),
    /// and whether it is the tuple of several.
    pub fn into_parts(self) -> (Option<Py<PyAny>>, bool) {
        match self {
            CallArgs::Zero => (None, false),
            CallArgs::One(one) => (Some(one.unbind()), false),
            CallArgs::Many(many) => (Some(many.into_any().unbind()), true),
        }
    }

    /// Back from `into_parts` (new references).
    ///
    /// # Safety
    /// `many` is true only for an object `into_parts` gave with `many` true: a tuple.
    pub unsafe fn from_parts(py: Python<'py>, kept: Option<&Py<PyAny>>, many: bool) -> Self {
        match (kept, many) {
            (None, _) => CallArgs::Zero,
            (Some(one), false) => CallArgs::One(one.bind(py).clone()),
            // SAFETY: per the contract, the object is a tuple.
            (Some(many), true) => {
                CallArgs::Many(unsafe { many.bind(py).clone().cast_into_unchecked::<PyTuple>() })
            }
        }
    }

    /// The arguments as the tuple the stock `Handle._args` holds.
    pub fn to_tuple(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        match self {
            CallArgs::Zero => Ok(PyTuple::empty(py)),
            CallArgs::One(one) => PyTuple::new(py, [one]),
            CallArgs::Many(many) => Ok(many.clone()),
        }
    }

    /// Calls `callback(*args)`: a new reference, or NULL with the exception set.
    ///
    /// # Safety
    /// The GIL must be held and `callback` must be a live object.
    pub unsafe fn call(&self, callback: *mut ffi::PyObject) -> *mut ffi::PyObject {
        // SAFETY (all arms): the caller guarantees the GIL and a live callback; the argument
        // pointers come from live references this value holds for the whole call.
        unsafe {
            match self {
                CallArgs::Zero => {
                    ffi::PyObject_Vectorcall(callback, std::ptr::null(), 0, std::ptr::null_mut())
                }
                CallArgs::One(one) => {
                    // A free slot before the argument lets a bound method put `self` there
                    // instead of allocating (PY_VECTORCALL_ARGUMENTS_OFFSET).
                    let slots = [std::ptr::null_mut(), one.as_ptr()];
                    ffi::PyObject_Vectorcall(
                        callback,
                        slots.as_ptr().add(1),
                        1 | ffi::PY_VECTORCALL_ARGUMENTS_OFFSET,
                        std::ptr::null_mut(),
                    )
                }
                CallArgs::Many(many) => {
                    ffi::PyObject_Call(callback, many.as_ptr(), std::ptr::null_mut())
                }
            }
        }
    }
}
