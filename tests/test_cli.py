"""The command line: `python -m ferroloop run ...` runs a program as `python ...` would, on
ferroloop. Most tests run the same program both ways and compare what it saw."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import ferroloop

ROOT = Path(__file__).resolve().parent.parent


def ferroloop_cli(*args, cwd=None, stdin=None):
    return python("-m", "ferroloop", *args, cwd=cwd, stdin=stdin)


def python(*args, cwd=None, stdin=None):
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd or ROOT,
        env=dict(os.environ, PYTHONWARNINGS=""),
        input=stdin,
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


# What a program sees of how it was started, and which loop asyncio gives it.
SEEN = textwrap.dedent(
    """
    import asyncio, json, sys
    print(json.dumps({
        "path0": sys.path[0],
        "file": globals().get("__file__"),
        "argv": sys.argv,
        "name": __name__,
        "main_is_us": sys.modules["__main__"].__dict__ is globals(),
        "loop": type(asyncio.new_event_loop()).__module__,
    }))
    """
)


def seen(proc):
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def same_but_the_loop(direct, through_us):
    a, b = seen(direct), seen(through_us)
    assert a.pop("loop") != ferroloop.Loop.__module__
    assert b.pop("loop") == ferroloop.Loop.__module__
    assert a == b


def test_script_in_a_subfolder_sees_what_python_gives(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "helper.py").write_text("VALUE = 42\n")
    (tmp_path / "sub" / "main.py").write_text("import helper\n" + SEEN)
    args = ("sub/main.py", "a", "--b")
    direct, through_us = python(*args, cwd=tmp_path), ferroloop_cli("run", *args, cwd=tmp_path)
    same_but_the_loop(direct, through_us)
    assert seen(through_us)["path0"] == str((tmp_path / "sub").resolve())
    assert seen(through_us)["file"] == str(tmp_path / "sub" / "main.py")


def test_symlinked_script_imports_from_its_real_folder(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "helper.py").write_text("")
    (tmp_path / "real" / "main.py").write_text("import helper\n" + SEEN)
    (tmp_path / "link.py").symlink_to(tmp_path / "real" / "main.py")
    same_but_the_loop(python("link.py", cwd=tmp_path), ferroloop_cli("run", "link.py", cwd=tmp_path))


def test_module(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "tool.py").write_text(SEEN)
    args = ("-m", "pkg.tool", "x")
    same_but_the_loop(python(*args, cwd=tmp_path), ferroloop_cli("run", *args, cwd=tmp_path))


def test_directory_with_main(tmp_path):
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "__main__.py").write_text(SEEN)
    direct = seen(python("app", "y", cwd=tmp_path))
    through_us = seen(ferroloop_cli("run", "app", "y", cwd=tmp_path))
    assert through_us["loop"] == ferroloop.Loop.__module__
    for key in ("path0", "file", "name", "main_is_us"):
        assert through_us[key] == direct[key], key
    # runpy, which runs the directory, gives argv[0] as an absolute path.
    assert through_us["argv"][1:] == direct["argv"][1:] == ["y"]


def test_code_string(tmp_path):
    args = ("-c", SEEN, "z")
    same_but_the_loop(python(*args, cwd=tmp_path), ferroloop_cli("run", *args, cwd=tmp_path))


def test_program_from_stdin(tmp_path):
    same_but_the_loop(
        python("-", "w", cwd=tmp_path, stdin=SEEN),
        ferroloop_cli("run", "-", "w", cwd=tmp_path, stdin=SEEN),
    )


def test_traceback_starts_at_the_programs_frames(tmp_path):
    (tmp_path / "fails.py").write_text("def f():\n    return 1 / 0\n\nf()\n")
    direct, through_us = python("fails.py", cwd=tmp_path), ferroloop_cli("run", "fails.py", cwd=tmp_path)
    assert direct.returncode == through_us.returncode == 1
    assert through_us.stderr == direct.stderr
    assert "runpy" not in through_us.stderr and "ferroloop" not in through_us.stderr


def test_keyboard_interrupt_exits_130_with_its_traceback(tmp_path):
    code = "import asyncio\nasync def main():\n    raise KeyboardInterrupt\nasyncio.run(main())\n"
    (tmp_path / "interrupted.py").write_text(code)
    proc = ferroloop_cli("run", "interrupted.py", cwd=tmp_path)
    assert proc.returncode == 130
    assert proc.stderr.startswith("Traceback (most recent call last):\n  File \"")
    assert str(tmp_path / "interrupted.py") in proc.stderr
    assert proc.stderr.rstrip().endswith("KeyboardInterrupt")


def test_missing_module_as_python_reports_it(tmp_path):
    direct = python("-m", "no_such_module_here", cwd=tmp_path)
    through_us = ferroloop_cli("run", "-m", "no_such_module_here", cwd=tmp_path)
    assert through_us.returncode == direct.returncode == 1
    assert through_us.stderr == direct.stderr


def test_help():
    proc = ferroloop_cli("--help")
    assert proc.returncode == 0
    assert "run -m MODULE" in proc.stdout and "REPL" in proc.stdout


def test_no_arguments_starts_the_asyncio_repl_on_ferroloop():
    lines = "import asyncio\nawait asyncio.sleep(0)\ntype(asyncio.get_running_loop()).__module__\n"
    proc = ferroloop_cli(stdin=lines)
    assert proc.returncode == 0, proc.stderr
    assert repr(ferroloop.Loop.__module__) in proc.stdout + proc.stderr
