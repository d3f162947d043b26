//! Making a handle: the class (`Handle`, `TimerHandle` or, for `call_soon_threadsafe`,
//! `ThreadSafeHandle`), its flags, its debug-mode record, and whether the garbage collector tracks
//! it (see `Handle::leave_queue`). The memory comes from the free lists (`freelist.rs`).

use std::sync::Arc;

use pyo3::ffi;
use pyo3::prelude::*;

use super::args::CallArgs;
use super::context::ContextSlot;
use super::flags::Flags;
use super::freelist;
use super::handle::{Callback, CallbackSlot, DebugInfo, Handle, TimerHandle};
use super::hooks;
use super::shared::LoopShared;
use super::threadsafe::ThreadSafeHandle;
use crate::cpython::gil::{GilCell, GilSlot};

/// Everything a new handle needs; built by the loop's scheduling methods.
pub struct NewHandle<'py> {
    pub callback: Bound<'py, PyAny>,
    pub args: CallArgs<'py>,
    pub context: ContextSlot,
    /// Whether `context` was given with `context=` (else it is a snapshot).
    pub context_own: bool,
    pub when: Option<f64>,
    /// A `ThreadSafeHandle` (`call_soon_threadsafe`).
    pub threadsafe: bool,
    pub shared: &'py Arc<LoopShared>,
}

impl<'py> NewHandle<'py> {
    fn into_handle(self, py: Python<'py>) -> PyResult<Handle> {
        let debug = if self.shared.debug() {
            Some(Box::new(DebugInfo {
                source_traceback: hooks::call(py, "extract_stack", ())?.unbind(),
                repr: GilCell::new(None),
            }))
        } else {
            None
        };
        let (args, many) = self.args.into_parts();
        let mut flags = 0;
        if many {
            flags |= Flags::ARGS_MANY;
        }
        if self.context_own {
            flags |= Flags::CONTEXT_OWN;
        }
        if self.when.is_some() {
            flags |= Flags::SCHEDULED;
        }
        if self.threadsafe {
            flags |= Flags::THREADSAFE;
        }
        Ok(Handle {
            callback: CallbackSlot(GilSlot::new(Some(Callback {
                callback: self.callback.unbind(),
                args,
            }))),
            context: self.context,
            debug,
            flags: Flags::new(flags),
        })
    }

    /// A `Handle`, or a `TimerHandle` when `when` is set.
    ///
    /// With `queued_only`, the handle is taken out of the garbage collector's tracking while the
    /// loop's queue holds it (see `Handle::leave_queue`).
    pub fn create(self, py: Python<'py>, queued_only: bool) -> PyResult<Bound<'py, Handle>> {
        let timer = self.when.map(|when| TimerHandle {
            when,
            shared: Arc::clone(self.shared),
        });
        let threadsafe = self.threadsafe;
        let handle = self.into_handle(py)?;
        let handle = if let Some(timer) = timer {
            Bound::new(py, PyClassInitializer::from(handle).add_subclass(timer))?.into_super()
        } else if threadsafe {
            let init = PyClassInitializer::from(handle).add_subclass(ThreadSafeHandle::default());
            Bound::new(py, init)?.into_super()
        } else {
            Bound::new(py, handle)?
        };
        let ptr = handle.as_ptr();
        // SAFETY: `ptr` is a live object of a GC type (PyO3 gives every pyclass
        // Py_TPFLAGS_HAVE_GC), just created: untracked if it came from a free list or a bare
        // allocation (`freelist.rs`), tracked if from PyType_GenericAlloc. UnTrack accepts an
        // untracked object and Track is called only on an untracked one, as each requires; the
        // type's dealloc untracks either way.
        unsafe {
            if queued_only {
                if !freelist::born_untracked() {
                    ffi::PyObject_GC_UnTrack(ptr.cast());
                }
            } else {
                if ffi::PyObject_GC_IsTracked(ptr) == 0 {
                    ffi::PyObject_GC_Track(ptr.cast());
                }
                handle.get().flags.set(Flags::TRACKED);
            }
        }
        Ok(handle)
    }
}
