"""The outbound HTTP client (`delivery/httpclient.py`): httpx over httpcore's pool, with the pool's idle-socket
probe made cheap (`_Stream`). Real servers on 127.0.0.1, plain and TLS; what is checked is what a connector
sees: the answers, the connections reused, and a connection the server closed never used again."""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from scimjit.delivery.httpclient import LoopClient, _Stream
from tests.certs import self_signed


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    close_after: set[str] = set()  # paths after whose answer the server closes the connection
    peers: list[tuple[str, int]] = []
    closed: threading.Event

    def do_GET(self) -> None:
        self.peers.append(self.client_address)
        body = self.path.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        if self.path in self.close_after:
            self.wfile.flush()
            self.close_connection = (
                True  # a keep-alive answer, then the server hangs up: an idle socket at EOF
            )

    def log_message(self, format: str, *args: object) -> None:
        pass


def _serve(context: ssl.SSLContext | None = None) -> Iterator[tuple[str, type[_Handler]]]:
    handler = type("Handler", (_Handler,), {"close_after": set(), "peers": [], "closed": threading.Event()})

    class Server(ThreadingHTTPServer):
        request_queue_size = 256  # 64 connections at once: no SYN dropped from a full backlog
        daemon_threads = True

        def shutdown_request(self, request: object) -> None:
            super().shutdown_request(request)  # type: ignore[arg-type]
            handler.closed.set()  # the server's end of a connection is closed: its FIN is on the way

    server = Server(("127.0.0.1", 0), handler)
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    scheme = "https" if context else "http"
    try:
        yield f"{scheme}://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def plain() -> Iterator[tuple[str, type[_Handler]]]:
    yield from _serve()


@pytest.fixture
def tls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, type[_Handler]]]:
    """A TLS server with a self-signed certificate for 127.0.0.1, trusted through SSL_CERT_FILE."""
    cert_file, key_file = self_signed(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert_file))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    yield from _serve(context)


def _streams(client: LoopClient) -> list[object]:
    pool = client.get()._transport._pool  # type: ignore[attr-defined]
    return [c._connection._network_stream for c in pool.connections if c._connection is not None]


@pytest.mark.parametrize("server", ["plain", "tls"])
def test_connections_are_reused_and_a_closed_one_is_never_used_again(server, request):
    url, handler = request.getfixturevalue(server)
    handler.close_after.add("/bye")
    client = LoopClient(5.0)

    async def run() -> list[str]:
        bodies = [(await client.get().get(f"{url}/one")).text, (await client.get().get(f"{url}/two")).text]
        streams = _streams(client)
        assert len(streams) == 1 and all(isinstance(s, _Stream) for s in streams), streams
        assert streams[0].get_extra_info("is_readable") is False  # idle, open: nothing to read
        bodies.append((await client.get().get(f"{url}/bye")).text)
        assert await asyncio.to_thread(handler.closed.wait, 5)
        streams = _streams(client)  # the pool dropped it already, or it is idle and reads as closed
        assert not streams or streams[0].get_extra_info("is_readable") is True
        bodies.append((await client.get().get(f"{url}/after")).text)
        await client.aclose()
        return bodies

    assert asyncio.run(run()) == ["/one", "/two", "/bye", "/after"]
    ports = [port for _, port in handler.peers]
    assert ports[0] == ports[1] == ports[2] != ports[3]  # kept alive, then a new connection after the close


def test_many_requests_at_once_each_get_their_answer(plain):
    url, handler = plain
    client = LoopClient(5.0)

    async def run() -> list[str]:
        answers = await asyncio.gather(*(client.get().get(f"{url}/{i}") for i in range(64)))
        again = await asyncio.gather(*(client.get().get(f"{url}/{i}") for i in range(64, 128)))
        await client.aclose()
        return [r.text for r in (*answers, *again)]

    assert asyncio.run(run()) == [f"/{i}" for i in range(128)]
    assert len({port for _, port in handler.peers}) < 128  # the second round reused the first's kept ones
