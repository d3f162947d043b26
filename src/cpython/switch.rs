//! The one switch for every layout read: `FERROLOOP_LAYOUT_READS=0` in the environment turns
//! them all off for the process, and each trick's safe fallback runs instead.

/// Whether layout reads are allowed at all (`FERROLOOP_LAYOUT_READS`, read once).
pub fn layout_reads_allowed() -> bool {
    static ALLOWED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ALLOWED.get_or_init(|| std::env::var_os("FERROLOOP_LAYOUT_READS").is_none_or(|v| v != "0"))
}
