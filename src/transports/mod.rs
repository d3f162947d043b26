//! Transports: the objects between a socket and an asyncio protocol. `stream.rs` holds the TCP
//! and Unix stream transport.

mod stream;

pub use stream::{install as install_finalizers, run_step, StreamTransport};
