"""The build backend of pyproject.toml: maturin's, after a check that Rust is installed.

Building ferroloop from source (a clone, or the sdist pip falls back to where no wheel fits)
compiles Rust. Without cargo, maturin's backend downloads and installs a Rust toolchain into
the build environment, silently and for minutes; a user who expected a pure-Python install
should instead be told at once what is missing and how to get it.
"""

import shutil

import maturin

MINIMUM_RUST = "1.85"

NO_RUST = f"""
ferroloop is written in Rust, and building it from source needs a Rust toolchain
(cargo and rustc {MINIMUM_RUST} or later), which was not found on PATH.

Install Rust with rustup (https://rustup.rs):

    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh

then open a new shell (or run `. "$HOME/.cargo/env"`) and install ferroloop again.
"""


class RustNotFound(RuntimeError):
    pass


def _require_rust():
    if shutil.which("cargo") is None:
        raise RustNotFound(NO_RUST)


def get_requires_for_build_wheel(config_settings=None):
    _require_rust()
    return maturin.get_requires_for_build_wheel(config_settings)


def get_requires_for_build_editable(config_settings=None):
    _require_rust()
    return maturin.get_requires_for_build_editable(config_settings)


def get_requires_for_build_sdist(config_settings=None):
    _require_rust()
    return maturin.get_requires_for_build_sdist(config_settings)


def prepare_metadata_for_build_editable(metadata_directory, config_settings=None):
    _require_rust()
    return maturin.prepare_metadata_for_build_editable(metadata_directory, config_settings)


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    _require_rust()
    return maturin.prepare_metadata_for_build_wheel(metadata_directory, config_settings)


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    _require_rust()
    return maturin.build_wheel(wheel_directory, config_settings, metadata_directory)


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    _require_rust()
    return maturin.build_editable(wheel_directory, config_settings, metadata_directory)


def build_sdist(sdist_directory, config_settings=None):
    _require_rust()
    return maturin.build_sdist(sdist_directory, config_settings)
