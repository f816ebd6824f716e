"""Backups proven by a test restore: the command's verdict, what the ledger keeps of it, the
maintenance job's plan, what `status` says and what a rollback refuses (the fleet's tests run
the real restores: tests/e2e/test_maintenance.py)."""

from __future__ import annotations

import shlex

from test_engine_pure import ROOT
from test_plan_rows import BACKUP, PREV, TOKEN

from deployer import records as REC
from deployer.commands import backup as B
from deployer.config import load_config
from deployer.engine import maint_plan
from deployer.inspect import proof_line
from deployer.ledger import History

DB = B.Postgres("demo", "postgres", "/usr/lib/postgresql/15/bin", "/srv/pg/run", 5432, "/srv/backups")


def test_a_test_restore_uses_a_scratch_database_it_always_drops():
    script = shlex.split(B.prove(DB, "/srv/backups/x.dump", "ab" * 32).script.split(' "$@" sh -c ', 1)[1])[0]
    lines = script.splitlines()
    assert lines[0].startswith("s=demo_deployer_check;")
    assert lines[2] == "trap drop_scratch EXIT"  # dropped on every exit, the failed ones too
    assert "sha256sum -c" in lines[4]  # the recorded sha256 first
    restore = next(line for line in lines if "--single-transaction" in line)
    assert "--no-owner --no-acl --exit-on-error" in restore and '-d "$s" /srv/backups/x.dump' in restore
    assert lines[-1] == 'echo "proof: ok tables=$1 rows=$2"'
    assert "sha256sum" not in B.prove(DB, "/srv/backups/x.dump").script  # sha256 unknown: read only
    assert B.scratch_name(B.Postgres("d" * 80, None, "", None, 5432, "/b")).endswith("_deployer_check")
    assert len(B.scratch_name(B.Postgres("d" * 80, None, "", None, 5432, "/b"))) == 63


def test_the_verdict_line_is_read_back():
    assert B.parse_proof("noise\nproof: ok tables=3 rows=120\n") == B.Verdict(True, True, 3, 120)
    assert B.parse_proof("proof: failed the restore failed: ERROR: x\n") == B.Verdict(
        False, True, why="the restore failed: ERROR: x")
    # no scratch database: neither proven nor condemned
    assert B.parse_proof("proof: untested no scratch database: permission denied\n") == B.Verdict(
        False, False, why="no scratch database: permission denied")
    v = B.parse_proof("Killed\n")
    assert not v.ok and not v.tested and "no verdict" in v.why


def _proof(path, ok, at, run="m1", **kw) -> dict:
    return REC.BackupProof(run=run, at=at, path=path, ok=ok, **kw).to_dict()


def _deploy(run: str, release: str, backup: str) -> list[dict]:
    return [REC.RunStarted(run=run, release=release, at="2026-12-01T00:00:00Z").to_dict() | {"type": "deploy.start"},
            REC.Backup(run=run, path=backup, sha256="ab" * 32, size=10, host="db1").to_dict(),
            REC.RunEnded(run=run, outcome="success").to_dict()]


def test_the_ledger_keeps_each_backups_last_test_restore():
    h = History.fold(_deploy("r1", "rel1", "/b/pre1.dump") + [
        _proof("/b/n1.dump", True, "2026-12-01T02:00:00Z", tables=3, rows=10),
        _proof("/b/pre1.dump", False, "2026-12-01T02:01:00Z", error="the restore failed: ERROR"),
        _proof("/b/n2.dump", True, "2026-12-02T02:00:00Z", tables=3, rows=12)])
    assert h.last_proven().path == "/b/n2.dump"
    assert h.failed_proof("/b/pre1.dump").error == "the restore failed: ERROR"
    assert h.to_prove().path == "/b/pre1.dump"  # failed: tested again next night
    h = History.fold(h_events := _deploy("r1", "rel1", "/b/pre1.dump") + [
        _proof("/b/pre1.dump", False, "2026-12-01T02:01:00Z"), _proof("/b/pre1.dump", True, "2026-12-02T02:01:00Z")])
    assert h.failed_proof("/b/pre1.dump") is None and h.to_prove() is None
    assert h.last_proven().path == "/b/pre1.dump" and len(h_events) == 5
    # a test restore that could not run condemns nothing, proves nothing
    h = History.fold(_deploy("r1", "rel1", "/b/pre1.dump") + [
        _proof("/b/pre1.dump", False, "2026-12-01T02:01:00Z", tested=False, error="no scratch database")])
    assert h.failed_proof("/b/pre1.dump") is None and h.to_prove().path == "/b/pre1.dump"
    assert "could not test-restore: pre1.dump (no scratch database)" in proof_line(h, 0)
    assert History.fold(_deploy("r1", "rel1", "/b/pre1.dump")).to_prove().path == "/b/pre1.dump"
    assert History.fold([]).to_prove() is None and History.fold([]).last_proven() is None


def test_status_names_the_last_proven_backup_its_age_and_any_failed_one():
    h = History.fold([_proof("/b/n1.dump", True, "2026-12-01T02:00:00Z", tables=3, rows=10),
                      _proof("/b/n2.dump", False, "2026-12-02T02:00:00Z", error="the restore failed: disk")])
    now = REC.dt.datetime(2026, 12, 2, 5, 0, tzinfo=REC.dt.UTC).timestamp()
    line = proof_line(h, now)
    assert line.startswith("backups: last proven n1.dump (3 table(s), 10 row(s)), tested 1 d ago")
    assert "FAILED its test restore: n2.dump (the restore failed: disk)" in line
    assert "none proven" in proof_line(History.fold([]), now)


def test_the_nightly_plan_proves_its_backup_and_the_unproven_one_before_retention():
    cfg = load_config("prod", root=ROOT)
    plan = maint_plan.window_plan(cfg, backup_path="/srv/backups/nightly.dump", remove=["old.dump"],
                                  release=PREV, gate_release=None, token=TOKEN, prove=BACKUP)
    names = [(st.name, a.what) for st in plan.stages for a in st.actions()]
    assert names[:4] == [("backup", "nightly backup"), ("backup", "test restore"), ("backup", "test restore"),
                         ("retention", "retention")]
    proofs = [a for st in plan.stages for a in st.actions() if a.what == "test restore"]
    assert proofs[0].records[0].path == BACKUP.path and BACKUP.sha256 in proofs[0].command.script
    assert proofs[1].records[0].path == "/srv/backups/nightly.dump" and proofs[1].records[0].sha256 is None
