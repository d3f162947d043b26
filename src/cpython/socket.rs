//! What a socket object holds, read without calling into Python: its fd, and its `_io_refs`.
//!
//! Every `_socket.socket` instance (and so every `socket.socket`, of any subclass) is a
//! `PySocketSockObject` whose first field after the object header is `sock_fd`, the C `int`
//! that `fileno()` returns: -1 once the socket is closed or detached. That layout is the same from
//! CPython 3.11 to 3.15, but it is private, so it is only read once a probe at first use has seen
//! it behave (a fresh socket shows its fd there, the same socket shows -1 once detached) and the
//! class is large enough to hold it; otherwise, and when `FERROLOOP_LAYOUT_READS=0`, `held_fd`
//! answers `Err` and callers ask `fileno()` instead.
//!
//! Why read it at all: the transports and `sock_*` waiters check before every system call that
//! their socket object still holds the fd they use (`crate::owner`), and a method call per
//! `recv`/`send` would cost a tenth of a small request's time; this read costs a load.
//!
//! `socket.socket` keeps `_io_refs` in a `__slots__` slot, at the offset its member descriptor
//! gives (`PyMemberDescrObject`, CPython's C API). The loop looks at it each time a `sock_*` call
//! starts waiting (`event_loop::close_watch`); a generic attribute lookup there cost some 300
//! instructions, this read a few. It is used for exact `socket.socket` instances once a probe has
//! seen a value set through Python appear at that offset; otherwise `io_refs` answers `Err` and
//! the caller uses `getattr`.
//!
//! The loads are atomic (relaxed): free-threaded builds write these fields atomically when a
//! socket is closed from another thread, and on other builds it compiles to the same plain load.
//! Taking a reference to what a slot holds is only safe with the GIL, so free-threaded builds
//! do not read `_io_refs` (their callers use `getattr`).

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicI32, AtomicPtr, Ordering};

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;

/// Where `sock_fd` sits: right after the object header (`PyObject_HEAD`).
const FD_OFFSET: usize = std::mem::size_of::<ffi::PyObject>();

struct Layout {
    /// `_socket.socket`, the C base class of every socket object.
    socket_type: Py<PyType>,
    /// Whether `sock_fd` may be read (the probe's verdict).
    trusted: bool,
    /// `socket.socket` and the offset of its `_io_refs` slot, if the probe vouched for it.
    io_refs: Option<(Py<PyType>, usize)>,
}

/// A member descriptor as CPython lays it out (`PyMemberDescrObject`).
#[repr(C)]
struct MemberDescr {
    common: ffi::PyDescrObject,
    member: *mut ffi::PyMemberDef,
}

static LAYOUT: PyOnceLock<Layout> = PyOnceLock::new();

fn layout(py: Python<'_>) -> Option<&Layout> {
    LAYOUT
        .get_or_try_init(py, || -> PyResult<Layout> {
            let socket_type = py
                .import("_socket")?
                .getattr("socket")?
                .cast_into::<PyType>()?;
            let allowed = super::switch::layout_reads_allowed();
            let trusted = allowed && probe(&socket_type).unwrap_or(false);
            // Not on a free-threaded build: another thread may replace the slot's object and
            // free it between the load and the incref, which only CPython's own slot read
            // (a private try-incref loop) guards against.
            let io_refs = if allowed && !cfg!(Py_GIL_DISABLED) {
                probe_io_refs(py).ok().flatten()
            } else {
                None
            };
            Ok(Layout {
                socket_type: socket_type.unbind(),
                trusted,
                io_refs,
            })
        })
        .ok()
}

/// Reads `sock_fd`.
///
/// # Safety
/// `obj` is an instance of `_socket.socket` or a subclass, whose layout `probe` has vouched for.
unsafe fn read_fd(obj: *mut ffi::PyObject) -> RawFd {
    // SAFETY: per the contract, `obj` starts with a PySocketSockObject, whose `sock_fd` (an int,
    // 4-aligned after the 8-aligned header) lies at FD_OFFSET within the object's allocation.
    let field = unsafe { obj.cast::<u8>().add(FD_OFFSET).cast::<i32>() };
    // SAFETY: `field` is valid and aligned for the object's lifetime (see above); CPython only
    // writes it atomically or with the GIL held, so an atomic load races with nothing.
    unsafe { AtomicI32::from_ptr(field).load(Ordering::Relaxed) }
}

/// Sees the layout behave as expected on a socket made for the purpose.
fn probe(socket_type: &Bound<'_, PyType>) -> PyResult<bool> {
    let basicsize: usize = socket_type.getattr("__basicsize__")?.extract()?;
    if basicsize < FD_OFFSET + std::mem::size_of::<i32>() {
        return Ok(false);
    }
    let sock = socket_type.call1((libc::AF_UNIX, libc::SOCK_STREAM))?;
    let fd: RawFd = sock.call_method0("fileno")?.extract()?;
    // SAFETY: `sock` is an exact `_socket.socket` and the class is large enough for the field;
    // this read is what decides whether the layout is the expected one.
    let open_ok = unsafe { read_fd(sock.as_ptr()) } == fd;
    let detached: RawFd = sock.call_method0("detach")?.extract()?;
    // SAFETY: as above.
    let detached_ok = unsafe { read_fd(sock.as_ptr()) } == -1;
    // SAFETY: `detached` is the fd `detach()` handed over to us; nothing else owns it.
    unsafe { libc::close(detached) };
    Ok(open_ok && detached_ok && detached == fd)
}

