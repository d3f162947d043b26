"""Headless Chromium for tests (and the README's screenshot): render a local HTML file to a PNG,
or to the DOM its scripts leave.

    from chromium_shot import chromium, screenshot, dump_dom
    if chromium() is None: skip
    screenshot("trace.html", "trace.png", width=1200, height=800)

Flags, for Chromium 1xx's headless mode: `--no-sandbox` because tests may run as root (in a
container); `--disable-gpu` and `--hide-scrollbars` for plain, stable pixels;
`--force-device-scale-factor=1` so a CSS pixel is an image pixel; a throwaway profile
(`--user-data-dir`) so runs never share or lock one; and `--virtual-time-budget`, which lets the
page's scripts and timers run (in virtual time, so without waiting) before the shot is taken.
Chromium logs D-Bus errors on stderr when there is no session bus; they are harmless.
"""

import os
import pathlib
import shutil
import subprocess
import tempfile
from typing import List, Optional

TIMEOUT = 90
"""Seconds one Chromium run may take: generous, for a busy CI machine."""

ATTEMPTS = 3
"""Runs of Chromium when it dies of a signal: headless Chromium crashed now and then on the
loaded CI machine (SIGSEGV, once in a few hundred runs), which says nothing about the page."""


def chromium() -> Optional[str]:
    """The Chromium binary on PATH, or None."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _run(
    extra: List[str], html_path: str, width: int, height: int
) -> "subprocess.CompletedProcess[str]":
    binary = chromium()
    if binary is None:
        raise RuntimeError("no chromium or chromium-browser on PATH")
    with tempfile.TemporaryDirectory(prefix="ferroloop-chromium-") as profile:
        command = [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            "--force-device-scale-factor=1",
            f"--user-data-dir={profile}",
            f"--window-size={width},{height}",
            "--virtual-time-budget=5000",
            *extra,
            pathlib.Path(html_path).resolve().as_uri(),
        ]
        for _ in range(ATTEMPTS):
            result = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT)
            if result.returncode >= 0:
                break
    if result.returncode != 0:
        raise RuntimeError(f"chromium exited with {result.returncode}:\n{result.stderr[-3000:]}")
    return result


def screenshot(html_path: str, png_path: str, width: int = 1200, height: int = 800) -> None:
    """Renders `html_path` in a `width` x `height` window and writes the PNG to `png_path`."""
    png_path = os.path.abspath(png_path)
    if os.path.exists(png_path):
        os.unlink(png_path)
    result = _run([f"--screenshot={png_path}"], html_path, width, height)
    if not os.path.exists(png_path):
        raise RuntimeError(f"chromium wrote no screenshot:\n{result.stderr[-3000:]}")


def dump_dom(html_path: str, width: int = 1200, height: int = 800) -> str:
    """The page's DOM, serialized, once its scripts have run."""
    return _run(["--dump-dom"], html_path, width, height).stdout
