"""Real tests of the demo app (examples/demo-app) against a throwaway PostgreSQL.

PostgreSQL 15 is started from a temp dir as user ``postgres`` listening on a unix
socket only; it is stopped and removed at the end of the session whatever happens.
Each test gets its own database.  Releases are extracted from the git repo built by
``deployer.fleet.demo_repo.build_demo_repo``.
"""

from __future__ import annotations

import importlib.util
import io
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from wsgiref.util import setup_testing_defaults

import psycopg  # noqa: E402 - the fleet extra; a missing driver must fail, not skip
import pytest

from deployer.fleet.demo_repo import VERSIONS, build_demo_repo  # noqa: E402

PG_BIN = Path("/usr/lib/postgresql/15/bin")
PY = sys.executable
GUNICORN = Path(sys.executable).parent / "gunicorn"
_counter = itertools.count(1)


def _as_postgres(*cmd: str, **kw) -> subprocess.CompletedProcess:
    prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    return subprocess.run([*prefix, *cmd], capture_output=True, text=True, check=False, **kw)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- fixtures -------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pg():
    """A private PostgreSQL server: dict(sockdir, port)."""
    if not (PG_BIN / "initdb").exists():
        pytest.skip("PostgreSQL 15 binaries not installed")
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        pytest.skip("runuser not available")
    base = tempfile.mkdtemp(prefix="demo-pg-")
    data = os.path.join(base, "data")
    port = _free_port()
    started = False
    try:
        if os.geteuid() == 0:
            shutil.chown(base, "postgres", "postgres")
        r = _as_postgres(
            str(PG_BIN / "initdb"),
            "-D",
            data,
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        )
        assert r.returncode == 0, r.stderr
        opts = f"-k {base} -p {port} -c listen_addresses='' -c fsync=off"
        r = _as_postgres(
            str(PG_BIN / "pg_ctl"),
            "-D",
            data,
            "-l",
            os.path.join(base, "pg.log"),
            "-w",
            "-t",
            "60",
            "-o",
            opts,
            "start",
        )
        started = True
        assert r.returncode == 0, r.stderr + r.stdout
        admin = f"postgresql://postgres@/postgres?host={base}&port={port}"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("CREATE ROLE demo LOGIN PASSWORD 'secret'")
            conn.execute("CREATE DATABASE demo OWNER demo")
        yield {"sockdir": base, "port": port, "admin": admin}
    finally:
        if started:
            _as_postgres(str(PG_BIN / "pg_ctl"), "-D", data, "-m", "immediate", "-w", "stop")
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def db_url(pg):
    """A fresh database owned by demo; returns its URL (unix socket)."""
    name = f"demo_{os.getpid()}_{next(_counter)}"
    with psycopg.connect(pg["admin"], autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} OWNER demo")
    return f"postgresql://demo:secret@/{name}?host={pg['sockdir']}&port={pg['port']}"


@pytest.fixture(scope="session")
def demo_repo(tmp_path_factory):
    dest = tmp_path_factory.mktemp("demo-repo") / "demo"
    shas = build_demo_repo(dest)
    return dest, shas


@pytest.fixture
def srv(tmp_path):
    root = tmp_path / "srv" / "app"
    (root / "releases").mkdir(parents=True)
    (root / "shared" / "storage").mkdir(parents=True)
    return root


@pytest.fixture
def make_release(demo_repo, srv, db_url):
    """make_release(tag) -> release dir laid out like production."""
    repo, shas = demo_repo

    def make(tag: str, *, env_extra: str = "") -> Path:
        n = next(_counter)
        release_id = f"20261121T1205{n:02d}Z-{shas[tag][:7]}"
        rdir = srv / "releases" / release_id
        rdir.mkdir()
        archive = subprocess.run(
            ["git", "-C", str(repo), "archive", "--format=tar", tag],
            capture_output=True,
            check=True,
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(rdir)], input=archive, check=True)
        (rdir / "REVISION").write_text(release_id + "\n")
        env_file = srv / "shared" / ".env"
        env_file.write_text(
            "# demo app settings\n"
            f"DATABASE_URL={db_url}\nAPP_ENV=production\nAPP_DEBUG=false\n{env_extra}"
        )
        env_file.chmod(0o600)
        (rdir / ".env").symlink_to(env_file)
        (rdir / "storage").symlink_to(srv / "shared" / "storage")
        return rdir

    return make


