//! The engine: clock, timer queue, ready queue, poller, the byte buffers of transports, and the
//! few system helpers they use.
//!
//! Nothing here knows about Python. The loop layer (`crate::event_loop`) stores Python handles in
//! these generic containers and maps poller tokens to its own registrations, so the engine can be
//! tested alone with `cargo test`.

pub mod allocator;
pub mod buffer;
pub mod clock;
pub mod poller;
pub mod prefetch;
pub mod ready;
pub mod stats;
pub mod sys;
pub mod ticks;
pub mod timers;
pub mod trace_ring;
pub mod watchdog;

/// How many steps a randomized or repeated test takes: `n`, or a fiftieth of it (at least 20)
/// under Miri, which interprets each step some thousand times slower. Enough either way to go
/// through every branch the test drives.
#[cfg(test)]
pub(crate) fn test_steps(n: u32) -> u32 {
    if cfg!(miri) {
        (n / 50).max(20)
    } else {
        n
    }
}
