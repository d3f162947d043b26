"""The command line: run a program on ferroloop as `python` would run it.

    python -m ferroloop                        the asyncio REPL, on ferroloop
    python -m ferroloop run SCRIPT [ARGS...]   a script, or a directory or zip with __main__.py
    python -m ferroloop run -m MODULE [ARGS...]
    python -m ferroloop run -c CODE [ARGS...]
    python -m ferroloop run - [ARGS...]        the program read from stdin
    python -m ferroloop run --watchdog SECONDS SCRIPT [ARGS...]
    python -m ferroloop trace [-o OUT] SCRIPT [ARGS...]
    python -m ferroloop --version

ferroloop becomes asyncio's loop (through the policy, without the 3.14+ deprecation warning
that `install()` gives, since the user asked for nothing deprecated) before the program starts,
so `asyncio.run()` and `asyncio.new_event_loop()` in it give ferroloop loops.

The program must not see that it was started through us, so what `python` sets up is set up
the same way: `sys.argv` (argv[0] as typed, the module's path for `-m`, `-c` or `-`),
`sys.path[0]` (the script's resolved folder, the current directory for `-m`, '' for `-c` and
stdin, none under `-P`), an absolute `__file__`, a traceback that starts at the program's own
frames rather than runpy's or ours, and the exit status: the program's `sys.exit`, 1 after an
uncaught exception, 130 after Ctrl-C.
"""

import os
import runpy
import sys

import ferroloop

USAGE = """\
usage: python -m ferroloop [--help] [--version]
       python -m ferroloop run [--watchdog SECONDS] (SCRIPT | -m MODULE | -c CODE | -) [ARGS...]
       python -m ferroloop trace [-o OUT] (SCRIPT | -m MODULE | -c CODE | -) [ARGS...]

Runs an asyncio program on ferroloop, as `python` would run it; with no
arguments, starts the asyncio REPL on ferroloop.

commands:
  run SCRIPT      a Python file, or a directory or zip file with __main__.py
  run -m MODULE   a module, as `python -m MODULE`
  run -c CODE     a program passed as a string
  run -           a program read from standard input
  trace ...       runs the program as `run` does, recording what the loop does:
                  writes OUT.json (open it in ui.perfetto.dev), OUT.html (each
                  task's states over time) and a summary (OUT: ferroloop-trace)

options:
  --watchdog SECONDS
                  report, with its stack, a loop stuck in one callback that long
  -o OUT          where `trace` writes its files
  -h, --help      show this message and exit
  --version       show ferroloop's version and exit
"""

# Frames of the machinery that starts the program, left out of its tracebacks.
_OUR_FILES = (__file__, runpy.__file__, "<frozen runpy>")


def _fail(message, status=2):
    print(f"{message}\n\n{USAGE}", file=sys.stderr, end="")
    return status


def _set_path0(entry):
    """Puts `entry` where `python -m ferroloop` put the current directory (nothing under -P)."""
    if not sys.flags.safe_path:
        if entry is None:
            del sys.path[0]
        else:
            sys.path[0] = entry


def _program_traceback(tb):
    while tb is not None and tb.tb_frame.f_code.co_filename in _OUR_FILES:
        tb = tb.tb_next
    return tb


def _run_script(target, args):
    path = os.path.abspath(target)
    if not os.path.exists(path):
        # As `python SCRIPT` reports it.
        print(f"{sys.executable}: can't open file {path!r}: [Errno 2] No such file or directory", file=sys.stderr)
        return 2
    sys.argv = [target, *args]
    if os.path.isdir(path) or _is_zip(path):
        _set_path0(None)  # runpy puts the directory or zip file there, as python does
        runpy.run_path(path, run_name="__main__")
        return 0
    _set_path0(os.path.dirname(os.path.realpath(path)))
    with open(path, "rb") as file:  # runpy would set argv[0] to the absolute path
        code = compile(file.read(), path, "exec")
    main = _fresh_main(path)
    exec(code, main.__dict__)
    return 0


