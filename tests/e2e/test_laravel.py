"""A real Laravel app (examples/laravel-app: Laravel 8 from Debian's php-laravel-framework) on
PostgreSQL, and on MariaDB (db1's own mariadbd), deployed with the shipped `laravel` playbook:
composer install offline, nginx and php-fpm (reloaded) serving current/public, a queue worker
under supervisord restarted by `queue:restart`, Laravel's migrations (schema = latest batch),
`artisan down`/`up`, the nightly job's test restore, an automatic rollback restoring the
database exactly (schema, rows, privileges, comments; nothing of deployer's left), a write made
during the deploy keeping its restore from running (MariaDB), a rollback by hand."""

from __future__ import annotations

import json
import time

import pytest

from deployer.fleet.laravel import DB_NAME, DEPLOY_TO, MY_ROOT, PORT, LaravelSite, web_hosts

from .conftest import CLI, http, psql, release_of_ref, serving, sh_quote

ENV = ("--env", "laravel")
V1_MIGRATIONS = ["2026_01_01_000000_create_jobs_table", "2026_01_01_000001_create_notes_table"]
V2_MIGRATION = "2026_02_01_000000_add_processed_by_to_notes_table"


@pytest.fixture(scope="module", params=["postgresql", "mariadb"])
def site(fleet, request):
    """The Laravel app's web stack, worker, database and inventory on the fleet, for this module."""
    s = LaravelSite(fleet, request.param)
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


KIND = {"kind": "postgresql"}  # the module's database, set by test_laravel_deploy_... (site.kind)


def sql(fleet, query: str) -> str:
    if KIND["kind"] == "postgresql":
        return psql(fleet, query, db=DB_NAME)
    return fleet.sh("db1", f"{MY_ROOT} -N -B {DB_NAME} -e {sh_quote(query)}").stdout.strip()


def migrations(fleet) -> list[str]:
    return sql(fleet, "SELECT CONCAT(migration, ':', batch) FROM migrations ORDER BY id").split()


def columns(fleet) -> set[str]:
    schema = "'public'" if KIND["kind"] == "postgresql" else "DATABASE()"
    return set(sql(fleet, "SELECT column_name FROM information_schema.columns "
                          f"WHERE table_name = 'notes' AND table_schema = {schema}").split())


def exact(fleet) -> tuple[str, str, str]:
    """What a restore must give back: the schema (a dump without data), the grants and
    comments of every object, deployer's own objects (none outside a deploy)."""
    if KIND["kind"] == "postgresql":
        from .conftest import CATALOG_SQL, DEPLOYER_OBJECTS_SQL

        dump = fleet.sh("db1", f"runuser -u postgres -- /usr/lib/postgresql/15/bin/pg_dump -h /srv/pg/run -s "
                               f"{DB_NAME}").stdout
        dump = "\n".join(x for x in dump.splitlines() if not x.startswith(("\\restrict", "\\unrestrict")))
        return dump, sql(fleet, CATALOG_SQL), sql(fleet, DEPLOYER_OBJECTS_SQL)
    dump = fleet.sh("db1", f"mariadb-dump --no-defaults -S /srv/mysql/run/mysqld.sock --no-data --routines --triggers "
                           f"--events --skip-dump-date --skip-comments {DB_NAME}").stdout
    dump = "\n".join(x for x in dump.splitlines() if "AUTO_INCREMENT=" not in x)  # the next id: not the schema
    grants = sql(fleet, "SELECT CONCAT_WS(' ', grantee, table_name, privilege_type) FROM information_schema.TABLE_PRIVILEGES "
                        "WHERE table_schema = DATABASE() UNION ALL SELECT CONCAT_WS(' ', grantee, table_name, column_name, "
                        "privilege_type) FROM information_schema.COLUMN_PRIVILEGES WHERE table_schema = DATABASE() "
                        "UNION ALL SELECT CONCAT_WS(' ', table_name, table_comment) FROM information_schema.TABLES "
                        "WHERE table_schema = DATABASE() UNION ALL SELECT CONCAT_WS(' ', table_name, column_name, "
                        "column_comment) FROM information_schema.COLUMNS WHERE table_schema = DATABASE() ORDER BY 1")
    left = sql(fleet, "SELECT table_name FROM information_schema.TABLES WHERE table_schema = DATABASE() AND "
                      "table_name LIKE 'deployer%' UNION ALL SELECT trigger_name FROM information_schema.TRIGGERS "
                      "WHERE trigger_schema = DATABASE() AND trigger_name LIKE 'deployer%'")
    return dump, grants, left


