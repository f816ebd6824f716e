"""MariaDB / MySQL (`database.kind: mariadb|mysql`): the commands the plans run, the plans
themselves and the preflight rows, without a server (the fleet's tests run them on MariaDB:
tests/e2e/test_laravel.py)."""

from __future__ import annotations

import shlex

from test_engine_pure import REL, ROOT, canned_facts
from test_plan_rows import BACKUP, PREV, TOKEN

from deployer.commands import databases as DB
from deployer.commands.backup import Postgres
from deployer.commands.mariadb import MariaDB, ident, lit
from deployer.config import load_config
from deployer.config.inventory import Database as Section
from deployer.engine import back_plan, deploy_plan, maint_plan
from deployer.engine.deploy_plan import DeployInputs
from deployer.engine.state import RunState
from deployer.preflight import fixes as FX
from deployer.preflight import rights as RT

MY = MariaDB("shop", None, "", "/run/mysqld/mysqld.sock", 3306, "/srv/backups", option_file="/home/deploy/shop.cnf")
MARIADB = {"database.kind": "mariadb", "database.socket": "/run/mysqld/mysqld.sock",
           "database.socket_dir": None, "database.option_file": "/home/deploy/shop.cnf", "database.bin_dir": None}


def inner(cmd) -> str:
    """The script the tools' user runs (as_user: `sh -c '<script>'`)."""
    return shlex.split(cmd.script)[2]


def test_the_kind_picks_the_commands_and_the_default_port():
    assert isinstance(DB.of(Section(name="d", kind="postgresql")), Postgres)
    for kind in ("mariadb", "mysql"):
        db = DB.of(Section(name="d", kind=kind, socket="/run/mysqld/mysqld.sock"))
        assert isinstance(db, MariaDB) and db.port == 3306 and db.kind == "MariaDB"
    assert DB.of(Section(name="d")).port == 5432 and DB.of(Section(name="d", port=6432)).port == 6432


def test_the_option_file_comes_first_and_quoting_is_the_clients():
    assert MY.conn_args() == "--defaults-extra-file=/home/deploy/shop.cnf -S /run/mysqld/mysqld.sock"
    tcp = MariaDB("shop", None, "/opt/mariadb/bin", None, 3307, "/b", user="shop", host="10.0.0.5")
    assert tcp.conn_args() == "-h 10.0.0.5 -P 3307 --protocol=TCP -u shop"
    assert tcp.tool("mariadb-dump") == "/opt/mariadb/bin/mariadb-dump"
    assert ident("we`ird") == "`we``ird`" and lit("it's a \\ test") == "'it''s a \\\\ test'"


def test_the_dump_is_complete_checksummed_and_renamed_or_removed():
    s = inner(MY.dump("/srv/backups/x.dump"))
    assert ("mariadb-dump --defaults-extra-file=/home/deploy/shop.cnf -S /run/mysqld/mysqld.sock --single-transaction "
            "--routines --triggers --events --hex-blob --ignore-table=shop.deployer_fence shop > "
            "/srv/backups/x.dump.partial") in s
    assert s.index("grep -q '^-- Dump completed'") < s.index("sha256sum") < s.index("mv -T")
    assert "rm -f /srv/backups/x.dump.partial; exit $rc" in s


def test_the_rollbacks_restore_checks_the_fence_keeps_its_table_and_marks_it():
    s = inner(MY.restore_once("/srv/backups/x.dump", "ab" * 32))
    assert s.startswith("exec 9>>/srv/backups/.restore.lock && flock 9 && if ")
    check, rest = s.split("; then ", 1)
    assert "RESTORED" in check and "ab" * 32 in check
    skip, do = rest.split("; else ", 1)
    assert do.index("sha256sum -c") < do.index("write fence unreadable") < do.index("DROP TABLE IF EXISTS")
    assert "AND table_name <> " in do  # the fence's table spared: it takes the mark
    assert do.index("SET FOREIGN_KEY_CHECKS=0") < do.index("cat /srv/backups/x.dump") < do.index("INSERT INTO deployer_fence")
    plain = inner(MY.restore("/srv/backups/x.dump"))
    assert "AND table_name <> " not in plain and "RESTORED" not in plain


