"""Placeholder: being written."""

from ferroloop._fd import not_implemented


class PipeMixin:
    connect_read_pipe = not_implemented("connect_read_pipe", "pipes")
    connect_write_pipe = not_implemented("connect_write_pipe", "pipes")
    subprocess_exec = not_implemented("subprocess_exec", "subprocesses")
    subprocess_shell = not_implemented("subprocess_shell", "subprocesses")
