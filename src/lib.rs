//! ferroloop's extension module, `ferroloop._core`: module registration only.

pub mod core;
mod cpython;
mod errors;
mod event_loop;
mod owner;
mod recv_bytes;
mod sock;
mod transports;

use pyo3::prelude::*;

#[pymodule(gil_used = false)]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    event_loop::install(m)?;
    transports::install(m)?;
    m.add_class::<sock::SockWaiter>()?;
    m.add_function(wrap_pyfunction!(cpython::_tricks, m)?)?;
    m.add_function(wrap_pyfunction!(sock::sock_recv_start, m)?)?;
    m.add_function(wrap_pyfunction!(sock::sock_sendall_start, m)?)?;
    core::allocator::prime_allocator();
    m.add("MAX_SPIN_US", core::poller::MAX_SPIN_LIMIT.as_micros())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
