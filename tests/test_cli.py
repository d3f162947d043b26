"""The command line: `python -m ferroloop --version` and `python -m ferroloop run SCRIPT [ARGS...]`."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import ferroloop

ROOT = Path(__file__).resolve().parent.parent


def ferroloop_cli(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "ferroloop", *args],
        cwd=cwd or ROOT,
        env=dict(os.environ, PYTHONWARNINGS=""),
        capture_output=True,
        text=True,
        timeout=60,
    )


PROBE = textwrap.dedent(
    """
    import asyncio
    import json
    import sys

    async def main():
        loop = asyncio.get_running_loop()
        await asyncio.sleep(0.01)
        return type(loop).__module__, type(loop).__qualname__

    loop_module, loop_name = asyncio.run(main())
    import ferroloop
    print(json.dumps({
        "policy_module": type(asyncio.get_event_loop_policy()).__module__,
        "policy_is_ferroloop": isinstance(asyncio.get_event_loop_policy(), ferroloop.EventLoopPolicy),
        "argv": sys.argv,
        "name": __name__,
        "loop_module": loop_module,
        "loop_name": loop_name,
        "new_loop_is_ferroloop": isinstance(asyncio.new_event_loop(), ferroloop.Loop),
    }))
    """
)


def test_version():
    proc = ferroloop_cli("--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"ferroloop {ferroloop.__version__}"
    assert ferroloop.__version__ and ferroloop.__version__[0].isdigit()


def test_run_script_uses_ferroloop(tmp_path):
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    proc = ferroloop_cli("run", str(script), "a", "b")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info["policy_module"] == "ferroloop"
    assert info["policy_is_ferroloop"] is True
    assert info["loop_module"] == ferroloop.Loop.__module__
    assert info["loop_name"] == ferroloop.Loop.__qualname__
    assert info["new_loop_is_ferroloop"] is True
    assert info["argv"] == [str(script), "a", "b"]
    assert info["name"] == "__main__"


def test_run_script_passes_option_like_args_through(tmp_path):
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    proc = ferroloop_cli("run", str(script), "--version", "-x", "--", "c")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info["argv"] == [str(script), "--version", "-x", "--", "c"]


def test_same_script_run_directly_uses_stock_loop(tmp_path):
    """Control: the probe can tell the loops apart."""
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    proc = subprocess.run(
        [sys.executable, str(script), "a"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info["policy_module"] != "ferroloop"
    assert info["loop_module"] != ferroloop.Loop.__module__
    assert info["argv"] == [str(script), "a"]


def test_system_exit_code_propagates(tmp_path):
    script = tmp_path / "exits.py"
    script.write_text("import sys\nprint('before')\nraise SystemExit(3)\n")
    proc = ferroloop_cli("run", str(script))
    assert proc.returncode == 3, (proc.stdout, proc.stderr)
    assert proc.stdout.strip() == "before"


def test_system_exit_inside_asyncio_run_propagates(tmp_path):
    script = tmp_path / "exits_async.py"
    script.write_text(
        "import asyncio\n"
        "async def main():\n"
        "    await asyncio.sleep(0)\n"
        "    raise SystemExit(4)\n"
        "asyncio.run(main())\n"
    )
    proc = ferroloop_cli("run", str(script))
    assert proc.returncode == 4, (proc.stdout, proc.stderr)


def test_uncaught_exception_gives_nonzero_exit_and_traceback(tmp_path):
    script = tmp_path / "fails.py"
    script.write_text("raise ZeroDivisionError('boom')\n")
    proc = ferroloop_cli("run", str(script))
    assert proc.returncode != 0
    assert "ZeroDivisionError: boom" in proc.stderr


def test_missing_script(tmp_path):
    missing = tmp_path / "does_not_exist.py"
    proc = ferroloop_cli("run", str(missing))
    assert proc.returncode != 0
    assert "does_not_exist.py" in proc.stderr
    assert proc.stdout == ""


def test_run_without_script_is_usage_error():
    proc = ferroloop_cli("run")
    assert proc.returncode == 2
    assert "usage:" in proc.stderr
