//! `_transports`: which transport owns each fd, as the stock selector loop keeps it (a
//! `weakref.WeakValueDictionary`, so a transport nobody holds leaves the table by itself). The
//! stream transports add themselves here, the Python ones through `loop._transports`; the
//! `sock_*` methods and `add_reader`/`add_writer` refuse an fd a live transport owns.

use std::os::fd::RawFd;

use pyo3::exceptions::{PyAttributeError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::PyInt;

use super::state::LoopCore;

impl LoopCore {
    /// Records `transport` as the owner of `fd`.
    pub(crate) fn add_transport(
        &self,
        py: Python<'_>,
        fd: RawFd,
        transport: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        self.transports.bind(py).set_item(fd, transport)
    }

    /// The transport that owns `fd`, if one is alive.
    pub(super) fn transport_of<'py>(
        &self,
        py: Python<'py>,
        fd: RawFd,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        if !self.transports_data.bind(py).contains(fd)? {
            return Ok(None);
        }
        let transport = self
            .transports
            .bind(py)
            .call_method1(intern!(py, "get"), (fd,))?;
        Ok((!transport.is_none()).then_some(transport))
    }

    /// The stock `_ensure_fd_no_transport`: a `RuntimeError` when `fd` (a number or an object with
    /// `fileno()`) belongs to a transport that is not closing.
    pub(crate) fn ensure_no_transport(&self, fd: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = fd.py();
        let number = if fd.is_instance_of::<PyInt>() {
            fd.clone()
        } else {
            fd.call_method0(intern!(py, "fileno"))
                .and_then(|n| py.get_type::<PyInt>().call1((n,)))
                .map_err(|err| {
                    let invalid = err.is_instance_of::<PyAttributeError>(py)
                        || err.is_instance_of::<PyTypeError>(py)
                        || err.is_instance_of::<PyValueError>(py);
                    if !invalid {
                        return err;
                    }
                    match fd.repr() {
                        Ok(repr) => PyValueError::new_err(format!("Invalid file object: {repr}")),
                        Err(err) => err,
                    }
                })?
        };
        // A number no fd can have is no transport's.
        let Ok(number) = number.extract::<RawFd>() else {
            return Ok(());
        };
        let Some(transport) = self.transport_of(py, number)? else {
            return Ok(());
        };
        if transport
            .call_method0(intern!(py, "is_closing"))?
            .is_truthy()?
        {
            return Ok(());
        }
        Err(PyRuntimeError::new_err(format!(
            "File descriptor {} is used by transport {}",
            fd.repr()?,
            transport.repr()?
        )))
    }
}
