"""ferroloop.Loop keeps bound `call_soon` and `get_debug` in the instance dict (CPython's C Future
and Task look them up on every callback and future). Overrides and patches must still win."""

import asyncio

import pytest

import ferroloop


def test_subclass_override_of_call_soon_sees_future_callbacks():
    calls = []

    class Counting(ferroloop.Loop):
        def call_soon(self, callback, *args, context=None):
            calls.append(callback)
            return super().call_soon(callback, *args, context=context)

    loop = Counting()
    try:
        fut = loop.create_future()
        fut.add_done_callback(lambda f: None)
        fut.set_result(1)
        assert len(calls) == 1
        assert "call_soon" not in vars(loop)
    finally:
        loop.close()


def test_subclass_override_of_get_debug_is_what_futures_ask():
    class Debugging(ferroloop.Loop):
        def get_debug(self):
            return True

    loop = Debugging()
    try:
        fut = loop.create_future()
        assert fut._source_traceback is not None
    finally:
        loop.close()


def test_instance_patch_of_call_soon_is_used_by_tasks():
    loop = ferroloop.new_event_loop()
    original = loop.call_soon
    seen = []

    def spy(callback, *args, context=None):
        seen.append(callback)
        return original(callback, *args, context=context)

    loop.call_soon = spy
    try:
        async def main():
            await asyncio.sleep(0)
            return "done"

        assert loop.run_until_complete(main()) == "done"
        assert seen
    finally:
        loop.close()


@pytest.mark.nodebug
def test_plain_loop_reuses_one_bound_method():
    loop = ferroloop.new_event_loop()
    try:
        assert loop.call_soon is loop.call_soon
        assert loop.get_debug() is False
        loop.set_debug(True)
        assert loop.get_debug() is True
    finally:
        loop.close()
