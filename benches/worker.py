"""One measurement in one fresh process: build the loop, run one case, print one JSON line.

Invoked by the runner as `python benches/run.py --worker CASE LOOP [--quick]`, or as
`python benches/run.py --probe LOOP` to check that a loop imports and can be created.
"""

import gc
import importlib
import json
import os
import platform
import sys

from cases import CASES, maxrss_kib

QUICK_SCALE = 0.1

# loop name -> (module to import, factory given that module, distribution name for its version)
LOOPS = {
    "asyncio": ("asyncio", lambda mod: mod.SelectorEventLoop(), None),
    "uvloop": ("uvloop", lambda mod: mod.new_event_loop(), "uvloop"),
    "rloop": ("rloop", lambda mod: mod.new_event_loop(), "rloop"),
    "zuvloop": ("zuvloop", lambda mod: mod.new_event_loop(), "zuvloop"),
    "ferroloop": ("ferroloop", lambda mod: mod.new_event_loop(), "ferroloop"),
    # ferroloop with a `ferroloop.trace()` recording it (its files are never written).
    "ferroloop-traced": ("ferroloop", lambda mod: _traced_loop(mod), "ferroloop"),
    # A second ferroloop build, installed apart (`pip install --target DIR`) and found through
    # FERROLOOP_OTHER_SITE: the build without counters, or the build before a change.
    "ferroloop-other": ("ferroloop", lambda mod: mod.new_event_loop(), "ferroloop"),
}

OTHER_SITE = "FERROLOOP_OTHER_SITE"


def _traced_loop(ferroloop):
    import tempfile

    session = ferroloop.trace(os.path.join(tempfile.mkdtemp(), "bench"), summary=False)
    session.__enter__()
    loop = ferroloop.new_event_loop()
    session.attach(loop)
    return loop


def make_loop(name):
    module_name, factory, _ = LOOPS[name]
    if name == "ferroloop-other":
        site = os.environ.get(OTHER_SITE)
        if not site:
            raise ModuleNotFoundError(f"No module named '{module_name}'")
        sys.path.insert(0, site)
    return factory(importlib.import_module(module_name))


def loop_version(name):
    _, _, dist = LOOPS[name]
    if dist is None:
        return "python " + platform.python_version()
    try:
        from importlib.metadata import version

        return version(dist)
    except Exception:
        return getattr(sys.modules.get(LOOPS[name][0]), "__version__", "?")


def run_sample(case_name, loop_name, quick=False):
    case = CASES[case_name]
    n = case.size_for(QUICK_SCALE if quick else 1.0)
    loop = make_loop(loop_name)
    try:
        gc.collect()
        result = case.run(loop, n)
    finally:
        loop.close()
    result.update(case=case_name, loop=loop_name, n=n, maxrss_kib=maxrss_kib())
    return result


def probe(loop_name):
    """Print the loop's version if it imports and a loop can be made and closed."""
    loop = make_loop(loop_name)
    loop.close()
    print(json.dumps({"loop": loop_name, "version": loop_version(loop_name)}))


def worker(case_name, loop_name, quick):
    print(json.dumps(run_sample(case_name, loop_name, quick)))

