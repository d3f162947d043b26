//! What Python sees of the stream transport: its methods and attributes, thin entries into the
//! files that do the work, and the step the loop runs (`run_step`).

use std::os::fd::RawFd;

use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use pyo3::PyTraverseError;

use super::transport::{StreamTransport, NOMINAL_CLASS};
use crate::event_loop::LoopCore;

#[pymethods]
impl StreamTransport {
    /// `loop._make_socket_transport(sock, protocol, waiter, extra=, server=)`: a transport over
    /// the connected, non-blocking `sock`, set up as the stock one (see the module doc).
    #[staticmethod]
    #[pyo3(signature = (event_loop, sock, protocol, waiter=None, extra=None, server=None))]
    fn _create<'py>(
        event_loop: Bound<'py, LoopCore>,
        sock: Bound<'py, PyAny>,
        protocol: Bound<'py, PyAny>,
        waiter: Option<Bound<'py, PyAny>>,
        extra: Option<Bound<'py, PyAny>>,
        server: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, Self>> {
        Self::create(event_loop, sock, protocol, waiter, extra, server)
    }

    /// `start_tls` accepts this transport (the stock class attribute).
    #[classattr]
    fn _start_tls_compatible() -> bool {
        true
    }

    /// `loop.sendfile` tries the `sendfile` system call on this transport's socket first.
    #[classattr]
    fn _sendfile_compatible(py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(py
            .import("asyncio.constants")?
            .getattr("_SendfileMode")?
            .getattr("TRY_NATIVE")?
            .unbind())
    }

    fn _start_reading(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::start_reading(slf)
    }

    /// The read step: the fd's reader (`read.rs`).
    #[inline(always)]
    fn _read_ready(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::read_step(slf)
    }

    /// The write step: the fd's writer while bytes wait (`write.rs`).
    fn _write_ready(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::write_step(slf)
    }

    /// `write(data)` as PyO3 calls it; `fast_write.rs` calls it too, for what it does not take.
    #[inline(always)]
    pub(crate) fn write(slf: &Bound<'_, Self>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        Self::write_data(slf, data)
    }

    fn writelines(slf: &Bound<'_, Self>, list_of_data: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let joined = PyBytes::new(py, b"").call_method1(intern!(py, "join"), (list_of_data,))?;
        Self::write(slf, &joined)
    }

    fn write_eof(&self, py: Python<'_>) -> PyResult<()> {
        let empty = {
            let mut st = self.state.borrow_mut(py);
            if st.closing || st.eof {
                return Ok(());
            }
            st.eof = true;
            st.buffer.is_empty()
        };
        if empty {
            self.shutdown_write(py)?;
        }
        Ok(())
    }

    fn can_write_eof(&self) -> bool {
        true
    }

    /// Stops reading and closes once the buffer has drained: `connection_lost(None)` follows.
    #[pyo3(name = "close")]
    fn py_close(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::close(slf)
    }

    /// Closes at once: the buffer is dropped, `connection_lost(None)` follows.
    fn abort(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::force_close(slf, None)
    }

    fn _force_close(slf: &Bound<'_, Self>, exc: Bound<'_, PyAny>) -> PyResult<()> {
        let exc = (!exc.is_none()).then_some(exc);
        Self::force_close(slf, exc)
    }

    fn _call_connection_lost(slf: &Bound<'_, Self>, exc: Bound<'_, PyAny>) -> PyResult<()> {
        Self::connection_lost(slf, exc)
    }

    fn is_closing(&self, py: Python<'_>) -> bool {
        self.state.borrow(py).closing
    }

    fn is_reading(&self, py: Python<'_>) -> bool {
        self.is_reading_now(py)
    }

    fn pause_reading(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        if !this.is_reading_now(py) {
            return Ok(());
        }
        this.state.borrow_mut(py).paused = true;
        Self::set_io(slf, false, false)?;
        Self::log_debug(slf, "%r pauses reading")
    }

    fn resume_reading(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        {
            let mut st = this.state.borrow_mut(py);
            if st.closing || !st.paused {
                return Ok(());
            }
            st.paused = false;
        }
        Self::start_reading(slf)?;
        Self::log_debug(slf, "%r resumes reading")
    }

    fn set_protocol(&self, py: Python<'_>, protocol: &Bound<'_, PyAny>) -> PyResult<()> {
        self.set_protocol_inner(py, protocol)
    }

    fn get_protocol(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.state
            .borrow(py)
            .protocol
            .as_ref()
            .map(|p| p.clone_ref(py))
    }

