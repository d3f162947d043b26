//! Reading: one `recv` per readiness event, handed to `data_received` (or received straight into
//! a `BufferedProtocol`'s buffer), end of stream, and pausing.

use std::io::ErrorKind;

use pyo3::exceptions::{PyRuntimeError, PyTypeError};
use pyo3::intern;
use pyo3::prelude::*;

use super::transport::{is_exit, StreamTransport};
use super::write::BufferView;
use crate::core::sys;
use crate::errors::{os_error, retry_eintr};
use crate::event_loop::LoopCore;
use crate::recv_bytes::{recv_lending, Received};

use crate::cpython::method_cache::{self};

/// The most one read takes, as the stock transport's `max_size`.
pub(super) const MAX_READ: usize = 256 * 1024;

/// What a read produced, decided before any Python code runs: the bytes (plain protocol) or
/// their count (buffered protocol), end of stream, nothing yet, or an error.
pub(super) enum ReadOutcome<T> {
    Got(T),
    Eof,
    WouldBlock,
    Failed(PyErr),
}

impl<T> ReadOutcome<T> {
    /// What one `recv` amounts to; `is_eof` tells an end of stream from data. As stock, only
    /// exits escape: any other Python error (a MemoryError for the `bytes`, an exception from a
    /// signal handler run on EINTR) is a fatal read error.
    fn of_recv(
        py: Python<'_>,
        got: PyResult<std::io::Result<T>>,
        is_eof: impl FnOnce(&T) -> bool,
    ) -> PyResult<Self> {
        Ok(match got {
            Err(err) if is_exit(py, &err) => return Err(err),
            Err(err) => ReadOutcome::Failed(err),
            Ok(Ok(got)) if is_eof(&got) => ReadOutcome::Eof,
            Ok(Ok(got)) => ReadOutcome::Got(got),
            Ok(Err(e)) if e.kind() == ErrorKind::WouldBlock => ReadOutcome::WouldBlock,
            Ok(Err(e)) => ReadOutcome::Failed(os_error(e)),
        })
    }

    /// What arrived, or the outcome of a read that brought nothing, ready to stand for the
    /// result of handing what arrived to the protocol (`after_read`'s input).
    #[inline(always)]
    fn got<U>(self) -> Result<T, ReadOutcome<U>> {
        match self {
            ReadOutcome::Got(got) => Ok(got),
            ReadOutcome::Eof => Err(ReadOutcome::Eof),
            ReadOutcome::WouldBlock => Err(ReadOutcome::WouldBlock),
            ReadOutcome::Failed(err) => Err(ReadOutcome::Failed(err)),
        }
    }
}

impl StreamTransport {
    pub(super) fn is_reading_now(&self, py: Python<'_>) -> bool {
        let st = self.state.borrow(py);
        !st.closing && !st.paused
    }

    /// Registers the reader unless reading is paused or the transport is closing.
    pub(super) fn start_reading(slf: &Bound<'_, Self>) -> PyResult<()> {
        if slf.get().is_reading_now(slf.py()) {
            Self::set_io(slf, false, true)?;
        }
        Ok(())
    }

