//! Writing: `write` sends at once when nothing waits and buffers only the rest, the write step
//! flushes the buffer, and the protocol's flow control (`pause_writing`/`resume_writing`).

use std::io::ErrorKind;

use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes};

use super::transport::{is_exit, logger, StreamTransport};
use crate::core::sys;
use crate::errors::retry_eintr;
use crate::event_loop::{run_in, LoopCore};

/// Writes after the connection is lost are counted; from this many on, each logs a warning
/// (the stock `constants.LOG_THRESHOLD_FOR_CONNLOST_WRITES`).
pub(super) const LOG_THRESHOLD_FOR_CONNLOST_WRITES: u32 = 5;

pub(super) const DEFAULT_HIGH_WATER: usize = 64 * 1024;

/// Bytes-like data `write` accepts: `bytes`, `bytearray` or `memoryview`, as the stock check.
pub(super) fn check_bytes_like(data: &Bound<'_, PyAny>) -> PyResult<()> {
    // SAFETY: the type checks only read the object's type.
    let ok = data.is_instance_of::<PyBytes>()
        || data.is_instance_of::<PyByteArray>()
        || unsafe { ffi::PyMemoryView_Check(data.as_ptr()) } != 0;
    if ok {
        return Ok(());
    }
    Err(PyTypeError::new_err(format!(
        "data argument must be {WRITE_TYPES}, not {}",
        data.get_type().name()?.repr()?
    )))
}

/// What the stock `write` names in its TypeError, which 3.14 reworded.
#[cfg(Py_3_14)]
pub(super) const WRITE_TYPES: &str = "a bytes, bytearray, or memoryview object";

#[cfg(not(Py_3_14))]
pub(super) const WRITE_TYPES: &str = "a bytes-like object";

/// A contiguous view of a buffer-protocol object, released on drop.
pub(super) struct BufferView(ffi::Py_buffer);

impl BufferView {
    pub(super) fn new(obj: &Bound<'_, PyAny>, writable: bool) -> PyResult<Self> {
        let mut view = std::mem::MaybeUninit::<ffi::Py_buffer>::uninit();
        let flags = if writable {
            ffi::PyBUF_WRITABLE
        } else {
            ffi::PyBUF_SIMPLE
        };
        // SAFETY: `view` is writable storage for a Py_buffer; on success it is filled and must be
        // released once, which Drop does.
        if unsafe { ffi::PyObject_GetBuffer(obj.as_ptr(), view.as_mut_ptr(), flags) } < 0 {
            return Err(PyErr::fetch(obj.py()));
        }
        // SAFETY: PyObject_GetBuffer succeeded, so the view is initialised.
        Ok(BufferView(unsafe { view.assume_init() }))
    }

    pub(super) fn as_slice(&self) -> &[u8] {
        if self.0.len <= 0 || self.0.buf.is_null() {
            return &[];
        }
        // SAFETY: a simple (contiguous) buffer of `len` bytes at `buf`, alive until release.
        unsafe { std::slice::from_raw_parts(self.0.buf.cast::<u8>(), self.0.len as usize) }
    }

    pub(super) fn as_mut_slice(&mut self) -> &mut [u8] {
        if self.0.len <= 0 || self.0.buf.is_null() {
            return &mut [];
        }
        // SAFETY: as `as_slice`, and the buffer was requested writable.
        unsafe { std::slice::from_raw_parts_mut(self.0.buf.cast::<u8>(), self.0.len as usize) }
    }
}

impl Drop for BufferView {
    fn drop(&mut self) {
        // SAFETY: the view was filled by a successful PyObject_GetBuffer and is released once;
        // views exist only while the GIL is held.
        unsafe { ffi::PyBuffer_Release(&mut self.0) };
    }
}

