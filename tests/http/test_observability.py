"""Request ids, JSON request logs, Prometheus metrics, /healthz and /readyz, and per-token rate limits."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.routing import Route

from scimjit.clock import FrozenClock, to_micros
from scimjit.config import Settings
from scimjit.http.app import create_app
from scimjit.http.ratelimit import RateLimiter
from scimjit.logs import configure
from scimjit.services import Services
from scimjit.store.db import Database
from scimjit.store.tables import outbox
from tests.live_server import serve

USER = "urn:ietf:params:scim:schemas:core:2.0:User"


@dataclass
class Live:
    url: str
    app: Any
    services: Services
    clock: FrozenClock
    admin: str

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token or self.admin}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def metrics(self) -> str:
        """/metrics as a scraper reads it: with a token of its own (a `metrics` scope, its own bucket)."""
        token = self.services.tokens.create(f"scraper-{os.urandom(4).hex()}", ["metrics"])
        r = httpx.get(f"{self.url}/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert r.status_code == 200, r.text
        return r.text


@pytest.fixture
def live(db, clock) -> Iterator[Live]:
    """Like conftest's `server`, with the app at hand (to swap its rate limiter, add a failing route)."""
    settings = Settings.load(environ={}, database_url=db.url, token_cache_seconds=0)
    services = Services.build(settings, db=db, clock=clock)
    app = create_app(services=services)
    admin = services.tokens.create("obs-admin", ["admin"])
    with serve(app) as url:
        yield Live(url, app, services, clock, admin)


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """The `scimjit` loggers as the server configures them, written to a buffer; restored afterwards."""
    buf = io.StringIO()
    logger = logging.getLogger("scimjit")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    configure("info", stream=buf)
    yield buf
    logger.handlers[:] = saved[0]
    logger.setLevel(saved[1])
    logger.propagate = saved[2]


def parse(buf: io.StringIO) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in buf.getvalue().splitlines() if line]