    /// One `recv` for the plain protocol: the bytes, end of stream, or nothing yet.
    #[inline(always)]
    pub(super) fn read_bytes<'py>(
        &self,
        py: Python<'py>,
        event_loop: &Bound<'py, LoopCore>,
    ) -> PyResult<ReadOutcome<Received<'py>>> {
        let mut guess = self.state.borrow(py).read_guess;
        let got = recv_lending(
            py,
            self.live_fd(py),
            &mut guess,
            MAX_READ,
            event_loop.get().read_spare(),
        );
        self.state.borrow_mut(py).read_guess = guess;
        ReadOutcome::of_recv(py, got, |data| data.bytes().as_bytes().is_empty())
    }

    /// One `recv` into the buffered protocol's buffer.
    pub(super) fn read_into<'py>(
        &self,
        py: Python<'py>,
        buf: &Bound<'py, PyAny>,
    ) -> PyResult<ReadOutcome<usize>> {
        let mut view = match BufferView::new(buf, true) {
            Ok(v) => v,
            Err(_) => {
                // The error `socket.recv_into` gives for a buffer it cannot write to.
                let message = format!(
                    "recv_into() argument 'buffer' must be read-write bytes-like object, not {}",
                    buf.get_type().name()?
                );
                return Ok(ReadOutcome::Failed(PyTypeError::new_err(message)));
            }
        };
        let fd = self.live_fd(py);
        let got = retry_eintr(py, || sys::recv(fd, view.as_mut_slice()));
        drop(view);
        ReadOutcome::of_recv(py, got, |n| *n == 0)
    }

    pub(super) fn on_eof(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        Self::log_debug(slf, "%r received EOF")?;
        let Some(protocol) = Self::protocol_of(slf) else {
            return Ok(());
        };
        let keep_open = match protocol
            .call_method0(intern!(py, "eof_received"))
            .and_then(|r| r.is_truthy())
        {
            Ok(keep) => keep,
            Err(err) if is_exit(py, &err) => return Err(err),
            Err(err) => {
                return Self::fatal_error(
                    slf,
                    err,
                    "Fatal error: protocol.eof_received() call failed.",
                )
            }
        };
        if keep_open {
            Self::set_io(slf, false, false)
        } else {
            Self::close(slf)
        }
    }

    /// Reports a protocol callback's failure (exits propagate).
    pub(super) fn protocol_call_result(
        slf: &Bound<'_, Self>,
        result: PyResult<Bound<'_, PyAny>>,
        message: &str,
    ) -> PyResult<()> {
        match result {
            Ok(_) => Ok(()),
            Err(err) if is_exit(slf.py(), &err) => Err(err),
            Err(err) => Self::fatal_error(slf, err, message),
        }
    }

    /// What follows a read of either kind, once what arrived went to the protocol: the failure of
    /// that call is reported with `message`, end of stream goes to `on_eof`, a read error is fatal.
    #[inline(always)]
    pub(super) fn after_read(
        slf: &Bound<'_, Self>,
        delivered: ReadOutcome<PyResult<Bound<'_, PyAny>>>,
        message: &str,
    ) -> PyResult<()> {
        match delivered {
            ReadOutcome::Got(result) => Self::protocol_call_result(slf, result, message),
            ReadOutcome::Eof => Self::on_eof(slf),
            ReadOutcome::WouldBlock => Ok(()),
            ReadOutcome::Failed(err) => {
                Self::fatal_error(slf, err, "Fatal read error on socket transport")
            }
        }
    }

    /// The fd's reader: one read, handed to the protocol.
    #[inline(always)]
    pub(super) fn read_step(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let (protocol, buffered, event_loop) = {
            let st = this.state.borrow(py);
            if st.conn_lost > 0 {
                return Ok(());
            }
            match (&st.protocol, &st.event_loop) {
                (Some(p), Some(l)) => (p.bind(py).clone(), st.buffered, l.bind(py).clone()),
                _ => return Ok(()),
            }
        };
        if !buffered {
            // A match, not a closure handed to `after_read`: the compiler kept such a closure
            // out of line, one more frame to return through after the protocol's write (see
            // `core::sys`).
            let delivered = match this.read_bytes(py, &event_loop)?.got() {
                Ok(data) => {
                    let n = data.bytes().as_bytes().len();
                    event_loop.get().transferred(py, this.fd, false, n);
                    let result = method_cache::call_method1(
                        &this.methods.data_received,
                        &protocol,
                        intern!(py, "data_received"),
                        data.bytes(),
                    );
                    data.give_back(event_loop.get().read_spare());
                    ReadOutcome::Got(result)
                }
                Err(nothing) => nothing,
            };
            return Self::after_read(
                slf,
                delivered,
                "Fatal error: protocol.data_received() call failed.",
            );
        }
        let Ok(any_size) = (-1i32).into_pyobject(py);
        let buf = match method_cache::call_method1(
            &this.methods.get_buffer,
            &protocol,
            intern!(py, "get_buffer"),
            &any_size,
        )
        .and_then(|b| {
            if b.len()? == 0 {
                Err(PyRuntimeError::new_err(
                    "get_buffer() returned an empty buffer",
                ))
            } else {
                Ok(b)
            }
        }) {
            Ok(b) => b,
            Err(err) if is_exit(py, &err) => return Err(err),
            Err(err) => {
                return Self::fatal_error(
                    slf,
                    err,
                    "Fatal error: protocol.get_buffer() call failed.",
                )
            }
        };
        let delivered = match this.read_into(py, &buf)?.got() {
            Ok(n) => {
                event_loop.get().transferred(py, this.fd, false, n);
                let Ok(n) = n.into_pyobject(py);
                ReadOutcome::Got(method_cache::call_method1(
                    &this.methods.buffer_updated,
                    &protocol,
                    intern!(py, "buffer_updated"),
                    &n,
                ))
            }
            Err(nothing) => nothing,
        };
        Self::after_read(
            slf,
            delivered,
            "Fatal error: protocol.buffer_updated() call failed.",
        )
    }
}