def app_grants(fleet) -> None:
    """Grants and comments of the app's team that no migration touches."""
    if KIND["kind"] == "postgresql":
        sql(fleet, "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'reporting') THEN "
                   "CREATE ROLE reporting; END IF; END $$; GRANT SELECT ON notes TO reporting; "
                   "GRANT SELECT (migration) ON migrations TO reporting; COMMENT ON TABLE notes IS 'user notes'")
    else:
        sql(fleet, "CREATE USER IF NOT EXISTS reporting; GRANT SELECT ON notes TO reporting; "
                   "GRANT SELECT (migration) ON migrations TO reporting; ALTER TABLE notes COMMENT = 'user notes'")


def release_of(lv: CLI, ref: str) -> str:
    return release_of_ref(lv, ref, env=ENV[1])[-1]


def test_laravel_deploy_upgrade_auto_rollback_and_manual_rollback(fleet, site, lv):
    KIND["kind"] = site.kind
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

    # the nightly job proves the newest deploy's backup and its own by restoring them; a
    # corrupt one fails it (exit 4, said), then, mended, passes
    ledger = fleet.sh("db1", f"cat {DEPLOY_TO}/.deployer/ledger.jsonl").stdout.splitlines()
    backup = [r for r in map(json.loads, ledger) if r.get("type") == "backup"][-1]["path"]
    fleet.sh("db1", f"cp -p {backup} {backup}.good && printf 'XXXXXXXXXXXXXXXX' | "
                    f"dd of={backup} bs=1 seek=900 conv=notrunc status=none")
    try:
        proc = lv("maintenance", "run", *ENV, check=4)
        assert f"backup {backup} failed its test restore" in proc.stderr, proc.stderr[-2000:]
    finally:
        fleet.sh("db1", f"mv -f {backup}.good {backup}")
    proc = lv("maintenance", "run", *ENV, check=0)
    assert proc.stdout.count("test restore of ") == 2, proc.stdout
    assert "backups: last proven" in lv("status", *ENV, check=0).stdout

    app_grants(fleet)
    before = exact(fleet)
    assert before[2] == "" and "reporting" in before[1] and "user notes" in before[1]
    rows = sql(fleet, "SELECT id, text, processed_by FROM notes ORDER BY id")
    if site.kind == "mariadb":
        # a write made during v3-bad's deploy by a client the deploy did not stop: restoring the
        # backup would lose it, so the restore is refused; the write is still there
        proc = lv.popen("deploy", *ENV, "--ref", "v3-bad", "--output", "json")
        for line in proc.stdout:
            e = json.loads(line) if line.startswith("{") else {}
            if e.get("event") == "stage" and e.get("stage") == "cache_warm":  # migrated, not yet switched
                sql(fleet, "INSERT INTO notes (text, created_at) VALUES ('during-the-deploy', NOW())")
                break
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 4, err[-2000:]
        assert "writes since the backup" in err and "notes INSERT (1 row(s))" in out + err, err[-2000:]
        assert sql(fleet, "SELECT COUNT(*) FROM notes WHERE text = 'during-the-deploy'") == "1"
        # the code is back on v2; the database is v3's, maintenance on, until a human decides
        assert set(served(fleet).values()) == {v2}
        # the human restores anyway (the write is lost): the database is v2's again, exactly
        lv("rollback", *ENV, "--to", v2, "--restore-db", "--yes", check=0)
        on_release(fleet, v2, 2)
        assert exact(fleet) == before
        assert sql(fleet, "SELECT id, text, processed_by FROM notes ORDER BY id") == rows

    # v3-bad: its migration applied (batch 3), then /health answers 500: code and database back,
    # exactly as before (schema, privileges, comments), nothing of deployer's left
    proc = lv("deploy", *ENV, "--ref", "v3-bad", check=1)
    out = proc.stdout + proc.stderr
    assert "rolled back" in out.lower(), out[-2000:]
    on_release(fleet, v2, 2)
    assert migrations(fleet) == [f"{m}:1" for m in V1_MIGRATIONS] + [f"{V2_MIGRATION}:2"]
    assert "priority" not in columns(fleet)
    assert sql(fleet, "SELECT id, text, processed_by FROM notes ORDER BY id") == rows
    assert exact(fleet) == before
    assert not any(fleet.sh(h.name, f"test -e {DEPLOY_TO}/shared/storage/framework/down && echo down || true")
                   .stdout.strip() for h in web_hosts(fleet.spec))

    # by hand back to v1: refused while the schemas differ, then with v1's database
    proc = lv("rollback", *ENV, "--to", "v1", check=3)
    assert "schema version" in proc.stderr
    lv("rollback", *ENV, "--to", "v1", "--restore-db", "--yes", check=0)
    on_release(fleet, v1, 1)
    assert migrations(fleet) == [f"{m}:1" for m in V1_MIGRATIONS]
    assert "processed_by" not in columns(fleet)


