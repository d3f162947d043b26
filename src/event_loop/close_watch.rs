//! `IoRefs`: how the loop hears of `socket.close()` before the fd closes (rule 2 of `owner`).
//!
//! `socket.socket.close()` is, on every CPython from 3.11 to 3.15:
//!
//! ```python
//! def close(self):
//!     self._closed = True
//!     if self._io_refs <= 0:
//!         self._real_close()
//! ```
//!
//! `_io_refs` counts the file objects `makefile()` made, which keep the fd open until they are
//! closed too. When the loop starts watching a socket it swaps that int for an `IoRefs` holding
//! the same count and weak references to the socket and the loops watching it. `IoRefs` behaves as
//! the int in every operation `socket.py` (or anyone) applies to it (`+=`, `-=`, comparisons,
//! `int()`), and when `close()` asks whether it is `<= 0` and it is, the socket is about to close
//! its fd: each loop then drops every reader and writer of that fd, takes it out of epoll while the
//! number still names this socket, and fails the `sock_*` calls pending on it (`owner_closing`).
//! Then `close()` goes on and closes the fd.
//!
//! `socket.detach()` and the C-level `_socket.socket.close` do not ask; for those the checks
//! before each system call (rule 1) are what keeps the number's next owner safe. The stand-in is
//! only set on an exact int, and is left alone by anything that finds another object there.

use pyo3::exceptions::PyException;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::pyclass::CompareOp;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyInt, PyType, PyWeakrefReference};

use super::state::LoopCore;
use crate::cpython;
use crate::cpython::gil::GilCell;
use crate::owner::fd_now;

/// `socket.socket`, the Python class whose instances have `_io_refs`.
static SOCKET_CLASS: PyOnceLock<Py<PyType>> = PyOnceLock::new();

struct Watch {
    /// What `_io_refs` would hold: the open `makefile()` objects.
    count: isize,
    socket: Py<PyWeakrefReference>,
    /// The loops that watch the socket: the address of each (to find it again cheaply) and a
    /// weak reference (a loop is not kept alive by the sockets it once watched).
    loops: Vec<(usize, Py<PyWeakrefReference>)>,
}

/// The stand-in for a watched socket's `_io_refs` (see the module doc).
#[pyclass(module = "ferroloop._core", frozen)]
pub struct IoRefs {
    watch: GilCell<Watch>,
}

impl IoRefs {
    fn count(&self, py: Python<'_>) -> isize {
        self.watch.borrow(py).count
    }

    fn add_loop(&self, event_loop: &Bound<'_, LoopCore>) -> PyResult<()> {
        let py = event_loop.py();
        let address = event_loop.as_ptr() as usize;
        let known = self.watch.borrow(py).loops.iter().any(|(a, weak)| {
            *a == address && weak.bind(py).upgrade().is_some_and(|l| l.is(event_loop))
        });
        if known {
            return Ok(());
        }
        let weak = PyWeakrefReference::new(event_loop)?.unbind();
        let dead = {
            let mut w = self.watch.borrow_mut(py);
            let (live, dead): (Vec<_>, Vec<_>) = std::mem::take(&mut w.loops)
                .into_iter()
                .partition(|(_, weak)| weak.bind(py).upgrade().is_some());
            w.loops = live;
            w.loops.push((address, weak));
            dead
        };
        drop(dead);
        Ok(())
    }

    /// `close()` is about to close the socket's fd: every watching loop lets go of it first.
    fn before_close(&self, py: Python<'_>) -> PyResult<()> {
        let (socket, loops) = {
            let w = self.watch.borrow(py);
            let loops: Vec<_> = w.loops.iter().map(|(_, weak)| weak.clone_ref(py)).collect();
            (w.socket.bind(py).upgrade(), loops)
        };
        let Some(socket) = socket else {
            return Ok(());
        };
        // `close()` sets `_closed` right before it asks; a `<= 0` from anywhere else is no close.
        if !socket.getattr(intern!(py, "_closed"))?.is_truthy()? {
            return Ok(());
        }
        let Some(fd) = fd_now(&socket)? else {
            return Ok(());
        };
        for weak in loops {
            if let Some(event_loop) = weak.bind(py).upgrade() {
                if let Ok(event_loop) = event_loop.cast::<LoopCore>() {
                    LoopCore::owner_closing(event_loop, fd, &socket)?;
                }
            }
        }
        Ok(())
    }
}

