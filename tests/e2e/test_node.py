"""A real Node.js app (examples/node-app: Express, knex, pg) deployed with the shipped `node`
playbook: node_modules per release from an offline npm cache (the hosts have no registry), the
web process and a worker under supervisord, knex's own migrations, an automatic rollback with
its database, a rollback by hand."""

from __future__ import annotations

import json
import time

import pytest

from deployer.fleet.node import DB_NAME, DEPLOY_TO, PORT, NodeSite, web_hosts

from .conftest import CLI, http, psql, release_of_ref, serving

ENV = ("--env", "node")


@pytest.fixture(scope="module")
def site(fleet):
    """The Node.js app's programs, database, npm cache and inventory on the fleet, for this module."""
    s = NodeSite(fleet)
    s.install()
    yield s
    s.remove()


@pytest.fixture(scope="module")
def nd(site) -> CLI:
    return CLI(str(site.inventory_path))


def get(fleet, host, path: str, data: dict | None = None) -> tuple[int, dict]:
    """A request to the app on `host` (a name or a FleetHost), made inside the host."""
    resp = http(fleet, host, path, PORT, data=None if data is None else json.dumps(data),
                headers={"Content-Type": "application/json"}, timeout=10)
    return resp.status, resp.json()


def served(fleet) -> dict[str, str | None]:
    """host -> the release its `current` points at."""
    return serving(fleet, DEPLOY_TO, web_hosts(fleet.spec))


def on_release(fleet, release: str, schema: int) -> None:
    """Every web host serves `release`, from node running in that release's directory."""
    assert set(served(fleet).values()) == {release}
    for h in web_hosts(fleet.spec):
        status, body = get(fleet, h, "/health")
        assert status == 200 and body["release"] == release, (h.name, body)
        assert body["dir"] == f"{DEPLOY_TO}/releases/{release}" and body["schema"] == schema, (h.name, body)


def sql(fleet, query: str) -> str:
    return psql(fleet, query, db=DB_NAME)


def migrations(fleet) -> list[str]:
    return sql(fleet, "SELECT name FROM knex_migrations ORDER BY id").split()


def columns(fleet) -> set[str]:
    return set(sql(fleet, "SELECT column_name FROM information_schema.columns "
                          "WHERE table_name = 'notes'").split())


def release_of(nd: CLI, ref: str) -> str:
    return release_of_ref(nd, ref, env=ENV[1])[-1]


def test_node_deploy_upgrade_auto_rollback_and_manual_rollback(fleet, site, nd):
    web1, web2 = web_hosts(fleet.spec)

    # v1 on an empty database: knex migrate:latest under maintenance mode (001 is not online-safe)
    proc = nd("deploy", *ENV, "--ref", "v1", "--output", "json", check=0)
    assert "not online-safe: 001_create_notes.js" in proc.stdout
    v1 = release_of(nd, "v1")
    on_release(fleet, v1, 1)
    assert migrations(fleet) == ["001_create_notes.js"]
    for h in web_hosts(fleet.spec):  # the release's own node_modules, installed without a registry
        assert fleet.sh(h.name, f"test -d {DEPLOY_TO}/releases/{v1}/node_modules/knex && "
                                f"test ! -L {DEPLOY_TO}/releases/{v1}/node_modules && echo ok").stdout.strip() == "ok"

    # v2: an online-safe migration, no maintenance; the worker runs the new code
    proc = nd("deploy", *ENV, "--ref", "v2", "--output", "json", check=0)
    assert "maintenance needed" not in proc.stdout
    v2 = release_of(nd, "v2")
    on_release(fleet, v2, 2)
    assert migrations(fleet) == ["001_create_notes.js", "002_notes_processed_by.js"]
    assert "processed_by" in columns(fleet)
    status, note = get(fleet, web2, "/notes", {"text": "hello"})
    assert status == 201, note
    deadline = time.monotonic() + 30
    while not note.get("processed") and time.monotonic() < deadline:
        time.sleep(0.2)
        note = get(fleet, web1, f"/notes/{note['id']}")[1]
    assert note["processed"] and note["processed_by"] == v2, note

    # maintenance mode by hand: users get 503, `status` sees the playbook's flag
    nd("maintenance", "on", *ENV, check=0)
    try:
        assert get(fleet, web1, f"/notes/{note['id']}")[0] == 503
        assert "maintenance" in nd("status", *ENV, check=0).stdout.lower()
    finally:
        nd("maintenance", "off", *ENV, check=0)
    assert get(fleet, web1, f"/notes/{note['id']}")[0] == 200

    # v3-bad: migration 003 applied, then /health answers 500: code and database roll back
    rows = sql(fleet, "SELECT id, text, processed_by FROM notes ORDER BY id")
    proc = nd("deploy", *ENV, "--ref", "v3-bad", check=1)
    assert "rolled back" in (proc.stdout + proc.stderr).lower(), proc.stderr[-2000:]
    on_release(fleet, v2, 2)
    assert migrations(fleet) == ["001_create_notes.js", "002_notes_processed_by.js"]
    assert "priority" not in columns(fleet)
    assert sql(fleet, "SELECT id, text, processed_by FROM notes ORDER BY id") == rows

    # by hand back to v1: refused while the schemas differ, then with v1's database
    proc = nd("rollback", *ENV, "--to", "v1", check=3)
    assert "schema version" in proc.stderr
    nd("rollback", *ENV, "--to", "v1", "--restore-db", "--yes", check=0)
    on_release(fleet, v1, 1)
    assert migrations(fleet) == ["001_create_notes.js"]
    assert "processed_by" not in columns(fleet)
