"""A real Django project (examples/django-app) deployed with the shipped `django` playbook: a
virtualenv per release, gunicorn and a Celery worker under supervisord, Django's own migrations,
an automatic rollback with its database, a rollback by hand; its releases built once and shipped
(release artifacts), then built on each host."""

from __future__ import annotations

import json
import time

import pytest
import yaml

from deployer.fleet import spec as S
from deployer.fleet.django import DB_NAME, DEPLOY_TO, PORT, DjangoSite, web_hosts

from .conftest import CLI, ROOT, http, psql, release_of_ref, serving
from .userland import ALIASES, run_installed, user_env, user_home

ENV = ("--env", "django")
#: the release, virtualenv included, built once (on web1) and shipped to the other host at the
#: same path
ART = ("--set", "artifact.build=first")


@pytest.fixture(scope="module")
def site(fleet):
    """The Django app's programs, Redis, database and inventory on the fleet, for this module."""
    s = DjangoSite(fleet)
    s.install()
    yield s
    s.remove()


@pytest.fixture(scope="module")
def dj(site) -> CLI:
    return CLI(str(site.inventory_path))


def get(fleet, host, path: str, data: dict | None = None) -> tuple[int, dict]:
    """A request to the app on `host` (a name or a FleetHost), made inside the host."""
    resp = http(fleet, host, path, PORT, data=None if data is None else json.dumps(data),
                headers={}, timeout=10)
    return resp.status, resp.json()


def served(fleet) -> dict[str, str | None]:
    """host -> the release its `current` points at."""
    return serving(fleet, DEPLOY_TO, web_hosts(fleet.spec))


def on_release(fleet, release: str) -> None:
    """Every web host serves `release`, from gunicorn running that release's own virtualenv."""
    assert set(served(fleet).values()) == {release}
    for h in web_hosts(fleet.spec):
        status, body = get(fleet, h, "/health")
        assert status == 200 and body["release"] == release, (h.name, body)
        assert body["python"] == f"{DEPLOY_TO}/releases/{release}/.venv", (h.name, body)


def sql(fleet, query: str) -> str:
    return psql(fleet, query, db=DB_NAME)


def migrations(fleet) -> list[str]:
    return sql(fleet, "SELECT name FROM django_migrations WHERE app = 'notes' ORDER BY id").split()


def release_of(dj: CLI, ref: str) -> str:
    return release_of_ref(dj, ref, env=ENV[1])[-1]


def artifacts(fleet, release: str) -> list[dict]:
    """The ledger's artifact records of `release` (the ledger is on db1)."""
    text = fleet.sh("db1", f"cat {DEPLOY_TO}/.deployer/ledger.jsonl").stdout
    return [e for e in map(json.loads, filter(None, text.splitlines()))
            if e.get("type") == "artifact" and e.get("release") == release]


def test_django_deploy_upgrade_auto_rollback_and_manual_rollback(fleet, site, dj):
    web1, web2 = web_hosts(fleet.spec)

    # v1 on an empty database: Django's and the app's migrations under maintenance mode; the
    # release and its virtualenv built on web1 only
    dj("deploy", *ENV, "--ref", "v1", *ART, check=0)
    v1 = release_of(dj, "v1")
    on_release(fleet, v1)
    assert migrations(fleet) == ["0001_initial"]
    proc = dj("preflight", *ENV, check=0)
    assert "DEBUG off, ALLOWED_HOSTS" in proc.stdout and "APP_DEBUG" not in proc.stdout

    # v2: an online-safe migration, no maintenance; the worker runs the new code
    dj("deploy", *ENV, "--ref", "v2", *ART, check=0)
    v2 = release_of(dj, "v2")
    on_release(fleet, v2)
    # web2 unpacked the very bytes web1 packed; requirements unchanged: its virtualenv's files
    # hard-linked from v1's, not written again
    recs = artifacts(fleet, v2)
    assert [e["host"] for e in recs if e["built"]] == ["web1"], recs
    assert [e["host"] for e in recs if not e["built"]] == ["web2"], recs
    assert len({e["sha256"] for e in recs}) == 1
    assert next(e["linked"] for e in recs if e["host"] == "web2") > 1000, recs
    pkg = ".venv/lib/python3*/site-packages/django/__init__.py"
    ino = fleet.sh("web2", f"stat -c %i {DEPLOY_TO}/releases/{v1}/{pkg} {DEPLOY_TO}/releases/{v2}/{pkg}").stdout.split()
    assert ino[0] == ino[1], ino
    assert migrations(fleet) == ["0001_initial", "0002_note_processed_by"]
    status, note = get(fleet, web2, "/notes/", {"text": "hello"})
    assert status == 201
    deadline = time.monotonic() + 30
    while not note.get("processed") and time.monotonic() < deadline:
        time.sleep(0.2)
        note = get(fleet, web1, f"/notes/{note['id']}")[1]
    assert note["processed"] and note["processed_by"] == v2, note

    # maintenance mode by hand: users get 503, `status` says so (the playbook's flag)
    dj("maintenance", "on", *ENV, check=0)
    try:
        assert get(fleet, web1, "/notes/")[0] == 503
        assert "maintenance" in dj("status", *ENV, check=0).stdout.lower()
    finally:
        dj("maintenance", "off", *ENV, check=0)
    assert get(fleet, web1, "/notes/")[0] == 200

    # v3-bad: migration 0003 applied, then /health answers 500: code and database roll back
    rows = sql(fleet, "SELECT id, text, processed_by FROM notes_note ORDER BY id")
    proc = dj("deploy", *ENV, "--ref", "v3-bad", *ART, check=1)
    assert "rolled back" in (proc.stdout + proc.stderr).lower(), proc.stderr[-2000:]
    on_release(fleet, v2)
    assert migrations(fleet) == ["0001_initial", "0002_note_processed_by"]
    assert sql(fleet, "SELECT count(*) FROM information_schema.columns WHERE table_name = 'notes_note' "
                      "AND column_name = 'priority'") == "0"
    assert sql(fleet, "SELECT id, text, processed_by FROM notes_note ORDER BY id") == rows

    # by hand back to v1: refused while the schemas differ, then with v1's database
    proc = dj("rollback", *ENV, "--to", "v1", check=3)
    assert "schema version" in proc.stderr
    dj("rollback", *ENV, "--to", "v1", "--restore-db", "--yes", check=0)
    on_release(fleet, v1)
    assert migrations(fleet) == ["0001_initial"]


