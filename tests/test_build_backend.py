"""Building from source without Rust fails at once, saying what is missing and how to get it
(build_backend/ferroloop_build.py), rather than letting maturin install a toolchain silently."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BACKEND = ROOT / "build_backend"

pytestmark = pytest.mark.skipif(not BACKEND.is_dir(), reason="not in a source checkout")


def call_hook(hook, path):
    code = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(BACKEND)!r})
        import ferroloop_build
        try:
            print(ferroloop_build.{hook})
        except ferroloop_build.RustNotFound as exc:
            print("RustNotFound", exc)
        """
    )
    env = dict(os.environ, PATH=path)
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    "hook",
    [
        "get_requires_for_build_wheel()",
        "get_requires_for_build_sdist()",
        "get_requires_for_build_editable()",
        "prepare_metadata_for_build_wheel('unused')",
        "build_wheel('unused')",
    ],
)
def test_without_cargo_every_hook_names_rust_and_rustup(tmp_path, hook):
    (tmp_path / "bin").mkdir()
    proc = call_hook(hook, str(tmp_path / "bin"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("RustNotFound")
    assert "needs a Rust toolchain" in proc.stdout and "https://rustup.rs" in proc.stdout


def test_with_cargo_the_hooks_are_maturins():
    proc = call_hook("get_requires_for_build_wheel()", os.environ["PATH"])
    assert proc.returncode == 0, proc.stderr
    assert "RustNotFound" not in proc.stdout
    assert "puccinialin" not in proc.stdout  # maturin asks for it only when cargo is missing
