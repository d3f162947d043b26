//! A hint to the processor to bring memory into the cache before it is needed.

/// A hint to load the cache lines at `ptr` (an object and the GC header just before it).
pub fn prefetch(ptr: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is only a hint: it never faults and has no effect on memory, whatever
    // the address.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch(ptr.wrapping_sub(16).cast(), _MM_HINT_T0);
        _mm_prefetch(ptr.wrapping_add(48).cast(), _MM_HINT_T0);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = ptr;
}