def test_django_project_deployed_from_an_empty_directory_by_ssh_config_aliases(fleet, site, dj, installed,
                                                                               tmp_path):
    """What a new user does: deployer installed with pip, `deployer init --kind django` in an
    empty directory outside this repository, the written inventory given the hosts by their
    ~/.ssh/config aliases (behind the fleet's bastion; no key, user or jump host in it) and the
    app's settings, then `deployer deploy`: no DEPLOYER_ROOT, no path to this repository."""
    home = user_home(fleet, tmp_path)
    env = user_env(home, installed)
    assert not any(k.startswith("DEPLOYER_") for k in env)
    project = tmp_path / "shop"
    project.mkdir()
    assert not project.is_relative_to(ROOT)
    run_installed(installed, project, env, "init", "--kind", "django", "--env", "production")
    assert yaml.safe_load((project / "playbooks" / "shop.yaml").read_text())["extends"] == "django"

    # the inventory init wrote, given what the user knows: hosts by alias, repo, paths, database
    path = project / "hosts" / "production.yaml"
    data = yaml.safe_load(path.read_text())
    site_inv = yaml.safe_load(site.inventory_path.read_text())
    assert data["playbook"] == "shop"
    for key in ("repo", "deploy_to", "keep_releases", "health", "vars"):
        data[key] = site_inv[key]
    data["database"].update({k: site_inv["database"][k] for k in ("name", "user", "bin_dir", "socket_dir", "backup_dir")})
    data["ssh"] = {k: v for k, v in data["ssh"].items() if k not in ("user", "known_hosts", "key", "jump")}
    data["hosts"] = [{**h, "address": ALIASES[h["name"]]} for h in site_inv["hosts"]]
    path.write_text(yaml.safe_dump(data, sort_keys=False))

    before = set(served(fleet).values())
    out = run_installed(installed, project, env, "deploy", "--env", "production", "--ref", "v2", "--yes",
                        "--output", "json")
    events = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    outcome = next(e for e in events if e.get("event") == "outcome")
    assert outcome["outcome"] == "success", outcome
    v2 = outcome["release"]
    assert {v2} != before
    on_release(fleet, v2)
    assert migrations(fleet) == ["0001_initial", "0002_note_processed_by"]
    # the hosts were reached through the bastion (their sshd saw its address as the client's)
    seen = run_installed(installed, project, env, "exec", "--env", "production", "--", "echo $SSH_CONNECTION")
    for h in site_inv["hosts"]:
        line = next(x for x in seen.stdout.splitlines() if x.split("|")[0].strip() == h["name"])
        assert line.split("|", 1)[1].split()[0] == S.BASTION_ADDRESS, seen.stdout


def _django_lb(fleet, config: str | None = None) -> str:
    """The Django app's HAProxy configuration on lb1; with `config`, that one, reloaded."""
    from deployer.fleet.django import LB_DIR

    if config is not None:
        fleet.sh("lb1", f"cat > {LB_DIR}/haproxy.cfg && haproxy -D -f {LB_DIR}/haproxy.cfg "
                        f"-sf $(cat {LB_DIR}/haproxy.pid)", input=config)
        time.sleep(1.5)  # the new process's first checks
    return fleet.sh("lb1", f"cat {LB_DIR}/haproxy.cfg").stdout


def _lb_up(fleet) -> dict[str, bool]:
    from deployer.fleet.django import LB_DIR

    out = fleet.sh("lb1", f"echo 'show servers state django' | socat stdio UNIX-CONNECT:{LB_DIR}/admin.sock").stdout
    return {p[3]: p[5] == "2" for p in (line.split() for line in out.splitlines()) if len(p) > 6 and p[1] == "django"}


def test_django_behind_haproxy_whose_check_django_rejects_fails_the_deploy(fleet, site, dj):
    """HAProxy's check without a Host header Django accepts gets a 400 (ALLOWED_HOSTS): every
    server is DOWN for the load balancer, users get "No server is available". The deploy must
    not end with exit 0. With the check fixed, `recover` brings every host back in rotation."""
    good = _django_lb(fleet)
    assert all(_lb_up(fleet).values()), _lb_up(fleet)
    before = set(served(fleet).values())
    bad = good.replace(f" ver HTTP/1.1 hdr Host {S.LB_PUBLIC}", "")
    assert bad != good
    try:
        _django_lb(fleet, bad)
        proc = dj("deploy", *ENV, "--ref", "v2", "--no-maintenance")
        assert proc.returncode in (1, 4), proc.stderr[-2000:]
        assert "not UP at the load balancer" in proc.stdout + proc.stderr, proc.stderr[-2000:]
    finally:
        _django_lb(fleet, good)
    dj("recover", *ENV, check=0)
    deadline = time.monotonic() + 15
    while not all(_lb_up(fleet).values()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert all(_lb_up(fleet).values()), _lb_up(fleet)
    assert len(set(served(fleet).values())) == 1
    assert set(served(fleet).values()) in (before, {release_of(dj, "v2")})
