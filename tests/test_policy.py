"""ferroloop's entry points on every Python: `run` through `asyncio.Runner`, never touching the
process-wide policy, and the policy API (`EventLoopPolicy`, `install`), which warns exactly when
asyncio's own policy API warns (3.14 and later) and is made only when first asked for, so that
importing and running ferroloop warns about nothing."""

import asyncio
import subprocess
import sys
import textwrap
import threading
import warnings

import pytest

import ferroloop

POLICIES_DEPRECATED = sys.version_info >= (3, 14)


def run_python(code, *flags):
    return subprocess.run(
        [sys.executable, *flags, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60
    )


def test_import_and_run_raise_no_warning_with_w_error():
    out = run_python(
        """
        import asyncio, ferroloop

        async def main():
            await asyncio.sleep(0.01)
            loop = asyncio.get_running_loop()
            loop.call_soon(lambda: None)
            return type(loop).__name__

        print(ferroloop.run(main()))
        """,
        "-W",
        "error",
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["Loop"]


def test_importing_does_not_make_the_policy_class():
    out = run_python(
        """
        import ferroloop
        print(ferroloop._policy_class is None)
        """,
        "-W",
        "error",
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True"]


def test_asyncio_run_with_loop_factory():
    if sys.version_info < (3, 12):
        pytest.skip("asyncio.run takes loop_factory from 3.12 on")

    async def main():
        return type(asyncio.get_running_loop())

    assert asyncio.run(main(), loop_factory=ferroloop.new_event_loop) is ferroloop.Loop


def test_run_takes_a_loop_factory_and_debug():
    made = []

    def factory():
        loop = ferroloop.new_event_loop()
        made.append(loop)
        return loop

    async def main():
        loop = asyncio.get_running_loop()
        return loop, loop.get_debug()

    loop, debug = ferroloop.run(main(), debug=True, loop_factory=factory)
    assert made == [loop] and debug is True and loop.is_closed()


def test_run_never_touches_the_policy():
    # Two threads running ferroloop.run at once used to swap the policy in and out (3.11): a
    # plain asyncio.run afterwards could get a ferroloop loop.
    before = asyncio.events._event_loop_policy
    barrier = threading.Barrier(2)

    async def main():
        barrier.wait(timeout=10)
        await asyncio.sleep(0.01)
        return type(asyncio.get_running_loop())

    results = []
    threads = [threading.Thread(target=lambda: results.append(ferroloop.run(main()))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [ferroloop.Loop, ferroloop.Loop]
    assert asyncio.events._event_loop_policy is before


def test_the_policy_warns_as_asyncios_does():
    with warnings.catch_warnings(record=True) as stock:
        warnings.simplefilter("always")
        asyncio.DefaultEventLoopPolicy
    with warnings.catch_warnings(record=True) as ours:
        warnings.simplefilter("always")
        policy_class = ferroloop.EventLoopPolicy
    assert [w.category for w in ours] == [w.category for w in stock]
    if POLICIES_DEPRECATED:
        assert str(ours[0].message) == (
            "'ferroloop.EventLoopPolicy' is deprecated and slated for removal in Python 3.16"
        )
        assert ours[0].filename == __file__
    loop = policy_class().new_event_loop()
    assert type(loop) is ferroloop.Loop
    loop.close()


def test_install_warns_as_set_event_loop_policy_does_and_installs():
    old = asyncio.events._event_loop_policy
    try:
        with warnings.catch_warnings(record=True) as stock:
            warnings.simplefilter("always")
            asyncio.set_event_loop_policy(None)
        with warnings.catch_warnings(record=True) as ours:
            warnings.simplefilter("always")
            ferroloop.install()
        assert [w.category for w in ours] == [w.category for w in stock]
        if POLICIES_DEPRECATED:
            assert str(ours[0].message).startswith("'ferroloop.install' is deprecated")
            assert ours[0].filename == __file__
        loop = asyncio.new_event_loop()
        assert isinstance(loop, ferroloop.Loop)
        loop.close()
    finally:
        asyncio.events._event_loop_policy = old


def test_the_star_import_names_no_deprecated_policy():
    namespace = {}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        exec("from ferroloop import *", namespace)
    assert ("EventLoopPolicy" in namespace) is not POLICIES_DEPRECATED
