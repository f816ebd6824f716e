"""Fixtures shared by the end-to-end tests and the fault suite: ONE local fleet for the whole
session (it is brought up once, by whichever test needs it first)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from e2e.conftest import CLI, health, serving

from deployer.config import load_config
from deployer.fleet.harness import Fleet

# The orchestrators the tests start get SIGINT as a user's terminal gives it. A suite started in
# the background by a non-interactive shell (`./bootstrap test &`) inherits SIGINT ignored, and
# so would every process it starts (an ignored signal stays ignored across exec; Python keeps
# it): a Ctrl-C sent to a deploy would then do nothing. A handler, unlike SIG_IGN, is not inherited.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def fleet():
    if os.geteuid() != 0:
        pytest.fail("the end-to-end tests need root (network namespaces): run ./bootstrap test as root")
    f = Fleet()
    f.up(3)
    yield f
    f.down()


@pytest.fixture(scope="session")
def inventory(fleet) -> str:
    return str(fleet.inventory_path)


@pytest.fixture
def cfg(inventory):
    return load_config("local", inventory=Path(inventory))


@pytest.fixture(scope="session")
def cli(inventory) -> CLI:
    return CLI(inventory)


@pytest.fixture
def consistent(fleet):
    """After the test: every web host serves exactly one and the same release, and answers it."""
    yield
    releases = serving(fleet)
    assert len(set(releases.values())) == 1, f"hosts disagree after the test: {releases}"
    rel = next(iter(releases.values()))
    if rel:
        for h in fleet.spec.web_hosts:
            assert health(fleet, h).get("release") == rel, f"{h.name} does not answer {rel}"
