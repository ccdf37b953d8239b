"""A canned-response HTTP/1.1 server: asyncio protocol, no framework, one process.

Two uses: the load generator's own ceiling (how fast can `bench.load` go when the server does nothing?), and
a local sink for outbound calls (webhook connectors) in workloads that need a downstream to talk to.
Every request, whatever its method and path, gets `200 {"ok":true}`.

    python -m bench.trivial --port 8123
"""

from __future__ import annotations

import argparse
import asyncio
from typing import cast

BODY = b'{"ok":true}'
RESPONSE = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
    + str(len(BODY)).encode()
    + b"\r\n\r\n"
    + BODY
)


class CannedProtocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        answers = 0
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                break
            head = buf[:end].lower()
            i = head.find(b"\r\ncontent-length:")
            length = 0
            if i >= 0:
                j = head.find(b"\r\n", i + 17)
                length = int(head[i + 17 : j if j >= 0 else end])
            total = end + 4 + length
            if len(buf) < total:
                break
            buf = buf[total:]
            answers += 1
        self.buf = buf
        if answers and self.transport is not None:
            self.transport.write(RESPONSE * answers)


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(CannedProtocol, host, port, backlog=2048)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    with runner:
        runner.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
