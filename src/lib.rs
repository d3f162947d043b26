//! ferroloop's extension module, `ferroloop._core`: module registration only.

pub mod core;
mod cpython;
mod event_loop;
mod owner;
mod recv_bytes;
mod sock;
mod transports;

use pyo3::prelude::*;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<event_loop::LoopCore>()?;
    event_loop::install_fast_methods(&m.py().get_type::<event_loop::LoopCore>())?;
    m.add_class::<event_loop::Handle>()?;
    m.add_class::<event_loop::TimerHandle>()?;
    m.add_class::<transports::StreamTransport>()?;
    transports::install_finalizers(m.py());
    transports::install_fast_write(m.py())?;
    m.add_class::<sock::SockWaiter>()?;
    m.add_class::<owner::close_watch::IoRefs>()?;
    m.add_function(wrap_pyfunction!(cpython::_tricks, m)?)?;
    m.add_function(wrap_pyfunction!(sock::sock_recv_start, m)?)?;
    m.add_function(wrap_pyfunction!(sock::sock_sendall_start, m)?)?;
    event_loop::install_free_lists(m.py());
    core::allocator::prime_allocator();
    m.add("MAX_SPIN_US", core::poller::MAX_SPIN_LIMIT.as_micros())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
