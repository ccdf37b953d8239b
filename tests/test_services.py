"""The composition root (scimjit.services): what `compose` builds, what `Services.build` leaves for later."""

from __future__ import annotations

import asyncio

import pytest

from scimjit.config import ConfigError, Settings
from scimjit.provisioning.deprovision import Deprovisioner
from scimjit.services import Services, compose
from scimjit.store.events import NoListener
from tests.access_helpers import config


def settings_for(db, raw=None, **overrides) -> Settings:
    return Settings.load(environ={}, database_url=db.url, document=raw or {}, **overrides)


def built(services: Services) -> set[str]:
    """The lazily built steps that exist (a `cached_property` stores its value in the instance dict)."""
    return {"engine", "deprovisioner", "access", "listener", "background"} & set(vars(services))


def test_compose_builds_every_step_once_and_wires_the_listener(db, clock):
    services = compose(settings_for(db, config()), db=db, clock=clock)
    assert built(services) == {"engine", "deprovisioner", "access", "listener", "background"}
    assert isinstance(services.listener, Deprovisioner)
    # one deprovisioner: the one SCIM writes call is the one grants, requests and the sweeper use
    assert services.listener is services.deprovisioner is services.access.deprovisioner
    assert services.access.sweeper.deprov is services.deprovisioner
    assert services.access.engine is services.engine
    assert sorted(services.engine.apps) == ["chat", "wiki"]
    assert len(services.background) == 2  # the in-process worker and sweeper, both on by default
    asyncio.run(services.engine.aclose())


@pytest.mark.parametrize(
    ("run_worker", "run_sweeper", "tasks"), [(True, False, 1), (False, True, 1), (False, False, 0)]
)
def test_background_tasks_follow_run_worker_and_run_sweeper(db, clock, run_worker, run_sweeper, tasks):
    settings = settings_for(db, config(), run_worker=run_worker, run_sweeper=run_sweeper)
    services = compose(settings, db=db, clock=clock)
    assert len(services.background) == tasks
    asyncio.run(services.engine.aclose())


def test_a_scim_only_deployment_starts(db, clock):
    services = compose(settings_for(db), db=db, clock=clock)
    assert services.engine.apps == {} and services.engine.connectors == {}
    assert isinstance(services.listener, Deprovisioner)


def test_build_leaves_the_jit_steps_for_first_use(db, clock):
    services = Services.build(settings_for(db, config()), db=db, clock=clock)
    assert built(services) == set()  # no connectors built for a SCIM query or a token command
    assert isinstance(services.listener, NoListener)  # deprovisioning is compose's (or deprovision=True)
    assert services.access.engine is services.engine  # built on first use, and once
    assert services.engine is services.engine


def test_a_bad_jit_table_stops_compose_but_not_build(db, clock):
    settings = settings_for(db, config(jit='notify_applications = ["nope"]'))
    with pytest.raises(ConfigError, match="notify_applications: no application named nope"):
        compose(settings, db=db, clock=clock)
    services = Services.build(settings, db=db, clock=clock)  # the SCIM core still builds
    with pytest.raises(ConfigError, match="notify_applications"):
        _ = services.access
