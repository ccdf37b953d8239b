"""The JIT engine: the one object that holds the applications, the token verifiers (OIDC, SAML), the
connectors, the outbox deliverer, the login service and scimjit's signer, built from Settings. The composition
root (scimjit.services) builds it once; the HTTP layer, the CLI and the worker reach the JIT features through
`services.engine`.
"""

from __future__ import annotations

import random
from collections.abc import Mapping

from scimjit.clock import Clock, SystemClock
from scimjit.config import JitSettings, Settings
from scimjit.delivery import connectors as connector_registry
from scimjit.delivery import notifiers
from scimjit.delivery.connectors.base import Connector
from scimjit.delivery.deliverer import Deliverer, Report
from scimjit.delivery.signals import CHANNEL_PREFIX, SetPusher, Signals
from scimjit.delivery.signing import Signer
from scimjit.entitlement.apps import Application, build_applications
from scimjit.provisioning.login import LoginResult, LoginService
from scimjit.provisioning.oidc import JsonFetcher, OidcVerifier
from scimjit.provisioning.saml import SamlVerifier
from scimjit.store.db import Database


class JitEngine:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        clock: Clock | None = None,
        *,
        connectors: Mapping[str, Connector] | None = None,
        fetcher: JsonFetcher | None = None,
        rng: random.Random | None = None,
    ) -> None:
        """Raises ConfigError (a ValueError) if the `[jit]` or `[[applications]]` configuration is wrong.
        `connectors` / `fetcher` / `rng` replace the real ones in tests."""
        self.settings = settings
        self.db = db
        self.clock = clock or SystemClock()
        self.config: JitSettings = settings.jit
        self.apps: dict[str, Application] = build_applications(settings.applications)
        self.connectors: dict[str, Connector] = (
            dict(connectors)
            if connectors is not None
            else {name: connector_registry.build(app) for name, app in self.apps.items()}
        )
        # the built-in email / Slack notifiers, found by the deliverer under their reserved outbox names
        self.notifiers: dict[str, Connector] = dict(
            notifiers.build(settings.notifications, self.config.http_timeout)
        )
        self.verifier = OidcVerifier(self.config, self.clock, fetcher)
        self.saml = SamlVerifier(self.config, self.clock, db)
        self.deliverer = Deliverer(db, self.clock, self.config, self.connector_for, rng)
        self.logins = LoginService(
            db, self.clock, self.config, self.apps, self.verifier, self.deliverer, self.saml
        )
        self.signer = Signer(db, self.clock)  # scimjit's own keys: signed sign-in results, SETs, the JWKS
        # Shared Signals: SETs written with each change (signals), pushed by the deliverer (set_pusher)
        self.signals = Signals(db, self.clock, settings.base_url, self.signer)
        self.set_pusher = SetPusher(db, self.signer, self.config.http_timeout)

    def connector_for(self, name: str) -> Connector | None:
        """The connector an outbox row's `application` names: an application's, a built-in notifier, or the
        Shared Signals push channel (`ssf:<stream id>`)."""
        if name.startswith(CHANNEL_PREFIX):
            return self.set_pusher
        return self.notifiers.get(name) or self.connectors.get(name)

    async def login(
        self,
        application: str,
        id_token: str,
        *,
        caller: str | None = None,
        request_id: str | None = None,
        client_ip: str | None = None,
    ) -> LoginResult:
        """The login hook (see login.py); raises JitError. `caller` is the application token's name,
        `client_ip` the user's address (the application's login conditions)."""
        return await self.logins.login(
            application, id_token, caller=caller, request_id=request_id, client_ip=client_ip
        )

    async def saml_login(
        self,
        application: str,
        saml_response: str,
        *,
        in_response_to: str | None = None,
        caller: str | None = None,
        request_id: str | None = None,
        client_ip: str | None = None,
    ) -> LoginResult:
        """The login hook with a SAML Response (base64) instead of an ID token (see saml.py); raises JitError."""
        return await self.logins.saml_login(
            application,
            saml_response,
            in_response_to=in_response_to,
            caller=caller,
            request_id=request_id,
            client_ip=client_ip,
        )

    async def deliver_due(self, *, worker: str | None = None) -> list[Report]:
        """One delivery round of the outbox (see delivery.py)."""
        return await self.deliverer.deliver_due(worker=worker)

    async def aclose(self) -> None:
        for connector in [*self.connectors.values(), *self.notifiers.values(), self.set_pusher]:
            await connector.aclose()
        aclose = getattr(self.verifier.fetcher, "aclose", None)  # the default fetcher holds a client
        if aclose is not None:
            await aclose()