impl StreamTransport {
    /// Calls a flow-control method of the protocol, in the transport's Context (it runs inside
    /// whichever `write` crossed the high-water mark); its failure goes to the exception handler.
    pub(super) fn call_flow_control(slf: &Bound<'_, Self>, method: &str) -> PyResult<()> {
        let Some(protocol) = Self::protocol_of(slf) else {
            return Ok(());
        };
        let called = match slf.get().context(slf.py()) {
            Some(ctx) => run_in(&ctx, || protocol.call_method0(method)),
            None => protocol.call_method0(method),
        };
        if let Err(err) = called {
            if is_exit(slf.py(), &err) {
                return Err(err);
            }
            let exc = err.into_value(slf.py()).into_bound(slf.py()).into_any();
            Self::call_exception_handler(slf, &format!("protocol.{method}() failed"), &exc)?;
        }
        Ok(())
    }

    pub(super) fn maybe_pause_protocol(slf: &Bound<'_, Self>) -> PyResult<()> {
        let pause = {
            let mut st = slf.get().state.borrow_mut(slf.py());
            if st.buffer.len() <= st.high_water || st.protocol_paused {
                false
            } else {
                st.protocol_paused = true;
                true
            }
        };
        if pause {
            Self::call_flow_control(slf, "pause_writing")?;
        }
        Ok(())
    }

    pub(super) fn maybe_resume_protocol(slf: &Bound<'_, Self>) -> PyResult<()> {
        let resume = {
            let mut st = slf.get().state.borrow_mut(slf.py());
            if st.protocol_paused && st.buffer.len() <= st.low_water {
                st.protocol_paused = false;
                true
            } else {
                false
            }
        };
        if resume {
            Self::call_flow_control(slf, "resume_writing")?;
        }
        Ok(())
    }

