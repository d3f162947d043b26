//! The poller's vocabulary, shared by the portable surface and each backend: what a
//! registration waits for, and what one wait reports.

/// What a registration waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Interest {
    pub readable: bool,
    pub writable: bool,
    /// Disarmed by the kernel after one event, until re-registered (EPOLLONESHOT).
    pub oneshot: bool,
}

impl Interest {
    pub const READABLE: Interest = Interest {
        readable: true,
        writable: false,
        oneshot: false,
    };
    pub const WRITABLE: Interest = Interest {
        readable: false,
        writable: true,
        oneshot: false,
    };
    pub const BOTH: Interest = Interest {
        readable: true,
        writable: true,
        oneshot: false,
    };

    pub fn is_empty(self) -> bool {
        !self.readable && !self.writable
    }
}

/// One fd's readiness from one wait. An error or hang-up on the fd reports it as both readable
/// and writable, as Python's `selectors` module does, so whichever callback is registered runs
/// and sees the error itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    pub token: u64,
    pub readable: bool,
    pub writable: bool,
}
