"""Placeholder: being written."""

from ferroloop._fd import not_implemented


class NetMixin:
    create_connection = not_implemented("create_connection", "sockets come with issue 3")
    create_server = not_implemented("create_server", "sockets come with issue 3")
    create_unix_connection = not_implemented("create_unix_connection", "sockets come with issue 3")
    create_unix_server = not_implemented("create_unix_server", "sockets come with issue 3")
    connect_accepted_socket = not_implemented("connect_accepted_socket", "sockets come with issue 3")
