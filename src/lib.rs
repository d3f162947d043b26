//! ferroloop's extension module, `ferroloop._core`: module registration only.

pub mod core;
