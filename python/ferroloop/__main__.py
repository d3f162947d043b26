"""The command line.

    python -m ferroloop run SCRIPT [ARGS...]   run an asyncio script with ferroloop as its loop
    python -m ferroloop --version
"""

import argparse
import os
import runpy
import sys

import ferroloop


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m ferroloop", description=ferroloop.__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"ferroloop {ferroloop.__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run an asyncio script on ferroloop")
    run.add_argument("script", help="path of the Python script")
    run.add_argument("args", nargs=argparse.REMAINDER, help="arguments passed to the script")
    options = parser.parse_args(argv)

    if not os.path.isfile(options.script):
        # As `python SCRIPT` reports it.
        path = os.path.abspath(options.script)
        print(f"{sys.executable}: can't open file {path!r}: [Errno 2] No such file or directory", file=sys.stderr)
        return 2

    ferroloop._install()  # the policy, without the 3.14+ deprecation warning of install()
    sys.argv = [options.script, *options.args]
    runpy.run_path(options.script, run_name="__main__")
    return 0


if __name__ == "__main__":
    sys.exit(main())
