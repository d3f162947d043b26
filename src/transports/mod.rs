//! Transports: the objects between a socket and an asyncio protocol. `stream/` holds the TCP and
//! Unix stream transport (its reading, writing and lifecycle apart), `fast_write.rs` its `write`
//! entry point; how it finds its protocol's `data_received` (or `get_buffer` and
//! `buffer_updated`) without a lookup at each read is `cpython/method_cache.rs`, which reads
//! CPython's private layouts.
//!
//! The loop runs a transport's read and write steps itself when its fd is ready; it knows them
//! only through `event_loop::transport_step`, which `install` hands the stream transport's step.

mod fast_write;
mod stream;

use pyo3::prelude::*;

use crate::event_loop::transport_step;

pub use stream::StreamTransport;

/// Adds the transport classes to the extension module and gives the loop their step.
pub fn install(module: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = module.py();
    module.add_class::<StreamTransport>()?;
    stream::install(py);
    fast_write::install(py)?;
    transport_step::install(stream::run_step);
    Ok(())
}
