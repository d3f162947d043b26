"""The test certificates of tests/certs (see its README) as SSL contexts: a server for
"localhost" and a client that trusts only the test CA."""

import pathlib
import ssl

CERTS = pathlib.Path(__file__).parent / "certs"


def server_context():
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(CERTS / "server.pem", CERTS / "server.key")
    return context


def client_context():
    return ssl.create_default_context(cafile=str(CERTS / "ca.pem"))