#[pymethods]
impl IoRefs {
    fn __richcmp__(
        &self,
        py: Python<'_>,
        other: &Bound<'_, PyAny>,
        op: CompareOp,
    ) -> PyResult<Py<PyAny>> {
        let Ok(other) = other.extract::<isize>() else {
            return Ok(py.NotImplemented());
        };
        let result = op.matches(self.count(py).cmp(&other));
        if matches!(op, CompareOp::Le) && result {
            if let Err(err) = self.before_close(py) {
                // `close()` must go on whatever happened here.
                err.write_unraisable(py, None);
            }
        }
        Ok(result.into_pyobject(py)?.to_owned().into_any().unbind())
    }

    fn __iadd__(&self, py: Python<'_>, other: isize) {
        let mut w = self.watch.borrow_mut(py);
        w.count = w.count.saturating_add(other);
    }

    fn __isub__(&self, py: Python<'_>, other: isize) {
        let mut w = self.watch.borrow_mut(py);
        w.count = w.count.saturating_sub(other);
    }

    fn __add__(&self, py: Python<'_>, other: isize) -> isize {
        self.count(py).saturating_add(other)
    }

    fn __radd__(&self, py: Python<'_>, other: isize) -> isize {
        other.saturating_add(self.count(py))
    }

    fn __sub__(&self, py: Python<'_>, other: isize) -> isize {
        self.count(py).saturating_sub(other)
    }

    fn __rsub__(&self, py: Python<'_>, other: isize) -> isize {
        other.saturating_sub(self.count(py))
    }

    fn __int__(&self, py: Python<'_>) -> isize {
        self.count(py)
    }

    fn __index__(&self, py: Python<'_>) -> isize {
        self.count(py)
    }

    fn __bool__(&self, py: Python<'_>) -> bool {
        self.count(py) != 0
    }

    fn __hash__(&self, py: Python<'_>) -> isize {
        // hash(n) for a small int n, where -1 is reserved for errors.
        match self.count(py) {
            -1 => -2,
            n => n,
        }
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        self.count(py).to_string()
    }

    fn __traverse__(&self, visit: pyo3::gc::PyVisit<'_>) -> Result<(), pyo3::PyTraverseError> {
        if let Some(w) = self.watch.try_borrow_in_gc() {
            visit.call(&w.socket)?;
            for (_, weak) in &w.loops {
                visit.call(weak)?;
            }
        }
        Ok(())
    }
}

/// Makes `socket.close()` on `sock` tell `event_loop` first (see the module doc), when `sock` is
/// a `socket.socket` whose `_io_refs` is a plain int or already a stand-in. Anything else is
/// left as it is.
pub fn watch(event_loop: &Bound<'_, LoopCore>, sock: &Bound<'_, PyAny>) -> PyResult<()> {
    let py = sock.py();
    let refs = match cpython::socket::io_refs(sock) {
        Ok(Some(refs)) => refs,
        Ok(None) => return Ok(()),
        Err(()) => {
            let class = SOCKET_CLASS.import(py, "socket", "socket")?;
            if !sock.is_instance(class)? {
                return Ok(());
            }
            match sock.getattr(intern!(py, "_io_refs")) {
                Ok(refs) => refs,
                Err(err) if err.is_instance_of::<PyException>(py) => return Ok(()),
                Err(err) => return Err(err),
            }
        }
    };
    if let Ok(watching) = refs.cast::<IoRefs>() {
        return watching.get().add_loop(event_loop);
    }
    if !refs.is_exact_instance_of::<PyInt>() {
        return Ok(());
    }
    let Ok(count) = refs.extract::<isize>() else {
        return Ok(());
    };
    let stand_in = IoRefs {
        watch: GilCell::new(Watch {
            count,
            socket: PyWeakrefReference::new(sock)?.unbind(),
            loops: vec![(
                event_loop.as_ptr() as usize,
                PyWeakrefReference::new(event_loop)?.unbind(),
            )],
        }),
    };
    match sock.setattr(intern!(py, "_io_refs"), stand_in) {
        Err(err) if !err.is_instance_of::<PyException>(py) => Err(err),
        _ => Ok(()),
    }
}