    /// The data of a `write`: sent at once if nothing waits, the rest buffered.
    #[inline(always)]
    pub(super) fn write_slice(slf: &Bound<'_, Self>, data: &[u8]) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let buffered = {
            let mut st = this.state.borrow_mut(py);
            if st.conn_lost > 0 {
                let warn = st.conn_lost >= LOG_THRESHOLD_FOR_CONNLOST_WRITES;
                st.conn_lost += 1;
                drop(st);
                if warn {
                    logger(py)?.call_method1(
                        intern!(py, "warning"),
                        ("socket.send() raised exception.",),
                    )?;
                }
                return Ok(());
            }
            !st.buffer.is_empty()
        };
        let mut rest = data;
        if !buffered {
            let fd = this.live_fd(py);
            match retry_eintr(py, || sys::send(fd, data))? {
                Ok(n) => {
                    this.transferred(py, true, n);
                    rest = &data[n.min(data.len())..];
                    if rest.is_empty() {
                        return Ok(());
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => {
                    return Self::fatal_error(
                        slf,
                        Self::io_exc(e),
                        "Fatal write error on socket transport",
                    )
                }
            }
            Self::set_io(slf, true, true)?;
        }
        this.state.borrow_mut(py).buffer.push(rest);
        Self::maybe_pause_protocol(slf)
    }

    pub(super) fn shutdown_write(&self, py: Python<'_>) -> PyResult<()> {
        if self.state.borrow(py).sock.is_none() {
            return Ok(());
        }
        sys::shutdown_write(self.live_fd(py)).map_err(Self::io_exc)
    }

    #[inline(always)]
    pub(crate) fn write_data(slf: &Bound<'_, Self>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        check_bytes_like(data)?;
        {
            let st = slf.get().state.borrow(py);
            if st.eof {
                return Err(PyRuntimeError::new_err(
                    "Cannot call write() after write_eof()",
                ));
            }
            if st.empty_waiter.is_some() {
                return Err(PyRuntimeError::new_err(
                    "unable to write; sendfile is in progress",
                ));
            }
        }
        if let Ok(bytes) = data.cast::<PyBytes>() {
            if bytes.as_bytes().is_empty() {
                return Ok(());
            }
            return Self::write_slice(slf, bytes.as_bytes());
        }
        // A bytearray or memoryview: its bytes are copied out first, so no Python code that
        // runs during the write (a protocol's pause_writing) can resize it under us.
        let copy = match BufferView::new(data, false) {
            Ok(view) => view.as_slice().to_vec(),
            // Not contiguous: the stock transport's `send` fails the same way, fatally.
            Err(err) => {
                return Self::fatal_error(slf, err, "Fatal write error on socket transport")
            }
        };
        if copy.is_empty() {
            return Ok(());
        }
        Self::write_slice(slf, &copy)
    }

    /// The fd's writer while data waits: flushes what the kernel takes.
    pub(super) fn write_step(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        if this.state.borrow(py).conn_lost > 0 {
            return Ok(());
        }
        let fd = this.live_fd(py);
        let sent = retry_eintr(py, || {
            let st = this.state.borrow(py);
            sys::send(fd, st.buffer.as_slice())
        })?;
        match sent {
            Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(()),
            Err(e) => {
                Self::set_io(slf, true, false)?;
                this.state.borrow_mut(py).buffer.clear();
                let err = Self::io_exc(e);
                let exc = err.value(py).clone().into_any();
                Self::fatal_error(slf, err, "Fatal write error on socket transport")?;
                this.fail_empty_waiter(py, exc)
            }
            Ok(n) => {
                this.transferred(py, true, n);
                this.state.borrow_mut(py).buffer.consume(n);
                Self::maybe_resume_protocol(slf)?;
                let (empty, closing, eof, waiter) = {
                    let st = this.state.borrow(py);
                    (
                        st.buffer.is_empty(),
                        st.closing,
                        st.eof,
                        st.empty_waiter.as_ref().map(|w| w.clone_ref(py)),
                    )
                };
                if !empty {
                    return Ok(());
                }
                Self::set_io(slf, true, false)?;
                if let Some(waiter) = waiter {
                    waiter.call_method1(py, intern!(py, "set_result"), (py.None(),))?;
                }
                if closing {
                    Self::connection_lost(slf, py.None().into_bound(py))
                } else if eof {
                    this.shutdown_write(py)
                } else {
                    Ok(())
                }
            }
        }
    }

    pub(super) fn set_limits(
        slf: &Bound<'_, Self>,
        high: Option<i64>,
        low: Option<i64>,
    ) -> PyResult<()> {
        let high = high.unwrap_or_else(|| low.map_or(DEFAULT_HIGH_WATER as i64, |l| 4 * l));
        let low = low.unwrap_or(high.div_euclid(4));
        if !(high >= low && low >= 0) {
            return Err(PyValueError::new_err(format!(
                "high ({high}) must be >= low ({low}) must be >= 0"
            )));
        }
        {
            let mut st = slf.get().state.borrow_mut(slf.py());
            st.high_water = high as usize;
            st.low_water = low as usize;
        }
        Self::maybe_pause_protocol(slf)
    }

    /// For `loop.sendfile`: a future done once the write buffer is empty.
    /// Fails the future `loop.sendfile` waits on for the buffer to empty, if there is one.
    pub(super) fn fail_empty_waiter(&self, py: Python<'_>, exc: Bound<'_, PyAny>) -> PyResult<()> {
        let waiter = self
            .state
            .borrow(py)
            .empty_waiter
            .as_ref()
            .map(|w| w.clone_ref(py));
        if let Some(waiter) = waiter {
            waiter.call_method1(py, intern!(py, "set_exception"), (exc,))?;
        }
        Ok(())
    }

    pub(super) fn make_empty_waiter<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        if self.state.borrow(py).empty_waiter.is_some() {
            return Err(PyRuntimeError::new_err("Empty waiter is already set"));
        }
        let lp = self
            .event_loop(py)
            .ok_or_else(|| PyRuntimeError::new_err("Transport is closed"))?;
        let waiter = LoopCore::new_future(&lp)?;
        let empty = {
            let mut st = self.state.borrow_mut(py);
            st.empty_waiter = Some(waiter.clone().unbind());
            st.buffer.is_empty()
        };
        if empty {
            waiter.call_method1(intern!(py, "set_result"), (py.None(),))?;
        }
        Ok(waiter)
    }
}
