//! A `bytes` object filled in place: made uninitialised, written into, resized, and reused
//! once nothing else references it.
//!
//! `socket.recv` itself works this way (`PyBytes_FromStringAndSize(NULL, n)`, then
//! `_PyBytes_Resize`), and so do these reads. Reuse goes one step further: a `bytes` that only
//! the loop references again is given its whole storage back as its size and filled anew; before
//! it is handed over, its size, its final NUL and its cached hash are set as `_PyBytes_Resize`
//! sets them. The layout this writes (`PyVarObject.ob_size`, `PyBytesObject.ob_shash` and
//! `ob_sval`) is the same from 3.11 to 3.15 (`Include/cpython/bytesobject.h`), and
//! `_PyBytes_Resize` is exported by all of them.

use std::ptr;

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use super::refcount;

extern "C" {
    // CPython's own resize for a `bytes` nothing else references yet (what `socket.recv` uses).
    // Exported by every CPython 3; PyO3 does not re-export it.
    fn _PyBytes_Resize(bytes: *mut *mut ffi::PyObject, size: ffi::Py_ssize_t) -> std::ffi::c_int;
}

/// Whether a `bytes` may be reused and handed over with more storage than its size (both write
/// its layout); `FERROLOOP_LAYOUT_READS=0` turns it off, and every read then gets a new `bytes`.
pub fn reuse_allowed() -> bool {
    super::switch::layout_reads_allowed()
}

/// Sets the size of a `bytes` (`Py_SET_SIZE`, which PyO3 does not export).
///
/// # Safety
/// `object` is a `bytes` that nothing else references, with storage for at least `len` bytes
/// and the NUL after them.
unsafe fn set_size(object: *mut ffi::PyObject, len: usize) {
    // SAFETY: per the contract; a `bytes` starts with a PyVarObject header.
    unsafe { (*object.cast::<ffi::PyVarObject>()).ob_size = len as ffi::Py_ssize_t };
}

/// A `bytes` being filled, referenced by nothing else until it is handed over: the condition
/// for writing and resizing it in place.
pub struct BytesBuf<'py> {
    py: Python<'py>,
    object: *mut ffi::PyObject,
    len: usize,
}

impl<'py> BytesBuf<'py> {
    /// A new `bytes` of `len` uninitialised bytes.
    pub fn new(py: Python<'py>, len: usize) -> PyResult<Self> {
        let size = ffi::Py_ssize_t::try_from(len).unwrap_or(ffi::Py_ssize_t::MAX);
        // SAFETY: a null source asks CPython for an uninitialised `bytes` of `size` bytes; the
        // result is a new reference or null with MemoryError set.
        let object = unsafe { ffi::PyBytes_FromStringAndSize(ptr::null(), size) };
        if object.is_null() {
            return Err(PyErr::fetch(py));
        }
        Ok(BytesBuf { py, object, len })
    }

    /// `object` filled again, its size set back to the `capacity` its storage was made for
    /// (`into_spare`'s, or `hand_over`'s); `None` (and the object dropped) if anything else
    /// references it.
    pub fn reuse(py: Python<'py>, object: Py<PyBytes>, capacity: usize) -> Option<Self> {
        if !refcount::is_unique(py, object.as_ptr()) {
            return None;
        }
        let object = object.into_ptr();
        // SAFETY: `object` is a `bytes` nobody else references (checked), whose storage was made
        // for `capacity` bytes and the final NUL.
        unsafe { set_size(object, capacity) };
        Some(BytesBuf {
            py,
            object,
            len: capacity,
        })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// The object, to be filled again later, and the room it has (its whole storage).
    pub fn into_spare(mut self) -> (Py<PyBytes>, usize) {
        let object = std::mem::replace(&mut self.object, ptr::null_mut());
        // SAFETY: `object` is a `bytes` we own; the reference moves to the `Py`.
        let bytes = unsafe { Bound::from_owned_ptr(self.py, object).cast_into_unchecked() };
        (bytes.unbind(), self.len)
    }

    /// The object as a `bytes` of its first `len` bytes, its storage left as it is, so that it
    /// can be filled again up to its present size (`reuse`); and that size.
    pub fn hand_over(mut self, len: usize) -> (Bound<'py, PyBytes>, usize) {
        let capacity = self.len;
        let len = len.min(capacity);
        let object = std::mem::replace(&mut self.object, ptr::null_mut());
        // SAFETY: `object` is a `bytes` we own with `capacity >= len` bytes of storage and room
        // for the final NUL after them; as `_PyBytes_Resize` does, the cached hash is cleared,
        // since the object may have been hashed while lent before. The reference moves to the
        // `Bound`.
        unsafe {
            set_size(object, len);
            let bytes = object.cast::<ffi::PyBytesObject>();
            *ffi::PyBytes_AS_STRING(object).cast_mut().add(len) = 0;
            #[allow(deprecated)]
            {
                (*bytes).ob_shash = -1;
            }
            (
                Bound::from_owned_ptr(self.py, object).cast_into_unchecked(),
                capacity,
            )
        }
    }

    /// Makes the object `len` bytes long, keeping what it holds (moving it if need be).
    pub fn resize(&mut self, len: usize) -> PyResult<()> {
        // SAFETY: `object` is a `bytes` with one reference, ours, and no other user; on
        // failure CPython releases it, sets the pointer to null and raises.
        if unsafe { _PyBytes_Resize(&mut self.object, len as ffi::Py_ssize_t) } != 0 {
            return Err(PyErr::fetch(self.py));
        }
        self.len = len;
        Ok(())
    }

    /// The whole object, to be written into.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: `object` is a live `bytes` of `len` bytes that only we reference; u8 has no
        // invalid values, so viewing uninitialised storage as bytes to overwrite it is sound.
        unsafe {
            std::slice::from_raw_parts_mut(
                ffi::PyBytes_AS_STRING(self.object).cast_mut().cast(),
                self.len,
            )
        }
    }

    /// The bytes, cut to their first `len`.
    pub fn finish(mut self, len: usize) -> PyResult<Bound<'py, PyBytes>> {
        if len != self.len {
            self.resize(len)?;
        }
        let object = std::mem::replace(&mut self.object, ptr::null_mut());
        // SAFETY: `object` is a `bytes` we own; the reference moves to the `Bound`.
        Ok(unsafe { Bound::from_owned_ptr(self.py, object).cast_into_unchecked() })
    }
}

impl Drop for BytesBuf<'_> {
    fn drop(&mut self) {
        // SAFETY: `object` is null or a reference we own, released once here.
        unsafe { ffi::Py_XDECREF(self.object) };
    }
}
