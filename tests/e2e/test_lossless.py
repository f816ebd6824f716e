"""A database restore loses nothing: while maintenance holds for a migration, the workers are
stopped (the demo playbook's hold_workers) and a write fence notes every other write; a restore
that would throw writes away is refused with exit 4 and instructions."""

from __future__ import annotations

import json

from .conftest import catalog, deployer_objects, psql, schema_dump, serving

ROGUE = ("runuser -u postgres -- env PGAPPNAME=queue-worker /usr/lib/postgresql/15/bin/psql -h /srv/pg/run "
         "-d demo -Xq -c \"INSERT INTO items (name) VALUES ('written-during-the-deploy')\"")


def _playbook(fleet, tmp_path, name: str, stages: str) -> str:
    """An inventory of the fleet whose playbook is the demo's with `stages` (YAML under `stages:`)."""
    (tmp_path / f"{name}.yaml").write_text(f"extends: demo\nname: {name}\nstages:\n{stages}")
    inv = tmp_path / f"inv-{name}.yaml"
    inv.write_text(fleet.inventory_path.read_text().replace("playbook: demo", f"playbook: {name}.yaml"))
    return str(inv)


def _failing_gate(fleet, tmp_path) -> str:
    """v3 migrates (not online-safe: maintenance), then a gate check fails on every host."""
    return _playbook(fleet, tmp_path, "failing-gate", "  gate_checks:\n"
                     "    - run: \"echo 'gate check: orders queue stalled' >&2; exit 1\"\n")


def _v2(fleet, cli) -> str:
    schema = fleet.sh("db1", "runuser -u postgres -- /usr/lib/postgresql/15/bin/psql -h /srv/pg/run -d demo "
                             "-XAtq -c 'select max(version) from schema_migrations'", check=False).stdout.strip()
    if schema == "3":
        cli("rollback", "--env", "local", "--to", "v2", "--restore-db", check=0)
    cli("deploy", "--env", "local", "--ref", "v2", check=0)
    return next(iter(serving(fleet).values()))


def _schema(fleet) -> str:
    return fleet.sh("db1", "runuser -u postgres -- /usr/lib/postgresql/15/bin/psql -h /srv/pg/run -d demo "
                           "-XAtq -c 'select max(version) from schema_migrations'", check=False).stdout.strip()


def test_a_write_during_a_maintenance_deploy_is_never_lost(fleet, cli, tmp_path):
    before = _v2(fleet, cli)
    inv = _failing_gate(fleet, tmp_path)
    try:
        proc = cli.popen("deploy", "--env", "local", "--ref", "v3", "--inventory", inv, "--output", "json")
        for line in proc.stdout:
            e = json.loads(line) if line.startswith("{") else {}
            if e.get("event") == "stage" and e.get("stage") == "gate":
                fleet.sh("db1", ROGUE)  # a writer the deploy did not stop
                break
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 4, err[-2000:]
        assert "written since the backup" in err, err[-2000:]
        assert "items INSERT (1 row(s)) by queue-worker" in out + err, err[-2000:]
        # the row survives; the code is back on the snapshot; the site stays closed, and says why
        assert psql(fleet, "select count(*) from items where name = 'written-during-the-deploy'") == "1"
        assert set(serving(fleet).values()) == {before}
        status = cli("status", "--env", "local")
        assert "ON" in status.stdout
    finally:
        # the human keeps the data: the down migration by hand, the code confirmed, maintenance off
        if _schema(fleet) == "3":
            psql(fleet, "ALTER TABLE items RENAME COLUMN kind TO category; "
                        "DELETE FROM schema_migrations WHERE version = 3")
        cli("rollback", "--env", "local", "--to", before, "--keep-db")
        cli("maintenance", "off", "--env", "local")
    again = cli("recover", "--env", "local", check=0)
    assert "nothing to recover" in again.stdout + again.stderr
    assert psql(fleet, "select count(*) from items where name = 'written-during-the-deploy'") == "1"
    assert _schema(fleet) == "2"
    # the refused restore kept the fence (it lists the writes); the rollback by hand removed it
    assert deployer_objects(fleet) == []


