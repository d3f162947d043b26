//! Transports: the objects between a socket and an asyncio protocol. `stream.rs` holds the TCP
//! and Unix stream transport, `fast_write.rs` its `write` entry point, `method_cache.rs` how it
//! finds its protocol's `data_received` (or `get_buffer` and `buffer_updated`) without a lookup
//! at each read.

mod fast_write;
mod method_cache;
mod stream;

pub use fast_write::install as install_fast_write;

pub use stream::{install as install_finalizers, run_step, StreamTransport};
