//! Tuning of the C allocator for the reads the loop does.

/// The block `prime_allocator` frees: glibc then keeps up to twice this free at the top of the
/// heap, room for a few dozen connections' 64 KiB reads in flight (measured: 512 KiB was not
/// enough for 32 connections echoing 100 KiB, 1 MiB was).
const PRIME_SIZE: usize = 1024 * 1024;

/// Raises glibc's dynamic allocation thresholds to the sizes the loop's reads produce.
///
/// Why: glibc gives the top of the heap back to the kernel whenever more than its trim threshold
/// (128 KiB at start) lies free there, and takes it back on the next allocation, page fault by
/// page fault; blocks above its mmap threshold (also 128 KiB at start) get an `mmap` each. A
/// read makes a `bytes` as large as it may bring (256 KiB on a transport) and shrinks it to what
/// arrived (see `recv_bytes.rs`), so without this every read paid for its pages afresh
/// (measured: 40% fewer requests per second echoing 100 KiB messages). glibc raises both
/// thresholds by itself the first time a block it took from `mmap` is freed (to that size, and
/// twice that); most Python programs trigger this early by chance. Freeing one such block, never
/// touched, does it on purpose: no memory stays in use, and the heap may keep up to twice
/// `PRIME_SIZE` free at its top instead of returning it at once.
pub fn prime_allocator() {
    // black_box: an allocation nothing reads would be removed by the optimizer.
    drop(std::hint::black_box(Vec::<u8>::with_capacity(PRIME_SIZE)));
}