def metric(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


# ------------------------------------------------------------------ request id and logs


def test_request_id_is_made_or_kept_and_returned(live):
    with live.client() as c:
        made = c.get("/scim/v2/Users").headers["x-request-id"]
        assert len(made) == 24 and made.isalnum()
        assert (
            c.get("/scim/v2/Users", headers={"X-Request-Id": "abc-123"}).headers["x-request-id"] == "abc-123"
        )
        insane = c.get("/scim/v2/Users", headers={"X-Request-Id": "x" * 200}).headers["x-request-id"]
        assert insane != "x" * 200 and len(insane) == 24
        assert c.get("/nowhere").headers["x-request-id"]  # errors carry it too
        assert httpx.get(f"{live.url}/scim/v2/Users").headers["x-request-id"]  # and 401s


def test_one_json_log_line_per_request_without_secrets(live, log_lines):
    with live.client() as c:
        r = c.post(
            "/scim/v2/Users?attributes=userName",
            json={"schemas": [USER], "userName": "carol", "password": "Sup3r-secret!"},
            headers={"X-Request-Id": "log-test-1"},
        )
        assert r.status_code == 201
        uid = r.json()["id"]
        c.get(f"/scim/v2/Users/{uid}")
    httpx.get(f"{live.url}/scim/v2/Users", headers={"Authorization": f"Bearer {live.admin}x"})
    lines = [x for x in parse(log_lines) if x["logger"] == "scimjit.access"]
    assert len(lines) == 3
    first, second, third = lines
    assert first["request_id"] == "log-test-1" and first["method"] == "POST" and first["status"] == 201
    assert first["route"] == "/scim/v2/Users" and first["path"] == "/scim/v2/Users"  # no query string
    assert first["token"] == "obs-admin" and first["level"] == "info" and first["msg"] == "request"
    assert isinstance(first["duration_ms"], float) and first["ts"].endswith("Z")
    assert second["route"] == "/scim/v2/Users/{id}" and second["path"] == f"/scim/v2/Users/{uid}"
    assert third["status"] == 401 and third["token"] is None
    text = log_lines.getvalue()
    assert live.admin not in text and "Sup3r-secret!" not in text and "sjt_" not in text


def test_log_messages_are_masked():
    buf = io.StringIO()
    logger = logging.getLogger("scimjit.test-mask")
    handler = logging.StreamHandler(buf)
    from scimjit.logs import JsonFormatter

    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    try:
        logger.warning(
            "webhook refused Bearer abcdefghijklmnopqrstuvwxyz", extra={"headers": {"Authorization": "x"}}
        )
    finally:
        logger.removeHandler(handler)
    (line,) = parse(buf)
    assert line["msg"] == "webhook refused [redacted]" and line["headers"] == {}


_FIELDS = {
    "request_id": "rid-1",
    "method": "GET",
    "path": "/scim/v2/Users/Bearer abcdefghijklmnopqrstuvwxyz",  # a token pasted into a path is masked
    "route": "/scim/v2/Users/{id}",
    "status": 200,
    "duration_ms": 0.25,
    "token": "obs-admin",
    "client": None,
}


def test_the_direct_request_line_is_the_line_logging_would_write(log_lines):
    """`info_fields` writes the request line straight to configure's handler; the same fields sent through
    the logging module (a filter on the logger turns the direct path off) give the same line, but `ts`."""
    from scimjit.logs import info_fields

    logger = logging.getLogger("scimjit.access")
    info_fields(logger, "request", _FIELDS)
    seen: list[logging.LogRecord] = []

    def keep(record: logging.LogRecord) -> bool:
        seen.append(record)
        return True

    logger.addFilter(keep)
    try:
        info_fields(logger, "request", _FIELDS)
    finally:
        logger.removeFilter(keep)
    direct, through_logging = parse(log_lines)
    assert len(seen) == 1  # only the second went through the logging module
    assert direct.pop("ts").endswith("Z") and through_logging.pop("ts").endswith("Z")
    assert list(direct.items()) == list(through_logging.items())  # same keys, same order, same values
    assert direct["path"] == "/scim/v2/Users/[redacted]" and direct["logger"] == "scimjit.access"


def test_what_a_client_chooses_is_masked_on_the_request_line(live, log_lines):
    """The middleware masks the path and a client's request id itself (`info_fields(clean=False)`): a token
    pasted into either never reaches the log, through the direct path or the logging module's."""
    jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl"
    logger = logging.getLogger("scimjit.access")
    with live.client() as c:
        c.get(f"/scim/v2/Users/{jwt}", headers={"X-Request-Id": "sjt_0123abcd_secretpart"})
        logger.addFilter(lambda record: True)  # the logging module's path from here on
        try:
            c.get(f"/scim/v2/Groups/{jwt}", headers={"X-Request-Id": "sjt_0123abcd_secretpart"})
        finally:
            logger.filters.clear()
    direct, through_logging = [x for x in parse(log_lines) if x["logger"] == "scimjit.access"]
    for line, kind in ((direct, "Users"), (through_logging, "Groups")):
        assert line["path"] == f"/scim/v2/{kind}/[redacted]" and line["request_id"] == "[redacted]"
        assert line["route"] == f"/scim/v2/{kind}/{{id}}" and line["status"] == 404
        assert line["token"] == "obs-admin" and line["client"] == "127.0.0.1"
    assert jwt not in log_lines.getvalue() and "secretpart" not in log_lines.getvalue()


def test_a_handler_added_to_the_access_logger_still_gets_every_request_line(live, log_lines):
    """An operator's own handler (or a level that turns the line off) is honoured: the direct path is only
    taken when configure's handler is the sole reader."""
    mine = io.StringIO()
    handler = logging.StreamHandler(mine)
    from scimjit.logs import JsonFormatter

    handler.setFormatter(JsonFormatter())
    access = logging.getLogger("scimjit.access")
    access.addHandler(handler)
    try:
        with live.client() as c:
            assert c.get("/scim/v2/Users?count=1").status_code == 200
    finally:
        access.removeHandler(handler)
    (own,) = [x for x in parse(mine) if x["logger"] == "scimjit.access"]
    (configured,) = [x for x in parse(log_lines) if x["logger"] == "scimjit.access"]
    assert own == configured and own["route"] == "/scim/v2/Users"
    access.setLevel(logging.WARNING)
    try:
        with live.client() as c:
            assert c.get("/scim/v2/Users?count=1").status_code == 200
    finally:
        access.setLevel(logging.NOTSET)
    assert len([x for x in parse(log_lines) if x["logger"] == "scimjit.access"]) == 1


def test_unhandled_errors_are_scim_500_with_the_request_id_logged(live, log_lines):
    async def boom(request):
        raise RuntimeError("kaboom")

    live.app.router.routes.append(Route("/boom", boom))
    r = httpx.get(f"{live.url}/boom", headers={"X-Request-Id": "boom-1"})
    assert r.status_code == 500 and r.headers["x-request-id"] == "boom-1"
    assert r.json() == {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
        "status": "500",
        "detail": "Internal server error",
    }
    assert "kaboom" not in r.text
    errors = [x for x in parse(log_lines) if x["level"] == "error"]
    assert errors[0]["request_id"] == "boom-1" and "kaboom" in errors[0]["exc"]
    access = [x for x in parse(log_lines) if x["logger"] == "scimjit.access"]
    assert access[-1]["status"] == 500 and access[-1]["route"] == "/boom"


# ------------------------------------------------------------------ metrics


def test_metrics_count_requests_by_route_template_and_status(live):
    with live.client() as c:
        before = c.get("/metrics").text
        uid = c.post("/scim/v2/Users", json={"schemas": [USER], "userName": "m1"}).json()["id"]
        for _ in range(3):
            assert c.get(f"/scim/v2/Users/{uid}").status_code == 200
        c.get("/scim/v2/Users/does-not-exist")
        c.get("/no/such/path")
        after = c.get("/metrics")
    assert after.headers["content-type"].startswith("text/plain")
    text = after.text

    def delta(name: str, **labels: str) -> float:
        return (metric(text, name, **labels) or 0) - (metric(before, name, **labels) or 0)

    route = "/scim/v2/Users/{id}"
    assert delta("scimjit_http_requests_total", method="GET", route=route, status="200") == 3
    assert delta("scimjit_http_requests_total", method="GET", route=route, status="404") == 1
    assert delta("scimjit_http_requests_total", method="POST", route="/scim/v2/Users", status="201") == 1
    assert delta("scimjit_http_requests_total", method="GET", route="unmatched", status="404") == 1
    assert delta("scimjit_http_request_duration_seconds_count", method="GET", route=route) == 4
    assert uid not in text  # raw paths never become labels


def test_outbox_depth_age_and_dead_letters_are_read_from_the_database(live):
    now = to_micros(live.clock.now())
    with live.services.db.write() as conn:
        for i, (status, age) in enumerate([("pending", 90), ("pending", 30), ("dead", 500), ("done", 999)]):
            conn.execute(
                outbox.insert().values(
                    event_id=f"e{i}",
                    type="account.create",
                    application="wiki",
                    user_id=f"u{i}",
                    ordering_key=f"wiki:u{i}",
                    payload={},
                    status=status,
                    next_attempt_at=now,
                    created_at=now - age * 1_000_000,
                )
            )
    text = live.metrics()
    assert metric(text, "scimjit_outbox_depth", status="pending") == 2
    assert metric(text, "scimjit_outbox_depth", status="dead") == 1
    assert metric(text, "scimjit_outbox_dead_letters") == 1
    assert metric(text, "scimjit_outbox_oldest_pending_age_seconds") == 90
    live.clock.advance(10)
    assert metric(live.metrics(), "scimjit_outbox_oldest_pending_age_seconds") == 100


def test_engine_metrics_are_exported(live):
    from scimjit import metrics

    metrics.LOGINS.labels(application="wiki", outcome="refused").inc()
    metrics.CONNECTOR_LATENCY.labels(application="wiki", operation="account.create").observe(0.2)
    metrics.CONNECTOR_ERRORS.labels(application="wiki", operation="account.create", kind="transient").inc()
    metrics.EXPIRATIONS.labels(kind="grant").inc()
    metrics.DEAD_LETTERED.labels(application="wiki").inc()
    text = live.metrics()
    for name in (
        "scimjit_logins_total",
        "scimjit_connector_call_duration_seconds_count",
        "scimjit_connector_errors_total",
        "scimjit_expirations_total",
        "scimjit_outbox_dead_lettered_total",
    ):
        assert (metric(text, name) or 0) >= 1, name


def test_metrics_require_a_metrics_token_by_default(live):
    assert Settings.load(environ={}).metrics_token_required is True
    r = httpx.get(f"{live.url}/metrics")
    assert r.status_code == 401 and "scimjit_http_requests_total" not in r.text
    scim_only = live.services.tokens.create("scraper-wrong", ["scim:read"])
    assert (
        httpx.get(f"{live.url}/metrics", headers={"Authorization": f"Bearer {scim_only}"}).status_code == 403
    )
    scraper = live.services.tokens.create("scraper", ["metrics"])
    r = httpx.get(f"{live.url}/metrics", headers={"Authorization": f"Bearer {scraper}"})
    assert r.status_code == 200 and "scimjit_http_requests_total" in r.text


def test_a_setting_opens_metrics_to_anyone(live):
    live.services.settings.metrics_token_required = False
    r = httpx.get(f"{live.url}/metrics")
    assert r.status_code == 200 and "scimjit_http_requests_total" in r.text


def test_multiprocess_metrics_add_up_across_processes(tmp_path):
    """What `serve --workers N` relies on: each process writes its own file, any process serves the sum."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    bump = textwrap.dedent(
        """
        from scimjit.metrics import HTTP_REQUESTS
        HTTP_REQUESTS.labels(method="GET", route="/x", status="200").inc(%d)
        """
    )
    for n in (2, 5):
        subprocess.run([sys.executable, "-c", bump % n], env=env, check=True)
    read = "import sys; from scimjit.metrics import exposition; sys.stdout.write(exposition([]).decode())"
    out = subprocess.run(
        [sys.executable, "-c", read], env=env, check=True, capture_output=True, text=True
    ).stdout
    assert metric(out, "scimjit_http_requests_total", route="/x", status="200") == 7


def test_prepare_multiprocess_sets_and_empties_the_directory(tmp_path, monkeypatch):
    from scimjit.metrics import prepare_multiprocess

    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    assert prepare_multiprocess(1) is None
    (tmp_path / "counter_1.db").write_bytes(b"stale")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    assert prepare_multiprocess(4) == str(tmp_path)
    assert not list(tmp_path.iterdir())
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR")
    made = prepare_multiprocess(2)
    assert made and os.environ["PROMETHEUS_MULTIPROC_DIR"] == made


# ------------------------------------------------------------------ health and readiness


def test_healthz_and_readyz_when_all_is_well(live):
    assert httpx.get(f"{live.url}/healthz").json() == {"status": "ok"}
    r = httpx.get(f"{live.url}/readyz")
    assert r.status_code == 200 and r.json() == {"status": "ready"}


def _app_on(url: str):
    settings = Settings.load(environ={}, database_url=url)
    return create_app(services=Services.build(settings, db=Database(url)))


def test_readyz_is_503_while_migrations_are_pending(tmp_path, log_lines):
    with serve(_app_on(f"sqlite:///{tmp_path}/empty.db")) as url:
        assert httpx.get(f"{url}/healthz").status_code == 200  # up, just not ready
        r = httpx.get(f"{url}/readyz")
    assert r.status_code == 503 and r.json() == {"status": "unavailable"}  # the why is in the log only
    assert any("migrations are pending" in line["msg"] for line in parse(log_lines))


def test_readyz_is_503_when_the_database_is_unreachable():
    from tests.live_server import free_port

    app = _app_on(f"postgresql://nobody@127.0.0.1:{free_port()}/none?connect_timeout=2")
    with serve(app) as url:
        r = httpx.get(f"{url}/readyz", timeout=30)
    assert r.status_code == 503 and r.json() == {"status": "unavailable"}  # no driver or error class


# ------------------------------------------------------------------ rate limits


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_allows_bursts_then_the_rate():
    t = FakeMonotonic()
    limiter = RateLimiter(rate=10, burst=3, clock=t)
    assert [limiter.wait_time("a") for _ in range(3)] == [0, 0, 0]
    assert limiter.wait_time("a") == pytest.approx(0.1)
    assert limiter.wait_time("b") == 0  # buckets are per key
    t.now += 0.1
    assert limiter.wait_time("a") == 0
    assert limiter.wait_time("a") > 0
    t.now += 60
    assert [limiter.wait_time("a") for _ in range(4)][:3] == [0, 0, 0]  # refills to the burst, no further
    assert RateLimiter(rate=0, burst=1, clock=t).wait_time("a") == 0  # 0 disables


def test_over_the_limit_is_429_with_retry_after_per_token(live):
    t = FakeMonotonic()
    live.app.state.rate_limiter = RateLimiter(rate=0.5, burst=2, clock=t)
    other = live.services.tokens.create("other", ["scim:read"])
    with live.client() as c, live.client(other) as o:
        assert [c.get("/scim/v2/Users").status_code for _ in range(2)] == [200, 200]
        r = c.get("/scim/v2/Users")
        assert r.status_code == 429 and r.headers["retry-after"] == "2"
        assert r.json()["status"] == "429" and "Too many requests" in r.json()["detail"]
        assert o.get("/scim/v2/Users").status_code == 200  # another token has its own bucket
        assert c.post("/scim/v2/Users", json={"schemas": [USER], "userName": "x"}).status_code == 429
        t.now += 2
        assert c.get("/scim/v2/Users").status_code == 200
        assert (
            o.get("/scim/v2/Users?filter=userName%20eq%20%22x%22").json()["totalResults"] == 0
        )  # 429: no write
    metrics_text = live.metrics()  # a scraper's own token: its own bucket
    assert (metric(metrics_text, "scimjit_rate_limited_total") or 0) >= 2


def test_rate_limit_settings_and_defaults_serve_entra():
    s = Settings.load(environ={})
    assert s.rate_limit_per_second >= 25 and s.rate_limit_burst >= s.rate_limit_per_second
    s = Settings.load(environ={"SCIMJIT_RATE_LIMIT_PER_SECOND": "0", "SCIMJIT_RATE_LIMIT_BURST": "7"})
    assert s.rate_limit_per_second == 0 and s.rate_limit_burst == 7
    limiter = RateLimiter(s.rate_limit_per_second, s.rate_limit_burst)
    assert all(limiter.wait_time("t") == 0 for _ in range(1000))


def test_an_entra_like_client_at_25_per_second_is_never_limited():
    t = FakeMonotonic()
    s = Settings.load(environ={})
    limiter = RateLimiter(s.rate_limit_per_second, s.rate_limit_burst, clock=t)
    for _ in range(25 * 60):  # one minute at 25 requests/s
        assert limiter.wait_time("entra") == 0
        t.now += 1 / 25
