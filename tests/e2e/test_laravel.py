"""A real Laravel app (examples/laravel-app: Laravel 8 from Debian's php-laravel-framework,
PostgreSQL) deployed with the shipped `laravel` playbook: composer install offline, nginx and
php-fpm (reloaded) serving current/public, a queue worker under supervisord restarted by
`queue:restart`, Laravel's migrations (schema = latest batch), `artisan down`/`up`, an automatic
rollback with its database (`migrate:rollback`), a rollback by hand."""

from __future__ import annotations

import json
import time

import pytest

from deployer.fleet.laravel import DB_NAME, DEPLOY_TO, PORT, LaravelSite, web_hosts

from .conftest import CLI, http, psql, release_of_ref, serving

ENV = ("--env", "laravel")
V1_MIGRATIONS = ["2026_01_01_000000_create_jobs_table", "2026_01_01_000001_create_notes_table"]
V2_MIGRATION = "2026_02_01_000000_add_processed_by_to_notes_table"


@pytest.fixture(scope="module")
def site(fleet):
    """The Laravel app's web stack, worker, database and inventory on the fleet, for this module."""
    s = LaravelSite(fleet)
    s.install()
    yield s
    s.remove()


@pytest.fixture(scope="module")
def lv(site) -> CLI:
    return CLI(str(site.inventory_path))


def get(fleet, host, path: str, data: dict | None = None) -> tuple[int, dict]:
    """A request to the app on `host` (a name or a FleetHost), made inside the host."""
    resp = http(fleet, host, path, PORT, data=None if data is None else json.dumps(data),
                headers={"Content-Type": "application/json", "Accept": "application/json"}, timeout=10)
    return resp.status, resp.json()


def served(fleet) -> dict[str, str | None]:
    """host -> the release its `current` points at."""
    return serving(fleet, DEPLOY_TO, web_hosts(fleet.spec))


def on_release(fleet, release: str, schema: int) -> None:
    """Every web host serves `release` through nginx and php-fpm, from that release's directory."""
    assert set(served(fleet).values()) == {release}
    for h in web_hosts(fleet.spec):
        status, body = get(fleet, h, "/health")
        assert status == 200 and body["release"] == release, (h.name, body)
        assert body["dir"] == f"{DEPLOY_TO}/releases/{release}" and body["schema"] == schema, (h.name, body)


def sql(fleet, query: str) -> str:
    return psql(fleet, query, db=DB_NAME)


def migrations(fleet) -> list[str]:
    return sql(fleet, "SELECT migration || ':' || batch FROM migrations ORDER BY id").split()


def columns(fleet) -> set[str]:
    return set(sql(fleet, "SELECT column_name FROM information_schema.columns "
                          "WHERE table_name = 'notes'").split())


def release_of(lv: CLI, ref: str) -> str:
    return release_of_ref(lv, ref, env=ENV[1])[-1]


def test_laravel_deploy_upgrade_auto_rollback_and_manual_rollback(fleet, site, lv):
    web1, web2 = web_hosts(fleet.spec)

    # v1 on an empty database: artisan down (nothing live yet), composer install, migrate
    lv("deploy", *ENV, "--ref", "v1", check=0)
    v1 = release_of(lv, "v1")
    on_release(fleet, v1, 1)
    assert migrations(fleet) == [f"{m}:1" for m in V1_MIGRATIONS]
    for h in web_hosts(fleet.spec):  # composer's autoloader and Laravel's caches in the release
        assert fleet.sh(h.name, f"cd {DEPLOY_TO}/releases/{v1} && test -f vendor/autoload.php && "
                                "test -f bootstrap/cache/config.php && test -f bootstrap/cache/routes-v7.php "
                                "&& test -f bootstrap/cache/events.php && echo ok").stdout.strip() == "ok"

    # v2: batch 2; php-fpm serves the new release, the worker (queue:restart) runs its code
    lv("deploy", *ENV, "--ref", "v2", check=0)
    v2 = release_of(lv, "v2")
    on_release(fleet, v2, 2)
    assert migrations(fleet) == [f"{m}:1" for m in V1_MIGRATIONS] + [f"{V2_MIGRATION}:2"]
    assert "processed_by" in columns(fleet)
    status, note = get(fleet, web2, "/notes", {"text": "hello"})
    assert status == 201, note
    deadline = time.monotonic() + 30
    while not note.get("processed") and time.monotonic() < deadline:
        time.sleep(0.2)
        note = get(fleet, web1, f"/notes/{note['id']}")[1]
    assert note["processed"] and note["processed_by"] == v2, note

    # maintenance by hand: `artisan down`, users get 503, `status` sees Laravel's flag
    lv("maintenance", "on", *ENV, check=0)
    try:
        assert get(fleet, web1, f"/notes/{note['id']}")[0] == 503
        assert "maintenance" in lv("status", *ENV, check=0).stdout.lower()
    finally:
        lv("maintenance", "off", *ENV, check=0)
    assert get(fleet, web1, f"/notes/{note['id']}")[0] == 200

    # v3-bad: its migration applied (batch 3), then /health answers 500: code and database back
    rows = sql(fleet, "SELECT id, text, processed_by FROM notes ORDER BY id")
    proc = lv("deploy", *ENV, "--ref", "v3-bad", check=1)
    out = proc.stdout + proc.stderr
    assert "rolled back" in out.lower(), out[-2000:]
    on_release(fleet, v2, 2)
    assert migrations(fleet) == [f"{m}:1" for m in V1_MIGRATIONS] + [f"{V2_MIGRATION}:2"]
    assert "priority" not in columns(fleet)
    assert sql(fleet, "SELECT id, text, processed_by FROM notes ORDER BY id") == rows
    assert not any(fleet.sh(h.name, f"test -e {DEPLOY_TO}/shared/storage/framework/down && echo down || true")
                   .stdout.strip() for h in web_hosts(fleet.spec))

    # by hand back to v1: refused while the schemas differ, then with v1's database
    proc = lv("rollback", *ENV, "--to", "v1", check=3)
    assert "schema version" in proc.stderr
    lv("rollback", *ENV, "--to", "v1", "--restore-db", "--yes", check=0)
    on_release(fleet, v1, 1)
    assert migrations(fleet) == [f"{m}:1" for m in V1_MIGRATIONS]
    assert "processed_by" not in columns(fleet)
