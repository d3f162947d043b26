//! Build script: the `Py_3_x` and `Py_GIL_DISABLED` cfgs of the interpreter being built for,
//! which select the version-specific code in `src/cpython/` (and the few version gates of the
//! loop's behaviour), as PyO3 itself does.

fn main() {
    pyo3_build_config::use_pyo3_cfgs();
}
