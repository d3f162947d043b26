"""How the scheduling methods bind their arguments: `(callback, *args, context=None)`, with
`delay`/`when` first for the timers. ferroloop takes these calls through its own argument parser
(no tuple for zero or one argument), so every shape is checked against the stock loop: keywords
for the leading parameters, the TypeErrors for missing, duplicated and unknown arguments (the text
after the method's qualified name, which names the class), and what the callback and `_args` see.
"""

import asyncio
import contextvars

import pytest
from conftest import args_shown


def due_now(loop, method):
    """The leading arguments that make `method` run its callback in the next iteration."""
    return {"call_later": (0,), "call_at": (loop.time(),)}.get(method, ())


METHODS = ["call_soon", "call_soon_threadsafe", "call_later", "call_at"]


def error_text(call):
    with pytest.raises(TypeError) as info:
        call()
    text = str(info.value)
    # "BaseEventLoop.call_soon() missing ..." / "Loop.call_soon() missing ...": keep the rest.
    return text.split("() ", 1)[1]


@pytest.mark.parametrize("nargs", [0, 1, 2, 3])
@pytest.mark.parametrize("method", METHODS)
def test_callback_gets_exactly_its_args(loop, method, nargs):
    seen = []
    args = tuple(object() for _ in range(nargs))
    handle = getattr(loop, method)(*due_now(loop, method), lambda *a: seen.append(a), *args)
    assert handle._args == args
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert seen == [args]
    assert seen[0] == args and all(a is b for a, b in zip(seen[0], args))


def test_bound_method_with_one_arg(loop):
    class Box:
        def __init__(self):
            self.got = []

        def put(self, value):
            self.got.append((self, value))

    box = Box()
    loop.call_soon(box.put, "x")
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert box.got == [(box, "x")]


@pytest.mark.parametrize("method", METHODS)
def test_leading_parameters_by_keyword(loop, method):
    seen = []
    lead = due_now(loop, method)
    names = {"call_later": ["delay"], "call_at": ["when"]}.get(method, [])
    kwargs = dict(zip(names, lead), callback=lambda: seen.append(method))
    getattr(loop, method)(**kwargs)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert seen == [method]


def test_context_by_keyword_is_used(loop):
    var = contextvars.ContextVar("var", default="outer")
    ctx = contextvars.copy_context()
    ctx.run(var.set, "inner")
    seen = []
    loop.call_soon(lambda a: seen.append((a, var.get())), 1, context=ctx)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert seen == [(1, "inner")]


BAD_CALLS = [
    ("call_soon", (), {}),
    ("call_soon", (print,), {"x": 1}),
    ("call_soon", (print,), {"callback": print}),
    ("call_soon", (print,), {"context": None, "other": 2}),
    ("call_soon_threadsafe", (), {"context": None}),
    ("call_later", (1,), {}),
    ("call_later", (), {}),
    ("call_later", (1, 2), {"callback": print}),
    ("call_later", (), {"callback": print}),
    ("call_at", (), {}),
    ("call_at", (1,), {"when": 2}),
    ("call_at", (1, print), {"args": ()}),
]


@pytest.mark.parametrize("method, args, kwargs", BAD_CALLS)
def test_binding_errors_match_stock(loop_factory, method, args, kwargs):
    stock = asyncio.new_event_loop()
    ours = loop_factory()
    try:
        expected = error_text(lambda: getattr(stock, method)(*args, **kwargs))
        assert error_text(lambda: getattr(ours, method)(*args, **kwargs)) == expected
        if hasattr(ours, "_queue_sizes"):  # ferroloop: nothing was scheduled
            assert ours._queue_sizes()[:2] == (0, 0)
    finally:
        stock.close()
        ours.close()


@pytest.mark.parametrize("debug", [False, True])
def test_exception_report_shows_the_args(loop, debug):
    loop.set_debug(debug)
    contexts = []
    loop.set_exception_handler(lambda lp, context: contexts.append(context))

    def boom(value):
        raise ValueError(value)

    loop.call_soon(boom, 42)
    loop.call_soon(loop.stop)
    loop.run_forever()
    [context] = contexts
    assert context["message"].startswith("Exception in callback ")
    assert ("boom(42)" if args_shown(loop) else "boom()") in context["message"]
    assert isinstance(context["exception"], ValueError)
    assert context["handle"]._args == (42,)