def _fresh_main(filename):
    """A new `__main__` module for the program, in `sys.modules` as python's own would be (so
    that pickle and multiprocessing find the program's functions there)."""
    import importlib.machinery
    import types

    main = types.ModuleType("__main__")
    main.__builtins__ = __builtins__
    if filename is not None:
        main.__file__ = filename
        main.__loader__ = importlib.machinery.SourceFileLoader("__main__", filename)
    sys.modules["__main__"] = main
    return main


def _is_zip(path):
    import zipfile

    return zipfile.is_zipfile(path)


def _run_module(name, args):
    import importlib.util

    try:
        spec = importlib.util.find_spec(name)
    except ImportError as exc:
        spec, reason = None, exc
    else:
        reason = f"No module named {name}"
    if spec is None:
        print(f"{sys.executable}: {reason}", file=sys.stderr)
        return 1
    sys.argv = [name, *args]
    _set_path0(os.getcwd())
    runpy.run_module(name, run_name="__main__", alter_sys=True)
    return 0


def _run_source(source, filename, args):
    sys.argv = [filename, *args]
    _set_path0("")
    main = _fresh_main(None)
    if filename == "-":
        main.__file__ = "<stdin>"
    exec(compile(source, "<string>" if filename == "-c" else "<stdin>", "exec"), main.__dict__)
    return 0


def _repl():
    sys.argv = [sys.argv[0]]
    runpy.run_module("asyncio", run_name="__main__", alter_sys=True)
    return 0


def _option(rest, names, command):
    """The value of option `names` at the head of `rest` (None if absent), and what follows."""
    if rest and rest[0] in names:
        if len(rest) < 2:
            raise _Usage(f"python -m ferroloop {command}: argument expected for the {rest[0]} option")
        return rest[1], rest[2:]
    return None, rest


class _Usage(Exception):
    pass


def _seconds(text):
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not value > 0 or value == float("inf"):
        raise _Usage(f"python -m ferroloop run: --watchdog needs a positive number of seconds, got {text!r}")
    return value


def _dispatch(argv):
    if not argv:
        ferroloop._install()
        return _repl()
    first, rest = argv[0], argv[1:]
    if first in ("-h", "--help"):
        print(USAGE, end="")
        return 0
    if first == "--version":
        print(f"ferroloop {ferroloop.__version__}")
        return 0
    if first not in ("run", "trace"):
        return _fail(f"python -m ferroloop: unknown command {first!r}")
    try:
        if first == "trace":
            out, rest = _option(rest, ("-o", "--output"), first)
            session = ferroloop.trace(out or "ferroloop-trace")
        else:
            seconds, rest = _option(rest, ("--watchdog",), first)
            session = ferroloop.watchdog(_seconds(seconds)) if seconds is not None else None
    except _Usage as exc:
        return _fail(str(exc))
    if not rest:
        return _fail(f"python -m ferroloop {first}: a SCRIPT, -m MODULE, -c CODE or - is required")
    what, args = rest[0], rest[1:]
    if what in ("-h", "--help"):
        print(USAGE, end="")
        return 0
    if what in ("-m", "-c") and not args:
        return _fail(f"python -m ferroloop {first}: argument expected for the {what} option")
    if session is None:
        return _start(what, args)
    try:
        session.__enter__()
    except OSError as exc:  # an output path that cannot be written: before the program runs
        print(f"python -m ferroloop {first}: {exc}", file=sys.stderr)
        return 2
    try:
        return _start(what, args)
    finally:
        session.__exit__(None, None, None)


def _start(what, args):
    ferroloop._install()
    if what == "-m":
        return _run_module(args[0], args[1:])
    if what == "-c":
        return _run_source(args[0], "-c", args[1:])
    if what == "-":
        return _run_source(sys.stdin.read(), "-", args)
    return _run_script(what, args)


def main(argv=None):
    """Runs the command line; returns the exit status (a program's `sys.exit` propagates)."""
    try:
        return _dispatch(sys.argv[1:] if argv is None else argv)
    except SystemExit:
        raise
    except BaseException as exc:  # the program's: shown from its own frames, as python does
        exc.__traceback__ = _program_traceback(exc.__traceback__)
        sys.excepthook(type(exc), exc, exc.__traceback__)
        return 130 if isinstance(exc, KeyboardInterrupt) else 1


if __name__ == "__main__":
    sys.exit(main())