def _untouched(fleet, lv, release: str, before, rows: str) -> None:
    """Nothing changed: every host on `release`, the site open, the database exactly as it was,
    no half-written backup, nothing of deployer's in the database, the lock free."""
    on_release(fleet, release, int(migrations(fleet)[-1].split(":")[1]))
    assert exact(fleet) == before
    assert sql(fleet, "SELECT id, text, processed_by FROM notes ORDER BY id") == rows
    assert fleet.sh("db1", f"ls {DEPLOY_TO}/backups | grep -c partial || true").stdout.strip() == "0"
    assert "lock: free" in lv("status", *ENV, check=0).stdout


def test_database_faults_lose_nothing(fleet, site, lv):
    """The backup killed on the db host, its disk full, the backup corrupted before the rollback
    restores it, the orchestrator killed after the migration: no half-written backup, no
    database half-restored, nothing of deployer's left, and a clear way back."""
    KIND["kind"] = site.kind
    lv("deploy", *ENV, "--ref", "v2", check=0)
    (v2,) = set(served(fleet).values())
    before, rows = exact(fleet), sql(fleet, "SELECT id, text, processed_by FROM notes ORDER BY id")
    # the tool the backup step waits in: on PostgreSQL the fence's removal before the dump (it
    # locks each table too), on MariaDB the dump itself
    tool = "psql" if site.kind == "postgresql" else "mariadb-dump"

    # 1. the backup killed mid-way on the db host (a session holds a table, so the backup step
    # waits for it, and its tool is killed)
    if site.kind == "postgresql":
        hold = ("nohup runuser -u postgres -- /usr/lib/postgresql/15/bin/psql -h /srv/pg/run -d laravel -Xq -c "
                "'BEGIN; LOCK TABLE notes IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(20); COMMIT' >/dev/null 2>&1 &")
    else:
        hold = f"nohup {MY_ROOT} laravel -e 'LOCK TABLES notes WRITE; SELECT SLEEP(20); UNLOCK TABLES' >/dev/null 2>&1 &"
    fleet.sh("db1", hold.replace(">/dev/null 2>&1 &", ">/tmp/hold.log 2>&1 &"))
    held = ("SELECT COUNT(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation WHERE c.relname = 'notes' "
            "AND l.mode = 'AccessExclusiveLock' AND l.granted" if site.kind == "postgresql" else
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO LIKE 'SELECT SLEEP(20)%'")
    deadline = time.monotonic() + 10
    while sql(fleet, held) in ("", "0"):
        assert time.monotonic() < deadline, fleet.sh("db1", "cat /tmp/hold.log", check=False).stdout
    proc = lv.popen("deploy", *ENV, "--ref", "v3-bad")
    waiting = ("SELECT COUNT(*) FROM pg_stat_activity WHERE usename = 'demo' AND wait_event_type = 'Lock'"
               if site.kind == "postgresql" else
               "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE STATE LIKE 'Waiting for table metadata lock%'")
    deadline = time.monotonic() + 30
    while sql(fleet, waiting) in ("", "0"):
        assert time.monotonic() < deadline and proc.poll() is None, \
            f"the backup never waited for the table: {proc.stdout.read()[-3000:] if proc.poll() is not None else ''}"
        time.sleep(0.05)
    fleet.sh("db1", f"pkill -KILL -u deploy -x {tool}" if site.kind == "postgresql" else f"pkill -KILL -x {tool}")
    fleet.sh("db1", "pkill -f '[S]LEEP.20.|[p]g_sleep.20.'", check=False)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err[-2000:]
    assert "backup" in err and tool in err, err[-2000:]
    _untouched(fleet, lv, v2, before, rows)

    # 2. the backups' disk full
    fleet.small_disk("db1", f"{DEPLOY_TO}/backups", "1m")
    try:
        fleet.fill_disk("db1", f"{DEPLOY_TO}/backups")
        proc = lv("deploy", *ENV, "--ref", "v3-bad", check=1)
        assert "No space left on device" in proc.stderr and "db1" in proc.stderr, proc.stderr[-2000:]
    finally:
        fleet.free_disk("db1", f"{DEPLOY_TO}/backups")
    _untouched(fleet, lv, v2, before, rows)

    # 3. the backup corrupted once taken: the rollback verifies it before touching the database
    proc = lv.popen("deploy", *ENV, "--ref", "v3-bad", "--output", "json")
    backup = None
    for line in proc.stdout:
        e = json.loads(line) if line.startswith("{") else {}
        if e.get("event") == "stage" and e.get("stage") == "backup" and e.get("state") == "start":
            backup = e.get("detail") or backup
        if e.get("event") == "stage" and e.get("stage") == "cache_warm":
            backup = backup or fleet.sh("db1", f"ls -t {DEPLOY_TO}/backups/*.dump | head -1").stdout.strip()
            fleet.sh("db1", f"cp -p {backup} {backup}.good && printf 'XXXXXXXXXXXXXXXX' | "
                            f"dd of={backup} bs=1 seek=900 conv=notrunc status=none")
            break
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 4, err[-2000:]
    assert "restore database" in out + err, err[-2000:]
    assert set(served(fleet).values()) == {v2}  # the code is back
    assert "priority" in columns(fleet)  # the database untouched: still migrated, no row lost
    assert sql(fleet, "SELECT id, text, processed_by FROM notes ORDER BY id") == rows
    # mended, the human restores it: v2's database again, exactly, the site open
    fleet.sh("db1", f"mv -f {backup}.good {backup}")
    lv("rollback", *ENV, "--to", v2, "--restore-db", "--yes", check=0)
    _untouched(fleet, lv, v2, before, rows)

    # 4. the orchestrator killed (kill -9) once the migration ran: the fence is still there, and
    # `recover` restores the backup (exactly), opens the site and removes the fence
    proc = lv.popen("deploy", *ENV, "--ref", "v3-bad", "--output", "json")
    for line in proc.stdout:
        e = json.loads(line) if line.startswith("{") else {}
        if e.get("event") == "stage" and e.get("stage") == "cache_warm":
            proc.kill()
            break
    proc.wait(timeout=30)
    assert "priority" in columns(fleet) and exact(fleet)[2] != ""
    said = lv("recover", *ENV, check=0)
    assert "rolling it back" in said.stdout + said.stderr
    _untouched(fleet, lv, v2, before, rows)
