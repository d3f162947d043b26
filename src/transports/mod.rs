//! Transports: the objects between a socket and an asyncio protocol. `stream.rs` holds the TCP
//! and Unix stream transport, `fast_write.rs` its `write` entry point; how it finds its
//! protocol's `data_received` (or `get_buffer` and `buffer_updated`) without a lookup at each
//! read is `cpython/method_cache.rs`, which reads CPython's private layouts.

mod fast_write;
mod stream;

pub use fast_write::install as install_fast_write;

pub use stream::{install as install_finalizers, run_step, StreamTransport};