def _clean_env() -> dict[str, str]:
    return {
        k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "APP_ENV", "APP_DEBUG")
    }


def manage(rdir: Path, *args: str, env: dict[str, str] | None = None):
    return subprocess.run(
        [PY, str(rdir / "manage.py"), *args],
        capture_output=True,
        text=True,
        env=env or _clean_env(),
        timeout=60,
        check=False,
    )


def sql(url: str, query: str, params=None):
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else None


def load_app(rdir: Path):
    name = f"demo_app_{next(_counter)}"
    spec = importlib.util.spec_from_file_location(name, rdir / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def call(app, method: str, path: str, body: bytes = b"", ctype: str = "application/json"):
    environ: dict = {}
    setup_testing_defaults(environ)
    environ.update(
        REQUEST_METHOD=method,
        PATH_INFO=path,
        CONTENT_LENGTH=str(len(body)),
        CONTENT_TYPE=ctype,
    )
    environ["wsgi.input"] = io.BytesIO(body)
    captured = {}

    def start_response(status, headers, exc_info=None):
        captured["status"] = int(status.split()[0])
        captured["headers"] = dict(headers)

    chunks = app.application(environ, start_response)
    data = b"".join(chunks)
    return captured["status"], captured["headers"], json.loads(data) if data else None


# --- demo repo --------------------------------------------------------------------------


def test_repo_tags_are_stable_and_complete(demo_repo, tmp_path):
    repo, shas = demo_repo
    assert list(shas) == [v.tag for v in VERSIONS]
    assert set(shas) == {
        "v1",
        "v2",
        "v3",
        "bad-health",
        "bad-slow",
        "bad-canary",
        "bad-flap",
        "bad-boot",
        "bad-migration",
        "bad-worker",
    }
    assert build_demo_repo(tmp_path / "again") == shas  # deterministic shas
    for tag in shas:
        version = subprocess.run(
            ["git", "-C", str(repo), "show", f"{tag}:VERSION"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        assert version == tag
    # bad tags branch from v2
    for tag in shas:
        if tag.startswith("bad-") or tag == "v3":
            parent = subprocess.run(
                ["git", "-C", str(repo), "rev-parse", f"{tag}^"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
            assert parent == shas["v2"], tag


def test_cli_entry_point(tmp_path):
    r = subprocess.run(
        [PY, "-m", "deployer.fleet.demo_repo", str(tmp_path / "r")],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
        check=False,
    )
    assert r.returncode == 0, r.stderr
    lines = dict(line.split() for line in r.stdout.splitlines())
    assert len(lines["v1"]) == 40 and "bad-worker" in lines


# --- migrations -------------------------------------------------------------------------


def test_migrate_up_and_down(make_release, db_url):
    v1 = make_release("v1")
    v2 = make_release("v2")
    assert manage(v1, "schema-version").stdout.strip() == "0"
    pend = json.loads(manage(v1, "pending", "--json").stdout)
    assert pend == [{"version": 1, "name": "init", "online_safe": True, "has_down": True}]

    r = manage(v1, "migrate")
    assert r.returncode == 0, r.stderr
    assert "0001_init.up.sql" in r.stdout
    assert manage(v1, "schema-version").stdout.strip() == "1"
    assert json.loads(manage(v1, "pending", "--json").stdout) == []

    r = manage(v2, "pending", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == [
        {"version": 2, "name": "add_notes", "online_safe": True, "has_down": True}
    ]
    r = manage(v2, "migrate")
    assert r.returncode == 0, r.stderr
    assert manage(v2, "schema-version").stdout.strip() == "2"
    assert sql(db_url, "SELECT to_regclass('notes')")[0][0] == "notes"
    r = manage(v2, "migrate")  # idempotent
    assert r.returncode == 0 and "nothing to migrate" in r.stdout

    # v1 code cannot roll the schema back (it does not have 0002's down file)
    r = manage(v1, "can-rollback", "--to", "1")
    assert r.returncode == 1 and "0002" in r.stderr
    assert manage(v2, "can-rollback", "--to", "0").returncode == 0

    r = manage(v2, "migrate", "--to", "1")
    assert r.returncode == 0, r.stderr
    assert manage(v2, "schema-version").stdout.strip() == "1"
    assert sql(db_url, "SELECT to_regclass('notes')")[0][0] is None
    cols = sql(
        db_url, "SELECT column_name FROM information_schema.columns WHERE table_name='items'"
    )
    assert "category" not in {c[0] for c in cols}


def test_v3_migration_needs_maintenance(make_release):
    v3 = make_release("v3")
    assert manage(v3, "migrate", "--to", "2").returncode == 0
    assert json.loads(manage(v3, "pending", "--json").stdout) == [
        {"version": 3, "name": "rename_category", "online_safe": False, "has_down": True}
    ]
    assert manage(v3, "migrate").returncode == 0
    assert manage(v3, "schema-version").stdout.strip() == "3"
    assert manage(v3, "migrate", "--to", "2").returncode == 0
    assert manage(v3, "schema-version").stdout.strip() == "2"


def test_missing_down_file_is_detected_before_running_any(make_release, db_url):
    v2 = make_release("v2")
    assert manage(v2, "migrate").returncode == 0
    (v2 / "migrations" / "0001_init.down.sql").unlink()
    r = manage(v2, "can-rollback", "--to", "0")
    assert r.returncode == 1 and "0001_init.down.sql" in r.stderr
    r = manage(v2, "migrate", "--to", "0")
    assert r.returncode == 1 and "0001_init.down.sql" in r.stderr
    # nothing ran: 0002 was not reverted either
    assert manage(v2, "schema-version").stdout.strip() == "2"
    assert sql(db_url, "SELECT to_regclass('notes')")[0][0] == "notes"
    assert manage(v2, "can-rollback", "--to", "1").returncode == 0


def test_bad_migration_rolls_back(make_release, db_url):
    bad = make_release("bad-migration")
    r = manage(bad, "migrate")
    assert r.returncode == 1
    assert "0003_broken.up.sql" in r.stderr and "no_such_column" in r.stderr
    assert "secret" not in r.stderr + r.stdout
    assert manage(bad, "schema-version").stdout.strip() == "2"
    assert sql(db_url, "SELECT to_regclass('broken_leftover')")[0][0] is None


def test_errors_do_not_leak_the_password(make_release):
    v1 = make_release("v1")
    env = _clean_env() | {
        "DATABASE_URL": "postgresql://demo:hunter2@/demo?host=/nonexistent&port=1"
    }
    r = manage(v1, "schema-version", env=env)
    assert r.returncode == 1 and "cannot connect" in r.stderr
    assert "hunter2" not in r.stderr + r.stdout


def test_warm_cache_and_check(make_release, srv):
    v1 = make_release("v1")
    assert manage(v1, "migrate").returncode == 0
    r = manage(v1, "warm-cache")
    assert r.returncode == 0 and r.stdout.strip() == "cache warmed"
    assert json.loads((srv / "shared/storage/cache/warm.json").read_text())["items"] == 0

    r = manage(v1, "check")
    assert r.returncode == 0, r.stderr
    r = manage(v1, "check", env=_clean_env() | {"APP_DEBUG": "true"})
    assert r.returncode == 1 and "APP_DEBUG" in r.stderr
    r = manage(v1, "check", env=_clean_env() | {"APP_ENV": "staging"})
    assert r.returncode == 1 and "APP_ENV" in r.stderr
    (srv / "shared" / ".env").chmod(0o644)
    r = manage(v1, "check")
    assert r.returncode == 1 and "0644" in r.stderr
    assert "secret" not in r.stderr + r.stdout


# --- web app -----------------------------------------------------------------------------


def test_health_and_maintenance(make_release, srv):
    v1 = make_release("v1")
    assert manage(v1, "migrate").returncode == 0
    app = load_app(v1)
    release = v1.name
    status, _, body = call(app, "GET", "/health")
    assert status == 200
    assert body["status"] == "ok" and body["release"] == release and body["version"] == "v1"
    assert body["host"] == socket.gethostname()
    assert body["checks"] == {"database": "ok", "schema": 1}

    mfile = srv / "shared" / "storage" / "maintenance.json"
    mfile.write_text(
        json.dumps({"message": "upgrading", "retry": 17, "expires_at": time.time() + 60})
    )
    for path in ("/health", "/", "/items"):
        status, headers, body = call(app, "GET", path)
        assert status == 503 and headers["Retry-After"] == "17"
        assert body == {"status": "maintenance", "message": "upgrading", "release": release}
    status, _, _ = call(app, "POST", "/jobs", b'{"payload": "x"}')
    assert status == 503
    mfile.write_text(json.dumps({"message": "upgrading", "retry": 5, "expires_at": None}))
    assert call(app, "GET", "/health")[0] == 503
    # dead-man expiry: an expired file is ignored
    mfile.write_text(
        json.dumps({"message": "upgrading", "retry": 5, "expires_at": time.time() - 1})
    )
    status, headers, body = call(app, "GET", "/health")
    assert status == 200 and "Retry-After" not in headers and body["status"] == "ok"

    log = (srv / "shared" / "storage" / "logs" / "app.log").read_text().splitlines()
    assert any(" GET /health 503 " in line and line.endswith("ms") for line in log)
    assert any(" GET /health 200 " in line for line in log)


def test_health_reports_database_failure_without_leaking(make_release):
    v1 = make_release("v1")
    app = load_app(v1)
    app._drop_conn()
    app.DATABASE_URL = "postgresql://demo:hunter2@/demo?host=/nonexistent&port=1"
    status, _, body = call(app, "GET", "/health")
    assert status == 503
    assert body["status"] == "fail" and body["checks"] == {"database": "fail", "schema": None}
    assert "hunter2" not in json.dumps(body)


def test_items_jobs_and_errors(make_release, srv):
    v2 = make_release("v2")
    app = load_app(v2)
    # before migrating, / fails with a logged 500
    status, _, body = call(app, "GET", "/")
    assert status == 500 and body["type"] == "UndefinedTable"
    log = (srv / "shared/storage/logs/app.log").read_text()
    assert "ERROR" in log and "UndefinedTable" in log and "secret" not in log
    assert call(app, "GET", "/health")[2]["checks"]["schema"] is None

    assert manage(v2, "migrate").returncode == 0
    status, _, item = call(app, "POST", "/items", b'{"name": "apple"}')
    assert status == 201 and item["name"] == "apple" and item["id"] == 1
    status, _, item = call(app, "POST", "/items", b"name=pear", "application/x-www-form-urlencoded")
    assert status == 201 and item["name"] == "pear"
    assert call(app, "POST", "/items", b"{}")[0] == 400
    status, _, items = call(app, "GET", "/items")
    assert [i["name"] for i in items] == ["apple", "pear"]
    status, _, index = call(app, "GET", "/")
    assert status == 200 and index["items"] == 2 and index["notes"] == 0
    assert index["version"] == "v2" and index["release"] == v2.name

    status, _, job = call(app, "POST", "/jobs", b'{"payload": "hello"}')
    assert status == 201
    status, _, row = call(app, "GET", f"/jobs/{job['id']}")
    assert status == 200 and row["status"] == "pending" and row["done_by_release"] is None
    assert call(app, "GET", "/jobs/999")[0] == 404
    assert call(app, "GET", "/nope")[0] == 404


def test_bad_health_flap_boot(make_release):
    bad = make_release("bad-health")
    assert manage(bad, "migrate").returncode == 0
    app = load_app(bad)
    status, _, body = call(app, "GET", "/health")
    assert status == 500 and body["status"] == "fail" and body["version"] == "bad-health"
    assert call(app, "GET", "/")[0] == 200

    flap = load_app(make_release("bad-flap"))
    codes = [call(flap, "GET", "/health")[0] for _ in range(9)]
    assert codes.count(500) == 3 and set(codes) == {200, 500}
    assert all(500 in codes[i : i + 3] for i in range(7))

    with pytest.raises(RuntimeError, match="bad-boot"):
        load_app(make_release("bad-boot"))


def test_bad_slow_and_canary(make_release):
    slow = load_app(make_release("bad-slow"))
    canary = load_app(make_release("bad-canary"))
    v2 = load_app(make_release("v2"))
    manage(make_release("v2"), "migrate")

    def timed(app):
        t = time.monotonic()
        status = call(app, "GET", "/health")[0]
        return status, time.monotonic() - t

    status, fast = timed(v2)
    assert status == 200 and fast < 0.15
    status, t = timed(canary)
    assert status == 200 and 0.15 <= t < 1.0
    status, t = timed(slow)
    assert status == 200 and t >= 2.5


# --- worker --------------------------------------------------------------------------------


def test_worker_processes_jobs_and_stops_on_sigterm(make_release, db_url, srv):
    v1 = make_release("v1")
    assert manage(v1, "migrate").returncode == 0
    job_id = sql(db_url, "INSERT INTO jobs (payload) VALUES ('x') RETURNING id")[0][0]
    proc = subprocess.Popen(
        [PY, str(v1 / "worker.py")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=_clean_env(),
        text=True,
    )
    try:
        deadline = time.monotonic() + 15
        row = None
        while time.monotonic() < deadline:
            row = sql(
                db_url,
                "SELECT status, done_by_release, done_by_host FROM jobs WHERE id=%s",
                (job_id,),
            )[0]
            if row[0] == "done":
                break
            time.sleep(0.1)
        assert row == ("done", v1.name, socket.gethostname())

        hb = srv / "shared" / "storage" / f"worker-{socket.gethostname()}.json"
        deadline = time.monotonic() + 5
        while not hb.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        data = json.loads(hb.read_text())
        assert data["release"] == v1.name and data["pid"] == proc.pid
        assert abs(time.time() - data["seen_at"]) < 5
        beats = sql(db_url, "SELECT release, pid FROM worker_heartbeats")
        assert beats == [(v1.name, proc.pid)]
        # a job posted while running is picked up too
        job2 = sql(db_url, "INSERT INTO jobs (payload) VALUES ('y') RETURNING id")[0][0]
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if sql(db_url, "SELECT status FROM jobs WHERE id=%s", (job2,))[0][0] == "done":
                break
            time.sleep(0.1)
        else:
            pytest.fail("second job not processed")

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        out = proc.stdout.read()
        assert "stopped" in out and "secret" not in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_bad_worker_exits_1(make_release):
    bad = make_release("bad-worker")
    r = subprocess.run(
        [PY, str(bad / "worker.py")],
        capture_output=True,
        text=True,
        timeout=20,
        env=_clean_env(),
        check=False,
    )
    assert r.returncode == 1 and "bad-worker" in r.stderr


# --- gunicorn: the production command, symlink switch + HUP ---------------------------------


def _get_json(url: str):
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


@pytest.mark.skipif(not GUNICORN.exists(), reason="gunicorn not installed next to python")
def test_gunicorn_hup_switches_release(make_release, srv):
    v1 = make_release("v1")
    v2 = make_release("v2")
    assert manage(v2, "migrate").returncode == 0
    current = srv / "current"
    current.symlink_to(v1)
    port = _free_port()
    gunicorn_log = open(srv / "gunicorn.log", "wb")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen(
        [
            str(GUNICORN),
            "--pythonpath",
            str(current),
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "2",
            "--graceful-timeout",
            "10",
            "app:application",
        ],
        cwd=srv,
        env=_clean_env(),
        stdout=gunicorn_log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/health"
    try:
        deadline = time.monotonic() + 20
        result = None
        while time.monotonic() < deadline:
            try:
                result = _get_json(url)
                break
            except OSError:
                time.sleep(0.2)
        assert result == (200, result[1]) and result[1]["release"] == v1.name

        tmp_link = srv / "current.tmp"
        tmp_link.symlink_to(v2)
        os.replace(tmp_link, current)
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        seen = []
        while time.monotonic() < deadline:
            seen.append(_get_json(url)[1]["release"])
            if seen[-6:] == [v2.name] * 6:
                break
            time.sleep(0.2)
        assert seen[-6:] == [v2.name] * 6
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        gunicorn_log.close()


def test_app_reconnects_after_database_connections_are_killed(make_release, db_url, pg):
    v1 = make_release("v1")
    assert manage(v1, "migrate").returncode == 0
    app = load_app(v1)
    assert call(app, "GET", "/health")[0] == 200
    dbname = db_url.split("/")[3].split("?")[0]
    with psycopg.connect(pg["admin"], autocommit=True) as conn:
        killed = conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = %s",
            (dbname,),
        ).fetchone()[0]
    assert killed >= 1
    status, _, body = call(app, "GET", "/health")
    assert status == 200 and body["checks"]["database"] == "ok"
    assert call(app, "GET", "/")[0] == 200