def test_the_fence_counts_writes_by_connection_and_the_migration_is_its_window():
    fence = inner(MY.fence())
    for op in ("INSERT", "UPDATE", "DELETE"):
        assert f"AFTER {op} ON" in fence
    assert "ON DUPLICATE KEY UPDATE n = n + 1" in fence and "'START'" in fence
    assert "'END'" in inner(MY.migration_over())
    assert MY.migration_env() is None and Postgres.of(Section(name="d")).migration_over() is None
    writes = MY._writes_since_backup()
    assert "NOT (f.conn > (SELECT MAX(conn) FROM deployer_fence WHERE op = " in writes
    unfence = inner(MY.unfence())
    assert "DROP TABLE IF EXISTS deployer_fence;" in unfence and "deployer\\_fence\\_%" in unfence


def test_a_test_restore_uses_its_own_scratch_database():
    s = inner(MY.prove("/srv/backups/x.dump", "ab" * 32))
    assert "s=shop_deployer_check" in s and "trap drop_scratch EXIT" in s
    assert "DROP DATABASE IF EXISTS `shop_deployer_check`; CREATE DATABASE `shop_deployer_check`" in s
    assert "|| fail 'no scratch database' untested" in s and "grep -c '^CREATE TABLE '" in s


def test_a_mariadb_deploy_under_maintenance_marks_the_end_of_its_migration_on_the_db_host():
    cfg = load_config("prod", root=ROOT, overrides=MARIADB)
    facts = canned_facts(cfg)
    plan = deploy_plan.deploy_plan(cfg, facts, DeployInputs(release=REL, commit=facts.commit, ref="v2",
                                                            maintenance=True, token=TOKEN))
    [migrate] = [st for st in plan.stages if st.name == "migrate"]
    acts = [(a.host, a.what) for a in migrate.actions()]
    i = acts.index((cfg.migrate_host.name, "migrate"))
    assert acts[i + 1] == (cfg.db_host.name, "write fence: migration over")
    text = " ".join(a.command.script for st in plan.stages for a in st.actions() if a.command)
    assert "PGAPPNAME" not in text and "pg_dump" not in text and "mariadb-dump" in text
    online = deploy_plan.deploy_plan(cfg, facts, DeployInputs(release=REL, commit=facts.commit, ref="v2",
                                                              maintenance=False, token=TOKEN))
    assert not [a for st in online.stages for a in st.actions() if a.what == "write fence: migration over"]
    app = [h.name for h in cfg.app_hosts]
    st = RunState(run="r1", release=REL, snapshot={h: PREV for h in app}, schema_before=1, schema_after=2,
                  backup=BACKUP, maintenance_on=True, migrated=True, switched=list(app))
    back = " ".join(a.command.script for s in back_plan.rollback_plan(cfg, st, TOKEN).stages
                    for a in s.actions() if a.command)
    assert "mariadb" in back and "DROP TABLE IF EXISTS deployer_fence;" in back and "psql" not in back
    window = maint_plan.window_plan(cfg, backup_path="/srv/backups/n.dump", remove=[], release=PREV,
                                   gate_release=None, token=TOKEN)
    assert any("shop_deployer_check" in a.command.script or "_deployer_check" in a.command.script
               for s in window.stages for a in s.actions() if a.what == "test restore")


def test_preflight_rows_of_a_mariadb_account():
    n = RT.Needs(user="deploy", app="shop", database=MY, role="")
    every = ",".join(RT.MARIADB_NEEDS)
    [(_, ok, said)] = FX.rows(n)(f"@@right database 0 shop@localhost|{every},USAGE|{every}\n", 0)
    assert ok and said == "account shop@localhost may back up, restore and test-restore shop"
    [(_, ok, said)] = FX.rows(n)(f"@@right database 0 shop@localhost|{every}|USAGE\n", 0)
    assert ok and "GRANT ALL ON `shop_deployer_check`.* TO 'shop'@'localhost';" in said
    [(_, ok, said)] = FX.rows(n)("@@right database 0 shop@%|SELECT,INSERT,UPDATE,DELETE|\n", 0)
    assert not ok and "lacks ALTER, ALTER ROUTINE, CREATE" in said and "TRIGGER" in said
    assert "GRANT ALL ON `shop`.* TO 'shop'@'%';" in said
    err = "ERROR 1045 (28000): Access denied for user 'deploy'@'localhost' (using password: NO)"
    [(_, ok, said)] = FX.rows(n)(f"@@right database 1 {err}\n", 0)
    assert not ok and "Access denied" in said and "/home/deploy/shop.cnf" in said
    script = RT.command(n).script
    assert "information_schema.SCHEMA_PRIVILEGES" in script and "shop_deployer_check" in script
