//! `StreamTransport`: the TCP and Unix stream transport, with the semantics of the stock
//! `selector_events._SelectorSocketTransport`, read and write paths in Rust.
//!
//! What the stock transport does, and so this one:
//! - Creation schedules, in this order, `protocol.connection_made(transport)`, the start of
//!   reading, and the waiter's result, all with `call_soon`: the protocol sees data only after
//!   `connection_made`, and the waiter wakes after both.
//! - Reading: one `recv` (256 KiB at most) per readiness event, handed to `data_received`, or,
//!   for a `BufferedProtocol`, received straight into the buffer `get_buffer(-1)` returns and
//!   announced with `buffer_updated(n)`. End of stream calls `eof_received()`; a true result
//!   keeps the transport open for writing, anything else closes it.
//! - Writing: `write` sends at once when nothing is waiting and buffers only the rest; the buffer
//!   is flushed when the socket becomes writable. Above the high-water mark the protocol's
//!   `pause_writing()` is called once, and `resume_writing()` once it drains to the low-water
//!   mark.
//! - `close()` stops reading and lets the buffer drain before `connection_lost(None)`;
//!   `abort()` and fatal errors drop the buffer. `connection_lost` is called exactly once, from
//!   a `call_soon` callback (or straight from the flush that empties the buffer of a closing
//!   transport), and then the socket is closed and the server told.
//! - Errors: an `OSError` from the socket ends the connection quietly (logged only in debug
//!   mode) and reaches `connection_lost(exc)`; any other exception from the protocol goes to the
//!   loop's exception handler first. `SystemExit` and `KeyboardInterrupt` propagate.
//!
//! - Context (better than stock, as uvloop): every protocol callback runs in one
//!   `contextvars.Context`, a copy of the one the transport was created in: the scheduled ones
//!   (`connection_made`, `connection_lost`), the read and write steps (`data_received`,
//!   `eof_received`, `resume_writing`), and `pause_writing`/`resume_writing` called from inside
//!   another task's `write` (`event_loop::run_in`). The stock transport runs them in whichever
//!   Context scheduled them (the task that called `close()` or `resume_reading()`).
//!
//! The transport's read and write steps (`_read_ready`, `_write_ready`) are the fd's reader and
//! writer, so they run in the ready queue in the stock loop's order; the handle holds the
//! transport itself and the loop calls the step straight from Rust (`run_step`, given to the loop through `event_loop::transport_step`).
//!
//! Borrow rule (see `cpython/gil.rs`): the state is never borrowed across a call into Python, since
//! every protocol method may call back into the transport.
//!
//! The fd belongs to the socket object (`crate::owner`): each system call goes through `live_fd`,
//! which gives -1 (so the call fails with EBADF, as the stock transport's `sock.send` would) once
//! the program has closed or detached the socket under the transport; the reader and writer are
//! registered as that socket's, and the socket is watched, so closing it takes them out of epoll.

mod lifecycle;
mod methods;
mod read;
mod transport;
mod write;

pub use lifecycle::install;
pub use methods::run_step;
pub use transport::StreamTransport;
