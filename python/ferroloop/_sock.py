"""Placeholder: being written."""

from ferroloop._fd import not_implemented


class SockMixin:
    sock_recv = not_implemented("sock_recv", "sockets come with issue 3")
    sock_recv_into = not_implemented("sock_recv_into", "sockets come with issue 3")
    sock_recvfrom = not_implemented("sock_recvfrom", "sockets come with issue 3")
    sock_recvfrom_into = not_implemented("sock_recvfrom_into", "sockets come with issue 3")
    sock_sendall = not_implemented("sock_sendall", "sockets come with issue 3")
    sock_sendto = not_implemented("sock_sendto", "sockets come with issue 3")
    sock_connect = not_implemented("sock_connect", "sockets come with issue 3")
    sock_accept = not_implemented("sock_accept", "sockets come with issue 3")
    sock_sendfile = not_implemented("sock_sendfile", "sockets come with issue 3")
    getaddrinfo = not_implemented("getaddrinfo", "sockets come with issue 3")
    getnameinfo = not_implemented("getnameinfo", "sockets come with issue 3")
