"""The console in a real browser: headless Chromium (Debian's `chromium` + `chromedriver`, driven by
Selenium; nothing is downloaded) against a running `scimjit serve` and the real OIDC provider of pytest-iam.

alice signs in and requests prod-admins for 1h; bob, an approver, signs in, sees it and approves; alice sees
her active grant; carol, a console admin, sees it in the expiring list and in the audit trail; alice cannot
approve her own request. Each page is photographed (docs/console.md shows them): into the directory named by
SCIMJIT_CONSOLE_SCREENSHOTS (`docs/console` to refresh the docs), else into the test's tmp directory.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from scimjit.store.tables import access_requests, audit_log, grants
from tests.cli_server import cli_env, serve
from tests.console_helpers import CLIENT_ID, CLIENT_SECRET, Idp, seed_directory
from tests.live_server import free_port

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SCIMJIT = [str(Path(sys.executable).with_name("scimjit"))]
WAIT = 90  # seconds a page may take to appear on a loaded CI machine (a bound on waiting, not a timing check)

webdriver = pytest.importorskip(
    "selenium.webdriver", reason="selenium is not installed (pip install -e '.[dev]')"
)
if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
    pytest.skip(
        "no browser: /usr/bin/chromium and /usr/bin/chromedriver are needed "
        "(apt-get install chromium chromium-driver; .ci/run does it)",
        allow_module_level=True,
    )

from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as ec  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CONFIG = """
[console]
issuer = "{issuer}"
client_id = "{client_id}"
client_secret = "{client_secret}"
match = {{ claim = "email", attribute = "emails.value" }}
admin_groups = ["console-admins"]

[[jit.policies]]
group = "prod-admins"
eligible = ["engineers"]
max_duration = "8h"
approvers = ["sre-leads"]
description = "Production administration"
"""


@pytest.fixture(scope="session")
def idp(iam_server) -> Idp:
    return Idp.of(iam_server)


@pytest.fixture
def console(db, idp, tmp_path) -> Iterator[str]:
    """`scimjit serve` with a [console] against pytest-iam, on a port known before it starts (base_url)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    config = tmp_path / "scimjit.toml"
    config.write_text(CONFIG.format(issuer=idp.issuer, client_id=CLIENT_ID, client_secret=CLIENT_SECRET))
    seed_directory(db)
    idp.register(url)
    env = cli_env(
        db.url,
        SCIMJIT_CONFIG=str(config),
        SCIMJIT_BASE_URL=url,
        SCIMJIT_SESSION_SECRET="browser-test-secret-" + "y" * 20,
    )
    with serve(SCIMJIT, env, tmp_path, port=port) as served:
        assert served.url == url
        yield url


@pytest.fixture
def browser(tmp_path) -> Iterator[Any]:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'chromium'}",
        "--window-size=1280,900",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(WAIT)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def shots(tmp_path) -> Path:
    target = Path(os.environ.get("SCIMJIT_CONSOLE_SCREENSHOTS") or tmp_path / "shots")
    target.mkdir(parents=True, exist_ok=True)
    return target


def waiting(driver: Any) -> Any:
    """A wait that looks again while a page is being replaced (its elements go stale or are not there yet)."""
    return WebDriverWait(
        driver, WAIT, ignored_exceptions=(NoSuchElementException, StaleElementReferenceException)
    )


class Person:
    """One browser, signed in as one person at a time."""

    def __init__(self, driver: Any, url: str, idp: Idp, shots: Path) -> None:
        self.driver, self.url, self.idp, self.shots = driver, url, idp, shots

    def wait(self, css: str) -> Any:
        return waiting(self.driver).until(ec.presence_of_element_located((By.CSS_SELECTOR, css)))

    def open(self, path: str, css: str) -> Any:
        self.driver.get(self.url + path)
        return self.wait(css)

    def snap(self, name: str) -> None:
        self.driver.save_screenshot(str(self.shots / f"{name}.png"))

    def sign_in(self, name: str, *, snap: bool = False) -> None:
        self.driver.delete_all_cookies()
        self.open("/console/", "#signin")
        if snap:
            self.snap("signed-out")
        self.idp.as_(name)  # the provider's own login screen is Canaille's; pytest-iam opens its session
        try:
            self.driver.find_element(By.ID, "signin").click()
            waiting(self.driver).until(
                lambda d: d.find_elements(By.ID, "who") and d.find_element(By.ID, "who").text == name
            )
        finally:
            self.idp.iam.logout()

    def sign_out(self) -> None:
        self.driver.find_element(By.ID, "signout").click()
        self.wait("#signin")

    def text(self) -> str:
        return str(self.driver.find_element(By.TAG_NAME, "main").text)