    #[pyo3(signature = (name, default=None))]
    fn get_extra_info<'py>(
        &self,
        py: Python<'py>,
        name: &Bound<'py, PyAny>,
        default: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let extra = self.state.borrow(py).extra.clone_ref(py);
        match extra.bind(py).get_item(name)? {
            Some(value) => Ok(value),
            None => Ok(default.unwrap_or_else(|| py.None().into_bound(py))),
        }
    }

    fn get_write_buffer_size(&self, py: Python<'_>) -> usize {
        self.state.borrow(py).buffer.len()
    }

    fn get_write_buffer_limits(&self, py: Python<'_>) -> (usize, usize) {
        let st = self.state.borrow(py);
        (st.low_water, st.high_water)
    }

    #[pyo3(signature = (high=None, low=None))]
    fn set_write_buffer_limits(
        slf: &Bound<'_, Self>,
        high: Option<i64>,
        low: Option<i64>,
    ) -> PyResult<()> {
        Self::set_limits(slf, high, low)
    }

    /// For `loop.sendfile`: a future done once the write buffer is empty.
    fn _make_empty_waiter<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.make_empty_waiter(py)
    }

    fn _reset_empty_waiter(&self, py: Python<'_>) {
        let old = self.state.borrow_mut(py).empty_waiter.take();
        drop(old);
    }

    #[getter]
    fn _sock(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.state.borrow(py).sock.as_ref().map(|s| s.clone_ref(py))
    }

    #[getter]
    fn _sock_fd(&self) -> RawFd {
        self.fd
    }

    /// The Context the protocol's callbacks run in (`State::context`), for the TLS layer above
    /// (`_tls.py`) to run the application protocol's in.
    #[getter]
    fn _context(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.context(py).map(Bound::unbind)
    }

    /// The stock transport's read step as chosen for the protocol (its `_read_ready`), which
    /// tests of the stock transport look at.
    #[getter]
    fn _read_ready_cb<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        slf.getattr(intern!(slf.py(), "_read_ready"))
    }

    #[getter]
    fn _loop(&self, py: Python<'_>) -> Option<Py<LoopCore>> {
        self.state
            .borrow(py)
            .event_loop
            .as_ref()
            .map(|l| l.clone_ref(py))
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        self.repr_text(py)
    }

    /// `ferroloop._transports.StreamTransport`, a subclass of `asyncio.Transport`, so that
    /// `isinstance(transport, asyncio.Transport)` holds (see that module's doc).
    #[getter]
    fn __class__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        NOMINAL_CLASS
            .import(py, "ferroloop._transports", "StreamTransport")
            .map(|c| c.clone().into_any())
    }

    fn __traverse__(&self, visit: pyo3::gc::PyVisit<'_>) -> Result<(), PyTraverseError> {
        if self.owner.is_none() {
            // Not initialised yet: a collection started while the object was being made.
            return Ok(());
        }
        let Some(st) = self.state.try_borrow_in_gc() else {
            return Ok(());
        };
        visit.call(&self.owner)?;
        visit.call(&st.event_loop)?;
        visit.call(&st.protocol)?;
        visit.call(&st.extra)?;
        visit.call(&st.server)?;
        visit.call(&st.empty_waiter)?;
        visit.call(&st.context)?;
        self.methods.visit(&visit)?;
        Ok(())
    }

    /// Breaks cycles; the socket stays, so that the transport's drop can warn and close it.
    fn __clear__(&self) {
        Python::attach(|py| {
            let garbage = {
                let mut st = self.state.borrow_mut(py);
                (
                    st.event_loop.take(),
                    st.protocol.take(),
                    st.server.take(),
                    st.empty_waiter.take(),
                    st.context.take(),
                )
            };
            drop(garbage);
            self.methods.forget(py);
        });
    }
}

/// A transport's read (or write) step, run by `Handle::run` for a handle marked
/// `NATIVE_READ`/`NATIVE_WRITE`: a new reference to `None`, or NULL with the exception set, as a
/// call through the C API would give.
#[inline(always)]
pub fn run_step(transport: &Bound<'_, PyAny>, writer: bool) -> *mut ffi::PyObject {
    let py = transport.py();
    let outcome = match transport.cast::<StreamTransport>() {
        Ok(t) if writer => StreamTransport::_write_ready(t),
        Ok(t) => StreamTransport::_read_ready(t),
        Err(err) => Err(err.into()),
    };
    match outcome {
        Ok(()) => py.None().into_ptr(),
        Err(err) => {
            err.restore(py);
            std::ptr::null_mut()
        }
    }
}
