"""Placeholder: being written."""

from ferroloop._fd import not_implemented


class TlsMixin:
    start_tls = not_implemented("start_tls", "sockets come with issue 3")
    sendfile = not_implemented("sendfile", "sockets come with issue 3")