def rows(db, table: sa.Table) -> list[Any]:
    with db.read() as conn:
        return list(conn.execute(sa.select(table)))


def test_request_approve_grant_expiring_audit_in_a_browser(db, console, browser, idp, shots):
    person = Person(browser, console, idp, shots)

    # alice signs in and requests prod-admins for 1h
    person.sign_in("alice", snap=True)
    person.snap("my-access")
    person.driver.find_element(By.CSS_SELECTOR, '#offered a[data-group="prod-admins"]').click()
    person.wait("#request-form")
    person.driver.find_element(By.CSS_SELECTOR, '#duration option[value="3600s"]').click()
    person.driver.find_element(By.ID, "justification").send_keys("Roll out the payment fix (INC-4711)")
    person.snap("request-form")
    person.driver.find_element(By.ID, "submit-request").click()
    status = person.wait('#requests tr.request[data-status="pending"]')
    assert "pending" in status.text
    person.snap("my-requests")
    (request,) = rows(db, access_requests)
    assert request.status == "pending" and request.duration_seconds == 3600

    # alice cannot approve her own request: not in her queue, and a forged form is refused
    person.open("/console/approvals", "main h1")
    assert request.id not in browser.page_source
    token = person.driver.find_element(By.CSS_SELECTOR, "form.signout input[name=csrf]").get_attribute(
        "value"
    )
    person.driver.execute_script(
        """const f = document.createElement('form'); f.method = 'post'; f.action = arguments[0];
        const i = document.createElement('input'); i.name = 'csrf'; i.value = arguments[1]; f.appendChild(i);
        document.body.appendChild(f); f.submit();""",
        f"/console/requests/{request.id}/approve",
        token,
    )
    refusal = person.wait("#refusal")
    assert refusal.get_attribute("data-reason") == "self_approval"
    assert "You cannot decide your own request" in refusal.text
    person.snap("refusal-own-request")
    assert rows(db, access_requests)[0].status == "pending"
    person.sign_out()
    person.snap("signed-out-after")

    # bob, an approver, sees it and approves
    person.sign_in("bob")
    row = person.open("/console/approvals", f'#queue tr[data-id="{request.id}"]')
    assert "alice" in row.text and "Roll out the payment fix" in row.text and "1h" in row.text
    row.find_element(By.NAME, "comment").send_keys("approved for the incident")
    person.snap("approvals")
    row.find_element(By.CSS_SELECTOR, "button.approve").click()
    person.wait("#empty-queue")
    assert rows(db, access_requests)[0].status == "approved"
    person.sign_out()

    # alice sees the active grant
    person.sign_in("alice")
    grant_row = person.wait('#grants tr.grant[data-group="prod-admins"]')
    assert "active" in grant_row.text and ("59m" in grant_row.text or "1h" in grant_row.text)
    person.snap("my-active-grant")
    (grant,) = rows(db, grants)
    assert grant.status == "active"
    person.sign_out()

    # carol, a console admin, sees it in the expiring list and in the audit trail
    person.sign_in("carol")
    expiring = person.open("/console/admin/expiring", '#rows tr.grant[data-user="alice"]')
    assert "prod-admins" in expiring.text
    person.snap("admin-expiring")
    person.open("/console/admin/audit", "#rows")
    box = person.driver.find_element(By.ID, "filter")
    box.send_keys('action sw "request."')
    box.submit()
    waiting(browser).until(lambda d: "filter=" in d.current_url)  # the filtered page, not the one before
    approved = person.wait('#rows tr.event[data-action="request.approve"][data-actor="console:bob"]')
    assert "success" in approved.text
    person.snap("admin-audit")
    audit_actions = {(r.action, r.actor, r.outcome) for r in rows(db, audit_log)}
    assert ("request.approve", "console:alice", "refused") in audit_actions
    assert ("request.approve", "console:bob", "success") in audit_actions
    person.open("/console/admin/users", "#rows")
    users_box = person.driver.find_element(By.ID, "filter")
    users_box.send_keys('userName sw "a"')
    users_box.submit()
    waiting(browser).until(lambda d: "filter=" in d.current_url)
    waiting(browser).until(lambda d: "bob" not in d.find_element(By.ID, "rows").text)
    person.snap("admin-users")
    person.open("/console/admin/groups", "#rows")
    person.snap("admin-groups")
    person.open("/console/admin/accounts", "#rows")
    person.snap("admin-accounts")
    person.open("/console/admin/dead", "#rows")
    person.snap("admin-dead-letters")
    assert "Traceback" not in browser.page_source
