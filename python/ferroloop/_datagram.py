"""Placeholder: being written."""

from ferroloop._fd import not_implemented


class DatagramMixin:
    create_datagram_endpoint = not_implemented("create_datagram_endpoint", "sockets come with issue 3")
