"""ferroloop's public names are typed (`python/ferroloop/__init__.pyi`): a program using them is
clean under `mypy --strict`, and mypy sees through them (a wrong type is still caught)."""

import subprocess
import sys
import textwrap

PROGRAM = textwrap.dedent(
    """
    import asyncio
    import sys

    import ferroloop


    async def main() -> int:
        await asyncio.sleep(0)
        return 1


    def use() -> None:
        result: int = ferroloop.run(main(), debug=False)
        loop: ferroloop.Loop = ferroloop.new_event_loop()
        print(loop.run_until_complete(main()) + result)
        handle: asyncio.Handle = loop.call_soon(print, "x")
        handle.cancel()
        timer: asyncio.TimerHandle = loop.call_later(1.0, print)
        print(timer.when())
        stats: ferroloop.LoopStats = loop.stats(reset=True)
        print(stats.utilization + stats.lag.percentile(99.0) + stats.callbacks)

        def on_slow(info: ferroloop.SlowCallback) -> None:
            print(info.wall_time, info.task_name)

        loop.set_slow_callback_handler(on_slow)
        loop.slow_callback_duration = 0.5
        loop.close()
        ferroloop.Loop().close()
        if sys.version_info >= (3, 12):
            asyncio.run(main(), loop_factory=ferroloop.new_event_loop)
            with asyncio.Runner(loop_factory=ferroloop.new_event_loop) as runner:
                runner.run(main())
        ferroloop.install()
        asyncio.set_event_loop_policy(ferroloop.EventLoopPolicy())
        print(ferroloop.__version__.upper())
    """
)


def mypy(tmp_path, source):
    (tmp_path / "program.py").write_text(source)
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "program.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_program_using_the_public_api_is_clean_under_strict(tmp_path):
    proc = mypy(tmp_path, PROGRAM)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Success: no issues found" in proc.stdout


def test_mypy_checks_calls_through_the_types(tmp_path):
    wrong = PROGRAM + textwrap.dedent(
        """
        def wrong() -> None:
            text: str = ferroloop.run(main())
            ferroloop.new_event_loop().call_later("soon", print)
        """
    )
    proc = mypy(tmp_path, wrong)
    assert proc.returncode == 1
    assert 'Incompatible types in assignment (expression has type "int", variable has type "str")' in proc.stdout
    assert 'has incompatible type "str"; expected "float"' in proc.stdout
    assert "Found 2 errors" in proc.stdout