/// Reads the object pointer at `offset`.
///
/// # Safety
/// `obj` is an instance of a class with an object slot at `offset` (a `__slots__` member).
unsafe fn read_slot(obj: *mut ffi::PyObject, offset: usize) -> *mut ffi::PyObject {
    // SAFETY: per the contract the slot is a valid, pointer-aligned field of the object.
    let slot = unsafe { obj.cast::<u8>().add(offset).cast::<*mut ffi::PyObject>() };
    // SAFETY: as above; CPython writes slots with the GIL held, or atomically without it.
    unsafe { AtomicPtr::from_ptr(slot).load(Ordering::Relaxed) }
}

/// `socket.socket`'s `_io_refs` slot offset, if it reads back what Python set.
fn probe_io_refs(py: Python<'_>) -> PyResult<Option<(Py<PyType>, usize)>> {
    let class = py
        .import("socket")?
        .getattr("socket")?
        .cast_into::<PyType>()?;
    let descr = class.getattr("__dict__")?.get_item("_io_refs")?;
    let member_type = py.import("types")?.getattr("MemberDescriptorType")?;
    if !descr.get_type().is(&member_type) {
        return Ok(None);
    }
    // SAFETY: an object of type `member_descriptor` is a PyMemberDescrObject, whose `d_member`
    // points at the PyMemberDef of the slot, alive as long as the class.
    let offset = unsafe { (*(*descr.as_ptr().cast::<MemberDescr>()).member).offset };
    let basicsize: usize = class.getattr("__basicsize__")?.extract()?;
    let Ok(offset) = usize::try_from(offset) else {
        return Ok(None);
    };
    let word = std::mem::size_of::<usize>();
    if offset % word != 0 || offset + word > basicsize {
        return Ok(None);
    }
    let sock = class.call1((libc::AF_UNIX, libc::SOCK_STREAM))?;
    let marker = pyo3::types::PyList::empty(py);
    sock.setattr("_io_refs", &marker)?;
    // SAFETY: `sock` is an exact `socket.socket`, whose class has a slot at `offset` (checked
    // against the class's size above); this read decides whether it is `_io_refs`'.
    let seen = unsafe { read_slot(sock.as_ptr(), offset) };
    sock.setattr("_io_refs", 0)?;
    sock.call_method0("close")?;
    Ok((seen == marker.as_ptr()).then(|| (class.unbind(), offset)))
}

/// What exact `socket.socket` `obj` holds in `_io_refs` (`None` if unset), read from the
/// object, or `Err(())` when it cannot be read that way (another class, or not vouched for).
#[inline]
pub fn io_refs<'py>(obj: &Bound<'py, PyAny>) -> Result<Option<Bound<'py, PyAny>>, ()> {
    let py = obj.py();
    let Some((class, offset)) = layout(py).and_then(|l| l.io_refs.as_ref()) else {
        return Err(());
    };
    if !obj.get_type().is(class) {
        return Err(());
    }
    // SAFETY: `obj` is an exact `socket.socket`, whose `_io_refs` slot is at `offset` (probed).
    let value = unsafe { read_slot(obj.as_ptr(), *offset) };
    // SAFETY: a slot holds a strong reference to a live object or NULL; the GIL is held, so
    // taking a new reference to it here is sound.
    Ok(unsafe { Bound::from_borrowed_ptr_or_opt(py, value) })
}

/// The fd socket object `obj` holds now (`None` once closed or detached), read from the object,
/// or `Err(())` when it cannot be read that way: `obj` is no socket, or the layout is not
/// vouched for. Calls no Python code.
#[inline]
pub fn held_fd(obj: &Bound<'_, PyAny>) -> Result<Option<RawFd>, ()> {
    let Some(layout) = layout(obj.py()) else {
        return Err(());
    };
    let ptr = obj.as_ptr();
    // SAFETY: both are live type objects (the GIL is held).
    let is_socket = unsafe {
        ffi::PyType_IsSubtype(ffi::Py_TYPE(ptr), layout.socket_type.as_ptr().cast()) != 0
    };
    if !layout.trusted || !is_socket {
        return Err(());
    }
    // SAFETY: `obj` is a `_socket.socket` instance and the probe vouched for the layout.
    let fd = unsafe { read_fd(ptr) };
    Ok((fd >= 0).then_some(fd))
}

/// `held_fd` for an object that `held_fd` has answered for before: no type test, one load.
/// For an owner kept for a long time and checked before every system call (a transport's
/// socket). An object's class can only be swapped for one of the same layout, so what was a
/// socket stays one.
///
/// # Safety
/// `held_fd(obj)` returned `Ok` for this same object.
#[inline(always)]
pub unsafe fn held_fd_known(obj: &Bound<'_, PyAny>) -> Option<RawFd> {
    // SAFETY: per the contract, `obj` is a socket object whose layout the probe vouched for.
    let fd = unsafe { read_fd(obj.as_ptr()) };
    (fd >= 0).then_some(fd)
}

/// Whether `_io_refs` is read from socket objects' memory in this process (the probe's verdict).
pub fn io_refs_readable(py: Python<'_>) -> bool {
    layout(py).is_some_and(|l| l.io_refs.is_some())
}

/// Whether `sock_fd` is read from socket objects in this process (the probe's verdict).
pub fn layout_trusted(py: Python<'_>) -> bool {
    layout(py).is_some_and(|l| l.trusted)
}