def _privileges(fleet) -> str:
    """Grants and comments a stock deploy never touches, set by the app's team; returns the SQL
    that puts the schema's comment back as it was."""
    was = psql(fleet, "SELECT coalesce(quote_literal(obj_description('public'::regnamespace, 'pg_namespace')), 'NULL')")
    psql(fleet, "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'reporting') THEN "
                "CREATE ROLE reporting; END IF; END $$; GRANT SELECT ON items TO reporting; "
                "GRANT SELECT (name) ON schema_migrations TO reporting; GRANT USAGE ON SCHEMA public TO reporting; "
                "COMMENT ON TABLE items IS 'the queue''s items'; COMMENT ON COLUMN items.name IS 'what to do'; "
                "COMMENT ON SCHEMA public IS 'demo: app schema'")
    return (f"REVOKE ALL ON items FROM reporting; REVOKE ALL (name) ON schema_migrations FROM reporting; "
            f"REVOKE USAGE ON SCHEMA public FROM reporting; COMMENT ON TABLE items IS NULL; "
            f"COMMENT ON COLUMN items.name IS NULL; COMMENT ON SCHEMA public IS {was}")


def test_without_other_writes_the_backup_is_restored_and_the_workers_run_again(fleet, cli, tmp_path):
    """...exactly: the schema, and each object's owner, privileges and comment, as before the
    deploy (v3 renames a column), and nothing of deployer's left in the database."""
    before = _v2(fleet, cli)
    inv = _failing_gate(fleet, tmp_path)
    undo = _privileges(fleet)
    try:
        acl, dump = catalog(fleet), schema_dump(fleet)
        assert any(line.startswith("schema public") and "reporting=U/" in line and "demo: app schema" in line
                   for line in acl), acl
        proc = cli("deploy", "--env", "local", "--ref", "v3", "--inventory", inv, check=1)
        assert "gate check: orders queue stalled" in proc.stderr
        assert catalog(fleet) == acl
        assert schema_dump(fleet) == dump
        assert deployer_objects(fleet) == []
    finally:
        psql(fleet, undo)
    assert set(serving(fleet).values()) == {before}
    assert _schema(fleet) == "2"
    for h in fleet.spec.web_hosts:
        st = fleet.sh(h.name, "/srv/bin/supervisorctl -c /srv/supervisor/supervisord.conf status worker",
                      check=False).stdout
        assert "RUNNING" in st, f"{h.name}: {st}"
        assert fleet.sh(h.name, "test -e /srv/app/shared/storage/maintenance.json", check=False).returncode == 1


def test_a_maintenance_deploy_failing_before_its_migration_leaves_no_fence(fleet, cli, tmp_path):
    """v3 needs maintenance: backup, write fence, then its build fails on every host. The rollback
    has no database to restore; the fence goes with it, and the site opens again."""
    before = _v2(fleet, cli)
    inv = _playbook(fleet, tmp_path, "failing-build", "  build:\n"
                    "    - run: \"echo 'build: vendor/ unreadable' >&2; exit 1\"\n")
    dump = schema_dump(fleet)
    proc = cli("deploy", "--env", "local", "--ref", "v3", "--inventory", inv, check=1)
    assert "build: vendor/ unreadable" in proc.stderr
    assert "write fence removed" in proc.stdout + proc.stderr
    assert deployer_objects(fleet) == []
    assert schema_dump(fleet) == dump and _schema(fleet) == "2"
    assert set(serving(fleet).values()) == {before}
    for h in fleet.spec.web_hosts:
        assert fleet.sh(h.name, "test -e /srv/app/shared/storage/maintenance.json", check=False).returncode == 1
