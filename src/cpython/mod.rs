//! The one boundary to CPython's internals: every read of a private layout lives here, each with
//! a safe fallback that the tests exercise.
//!
//! - `socket`: the fd a socket object holds now, read from `_socket.socket`'s C struct, or
//!   through `fileno()` where that layout is not vouched for; and its `_io_refs` slot.
//! - `context`: whether two `contextvars.Context`s hold the same variables (their `ctx_vars`).
//! - `bytes`: a `bytes` object filled in place, resized and reused (`BytesBuf`).
//! - `refcount`: reference counts read as "does anyone else hold this object".
//!
//! `FERROLOOP_LAYOUT_READS=0` in the environment turns every layout read off for the process
//! (the fallbacks run instead); the tests use it to run the fallbacks.

pub mod bytes;
pub mod context;
pub mod refcount;
pub mod socket;

/// Whether layout reads are allowed at all (`FERROLOOP_LAYOUT_READS`, read once).
fn layout_reads_allowed() -> bool {
    static ALLOWED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ALLOWED.get_or_init(|| std::env::var_os("FERROLOOP_LAYOUT_READS").is_none_or(|v| v != "0"))
}
