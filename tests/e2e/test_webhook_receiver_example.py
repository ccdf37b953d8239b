"""The receiver example of docs/connectors.md ("Receiving webhooks"), run as written on a real socket.

It must process each event once however it is re-sent: a captured, validly signed `role.grant` replayed
within the tolerance window with a fresh `Idempotency-Key` (that header is not signed) is answered from the
first result, not applied again. And a header with non-ASCII bytes is a 401, never a crash of the handler.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from scimjit.delivery.connectors.webhook import sign

DOCS = Path(__file__).resolve().parents[2] / "docs" / "connectors.md"
SECRET = "wiki-secret"


def receiver_source() -> str:
    (source,) = [
        b for b in re.findall(r"```python\n(.*?)```", DOCS.read_text(), re.S) if "wiki_receiver" in b
    ]
    serve = 'ThreadingHTTPServer(("0.0.0.0", 9100), Handler).serve_forever()'
    assert serve in source
    return source.replace(serve, "")  # the test serves it on a free loopback port instead


class Receiver:
    def __init__(self, namespace: dict[str, Any], url: str) -> None:
        self.namespace, self.url = namespace, url
        self.applied: list[dict[str, Any]] = []
        wrapped = namespace["apply"]

        def counting(event: dict[str, Any]) -> dict[str, Any]:
            self.applied.append(event)
            return dict(wrapped(event))

        namespace["apply"] = counting  # the handler looks `apply` up in the module's globals

    def post(self, body: bytes, headers: dict[str, Any]) -> httpx.Response:
        return httpx.post(self.url, content=body, headers=headers, timeout=30)


@pytest.fixture
def receiver(tmp_path, monkeypatch) -> Iterator[Receiver]:
    monkeypatch.chdir(tmp_path)  # its sqlite file of seen events lands here
    monkeypatch.setenv("WIKI_WEBHOOK_SECRET", SECRET)
    namespace: dict[str, Any] = {"__name__": "wiki_receiver"}
    exec(compile(receiver_source(), "wiki_receiver.py", "exec"), namespace)
    server = ThreadingHTTPServer(("127.0.0.1", 0), namespace["Handler"])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Receiver(namespace, f"http://127.0.0.1:{server.server_address[1]}/")
    finally:
        server.shutdown()
        server.server_close()
        namespace["db"].close()


def delivery(event: dict[str, Any], key: str) -> tuple[bytes, dict[str, str]]:
    body = orjson.dumps(event)
    timestamp = str(int(time.time()))
    return body, {
        "Content-Type": "application/json",
        "X-Scimjit-Timestamp": timestamp,
        "X-Scimjit-Signature": sign(SECRET, timestamp, body),
        "Idempotency-Key": key,
    }


GRANT = {
    "id": "6c0b4b5e-5d62-4d4e-9a55-3c1b0c7b8f0e",
    "type": "role.grant",
    "application": "wiki",
    "user": {"id": "u1", "userName": "alice"},
    "roles": ["admin"],
    "role": "admin",
}


def test_a_replayed_delivery_with_a_fresh_idempotency_key_is_not_processed_again(receiver):
    body, headers = delivery(GRANT, GRANT["id"])
    first = receiver.post(body, headers)
    assert first.status_code == 200, first.text
    for n in range(3):  # the attacker's copies: same signed body and timestamp, a new key each time
        replay = receiver.post(body, {**headers, "Idempotency-Key": f"fresh-{n}"})
        assert replay.status_code == 200 and replay.json() == first.json()
    assert [e["id"] for e in receiver.applied] == [GRANT["id"]]  # applied once, not four times

    other = {**GRANT, "id": "7d1c5c6f-0000-4000-8000-000000000001", "type": "role.revoke"}
    assert receiver.post(*delivery(other, GRANT["id"])).status_code == 200  # a reused key, a new event
    assert [e["id"] for e in receiver.applied] == [GRANT["id"], other["id"]]


@pytest.mark.parametrize("header", ["X-Scimjit-Signature", "X-Scimjit-Timestamp"])
def test_a_non_ascii_header_is_a_401_not_a_crash(receiver, header):
    body, headers = delivery(GRANT, GRANT["id"])
    headers = {**headers, header: "sha256=\u00e9" if header == "X-Scimjit-Signature" else "\u00b2"}
    r = receiver.post(body, {k: v.encode("latin-1") for k, v in headers.items()})
    assert (r.status_code, r.json()) == (401, {"error": "bad signature"})
    assert receiver.applied == []
    assert receiver.post(*delivery(GRANT, GRANT["id"])).status_code == 200  # and it still serves
